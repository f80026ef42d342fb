"""The data-center way: average full fp32 updates after every step (synchronous data parallel)."""

from globetrain.sync.config import SyncConfig
from globetrain.sync.methods import Method, register


def configure(base: SyncConfig) -> SyncConfig:
    # One inner step per round and an outer step of lr 1 without momentum applies exactly
    # the average of the workers' inner updates: for SGD (with or without momentum, which
    # is linear in the gradients) that is synchronous data-parallel training.
    return base.replace(
        inner_steps=1, apply_delay=0, density=1.0, bits=32, error_feedback=False,
        outer_lr=1.0, outer_lr_scaling="none", outer_momentum=0.0, nesterov=False, dense_warmup_rounds=0,
    )


METHOD = register(
    Method(name="dense", description="fp32 average of every step's update (data-parallel SGD)", configure=configure)
)

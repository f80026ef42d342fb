"""What hivemind ships: every-step averaging with fp16-compressed values."""

from globetrain.sync.config import SyncConfig
from globetrain.sync.methods import Method, register


def configure(base: SyncConfig) -> SyncConfig:
    return base.replace(
        inner_steps=1, apply_delay=0, density=1.0, bits=16, error_feedback=False,
        outer_lr=1.0, outer_lr_scaling="none", outer_momentum=0.0, nesterov=False, dense_warmup_rounds=0,
    )


METHOD = register(
    Method(name="fp16-average", description="fp16 average of every step's update (hivemind's default)", configure=configure)
)

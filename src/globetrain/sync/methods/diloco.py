"""DiLoCo: H local steps, then a dense fp32 average of the pseudo-gradients (outer Nesterov)."""

from globetrain.sync.config import SyncConfig
from globetrain.sync.methods import Method, register


def configure(base: SyncConfig) -> SyncConfig:
    # DiLoCo's published outer optimizer: SGD lr 0.7 with Nesterov momentum 0.9.
    return base.replace(
        apply_delay=0, density=1.0, bits=32, error_feedback=False, dense_warmup_rounds=0,
        outer_lr=0.7, outer_lr_scaling="none", outer_momentum=0.9, nesterov=True,
    )


METHOD = register(
    Method(name="diloco", description="H local steps, dense fp32 outer sync, Nesterov outer optimizer", configure=configure)
)

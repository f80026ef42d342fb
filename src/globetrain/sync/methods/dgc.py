"""Deep Gradient Compression: top-k of every step's update with error feedback.

Local momentum of the inner optimizer accumulated into the error-feedback residual is
DGC's momentum correction; values travel as fp32 as in the paper.
"""

from globetrain.sync.config import SyncConfig
from globetrain.sync.methods import Method, register


def configure(base: SyncConfig) -> SyncConfig:
    return base.replace(
        inner_steps=1, apply_delay=0, density=0.001, bits=32, error_feedback=True,
        outer_lr=1.0, outer_lr_scaling="none", outer_momentum=0.0, nesterov=False,
    )


METHOD = register(
    Method(name="dgc", description="top-0.1% of every step's update, fp32 values, error feedback", configure=configure)
)

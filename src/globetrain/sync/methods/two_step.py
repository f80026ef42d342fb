"""Ours: rare overlapped syncs (step 1) of tiny compressed updates (step 2), adapted per device."""

from globetrain.sync.config import SyncConfig
from globetrain.sync.methods import Method, register


def configure(base: SyncConfig) -> SyncConfig:
    # The user's H, density and bits are the starting point; the QoS scheduler adapts them.
    return base.replace(apply_delay=1, error_feedback=True)


METHOD = register(
    Method(
        name="two-step",
        description=(
            "H local steps, pseudo-gradient top-k + low-bit quantized with error feedback, "
            "averaged in the background and applied one round late (adaptive H/density/bits)"
        ),
        configure=configure,
        adaptive=True,
    )
)

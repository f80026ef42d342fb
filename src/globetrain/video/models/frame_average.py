"""The frame-averaging 2D baseline (TSN-style): TSM's backbone without the shift.

It sees which frames a clip holds but not their order, so it cannot tell apart classes
that differ only in the order of frames; the gap to TSM measures what the shift adds.
"""

from __future__ import annotations

from globetrain.video.models.backbone import Norm
from globetrain.video.models.frame_model import FrameModel
from globetrain.video.models.registry import register_model


@register_model(
    "frame-average-small",
    "2D baseline: the same backbone on each frame, logits averaged over frames (no shift)",
)
def build_frame_average_small(
    num_classes: int,
    *,
    frames: int = 8,
    frame_size: int = 32,
    width: int = 32,
    norm: Norm = "group",
    dropout: float = 0.0,
) -> FrameModel:
    return FrameModel(
        num_classes,
        frames=frames,
        frame_size=frame_size,
        width=width,
        norm=norm,
        dropout=dropout,
        shift_fraction=None,
    )

"""A video classifier built from a per-frame 2D network: run every sampled frame
through the backbone, classify each frame, and average the frame logits over time
(TSN's consensus). With a temporal shift inside the backbone this is TSM; without, it
is the frame-averaging baseline, which cannot see the order of frames at all.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from globetrain.video.models.backbone import FrameBackbone, Norm
from globetrain.video.models.shift import relu_temporal_shift


class FrameModel(nn.Module):
    """(clips, frames, 3, h, w) float -> (clips, num_classes) logits."""

    def __init__(
        self,
        num_classes: int,
        *,
        frames: int,
        frame_size: int,
        width: int,
        norm: Norm,
        shift_fraction: float | None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.frames = frames
        self.frame_size = frame_size
        activation = torch.relu
        if shift_fraction is not None:
            activation = functools.partial(relu_temporal_shift, frames=frames, shift_fraction=shift_fraction)
        self.backbone = FrameBackbone(width=width, norm=norm, branch_activation=activation)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.backbone.feature_channels, num_classes)
        # The convolutions train fastest on channels_last tensors on CPU.
        self.memory_format = torch.channels_last

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, 3, self.frame_size, self.frame_size)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        batch, frames = clips.shape[:2]
        if frames != self.frames:
            raise ValueError(f"model expects clips of {self.frames} frames, got {frames}")
        images = clips.reshape(batch * frames, *clips.shape[2:]).contiguous(memory_format=self.memory_format)
        frame_logits = self.classifier(self.dropout(self.backbone(images)))
        return frame_logits.view(batch, frames, -1).mean(dim=1)

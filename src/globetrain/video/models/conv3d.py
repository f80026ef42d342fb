"""The 3D-convolution baseline: a small C3D/R3D-style residual network.

Same three-stage layout and widths as the 2D backbone, but every 3 x 3 kernel is
3 x 3 x 3 over (time, height, width), so time is modelled by spending three times the
weights and FLOPs of each convolution. Time is never strided: 8 frames are few already.
"""

from __future__ import annotations

import torch
from torch import nn

from globetrain.video.models.backbone import Norm, make_norm
from globetrain.video.models.registry import register_model


class ResidualBlock3d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, spatial_stride: int, norm: Norm) -> None:
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_channels, dims=3)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_channels, dims=3)
        self.shortcut: nn.Module = nn.Identity()
        if spatial_stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False), make_norm(norm, out_channels, dims=3)
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        branch = torch.relu(self.norm1(self.conv1(features)))
        branch = self.norm2(self.conv2(branch))
        return torch.relu(branch + self.shortcut(features))


class Conv3dNetwork(nn.Module):
    """(clips, frames, 3, h, w) float -> (clips, num_classes) logits."""

    def __init__(
        self,
        num_classes: int,
        *,
        frames: int = 8,
        frame_size: int = 32,
        width: int = 32,
        norm: Norm = "group",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.frames = frames
        self.frame_size = frame_size
        self.stem = nn.Sequential(
            nn.Conv3d(3, width, 3, stride=(1, 2, 2), padding=1, bias=False),
            make_norm(norm, width, dims=3),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            ResidualBlock3d(width, width, spatial_stride=1, norm=norm),
            ResidualBlock3d(width, 2 * width, spatial_stride=2, norm=norm),
            ResidualBlock3d(2 * width, 4 * width, spatial_stride=2, norm=norm),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(4 * width, num_classes)
        # Like the 2D models: channels-last is the convolutions' fastest CPU layout.
        self.memory_format = torch.channels_last_3d

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, 3, self.frame_size, self.frame_size)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.shape[1] != self.frames:
            raise ValueError(f"model expects clips of {self.frames} frames, got {clips.shape[1]}")
        # (clips, frames, channels, h, w) -> (clips, channels, frames, h, w) for Conv3d.
        volumes = clips.permute(0, 2, 1, 3, 4).contiguous(memory_format=self.memory_format)
        features = self.blocks(self.stem(volumes)).mean(dim=(2, 3, 4))
        return self.classifier(self.dropout(features))


@register_model(
    "conv3d-small",
    "3D-convolution baseline: the backbone's layout with 3x3x3 kernels (models time at 3x the FLOPs)",
)
def build_conv3d_small(
    num_classes: int, *, frames: int = 8, frame_size: int = 32, width: int = 32, norm: Norm = "group", dropout: float = 0.0
) -> Conv3dNetwork:
    return Conv3dNetwork(num_classes, frames=frames, frame_size=frame_size, width=width, norm=norm, dropout=dropout)

"""From a video's frames to the model's input: segment sampling and normalisation.

TSN-style sampling: the video is cut into T equal segments and one frame is taken from
each, at a random position within its segment when training (a different view every
epoch for free) and at the segment's centre when evaluating (deterministic). T frames
thus cover the whole video however long it is, at a fixed cost per clip.
"""

from __future__ import annotations

import numpy as np
import torch

# Per-channel mean and standard deviation of natural video (Kinetics), for [0, 1] pixels.
PIXEL_MEAN = (0.45, 0.45, 0.45)
PIXEL_STD = (0.225, 0.225, 0.225)


def segment_indices(
    num_frames: int, segments: int, *, training: bool, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Frame indices, one per segment, in time order (repeats when frames < segments)."""
    if num_frames < 1:
        raise ValueError("segment_indices: the video has no frames")
    edges = np.linspace(0.0, num_frames, segments + 1)
    if training:
        if rng is None:
            raise ValueError("segment_indices: training sampling needs an rng")
        positions = rng.uniform(edges[:-1], edges[1:])
    else:
        positions = (edges[:-1] + edges[1:]) / 2
    return np.clip(np.floor(positions).astype(np.int64), 0, num_frames - 1)


def clips_to_tensor(clips: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 clips (batch, frames, h, w, 3) -> normalised float (batch, frames, 3, h, w).

    The result is a permuted view of a (batch, frames, h, w, 3) tensor: flattening
    batch and frames gives a channels_last image batch without another copy.
    """
    pixels = torch.as_tensor(clips)
    if pixels.dtype != torch.uint8 or pixels.ndim != 5 or pixels.shape[-1] != 3:
        raise ValueError(f"expected uint8 clips of shape (batch, frames, h, w, 3), got {tuple(pixels.shape)} {pixels.dtype}")
    mean = torch.tensor(PIXEL_MEAN) * 255.0
    scale = 1.0 / (torch.tensor(PIXEL_STD) * 255.0)
    normalised = (pixels.float() - mean) * scale
    return normalised.permute(0, 1, 4, 2, 3)

"""Helpers of the video unit tests (a uniquely named module: conftest is not importable)."""

from __future__ import annotations

import numpy as np


def noise_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)

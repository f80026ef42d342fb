"""Fixtures of the video tests: tiny real video files and datasets (seconds to make)."""

from __future__ import annotations

from pathlib import Path

import pytest

from globetrain.video.config import SynthConfig
from globetrain.video.files import write_video
from globetrain.video.synth import generate, render_action_clip

TINY = {"frames": 8, "size": 32}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All eight classes, 4 clips each (split 2/1/1), 8 frames of 32 x 32."""
    root = tmp_path_factory.mktemp("tiny-synth") / "data"
    generate(root, clips_per_class=4, seed=3, val_fraction=0.25, test_fraction=0.25, workers=1, **TINY)
    return root


@pytest.fixture
def write_clip(tmp_path: Path):
    """Write one synthetic clip (class index, clip index) as a video file; returns its path."""

    def write(name: str = "clip.mp4", class_index: int = 0, clip_index: int = 0, **settings) -> Path:
        config = SynthConfig(**{**TINY, **settings})
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, render_action_clip(config, class_index, clip_index), fps=config.fps)
        return path

    return write


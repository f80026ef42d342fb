"""The demo's dataset: the synthetic action videos, generated once into a cache folder.

A second demo with the same settings finds the dataset there and starts at once. The
set is written by ``globetrain video synth`` as a child process in its own session (a
Ctrl+C reaches only the demo, which then ends the writer and its encoder workers) into a
temporary folder that is renamed into place when complete, so an interrupted generation
never leaves a half dataset that a later demo would take for a whole one. Progress is the
number of video files written so far.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from globetrain.errors import GlobetrainError
from globetrain.fleet.app.processes import ChildGroup
from globetrain.video.actions import CLASS_NAMES
from globetrain.video.config import default_cache_dir


class DataGenerationFailed(GlobetrainError):
    """The synthetic dataset could not be written; the message points at the writer's log."""


@dataclasses.dataclass(frozen=True)
class SynthSettings:
    """How the demo's synthetic set is drawn (a subset of ``globetrain video synth``'s flags)."""

    clips_per_class: int
    seed: int
    frames: int = 16
    size: int = 32
    classes: tuple[str, ...] = CLASS_NAMES

    @property
    def total_clips(self) -> int:
        return self.clips_per_class * len(self.classes)

    def folder_name(self, default: SynthSettings) -> str:
        """``synth-<seed>`` for the demo's default set, with a settings digest for any other."""
        if dataclasses.replace(self, seed=default.seed) == default:
            return f"synth-{self.seed}"
        digest = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"synth-{self.seed}-{digest}"


def data_cache_root() -> Path:
    """``$XDG_CACHE_HOME/globetrain`` or ``~/.cache/globetrain`` (beside the clip cache)."""
    return Path(default_cache_dir()).parent


def dataset_is_complete(root: Path, settings: SynthSettings) -> bool:
    """Whether ``root`` holds a finished synthetic set drawn with ``settings``."""
    try:
        description = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    drawn = description.get("settings", {})
    return (
        drawn.get("clips_per_class") == settings.clips_per_class
        and drawn.get("seed") == settings.seed
        and drawn.get("frames") == settings.frames
        and drawn.get("size") == settings.size
        and tuple(drawn.get("classes", ())) == settings.classes
    )


def ensure_dataset(
    root: Path,
    settings: SynthSettings,
    *,
    stop: threading.Event,
    env: Mapping[str, str],
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> bool:
    """Make sure ``root`` holds the set; returns True if it had to be generated.

    ``progress(done, total)`` is called while generating. Returns early (False, nothing
    left behind) if ``stop`` is set meanwhile.
    """
    if dataset_is_complete(root, settings):
        return False
    if root.exists():
        # Another (older, partial or foreign) folder under our name: move it aside, keep it.
        root.rename(root.with_name(f"{root.name}.old-{int(time.time())}"))
    partial = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    log_path = root.with_name(f".{root.name}.log")
    argv = [
        sys.executable, "-m", "globetrain", "video", "synth", "--out", str(partial),
        "--clips-per-class", str(settings.clips_per_class), "--seed", str(settings.seed),
        "--frames", str(settings.frames), "--size", str(settings.size), "--classes", ",".join(settings.classes),
        "--workers", str(workers or max(os.cpu_count() or 1, 1)),
    ]
    children = ChildGroup()
    writer = children.start("synth", argv, log_path=log_path, env=env)
    try:
        while writer.alive():
            if stop.wait(0.25):
                return False
            if progress is not None:
                progress(sum(1 for _ in partial.rglob("*.mp4")), settings.total_clips)
        if writer.returncode != 0 or not dataset_is_complete(partial, settings):
            raise DataGenerationFailed(
                f"writing the synthetic dataset failed (exit {writer.returncode}); see {log_path}:\n{writer.log_tail()}"
            )
        try:
            partial.rename(root)
        except OSError:
            # Another demo finished the same set first: use theirs.
            if not dataset_is_complete(root, settings):
                raise
        return True
    finally:
        children.stop(grace_s=2.0)
        shutil.rmtree(partial, ignore_errors=True)

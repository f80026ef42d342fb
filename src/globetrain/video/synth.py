"""The synthetic action dataset, written as real H.264 MP4 files.

Eight classes defined by motion (``actions``), in four pairs whose two classes differ
only in the order of their frames (see ``scenes``): move left / right, move up / down, rotate
clockwise / counter-clockwise, zoom in / out. The layout is the UCF101/HMDB51/Kinetics
convention, so the loader reads it like any real dataset::

    DIR/classes.txt                     one class name per line
    DIR/train.txt, val.txt, test.txt    split files: one "class/file.mp4" per line
    DIR/dataset.json                    the generation settings and counts
    DIR/<class>/<class>_00042.mp4       the clips, one folder per class

Each clip is drawn from its own random stream, seeded by (seed, class, clip number),
so the output is the same file for file whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from globetrain.errors import GlobetrainError
from globetrain.video.actions import ACTION_CLASSES, CLASS_NAMES
from globetrain.video.config import SynthConfig
from globetrain.video.files import write_video
from globetrain.video.scenes import render_clip

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")


class DatasetFolderError(GlobetrainError):
    """The output folder cannot take a synthetic dataset (not empty, not ours)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What ``generate`` wrote."""

    root: Path
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]
    """Clips per split ("train", "val", "test")."""
    settings: dict[str, object]
    """The resolved ``SynthConfig`` the clips were generated with."""
    seconds: float
    """Wall time of the generation."""

    @property
    def clips(self) -> int:
        return sum(self.split_sizes.values())


def generate(
    out_dir: Path | str,
    *,
    clips_per_class: int = SynthConfig.clips_per_class,
    seed: int = 0,
    frames: int = SynthConfig.frames,
    size: int = SynthConfig.size,
    fps: int = SynthConfig.fps,
    val_fraction: float = SynthConfig.val_fraction,
    test_fraction: float = SynthConfig.test_fraction,
    classes: Sequence[str] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> DatasetInfo:
    """Write the synthetic dataset to ``out_dir`` and return what was written.

    ``classes`` picks a subset of ``CLASS_NAMES`` (default: all eight); a clip's pixels
    do not depend on which others are picked. ``workers`` processes render and encode
    in parallel (default: one per core). ``progress`` is called with the number of clips
    finished since its last call.
    """
    config = SynthConfig(
        clips_per_class=clips_per_class,
        seed=seed,
        frames=frames,
        size=size,
        fps=fps,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        classes=tuple(classes) if classes is not None else CLASS_NAMES,
    )
    # The table's order, whatever order they were asked in: class index = sorted name.
    config = config.replace(classes=tuple(name for name in CLASS_NAMES if name in config.classes))
    started = time.perf_counter()
    root = Path(out_dir)
    _prepare_folder(root, overwrite=overwrite)
    class_indices = [CLASS_NAMES.index(name) for name in config.classes]
    for index in class_indices:
        (root / CLASS_NAMES[index]).mkdir(parents=True, exist_ok=True)

    jobs = [
        (str(root), config, class_index, clip_index)
        for class_index in class_indices
        for clip_index in range(config.clips_per_class)
    ]
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    if workers == 1:
        for job in jobs:
            _write_clip(*job)
            if progress is not None:
                progress(1)
    else:
        # spawn, not fork: the caller may hold torch's threads, which fork does not copy.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            # Jobs go out in chunks to keep the per-task overhead small.
            chunks = [jobs[start : start + 16] for start in range(0, len(jobs), 16)]
            futures = {pool.submit(_write_clips, chunk): len(chunk) for chunk in chunks}
            for future in as_completed(futures):
                future.result()
                if progress is not None:
                    progress(futures[future])

    split_sizes = _write_index_files(root, config, class_indices)
    return DatasetInfo(
        root=root,
        class_names=tuple(config.classes),
        split_sizes=split_sizes,
        settings=config.to_dict(),
        seconds=time.perf_counter() - started,
    )


def clip_path(class_name: str, clip_index: int) -> str:
    """Path of a clip relative to the dataset root (as written in the split files)."""
    return f"{class_name}/{class_name}_{clip_index:05d}.mp4"


def render_action_clip(config: SynthConfig, class_index: int, clip_index: int) -> np.ndarray:
    """The frames of one clip, (frames, size, size, 3) uint8; deterministic per seed."""
    action = ACTION_CLASSES[class_index]
    rng = np.random.default_rng([config.seed, class_index, clip_index])
    return render_clip(
        rng, action.motion, frames=config.frames, size=config.size, reverse=action.reverse
    )


def _write_clips(jobs: list[tuple[str, SynthConfig, int, int]]) -> None:
    for job in jobs:
        _write_clip(*job)


def _write_clip(root: str, config: SynthConfig, class_index: int, clip_index: int) -> None:
    relative = clip_path(CLASS_NAMES[class_index], clip_index)
    final = Path(root) / relative
    # Written under another name and renamed, so an interrupted run never leaves a
    # half-written .mp4 that a loader would pick up.
    partial = final.with_suffix(".partial")
    write_video(partial, render_action_clip(config, class_index, clip_index), fps=config.fps)
    os.replace(partial, final)


def _split_of_clips(config: SynthConfig, class_index: int) -> dict[str, list[int]]:
    count = config.clips_per_class
    order = np.random.default_rng([config.seed, class_index, 0x5EED]).permutation(count)
    val_count = round(count * config.val_fraction)
    test_count = round(count * config.test_fraction)
    return {
        "val": sorted(order[:val_count].tolist()),
        "test": sorted(order[val_count : val_count + test_count].tolist()),
        "train": sorted(order[val_count + test_count :].tolist()),
    }


def _write_index_files(root: Path, config: SynthConfig, class_indices: list[int]) -> dict[str, int]:
    lines: dict[str, list[str]] = {split: [] for split in SPLITS}
    for class_index in class_indices:
        for split, clip_indices in _split_of_clips(config, class_index).items():
            name = CLASS_NAMES[class_index]
            lines[split].extend(clip_path(name, clip_index) for clip_index in clip_indices)
    _write_text_atomically(root / "classes.txt", "".join(f"{name}\n" for name in config.classes))
    for split in SPLITS:
        _write_text_atomically(root / f"{split}.txt", "".join(f"{line}\n" for line in lines[split]))
    split_sizes = {split: len(lines[split]) for split in SPLITS}
    description = {
        "generator": "globetrain.video.synth",
        "generator_version": GENERATOR_VERSION,
        "settings": config.to_dict(),
        "split_sizes": split_sizes,
        "classes": {
            action.name: action.description for action in ACTION_CLASSES if action.name in config.classes
        },
    }
    _write_text_atomically(root / "dataset.json", json.dumps(description, indent=2) + "\n")
    return split_sizes


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text)
    os.replace(temporary, path)


def _prepare_folder(root: Path, *, overwrite: bool) -> None:
    if not root.exists():
        root.mkdir(parents=True)
        return
    if not root.is_dir():
        raise DatasetFolderError(f"{root} exists and is not a folder; choose another --out")
    entries = list(root.iterdir())
    if not entries:
        return
    if not (root / "dataset.json").exists():
        raise DatasetFolderError(
            f"{root} is not empty and does not hold a globetrain synthetic dataset; "
            "choose an empty or new folder for --out"
        )
    if not overwrite:
        raise DatasetFolderError(
            f"{root} already holds a synthetic dataset; pass --overwrite to replace it, "
            "or choose another --out"
        )
    ours = set(CLASS_NAMES) | {f"{split}.txt" for split in SPLITS} | {"classes.txt", "dataset.json"}
    for entry in entries:
        if entry.name not in ours:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()

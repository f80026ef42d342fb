"""Discovery of a folder-of-videos dataset: which files, which classes, which split.

Two layouts are read, the ones UCF101, HMDB51 and Kinetics use:

- folder-per-class: ``ROOT/<class>/**/<video>`` (.mp4 .avi .mkv .webm). Without split
  files, each class is split deterministically into train/val/test by a hash of the
  file's relative path, so the split does not change when files are added elsewhere.
- split files: ``ROOT/train.txt``, ``val.txt``, ``test.txt``, one video per line as a
  path relative to ROOT, optionally followed by its label (a class name, or the
  number of a ``classes.txt`` line written as ``<number> <name>``, as UCF101's
  classInd.txt). Without a label, the path's first folder is the class.

Classes come from ``ROOT/classes.txt`` (one name per line, or ``<number> <name>``) or
else from the sorted names of the folders that hold videos. Problems that would only
surface hours into a run (no videos, a split file naming missing files, an unknown
label) fail here, at start, with a message that says what to fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path

from globetrain.errors import GlobetrainError
from globetrain.video.files import VIDEO_SUFFIXES, is_video_file

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
_MAX_LISTED = 5  # problem files named in an error message before "and N more"


class DatasetError(GlobetrainError):
    """The dataset folder cannot be used as it is; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class VideoSample:
    path: Path
    label: int


@dataclasses.dataclass(frozen=True)
class VideoDataset:
    root: Path
    class_names: tuple[str, ...]
    splits: Mapping[str, tuple[VideoSample, ...]]
    layout: str
    """"split-files" or "folder-per-class"."""

    def split(self, name: str) -> tuple[VideoSample, ...]:
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}: expected one of {list(SPLIT_NAMES)}")
        return self.splits.get(name, ())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_dataset(root: Path | str, *, val_fraction: float = 0.1, test_fraction: float = 0.1) -> VideoDataset:
    """Find the videos, classes and splits of the dataset in ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder {root} does not exist; create one with `globetrain video synth --out {root}` "
            "or point --data at a folder of videos"
        )
    listed_classes, numbered_labels = _read_class_list(root)
    split_files = {name: root / f"{name}.txt" for name in SPLIT_NAMES if (root / f"{name}.txt").is_file()}
    if split_files:
        class_names = listed_classes or _class_folders(root)
        splits = {
            name: _read_split_file(root, path, class_names, numbered_labels) for name, path in split_files.items()
        }
        layout = "split-files"
    else:
        class_names = listed_classes or _class_folders(root)
        splits = _split_folders(root, class_names, val_fraction=val_fraction, test_fraction=test_fraction)
        layout = "folder-per-class"
    if not any(splits.values()):
        raise DatasetError(
            f"no videos ({' '.join(sorted(VIDEO_SUFFIXES))}) found in {root}; expected one folder per class "
            "(ROOT/<class>/<video>) or split files (ROOT/train.txt ...) naming videos"
        )
    if len(class_names) < 2:
        raise DatasetError(f"{root} has {len(class_names)} class(es) {list(class_names)}; classification needs at least 2")
    return VideoDataset(root=root, class_names=tuple(class_names), splits=splits, layout=layout)


def _read_class_list(root: Path) -> tuple[list[str], dict[str, str]]:
    """Class names from classes.txt, and its line numbers if written as "<number> <name>"."""
    path = root / "classes.txt"
    if not path.is_file():
        return [], {}
    names: list[str] = []
    numbered: dict[str, str] = {}
    for line in path.read_text().splitlines():
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) == 2 and tokens[0].isdigit():
            numbered[tokens[0]] = tokens[1]
            names.append(tokens[1])
        elif len(tokens) == 1:
            names.append(tokens[0])
        else:
            raise DatasetError(f"{path}: cannot read line {line!r}; expected '<name>' or '<number> <name>'")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path} lists a class twice; each class must appear once")
    return names, numbered


def _class_folders(root: Path) -> list[str]:
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and any(_videos_under(entry))
    )


def _videos_under(folder: Path):
    return (path for path in folder.rglob("*") if path.is_file() and is_video_file(path))


def _read_split_file(
    root: Path, path: Path, class_names: list[str], numbered_labels: dict[str, str]
) -> tuple[VideoSample, ...]:
    index_of = {name: index for index, name in enumerate(class_names)}
    samples: list[VideoSample] = []
    missing: list[str] = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        relative = tokens[0]
        label_token = tokens[1] if len(tokens) > 1 else Path(relative).parts[0]
        label_name = numbered_labels.get(label_token, label_token)
        if label_name not in index_of:
            raise DatasetError(
                f"{path}, line {line_number}: label {label_token!r} of {relative} is not a known class "
                f"({len(class_names)} classes: {', '.join(class_names[:8])}{' ...' if len(class_names) > 8 else ''}); "
                "fix the line or list the class in classes.txt"
            )
        video = root / relative
        if not video.is_file():
            missing.append(f"{relative} (line {line_number})")
            continue
        samples.append(VideoSample(video, index_of[label_name]))
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise DatasetError(
            f"{path} names {len(missing)} file(s) that do not exist under {root}: {listed}{more}; "
            "restore the files or remove their lines"
        )
    return tuple(samples)


def _split_folders(
    root: Path, class_names: list[str], *, val_fraction: float, test_fraction: float
) -> dict[str, tuple[VideoSample, ...]]:
    splits: dict[str, list[VideoSample]] = {name: [] for name in SPLIT_NAMES}
    for label, name in enumerate(class_names):
        folder = root / name
        videos = sorted(_videos_under(folder)) if folder.is_dir() else []
        # Ordered by a hash of the relative path: a stable, well-mixed order.
        videos.sort(key=lambda video: hashlib.blake2b(str(video.relative_to(root)).encode(), digest_size=8).digest())
        val_count = round(len(videos) * val_fraction)
        test_count = round(len(videos) * test_fraction)
        parts = {
            "val": videos[:val_count],
            "test": videos[val_count : val_count + test_count],
            "train": videos[val_count + test_count :],
        }
        for split, paths in parts.items():
            splits[split].extend(VideoSample(path, label) for path in sorted(paths))
    return {name: tuple(samples) for name, samples in splits.items()}

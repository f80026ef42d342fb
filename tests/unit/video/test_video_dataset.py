"""Finding a dataset's videos, classes and splits, and failing early on a broken one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from globetrain.video.actions import CLASS_NAMES
from globetrain.video.dataset import DatasetError, load_dataset


def _folder_dataset(root: Path, write_clip, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        for index in range(count):
            write_clip(f"{root.name}/{name}/{name}_{index}.mp4", clip_index=index)
    return root


def test_split_files_of_the_synthetic_set(tiny_dataset: Path):
    dataset = load_dataset(tiny_dataset)
    assert dataset.layout == "split-files"
    assert dataset.class_names == CLASS_NAMES
    assert [len(dataset.split(name)) for name in ("train", "val", "test")] == [16, 8, 8]
    for sample in dataset.split("val"):
        assert sample.path.parent.name == CLASS_NAMES[sample.label]


def test_folder_per_class_is_split_deterministically_and_per_class(tmp_path: Path, write_clip):
    root = _folder_dataset(tmp_path / "clips", write_clip, {"walk": 10, "run": 10})
    first = load_dataset(root, val_fraction=0.2, test_fraction=0.1)
    second = load_dataset(root, val_fraction=0.2, test_fraction=0.1)
    assert first.layout == "folder-per-class"
    assert first.class_names == ("run", "walk")
    assert first.splits == second.splits
    for split, per_class in (("train", 7), ("val", 2), ("test", 1)):
        labels = [sample.label for sample in first.split(split)]
        assert labels.count(0) == labels.count(1) == per_class


def test_ucf101_style_numbered_classes_and_labels(tmp_path: Path, write_clip):
    root = _folder_dataset(tmp_path / "ucf", write_clip, {"Archery": 1, "Bowling": 1})
    (root / "classes.txt").write_text("1 Archery\n2 Bowling\n")
    (root / "train.txt").write_text("Archery/Archery_0.mp4 1\nBowling/Bowling_0.mp4 2\n")
    dataset = load_dataset(root)
    assert [(sample.path.name, sample.label) for sample in dataset.split("train")] == [
        ("Archery_0.mp4", 0),
        ("Bowling_0.mp4", 1),
    ]


def test_a_folder_without_videos_fails_at_start(tmp_path: Path):
    (tmp_path / "walk").mkdir()
    (tmp_path / "walk" / "readme.txt").write_text("no videos here")
    with pytest.raises(DatasetError, match="no videos .* found in"):
        load_dataset(tmp_path)


def test_a_missing_folder_says_how_to_make_one(tmp_path: Path):
    with pytest.raises(DatasetError, match="globetrain video synth"):
        load_dataset(tmp_path / "nowhere")


def test_a_split_file_naming_missing_files_fails_at_start_naming_them(tmp_path: Path, tiny_dataset: Path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    victim = (root / "val.txt").read_text().splitlines()[2]
    (root / victim).unlink()
    with pytest.raises(DatasetError, match=rf"val.txt names 1 file\(s\) that do not exist .*{victim} \(line 3\)"):
        load_dataset(root)


def test_an_unknown_label_fails_naming_the_line(tmp_path: Path, write_clip):
    root = _folder_dataset(tmp_path / "set", write_clip, {"walk": 1, "run": 1})
    (root / "train.txt").write_text("walk/walk_0.mp4\nrun/run_0.mp4 swim\n")
    with pytest.raises(DatasetError, match="line 2: label 'swim'"):
        load_dataset(root)

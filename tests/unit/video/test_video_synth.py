"""The synthetic dataset: real decodable files, deterministic, order-only mirror classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from globetrain.video.actions import CLASS_NAMES
from globetrain.video.files import read_video
from globetrain.video.scenes import render_clip
from globetrain.video.synth import DatasetFolderError, generate

SETTINGS = {"clips_per_class": 2, "frames": 6, "size": 32, "val_fraction": 0.0, "test_fraction": 0.5}


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_the_same_seed_writes_the_same_bytes_whatever_the_worker_count(tmp_path: Path):
    generate(tmp_path / "a", seed=5, workers=1, classes=["move_left", "rotate_cw"], **SETTINGS)
    generate(tmp_path / "b", seed=5, workers=2, classes=["move_left", "rotate_cw"], **SETTINGS)
    generate(tmp_path / "c", seed=6, workers=1, classes=["move_left", "rotate_cw"], **SETTINGS)
    first, second, other = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert first == second
    videos = [name for name in first if name.endswith(".mp4")]
    assert len(videos) == 4
    assert all(first[name] != other[name] for name in videos)


def test_files_decode_with_pyav_in_the_folder_per_class_layout(tiny_dataset: Path):
    for name in CLASS_NAMES:
        videos = sorted((tiny_dataset / name).glob("*.mp4"))
        assert len(videos) == 4
        frames = read_video(videos[0], frame_size=32)
        assert frames.shape == (8, 32, 32, 3)
        assert frames.std() > 5  # a picture, not a blank


def test_split_files_cover_every_clip_once(tiny_dataset: Path):
    listed = [
        line for split in ("train", "val", "test") for line in (tiny_dataset / f"{split}.txt").read_text().splitlines()
    ]
    on_disk = sorted(str(path.relative_to(tiny_dataset)) for path in tiny_dataset.rglob("*.mp4"))
    assert sorted(listed) == on_disk
    assert (tiny_dataset / "classes.txt").read_text().split() == list(CLASS_NAMES)
    description = json.loads((tiny_dataset / "dataset.json").read_text())
    assert description["split_sizes"] == {"train": 16, "val": 8, "test": 8}


def test_a_mirror_class_is_its_motion_played_backwards():
    # Same random stream, so the same background, shape, path and noise: only the order differs.
    forwards = render_clip(np.random.default_rng(7), "rotate", frames=6, size=32, reverse=False)
    backwards = render_clip(np.random.default_rng(7), "rotate", frames=6, size=32, reverse=True)
    assert np.array_equal(backwards, forwards[::-1])
    assert not np.array_equal(backwards, forwards)


@pytest.mark.parametrize("motion", ["translate_x", "translate_y", "rotate", "zoom"])
def test_the_shape_moves_and_stays_in_the_picture(motion):
    clip = render_clip(np.random.default_rng(1), motion, frames=6, size=64, reverse=False).astype(int)
    background = np.median(clip, axis=0)
    changed = [np.abs(frame - background).sum(axis=-1) > 60 for frame in clip]
    assert all(mask.any() for mask in changed)
    assert not np.array_equal(changed[0], changed[-1])
    for mask in changed:  # nothing touches the border: the whole shape is in view
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_an_existing_dataset_is_only_replaced_with_overwrite(tmp_path: Path):
    root = tmp_path / "data"
    generate(root, workers=1, classes=["zoom_in", "zoom_out"], **SETTINGS)
    with pytest.raises(DatasetFolderError, match="--overwrite"):
        generate(root, workers=1, classes=["zoom_in", "zoom_out"], **SETTINGS)
    generate(root, workers=1, classes=["zoom_in", "zoom_out"], overwrite=True, **SETTINGS)
    assert len(list(root.rglob("*.mp4"))) == 4


def test_a_folder_with_other_files_is_never_written_into(tmp_path: Path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(DatasetFolderError, match="not empty"):
        generate(tmp_path, workers=1, overwrite=True, **SETTINGS)
    assert [path.name for path in tmp_path.iterdir()] == ["thesis.tex"]

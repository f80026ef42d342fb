"""The checkpoint format: round trip, atomic writes, and the refusals."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

import globetrain.checkpoint as checkpoint_module
from globetrain.checkpoint import Checkpoint, CheckpointError, CheckpointMismatch, load_checkpoint, save_checkpoint

CLASSES = ("left", "right", "up")


def _checkpoint(value: float = 1.0, **changes) -> Checkpoint:
    fields = {
        "model_name": "tsm-small",
        "class_names": CLASSES,
        "model_state": {"weight": torch.full((2, 3), value), "bias": torch.zeros(3)},
        "config": {"model": {"name": "tsm-small"}, "train": {"epochs": 3}},
        "extra": {"epoch": 2, "optimizer": {"state": {0: {"step": torch.tensor(5.0)}}, "param_groups": [{"lr": 0.1}]}},
    }
    return Checkpoint(**{**fields, **changes})


def test_round_trip_keeps_every_field(tmp_path: Path):
    path = tmp_path / "runs" / "model.pt"
    save_checkpoint(path, _checkpoint(2.5))

    loaded = load_checkpoint(path, expect_model="tsm-small", expect_classes=CLASSES)

    assert loaded.model_name == "tsm-small"
    assert loaded.class_names == CLASSES
    assert torch.equal(loaded.model_state["weight"], torch.full((2, 3), 2.5))
    assert loaded.config == {"model": {"name": "tsm-small"}, "train": {"epochs": 3}}
    assert loaded.extra["epoch"] == 2
    assert torch.equal(loaded.extra["optimizer"]["state"][0]["step"], torch.tensor(5.0))
    assert loaded.format_version == checkpoint_module.FORMAT_VERSION


def test_another_model_is_refused_naming_both(tmp_path: Path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, _checkpoint())
    with pytest.raises(CheckpointMismatch, match="holds model 'tsm-small', not 'conv3d-small'"):
        load_checkpoint(path, expect_model="conv3d-small")


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (("left", "right"), r"it has \['up'\] in addition"),
        (("left", "right", "up", "down"), r"it lacks \['down'\]"),
        (("right", "left", "up"), "another order"),
    ],
)
def test_different_classes_are_refused_saying_how_they_differ(tmp_path: Path, classes, message):
    path = tmp_path / "model.pt"
    save_checkpoint(path, _checkpoint())
    with pytest.raises(CheckpointMismatch, match=message):
        load_checkpoint(path, expect_classes=classes)


def test_a_full_disk_mid_write_raises_clearly_and_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, _checkpoint(1.0))
    old_bytes = path.read_bytes()

    def write_half_then_fail(payload, file):
        file.write(b"\x00" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "_serialize", write_half_then_fail)
    with pytest.raises(CheckpointError, match="disk is full.*unchanged"):
        save_checkpoint(path, _checkpoint(9.0))

    assert path.read_bytes() == old_bytes
    assert sorted(item.name for item in tmp_path.iterdir()) == ["model.pt"]  # no temporary left behind


def test_torch_s_own_writer_failing_on_a_full_disk_is_a_checkpoint_error(tmp_path: Path, monkeypatch):
    # torch's zip writer reports a failed write as a RuntimeError ("unexpected pos ...").
    path = tmp_path / "model.pt"
    save_checkpoint(path, _checkpoint(1.0))
    old_bytes = path.read_bytes()
    real_serialize = checkpoint_module._serialize

    class FullAfterAKilobyte:
        def __init__(self, file):
            self.file, self.written = file, 0

        def write(self, data):
            if self.written + len(data) > 1024:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

    monkeypatch.setattr(checkpoint_module, "_serialize", lambda payload, file: real_serialize(payload, FullAfterAKilobyte(file)))
    with pytest.raises(CheckpointError, match="could not write checkpoint.*unchanged"):
        save_checkpoint(path, _checkpoint(9.0))

    assert path.read_bytes() == old_bytes
    assert sorted(item.name for item in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"definitely not a checkpoint",
        lambda data: b"",
    ],
    ids=["truncated", "garbage", "empty"],
)
def test_a_corrupt_file_is_a_clear_error(tmp_path: Path, damage):
    path = tmp_path / "model.pt"
    save_checkpoint(path, _checkpoint())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match="not a readable globetrain checkpoint"):
        load_checkpoint(path)


def test_a_torch_file_that_is_not_ours_or_is_newer_is_refused(tmp_path: Path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a globetrain checkpoint"):
        load_checkpoint(foreign)

    newer = tmp_path / "newer.pt"
    torch.save({"format": "globetrain-checkpoint", "format_version": 99}, newer)
    with pytest.raises(CheckpointError, match="newer than this globetrain reads"):
        load_checkpoint(newer)


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_extra_must_hold_only_values_that_load_back(tmp_path: Path):
    with pytest.raises(TypeError, match=r"extra\['sampler'\] is a object"):
        save_checkpoint(tmp_path / "model.pt", _checkpoint(extra={"sampler": object()}))
    assert not (tmp_path / "model.pt").exists()

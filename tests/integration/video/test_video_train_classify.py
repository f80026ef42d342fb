"""End to end through the command line: synth, train, classify, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from globetrain.cli.main import main
from globetrain.video.dataset import load_dataset
from globetrain.video.frame_source import FrameSource
from globetrain.video.loader import ClipLoader
from globetrain.video.trained_model import load_trained_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny synthetic set with one damaged training clip, and a 2-epoch run on it."""
    base = tmp_path_factory.mktemp("video-e2e")
    data, out = base / "data", base / "run"
    argv = ["video", "synth", "--out", str(data), "--clips-per-class", "4", "--frames", "8", "--size", "32", "--workers", "1"]
    assert main(argv) == 0
    damaged = data / (data / "train.txt").read_text().splitlines()[0]
    damaged.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)  # looks like an MP4, is not
    argv = ["train", "--data", str(data), "--epochs", "2", "--threads", "1", "--out", str(out)]
    assert main([*argv, "--cache-dir", str(base / "cache"), "--set", "data.batch_size=8"]) == 0
    return {"data": data, "out": out, "damaged": damaged, "cache": base / "cache"}


def test_training_writes_checkpoint_metrics_summary_and_plot(trained_run):
    out = trained_run["out"]
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert [record["epoch"] for record in summary["history"]] == [1, 2]
    assert (out / "training.png").stat().st_size > 1000
    events = [json.loads(line)["event"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert events == ["start", "epoch", "epoch", "end"]

    trained = load_trained_model(out / "model.pt")
    assert trained.checkpoint.model_name == "tsm-small"
    assert trained.class_names == load_dataset(trained_run["data"]).class_names
    assert trained.config.data.batch_size == 8  # the full resolved config travels with the weights
    assert trained.checkpoint.extra["epoch"] == 1


def test_the_damaged_clip_was_skipped_and_counted_not_fatal(trained_run):
    summary = json.loads((trained_run["out"] / "summary.json").read_text())
    assert list(summary["loading"]["skipped"]) == [str(trained_run["damaged"])]
    assert summary["clips_trained"] == 2 * (16 - 1)


def test_classify_labels_files_and_reports_a_non_video_without_stopping(trained_run, tmp_path: Path, capsys):
    dataset = load_dataset(trained_run["data"])
    good = [sample.path for sample in dataset.split("test")[:2]]
    not_video = tmp_path / "notes.txt"
    not_video.write_text("hello")
    files = [good[0], not_video, good[1]]

    code = main(["classify", *map(str, files), "--checkpoint", str(trained_run["out"] / "model.pt"), "--json"])

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [line["file"] for line in lines] == [str(file) for file in files]
    assert set(lines[0]) == {"file", "label", "confidence", "error"}
    for line in (lines[0], lines[2]):
        assert line["error"] is None and line["label"] in dataset.class_names and 0.0 < line["confidence"] <= 1.0
    assert lines[1]["label"] is None and "unreadable" in lines[1]["error"]


def test_classify_agrees_with_evaluation_on_the_same_clips(trained_run, capsys):
    dataset = load_dataset(trained_run["data"])
    samples = dataset.split("test")
    trained = load_trained_model(trained_run["out"] / "model.pt")
    loader = ClipLoader(samples, FrameSource(frame_size=32, max_frames=32), frames=8, batch_size=len(samples), training=False)
    with torch.no_grad():
        expected = [dataset.class_names[index] for index in trained.model(next(iter(loader)).clips).argmax(dim=1)]

    assert main(["classify", *(str(sample.path) for sample in samples), "--checkpoint", str(trained_run["out"] / "model.pt")]) == 0
    printed = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert printed == expected


def test_resuming_with_another_model_is_refused(trained_run, tmp_path: Path, capsys):
    argv = ["train", "--resume", str(trained_run["out"] / "model.pt"), "--model", "conv3d-small", "--out", str(tmp_path / "r")]
    assert main([*argv, "--cache-dir", str(trained_run["cache"])]) == 2
    assert "holds model 'tsm-small', not 'conv3d-small'" in capsys.readouterr().err


def test_resuming_on_a_dataset_with_other_classes_is_refused(trained_run, tmp_path: Path, capsys):
    data = tmp_path / "other"
    assert main(["video", "synth", "--out", str(data), "--clips-per-class", "2", "--frames", "8", "--size", "32", "--workers", "1", "--classes", "zoom_in,zoom_out"]) == 0
    argv = ["train", "--resume", str(trained_run["out"] / "model.pt"), "--data", str(data), "--out", str(tmp_path / "r")]
    assert main([*argv, "--cache-dir", str(trained_run["cache"])]) == 2
    assert "trained on different classes" in capsys.readouterr().err


def test_a_dataset_folder_without_videos_fails_at_start(tmp_path: Path, capsys):
    (tmp_path / "walk").mkdir()
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no videos" in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.pt").exists()


def test_resuming_continues_from_the_saved_epoch(trained_run, tmp_path: Path, capsys):
    argv = ["train", "--resume", str(trained_run["out"] / "model.pt"), "--epochs", "3", "--out", str(tmp_path / "more")]
    assert main([*argv, "--cache-dir", str(trained_run["cache"])]) == 0
    summary = json.loads((tmp_path / "more" / "summary.json").read_text())
    assert [record["epoch"] for record in summary["history"]] == [3]
    assert load_trained_model(tmp_path / "more" / "model.pt").checkpoint.extra["epoch"] == 2


def test_one_device_can_train_on_its_own_shard(trained_run, tmp_path: Path, capsys):
    argv = ["train", "--data", str(trained_run["data"]), "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "shard")]
    argv += ["--set", "data.num_shards=4", "--set", "data.shard_index=1", "--set", "data.shard_mode=by-class"]
    assert main([*argv, "--cache-dir", str(trained_run["cache"])]) == 0
    summary = json.loads((tmp_path / "shard" / "summary.json").read_text())
    assert summary["clips_trained"] == 4  # 2 of 8 classes, 2 training clips each
    assert "8 classes, 4 train / 8 val" in capsys.readouterr().err


def test_the_model_table_lists_parameters_and_flops(capsys):
    assert main(["video", "models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tsm-small"]["flops_per_clip"] == rows["frame-average-small"]["flops_per_clip"]
    assert rows["conv3d-small"]["parameters"] > rows["tsm-small"]["parameters"]

"""The tiny debug preset is the integration test of the main job (style.md item 3).

``globetrain demo --preset debug --devices 3``: a bootstrap and three device processes
on loopback train a tiny model on a handful of synthetic clips in 2-second rounds and
write every output; a Ctrl+C to another such demo ends every child, exits 130 and still
writes a partial report, without a traceback.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_processes import LIVENESS_TIMEOUT_S, Processes, lines, process_alive, wait_for

from globetrain.fleet.app.demo_report import missing_fields
from globetrain.sim.calibration import read_demo_run  # the simulator reads demo runs: keep its fields

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory):
    processes = Processes(tmp_path_factory.mktemp("demo"))
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def finished_demo(processes: Processes) -> Path:
    out = processes.directory / "out"
    demo = processes.start("demo", ["demo", "--preset", "debug", "--devices", "3", "--out", str(out), "--round-models"])
    code = demo.wait(timeout=3 * LIVENESS_TIMEOUT_S)
    assert code == 0, demo.output()[-4000:]
    return out


def test_the_debug_demo_writes_every_output(finished_demo: Path, processes: Processes):
    summary = json.loads((finished_demo / "summary.json").read_text())
    assert missing_fields(summary) == []
    assert summary["devices"] == 3 and summary["method"] == "two-step" and summary["partial"] is False
    assert summary["stopped_by"] in ("budget", "target")
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["exchanges_succeeded"] > 0
    assert 0 < summary["bytes_sent_per_device"] < summary["dense_bytes_per_device"]
    assert 0.0 < summary["compute_fraction"] <= 1.0
    for name in ("progress.png", "device_time.png", "report.md", "checkpoint.pt"):
        assert (finished_demo / name).stat().st_size > 0, name
    assert "globetrain demo: 3 devices, two-step" in (finished_demo / "report.md").read_text()
    assert processes.leftovers() == []


def test_every_device_wrote_round_lines_with_the_fields_the_simulator_reads(finished_demo: Path):
    rounds = lines(finished_demo / "metrics.jsonl", "round")
    assert {row["device"] for row in rounds} == {"device-0", "device-1", "device-2"}
    run = read_demo_run(finished_demo)  # checks every round line's fields and types
    assert run.devices == 3 and run.total_samples > 0
    assert any(row["status"] == "applied" for row in rounds)


def test_the_round_curve_evaluates_every_kept_round_model_as_the_bootstrap_did(finished_demo: Path, processes: Processes):
    kept = sorted((finished_demo / "bootstrap" / "round_models").glob("round-*.pt"))
    assert len(kept) >= 2
    result = subprocess.run(
        [sys.executable, "-m", "globetrain.validation.round_curve", str(finished_demo), "--threads", "1"],
        capture_output=True, text=True, timeout=LIVENESS_TIMEOUT_S, env=processes.environment(),
    )
    assert result.returncode == 0, result.stderr
    curve = json.loads((finished_demo / "round_curve.json").read_text())
    assert [point["round"] for point in curve["rounds"]] == [int(path.stem.split("-")[1]) for path in kept]
    assert (finished_demo / "round_curve.png").stat().st_size > 0
    # The bootstrap evaluated the same global model at some rounds, on the same (whole) split.
    by_round = {point["round"]: point["val_accuracy"] for point in curve["rounds"]}
    evaluated = [row for row in lines(finished_demo / "bootstrap" / "metrics.jsonl", "evaluation") if row["round"] in by_round]
    assert evaluated
    for row in evaluated:
        assert by_round[row["round"]] == pytest.approx(row["val_accuracy"], abs=1e-3), row


def test_classify_accepts_the_demo_checkpoint(finished_demo: Path, processes: Processes):
    data = Path(json.loads((finished_demo / "summary.json").read_text())["data"])
    videos = [str(data / line) for line in (data / "test.txt").read_text().split()[:2]]
    result = subprocess.run(
        [sys.executable, "-m", "globetrain", "classify", *videos, "--checkpoint", str(finished_demo / "checkpoint.pt"), "--json"],
        capture_output=True, text=True, timeout=LIVENESS_TIMEOUT_S, env=processes.environment(),
    )
    assert result.returncode == 0, result.stderr
    predictions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["file"] for p in predictions] == videos
    classes = (data / "classes.txt").read_text().split()
    assert all(p["error"] is None and p["label"] in classes for p in predictions)


def test_ctrl_c_ends_every_child_and_writes_a_partial_report(processes: Processes, finished_demo: Path):
    # The dataset is cached by the first demo, so this one starts its fleet at once. Its
    # folder holds a finished run's outputs (a rerun of `make demo`) and a file of the user's.
    out = processes.directory / "interrupted"
    shutil.copytree(finished_demo, out)
    (out / "notes.txt").write_text("mine")
    old_pids = {record["pid"] for path in (finished_demo / "devices").glob("*/metrics.jsonl") for record in lines(path, "joined")}
    assert len(old_pids) == 3
    demo = processes.start("demo-interrupted", ["demo", "--preset", "debug", "--devices", "3", "--out", str(out),
                                                "--time-budget", "600"])
    device_metrics = [out / "devices" / f"device-{index}" / "metrics.jsonl" for index in range(3)]

    def every_new_device_finished_a_round() -> bool:
        joined = [lines(path, "joined") for path in device_metrics]
        fresh = all(records and records[0]["pid"] not in old_pids for records in joined)
        return (fresh and all(lines(path, "round") for path in device_metrics)) or not demo.alive()

    wait_for(every_new_device_finished_a_round, LIVENESS_TIMEOUT_S, "every device to finish a round")
    assert demo.alive(), demo.output()[-3000:]
    started = [lines(path, "joined")[0] for path in device_metrics] + lines(out / "bootstrap" / "metrics.jsonl", "started")
    pids = [record["pid"] for record in started] + [record["daemon_pid"] for record in started]

    demo.popen.send_signal(signal.SIGINT)
    code = demo.wait(timeout=60)

    assert code in (0, 130), demo.output()[-3000:]
    assert "Traceback" not in demo.output()
    assert [pid for pid in pids if process_alive(pid)] == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "interrupted" and summary["partial"] is True
    assert missing_fields(summary) == []
    assert "partial report" in (out / "report.md").read_text()
    for path in device_metrics:
        assert lines(path, "finished"), f"{path.parent.name} did not leave cleanly"
        assert len(lines(path, "joined")) == 1, "the earlier run's metrics were not cleared"
    assert (out / "notes.txt").read_text() == "mine"

"""`globetrain simulate` end to end: a run folder, a resumable sweep, and refusals of bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from globetrain.sim.reference import MachineReference, ModelReference

pytestmark = pytest.mark.integration
TIMEOUT_S = 240


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    """A fixed speed anchor, so the CLI measures nothing and runs are reproducible."""
    shapes = ((128, 32), (128,), (10, 128), (10,))
    model = ModelReference(
        name="tsm-small", parameters=128 * 32 + 128 + 1280 + 10, shapes=shapes, flops_per_clip=1_000_000,
        clips_per_s=50.0, gemm_gflops=25.0, clips_per_gemm_gflop=2.0, batch_size=16, activation_bytes_per_clip=10_000,
    )
    path = tmp_path / "reference.json"
    MachineReference("test", "fixed", "any", {"tsm-small": model}).save(path)
    return path


def globetrain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "globetrain", *args], capture_output=True, text=True, timeout=TIMEOUT_S)


def test_simulate_writes_a_run_folder(tmp_path, reference) -> None:
    out = tmp_path / "run"
    result = globetrain(
        "simulate", "--devices", "3", "--fleet", "campus-lan", "--method", "two-step", "--out", str(out),
        "--max-hours", "0.05", "--keep-going", "--no-progress", "--reference", str(reference), "--proxy-hidden", "16",
        "--proxy-train-samples", "2000", "--samples-per-device", "100",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    for name, kind in [("method", str), ("devices", int), ("val_accuracy", float), ("steps", int),
                       ("model_parameters", int), ("bytes_sent_per_device", float), ("median_uplink_mbps", float),
                       ("compute_utilization", float), ("scaling_efficiency", float)]:
        assert isinstance(summary[name], kind), name
    assert "time_to_target_s" in summary and "proxy_model" in summary
    assert summary["devices"] == 3 and summary["method"] == "two-step"
    assert 0 <= summary["val_accuracy"] <= 1 and 0 < summary["compute_utilization"] <= 1
    with open(out / "curve.csv") as handle:
        assert len(list(csv.DictReader(handle))) == summary["steps"] + 1
    for name in ("devices.csv", "fleet.json", "machine_reference.json", "accuracy.png"):
        assert (out / name).stat().st_size > 0
    assert "two-step on campus-lan with 3 devices" in result.stdout


def test_sweep_draws_figures_and_resumes(tmp_path, reference) -> None:
    out = tmp_path / "sweep"
    arguments = [
        "simulate", "sweep", "--out", str(out), "--sizes", "1,2", "--methods", "two-step,dense-sync",
        "--tolerance", "churn", "--tolerance-devices", "2", "--factors", "1,10", "--fleet", "campus-lan",
        "--max-hours", "0.02", "--no-progress", "--reference", str(reference), "--proxy-hidden", "8",
        "--proxy-train-samples", "2000", "--samples-per-device", "100",
    ]
    first = globetrain(*arguments)
    assert first.returncode == 0, first.stderr
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 8
    figures = json.loads((out / "figures.json").read_text())
    assert set(figures["scaling"]) == {"two-step", "dense-sync"}
    assert (out / "scaling.png").stat().st_size > 0 and (out / "tolerance.png").stat().st_size > 0
    again = globetrain(*arguments)
    assert again.returncode == 0, again.stderr
    assert (out / "results.jsonl").read_text().splitlines() == lines


def test_bad_names_and_files_are_refused_with_the_valid_choices(tmp_path) -> None:
    result = globetrain("simulate", "--method", "gossip", "--no-progress")
    assert result.returncode == 2 and "valid methods are" in result.stderr and "two-step" in result.stderr
    result = globetrain("simulate", "--fleet", "atlantis", "--no-progress")
    assert result.returncode == 2 and "global-iot" in result.stderr
    bad = tmp_path / "fleet.json"
    bad.write_text(json.dumps({"name": "x"}))
    result = globetrain("simulate", "--fleet", str(bad), "--no-progress")
    assert result.returncode == 2 and "missing" in result.stderr and str(bad) in result.stderr

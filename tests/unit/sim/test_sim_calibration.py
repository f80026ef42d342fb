"""Calibration: fit device speed to a (synthetic) demo run folder, predict another run's time.

The synthetic runs follow the demo's documented output: metrics.jsonl lines per device and
round, summary.json with devices, method and wall_seconds. Their devices share 2 cores of a
machine that trains 40 clips/s in all, as the demo's processes share this machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from globetrain.errors import ConfigError
from globetrain.sim.calibration import calibrate_and_predict, fit_compute, read_demo_run

MACHINE_CLIPS_PER_S = 40.0
CORES = 2
PERIOD = 10.0
BATCH = 8


def write_demo_run(folder: Path, devices: int, rounds: int, *, seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    speed = MACHINE_CLIPS_PER_S / max(devices, CORES)
    lines = []
    for device in range(devices):
        for round_index in range(rounds):
            step = BATCH / (speed * rng.lognormal(0.0, 0.03))
            steps = math.ceil(PERIOD / step)
            lines.append({
                "t": (round_index + 1) * PERIOD + 0.01 * device, "device": f"dev{device}", "round": round_index,
                "inner_steps": steps, "samples": steps * BATCH, "compute_s": steps * step, "wait_s": 0.0,
                "bytes_sent": 5000, "bytes_received": 9000, "density": 0.01, "bits": 8,
            })
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (folder / "summary.json").write_text(json.dumps({
        "devices": devices, "method": "two-step", "wall_seconds": rounds * PERIOD + 5.0, "val_accuracy": 0.5,
        "round_period_s": PERIOD,
    }))
    return folder


def test_the_fit_recovers_the_machine_throughput(tmp_path) -> None:
    run = read_demo_run(write_demo_run(tmp_path / "a", 3, 12))
    fit = fit_compute(run, cores=CORES)
    assert fit.machine_clips_per_s == pytest.approx(MACHINE_CLIPS_PER_S, rel=0.05)
    assert fit.device_speed(4) == pytest.approx(MACHINE_CLIPS_PER_S / 4, rel=0.05)
    assert fit.device_speed(1) == pytest.approx(MACHINE_CLIPS_PER_S / 2, rel=0.05)
    assert run.batch_size() == BATCH and run.round_period_s() == PERIOD


def test_a_held_out_run_with_other_n_is_predicted_within_25_percent(tmp_path, reference) -> None:
    report = calibrate_and_predict(write_demo_run(tmp_path / "a", 2, 12), write_demo_run(tmp_path / "b", 5, 12, seed=1),
                                   cores=CORES, reference=reference)
    prediction = report["prediction"]
    assert prediction["devices"] == 5
    assert abs(prediction["error"]) < 0.25
    assert abs(report["self_check"]["error"]) < 0.25


def test_bad_run_folders_are_refused_with_what_is_wrong(tmp_path) -> None:
    with pytest.raises(ConfigError, match="metrics.jsonl is missing|summary.json is missing"):
        read_demo_run(tmp_path)
    folder = write_demo_run(tmp_path / "bad", 2, 2)
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["compute_s"]
    (folder / "metrics.jsonl").write_text("\n".join([lines[0], json.dumps(broken)]) + "\n")
    with pytest.raises(ConfigError, match="line 2: missing field 'compute_s'"):
        read_demo_run(folder)

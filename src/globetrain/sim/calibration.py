"""Calibration against reality: fit device speed to one real demo run, predict another.

A ``globetrain demo`` run folder holds ``metrics.jsonl`` (one line per device and round:
``t``, ``device``, ``round``, ``inner_steps``, ``samples``, ``compute_s``, ``wait_s``,
``bytes_sent``, ``bytes_received``, ``density``, ``bits``) and ``summary.json``
(``devices``, ``method``, ``wall_seconds``, ... as in design.md).

The fit (``fit_compute``): each device's speed is its samples over its compute seconds;
the demo's devices share this machine's cores, so the machine's throughput is their sum,
and one core's share is that over min(devices, cores). The spread of speeds between
devices and from round to round becomes the fleet's ``compute_spread`` and ``step_jitter``.

The prediction (``predict``): a device of a run with N devices computes at
one core's share x min(N, cores) / N; the simulator then runs that run's N and method on
a loopback fleet (``localhost``) for as long as the real run lasted, and the time the
predicted fleet needs to process the real run's samples is compared with the real run's
training time (first step to last boundary in its metrics).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from globetrain.errors import ConfigError
from globetrain.sim.fleets import AccessLink, Availability, DeviceShare, FleetProfile, Region
from globetrain.sim.reference import MachineReference
from globetrain.sync.proxy_task import ProxyTaskConfig

TIMING_PROXY = ProxyTaskConfig(
    classes=2, features=4, clusters_per_class=1, cluster_spread=1.0, train_samples=1000, test_samples=100, hidden=4, seed=0,
)
METRIC_FIELDS = (
    "t", "device", "round", "inner_steps", "samples", "compute_s", "wait_s", "bytes_sent", "bytes_received",
    "density", "bits",
)
SUMMARY_FIELDS = ("devices", "method", "wall_seconds")


@dataclasses.dataclass
class DemoRun:
    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def devices(self) -> int:
        return int(self.summary["devices"])

    @property
    def method(self) -> str:
        return str(self.summary["method"])

    @property
    def total_samples(self) -> int:
        return int(sum(row["samples"] for row in self.rows))

    @property
    def training_seconds(self) -> float:
        """From the first inner step (first boundary minus its compute) to the last boundary."""
        start = min(row["t"] - row["compute_s"] - row["wait_s"] for row in self.rows)
        return float(max(row["t"] for row in self.rows) - start)

    def by_device(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows:
            grouped.setdefault(str(row["device"]), []).append(row)
        for rows in grouped.values():
            rows.sort(key=lambda row: row["round"])
        return grouped

    def round_period_s(self) -> float:
        if "round_period_s" in self.summary:
            return float(self.summary["round_period_s"])
        gaps = []
        for rows in self.by_device().values():
            gaps += [b["t"] - a["t"] for a, b in zip(rows, rows[1:]) if b["round"] == a["round"] + 1]
        if not gaps:
            raise ConfigError(f"{self.path}: cannot tell the round period (no consecutive rounds in metrics.jsonl)")
        return float(statistics.median(gaps))

    def batch_size(self) -> int:
        ratios = [row["samples"] / row["inner_steps"] for row in self.rows if row["inner_steps"] > 0]
        if not ratios:
            raise ConfigError(f"{self.path}: no round with inner steps in metrics.jsonl")
        return max(1, round(statistics.median(ratios)))


def read_demo_run(path: Path) -> DemoRun:
    """Read and check a demo run folder; errors name the file, line and field."""
    path = Path(path)
    summary_path, metrics_path = path / "summary.json", path / "metrics.jsonl"
    for required in (summary_path, metrics_path):
        if not required.is_file():
            raise ConfigError(f"{path} is not a demo run folder: {required.name} is missing")
    try:
        summary = json.loads(summary_path.read_text())
    except ValueError as error:
        raise ConfigError(f"{summary_path}: not JSON ({error})") from None
    missing = [name for name in SUMMARY_FIELDS if name not in summary]
    if missing:
        raise ConfigError(f"{summary_path}: missing field(s) {missing}")
    rows = []
    for number, line in enumerate(metrics_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise ConfigError(f"{metrics_path} line {number}: not JSON ({error})") from None
        if not isinstance(row, dict) or "inner_steps" not in row:
            continue  # other kinds of lines (events) are not round records
        for name in METRIC_FIELDS:
            if name not in row:
                raise ConfigError(f"{metrics_path} line {number}: missing field {name!r}")
            if name != "device" and (not isinstance(row[name], (int, float)) or row[name] < 0):
                raise ConfigError(f"{metrics_path} line {number}: {name} = {row[name]!r} is not a number >= 0")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{metrics_path}: no round records")
    return DemoRun(path, summary, rows)


@dataclasses.dataclass(frozen=True)
class ComputeFit:
    device_clips_per_s: dict[str, float]
    machine_clips_per_s: float
    cores: int
    devices: int
    compute_spread: float
    step_jitter: float

    @property
    def core_clips_per_s(self) -> float:
        return self.machine_clips_per_s / min(self.devices, self.cores)

    def device_speed(self, devices: int) -> float:
        """Clips/s of one device when ``devices`` of them share this machine's cores."""
        return self.core_clips_per_s * min(devices, self.cores) / devices

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "core_clips_per_s": self.core_clips_per_s}


def fit_compute(run: DemoRun, *, cores: int | None = None) -> ComputeFit:
    cores = cores or os.cpu_count() or 1
    speeds, jitters = {}, []
    for device, rows in run.by_device().items():
        samples = sum(row["samples"] for row in rows)
        seconds = sum(row["compute_s"] for row in rows)
        if seconds <= 0 or samples <= 0:
            continue
        speeds[device] = samples / seconds
        per_round = [math.log(row["samples"] / row["compute_s"]) for row in rows if row["compute_s"] > 0 and row["samples"] > 0]
        if len(per_round) > 1:
            jitters.append(statistics.pstdev(per_round))
    if not speeds:
        raise ConfigError(f"{run.path}: no device has both samples and compute time; nothing to fit")
    logs = [math.log(speed) for speed in speeds.values()]
    return ComputeFit(
        device_clips_per_s=speeds,
        machine_clips_per_s=sum(speeds.values()),
        cores=cores,
        devices=len(speeds),
        compute_spread=statistics.pstdev(logs) if len(logs) > 1 else 0.0,
        step_jitter=statistics.median(jitters) if jitters else 0.0,
    )


def localhost_fleet(fit: ComputeFit) -> FleetProfile:
    """The demo's fleet: processes on this machine, talking over loopback."""
    return FleetProfile(
        name="localhost",
        description="demo devices as processes on this machine (calibration)",
        devices=(DeviceShare("x86-mini-pc", 1.0, source="stand-in class; speed from the calibration fit"),),
        access=(AccessLink(
            name="loopback", share=1.0, uplink_mbps=10_000.0, downlink_mbps=10_000.0, spread=0.0,
            access_rtt_ms=0.05, jitter_ms=0.0, evening_dip=0.0,
            source="this machine: loopback (unshaped); a shaped demo needs a fleet file with its rates",
        ),),
        regions=(Region("this-machine", 1.0, 0.0, 0.0, 0.0, source="one machine"),),
        availability=(Availability("*", mean_online_s=1e9, mean_offline_s=0.0, source="demo processes do not churn"),),
        rtt_inflation=1.0,
        rtt_inflation_source="one machine",
        compute_spread=fit.compute_spread,
        step_jitter=fit.step_jitter,
        compute_source="this machine: fitted to the demo run's per-device and per-round speeds",
    )


def predict(
    fit: ComputeFit, run: DemoRun, *, reference: MachineReference | None = None, reference_path: Path | None = None
) -> dict[str, Any]:
    """Simulate ``run``'s N and method with the fitted speed; compare times to process its samples."""
    from globetrain.sim.config import SimulationConfig
    from globetrain.sim.engine import Simulation

    measured = run.training_seconds
    speed = fit.device_speed(run.devices)
    with tempfile.TemporaryDirectory() as folder:
        if reference is None and reference_path is None:
            # The reference only sizes payloads here; measuring it at the run's batch size
            # must not overwrite the shared one (benchmarks/results) the other runs use.
            reference_path = Path(folder) / "reference.json"
        fleet_path = Path(folder) / "localhost.json"
        fleet_path.write_text(localhost_fleet(fit).to_json())
        config = SimulationConfig(
            devices=run.devices, fleet=str(fleet_path), method=run.method, seed=0,
            batch_size=run.batch_size(), round_period_s=run.round_period_s(), device_clips_per_s=speed,
            max_sim_seconds=max(measured, run.round_period_s() * 3), stop_at_target=False,
            # Only time is predicted: the proxy's math can be as small as it gets.
            proxy=TIMING_PROXY, samples_per_device=50,
        )
        result = Simulation(config, reference=reference, reference_path=reference_path).run()
    processed = float(result.per_device["inner_steps"].sum()) * config.batch_size
    simulated = float(result.summary["simulated_seconds"])
    rate = processed / simulated if simulated > 0 else 0.0
    predicted = run.total_samples / rate if rate > 0 else math.inf
    return {
        "run": str(run.path),
        "devices": run.devices,
        "method": run.method,
        "device_clips_per_s": speed,
        "samples": run.total_samples,
        "measured_training_seconds": measured,
        "predicted_training_seconds": predicted,
        "error": (predicted - measured) / measured if measured > 0 else None,
        "measured_samples_per_s": run.total_samples / measured if measured > 0 else None,
        "predicted_samples_per_s": rate,
        "simulated_compute_utilization": result.summary["compute_utilization"],
    }


def calibrate_and_predict(
    fit_run: Path, predict_run: Path | None, *, cores: int | None = None, reference: MachineReference | None = None
) -> dict[str, Any]:
    """Fit to ``fit_run``; predict it back (a consistency check) and ``predict_run`` if given.

    ``reference`` only sizes payloads (the real model's shapes); speeds come from the fit.
    """
    run = read_demo_run(fit_run)
    fit = fit_compute(run, cores=cores)
    report: dict[str, Any] = {"fit_run": str(fit_run), "fit": fit.to_dict()}
    report["self_check"] = predict(fit, run, reference=reference)
    if predict_run is not None:
        report["prediction"] = predict(fit, read_demo_run(predict_run), reference=reference)
    return report

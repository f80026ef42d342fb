"""The demo's view of its local fleet, read from the metrics files its processes write.

``FleetMonitor.poll`` reads the lines each device and the bootstrap appended since the
last poll, copies them into the demo's own ``metrics.jsonl`` (so that file grows as the
run goes, one place for every line), and keeps what the progress bars and the stop
decision need: rounds and clips per device, bytes, the latest evaluation of the global
model, and when round 0 started. ``DemoProgress`` draws it as rich progress bars.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from globetrain.report.metrics import MetricsTail, MetricsWriter


@dataclasses.dataclass
class DeviceProgress:
    name: str
    rounds: int = 0
    last_round: int = -1
    clips: int = 0
    compute_s: float = 0.0
    active_s: float = 0.0
    bytes_sent: int = 0
    finished: bool = False

    @property
    def compute_fraction(self) -> float:
        return self.compute_s / self.active_s if self.active_s > 0 else 0.0


class FleetMonitor:
    """Follows the bootstrap's and the devices' metrics files."""

    def __init__(self, *, bootstrap_metrics: Path, device_metrics: dict[str, Path], merged: MetricsWriter) -> None:
        self.bootstrap = MetricsTail(bootstrap_metrics)
        self.devices = {name: MetricsTail(path) for name, path in device_metrics.items()}
        self.merged = merged
        self.progress = {name: DeviceProgress(name) for name in device_metrics}
        self.start_time: float | None = None
        """Round 0's start (Unix time), from the bootstrap's ``started`` line."""
        self.parameters: int | None = None
        self.run_config: dict[str, Any] | None = None
        """The published run config (as the bootstrap's ``started`` line has it)."""
        self.evaluations: list[dict[str, Any]] = []
        self.fleet_line: dict[str, Any] | None = None

    def poll(self) -> None:
        for line in self.bootstrap.read_new():
            self.merged.write({"source": "bootstrap", **line})
            event = line.get("event")
            if event == "started":
                self.start_time = float(line["start_time"])
                self.parameters = int(line["parameters"])
                self.run_config = line.get("run_config")
            elif event == "evaluation":
                self.evaluations.append(line)
            elif event == "fleet":
                self.fleet_line = line
        for name, tail in self.devices.items():
            progress = self.progress[name]
            for line in tail.read_new():
                self.merged.write({"source": name, **line})
                if line.get("event") == "round":
                    progress.rounds += 1
                    progress.last_round = int(line["round"])
                    progress.clips += int(line["samples"])
                    progress.compute_s += float(line["compute_s"])
                    progress.active_s += float(line.get("round_s", 0.0))
                    progress.bytes_sent += int(line["bytes_sent"])
                elif line.get("event") == "finished":
                    progress.finished = True

    @property
    def latest_evaluation(self) -> dict[str, Any] | None:
        return self.evaluations[-1] if self.evaluations else None

    def first_reaching(self, target: float) -> dict[str, Any] | None:
        for evaluation in self.evaluations:
            accuracy = evaluation.get("val_accuracy")
            if accuracy is not None and accuracy >= target:
                return evaluation
        return None

    def training_seconds(self, now: float | None = None) -> float:
        if self.start_time is None:
            return 0.0
        return max((now or time.time()) - self.start_time, 0.0)


class DemoProgress:
    """Progress bars: the global model against the target, the time budget, each device."""

    def __init__(self, console: Console, *, devices: list[str], target: float, budget_s: float, round_period_s: float) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            refresh_per_second=2,
        )
        self.target = target
        self.model_task = self.progress.add_task("global model", total=max(target, 1e-9), info="waiting for round 0")
        self.time_task = self.progress.add_task("time budget", total=budget_s, info=f"{budget_s:.0f} s of training")
        expected_rounds = max(budget_s / round_period_s, 1.0)
        self.device_tasks: dict[str, TaskID] = {
            name: self.progress.add_task(name, total=expected_rounds, info="starting") for name in devices
        }

    def __enter__(self) -> DemoProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def update(self, monitor: FleetMonitor) -> None:
        evaluation = monitor.latest_evaluation
        if evaluation is not None and evaluation.get("val_accuracy") is not None:
            accuracy = float(evaluation["val_accuracy"])
            self.progress.update(self.model_task, completed=min(accuracy, self.target),
                                 info=f"val accuracy {accuracy:.1%} (target {self.target:.0%}, round {evaluation['round']})")
        elif monitor.start_time is not None:
            self.progress.update(self.model_task, info=f"no evaluation yet (target {self.target:.0%})")
        if monitor.start_time is not None:
            seconds = monitor.training_seconds()
            line = monitor.fleet_line or {}
            ratio = line.get("compression")
            self.progress.update(self.time_task, completed=seconds,
                                 info=f"{line.get('global_samples', 0):,} clips"
                                      + (f", {ratio:,.0f}x fewer bytes than dense" if ratio else ""))
        for name, task in self.device_tasks.items():
            device = monitor.progress[name]
            if device.rounds:
                self.progress.update(task, completed=device.rounds,
                                     info=f"round {device.last_round}, {device.clips:,} clips, "
                                          f"{device.compute_fraction:.0%} computing, sent {device.bytes_sent / 1000:.0f} KB")

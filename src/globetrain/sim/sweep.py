"""``globetrain simulate sweep``: the paper-style figures, resumable and written as they come.

Two families of runs, every method on the same fleets and seed:

- scaling: N in ``sizes`` on the base fleet -> time to the target accuracy and scaling
  efficiency against N (``scaling.png``);
- tolerance: at ``tolerance_devices`` devices, the base fleet with its bandwidth, latency or
  churn rate multiplied by each factor -> time to target against the factor
  (``tolerance.png``). Latency scales the last-mile RTT, the jitter and the route inflation
  (never below 1: light does not go faster); churn scales how often devices come and go
  (session lengths divided by the factor, availability unchanged).

Each run's folder (``runs/<family>/<method>/<label>``) holds its summary.json and curve.csv;
one line per finished run is appended to ``results.jsonl``; a run whose summary.json
matches its config is not run again, so an interrupted sweep picks up where it stopped.
Figures and ``figures.json`` are redrawn as runs finish (at most once a minute) and at the
end. A run the simulator refuses (memory) is recorded with its error and drawn as missing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from globetrain.errors import ConfigError
from globetrain.sim.config import SimulationConfig
from globetrain.sim.fleets import FleetProfile, load_fleet
from globetrain.sim.methods import sim_method

TOLERANCE_KINDS = ("bandwidth", "latency", "churn")
# Figures are redrawn at most this often while a sweep runs (drawing takes ~1 s), and at its end.
REDRAW_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    methods: list[str]
    sizes: list[int]
    tolerance: list[str]
    tolerance_devices: int
    factors: list[float]
    base: SimulationConfig

    def __post_init__(self) -> None:
        for method in self.methods:
            sim_method(method)
        for kind in self.tolerance:
            if kind not in TOLERANCE_KINDS:
                raise ConfigError(f"unknown tolerance sweep {kind!r}; valid ones are {list(TOLERANCE_KINDS)}")
        if any(size < 1 for size in self.sizes):
            raise ConfigError(f"sweep sizes must be >= 1, got {self.sizes}")
        if any(factor <= 0 for factor in self.factors):
            raise ConfigError(f"sweep factors must be > 0, got {self.factors}")


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    family: str
    method: str
    label: str
    config: SimulationConfig
    x: float
    """The figure's x value: N (scaling) or the factor (tolerance)."""

    @property
    def key(self) -> str:
        return f"{self.family}/{self.method}/{self.label}"


def scaled_fleet(profile: FleetProfile, kind: str, factor: float) -> FleetProfile:
    """The profile with its bandwidth, latency or churn rate multiplied by ``factor``."""
    if kind == "bandwidth":
        access = tuple(dataclasses.replace(a, uplink_mbps=a.uplink_mbps * factor, downlink_mbps=a.downlink_mbps * factor)
                       for a in profile.access)
        return dataclasses.replace(profile, name=f"{profile.name}-bandwidth-x{factor:g}", access=access)
    if kind == "latency":
        access = tuple(dataclasses.replace(a, access_rtt_ms=a.access_rtt_ms * factor, jitter_ms=a.jitter_ms * factor)
                       for a in profile.access)
        return dataclasses.replace(profile, name=f"{profile.name}-latency-x{factor:g}", access=access,
                                   rtt_inflation=max(profile.rtt_inflation * factor, 1.0))
    if kind == "churn":
        availability = tuple(
            dataclasses.replace(a, mean_online_s=a.mean_online_s / factor, mean_offline_s=a.mean_offline_s / factor)
            for a in profile.availability
        )
        return dataclasses.replace(profile, name=f"{profile.name}-churn-x{factor:g}", availability=availability)
    raise ConfigError(f"unknown tolerance sweep {kind!r}; valid ones are {list(TOLERANCE_KINDS)}")


class Sweep:
    def __init__(self, plan: SweepPlan, out: Path, *, reference_path: Path | None = None) -> None:
        self.plan = plan
        self.out = Path(out)
        self.reference_path = reference_path
        self.results: dict[str, dict[str, Any]] = {}

    def planned(self) -> list[PlannedRun]:
        plan, runs = self.plan, []
        for size in plan.sizes:
            for method in plan.methods:
                config = plan.base.replace(devices=size, method=method)
                runs.append(PlannedRun("scaling", method, f"N{size}", config, float(size)))
        base_fleet = load_fleet(plan.base.fleet)
        for kind in plan.tolerance:
            for factor in plan.factors:
                path = self.out / "fleets" / f"{kind}-x{factor:g}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(scaled_fleet(base_fleet, kind, factor).to_json())
                for method in plan.methods:
                    config = plan.base.replace(devices=plan.tolerance_devices, method=method, fleet=str(path))
                    runs.append(PlannedRun(kind, method, f"x{factor:g}", config, factor))
        return runs

    def run(self, *, progress: bool = True) -> dict[str, dict[str, Any]]:
        from globetrain.sim.engine import Simulation
        from globetrain.sim.report import write_run

        self.out.mkdir(parents=True, exist_ok=True)
        runs = self.planned()
        console = Console(stderr=True)
        with Progress(
            TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=not progress,
        ) as bar:
            task = bar.add_task("sweep", total=len(runs))
            last_drawn = time.monotonic()
            for planned in runs:
                bar.update(task, description=planned.key)
                folder = self.out / "runs" / planned.key
                summary = self._finished(folder, planned.config)
                if summary is None:
                    try:
                        result = Simulation(planned.config, reference_path=self.reference_path).run()
                        write_run(result, folder, plot=False)
                        summary = result.summary
                    except ConfigError as error:
                        summary = {"error": str(error), "config": planned.config.to_dict()}
                        folder.mkdir(parents=True, exist_ok=True)
                        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                    with open(self.out / "results.jsonl", "a") as handle:
                        handle.write(json.dumps({"key": planned.key, "family": planned.family, "method": planned.method,
                                                 "x": planned.x, "summary": _slim(summary)}) + "\n")
                self.results[planned.key] = summary
                if time.monotonic() - last_drawn > REDRAW_SECONDS:
                    self.draw(runs)
                    last_drawn = time.monotonic()
                bar.advance(task)
        self.draw(runs)
        return self.results

    def _finished(self, folder: Path, config: SimulationConfig) -> dict[str, Any] | None:
        path = folder / "summary.json"
        if not path.exists():
            return None
        try:
            summary = json.loads(path.read_text())
        except ValueError:
            return None
        return summary if summary.get("config") == config.to_dict() else None

    # -- figures -----------------------------------------------------------------------------------

    def draw(self, runs: list[PlannedRun]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        data: dict[str, Any] = {"scaling": {}, "tolerance": {}}
        cap_h = self.plan.base.max_sim_seconds / 3600
        for planned in runs:
            summary = self.results.get(planned.key)
            if summary is None:
                continue
            point = {
                "x": planned.x,
                "time_to_target_h": None if summary.get("time_to_target_s") is None else summary["time_to_target_s"] / 3600,
                "scaling_efficiency": summary.get("scaling_efficiency"),
                "val_accuracy": summary.get("val_accuracy"),
                "bytes_sent_per_device": summary.get("bytes_sent_per_device"),
                "error": summary.get("error"),
                "wall_guard_hit": summary.get("wall_guard_hit"),
            }
            family = "scaling" if planned.family == "scaling" else "tolerance"
            key = planned.method if family == "scaling" else f"{planned.family}/{planned.method}"
            data[family].setdefault(key, []).append(point)
        (self.out / "figures.json").write_text(json.dumps(data, indent=2) + "\n")

        if data["scaling"]:
            figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
            for method, points in data["scaling"].items():
                points = sorted(points, key=lambda p: p["x"])
                reached = [(p["x"], p["time_to_target_h"]) for p in points if p["time_to_target_h"] is not None]
                missed = [p["x"] for p in points if p["time_to_target_h"] is None and p["error"] is None]
                line = left.plot([x for x, _ in reached], [y for _, y in reached], marker="o", label=method)[0]
                if missed:
                    left.scatter(missed, [cap_h] * len(missed), marker="^", facecolors="none", edgecolors=line.get_color())
                efficient = [(p["x"], p["scaling_efficiency"]) for p in points if p["scaling_efficiency"] is not None]
                right.plot([x for x, _ in efficient], [y for _, y in efficient], marker="o", label=method)
            left.axhline(cap_h, color="grey", linestyle=":", linewidth=1)
            left.set(xscale="log", yscale="log", xlabel="devices N", ylabel="simulated hours to target",
                     title=f"time to accuracy {self.plan.base.target_accuracy:.2f} (triangles: not reached by the cap)")
            right.set(xscale="log", xlabel="devices N", ylabel="scaling efficiency", ylim=(0, 1.05),
                      title="fleet samples/s over the sum of standalone samples/s")
            left.legend(fontsize=8)
            right.legend(fontsize=8)
            figure.tight_layout()
            figure.savefig(self.out / "scaling.png", dpi=110)
            plt.close(figure)

        if data["tolerance"]:
            kinds = [kind for kind in self.plan.tolerance if any(k.startswith(kind + "/") for k in data["tolerance"])]
            figure, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4.5), squeeze=False)
            for axis, kind in zip(axes[0], kinds):
                for key, points in data["tolerance"].items():
                    if not key.startswith(kind + "/"):
                        continue
                    points = sorted(points, key=lambda p: p["x"])
                    values = [cap_h if p["time_to_target_h"] is None else p["time_to_target_h"] for p in points]
                    axis.plot([p["x"] for p in points], values, marker="o", label=key.split("/", 1)[1])
                axis.axhline(cap_h, color="grey", linestyle=":", linewidth=1)
                axis.set(xscale="log", yscale="log", xlabel=f"{kind} x factor", ylabel="simulated hours to target",
                         title=f"{kind} ({self.plan.tolerance_devices} devices; cap = not reached)")
                axis.legend(fontsize=8)
            figure.tight_layout()
            figure.savefig(self.out / "tolerance.png", dpi=110)
            plt.close(figure)


def _slim(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("method", "devices", "fleet", "val_accuracy", "time_to_target_s", "steps", "bytes_sent_per_device",
            "compute_utilization", "scaling_efficiency", "wall_seconds", "wall_guard_hit", "stopped_by", "error")
    return {key: summary[key] for key in keys if key in summary}

"""The soak: a local fleet trains for minutes; every process's memory and descriptors must stay flat.

    python -m globetrain.validation.soak --devices 16 --minutes 10 --out benchmarks/results/validation
    python -m globetrain.validation.soak --devices 4 --minutes 2        # a quick check

The fleet is ``globetrain demo``'s (the ``debug`` preset: the smallest model and data, one
torch thread per process; rounds grow with the fleet, 8 s for 16 devices on the 4-device
recipe's 2 s). From round 0 on, for ``--minutes``, every ``--interval`` seconds it samples
``VmRSS`` (/proc/PID/status) and the open descriptors (/proc/PID/fd) of every process of
every child: the bootstrap, each device, and their libp2p daemons (``soak_sampler``).

After the warm-up (the first 2 minutes, or 40% of a shorter soak) each process's curve
gets a least-squares slope and a verdict: memory flat if it grows less than 5% over the
window or less than 1 MB per minute; descriptors bounded if they rise at most 8 above
their count at the end of the warm-up. Every child must also stay alive to the end.
Outputs: ``soak.json`` (per process: slopes, growth, descriptor range, verdicts; the raw
samples in ``soak_samples.jsonl``) and ``soak.png`` (the curves).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from globetrain.config import ConfigSection, field, require
from globetrain.fleet.app.demo import DemoConfig, DemoRun
from globetrain.fleet.app.demo_monitor import FleetMonitor
from globetrain.fleet.app.signals import EXIT_INTERRUPTED, StopSignals
from globetrain.validation.soak_sampler import FlatnessRule, ProcessSample, sample, trend

DEFAULT_OUT = "benchmarks/results/validation"
DEFAULT_RUNS = "runs/validation/soak"
ROUND0_TIMEOUT_S = 300.0
"""Longest wait for round 0: 17 processes importing torch on 2 busy cores take minutes."""


@dataclasses.dataclass(frozen=True)
class SoakConfig(ConfigSection):
    """Settings of the soak."""

    devices: int = field(16, help="device processes (plus the bootstrap)")
    minutes: float = field(10.0, help="minutes of training sampled, from round 0")
    interval_s: float = field(5.0, help="seconds between two samples of every process")
    warmup_minutes: float = field(-1.0, help="minutes excluded from the trends (-1: 2, or 40% of a shorter soak)")
    preset: str = field("debug", help="demo preset (debug: the smallest model and data)")
    start_delay_s: float = field(-1.0, help="seconds from the bootstrap's start to round 0 (-1: 20 + 4 per device)")
    out: str = field(DEFAULT_OUT, help="report folder (soak.json, soak.png, soak_samples.jsonl)")
    run_dir: str = field(DEFAULT_RUNS, help="the fleet's outputs (logs, metrics, checkpoints)")

    def __post_init__(self) -> None:
        require(1 <= self.devices <= 64, "soak", "devices", self.devices, "an integer in [1, 64]")
        require(self.minutes > 0, "soak", "minutes", self.minutes, "minutes > 0")
        require(self.interval_s >= 0.5, "soak", "interval_s", self.interval_s, "seconds >= 0.5")
        require(self.warmup_minutes == -1.0 or 0 <= self.warmup_minutes < self.minutes, "soak", "warmup_minutes",
                self.warmup_minutes, "-1 or minutes in [0, minutes)")

    @property
    def resolved_warmup_minutes(self) -> float:
        return min(2.0, 0.4 * self.minutes) if self.warmup_minutes == -1.0 else self.warmup_minutes

    @property
    def resolved_start_delay_s(self) -> float:
        return 20.0 + 4.0 * self.devices if self.start_delay_s == -1.0 else self.start_delay_s


class SoakDemoRun(DemoRun):
    """The demo's fleet, watched for a fixed time while every process is sampled.

    It replaces ``DemoRun._watch`` (the demo's loop between start and shutdown), so the
    demo's start, shutdown (every process group killed at the end) and report stay.
    """

    def __init__(self, config: DemoConfig, signals: StopSignals, console: Console, soak: SoakConfig) -> None:
        super().__init__(config, signals, console, [])
        self.soak = soak
        self.samples: list[ProcessSample] = []
        self.round0: float | None = None
        self.exits: dict[str, int | None] = {}

    def _watch(self, monitor: FleetMonitor) -> str:
        soak = self.soak
        deadline_round0 = time.monotonic() + ROUND0_TIMEOUT_S
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=self.console) as progress:
            task = progress.add_task("soak (waiting for round 0)", total=soak.minutes * 60, info="")
            next_sample = time.monotonic()
            while not self.signals.stopped:
                monitor.poll()
                now = time.time()
                if time.monotonic() >= next_sample:
                    self.samples.extend(sample(self.children.children, now))
                    next_sample += soak.interval_s
                if self.round0 is None and monitor.start_time is not None and now >= monitor.start_time:
                    self.round0 = monitor.start_time
                    progress.update(task, description="soak")
                if self.round0 is None and time.monotonic() > deadline_round0:
                    return "error"
                dead = [child.name for child in self.children.children if not child.alive()]
                if dead:
                    self.exits = {child.name: child.returncode for child in self.children.children if not child.alive()}
                    progress.console.print(f"processes exited during the soak: {self.exits}")
                    return "devices-exited"
                if self.round0 is not None:
                    elapsed = now - self.round0
                    rss = sum(row.rss_kb for row in self.samples if row.t == self.samples[-1].t) / 1024 if self.samples else 0
                    progress.update(task, completed=min(elapsed, soak.minutes * 60),
                                    info=f"{len({row.key for row in self.samples})} processes, {rss:,.0f} MB resident")
                    if elapsed >= soak.minutes * 60:
                        return "budget"
                self.signals.event.wait(max(min(next_sample - time.monotonic(), 1.0), 0.05))
        return "interrupted"


def analyse(samples: list[ProcessSample], round0: float | None, exits: dict[str, int | None], config: SoakConfig,
            rule: FlatnessRule) -> dict[str, Any]:
    by_process: dict[str, list[ProcessSample]] = collections.defaultdict(list)
    for row in samples:
        by_process[row.key].append(row)
    origin = round0 or (samples[0].t if samples else 0.0)
    warmup_end = origin + 60 * config.resolved_warmup_minutes
    processes = {key: {"pid": rows[-1].pid, **trend(rows, warmup_end=warmup_end, rule=rule)}
                 for key, rows in sorted(by_process.items())}
    judged = {key: entry for key, entry in processes.items() if entry.get("flat") is not None}
    daemons = [key for key in processes if key.endswith("/p2pd")]
    return {
        "processes_sampled": len(processes),
        "python_processes": len([key for key in processes if "/" not in key]),
        "p2pd_daemons": len(daemons),
        "samples": len(samples),
        "round0_time": round0,
        "warmup_end_time": warmup_end,
        "all_flat": bool(judged) and all(entry["flat"] for entry in judged.values()),
        "not_flat": sorted(key for key, entry in judged.items() if not entry["flat"]),
        "max_rss_slope_mb_per_minute": max((e["rss_slope_mb_per_minute"] for e in judged.values()), default=None),
        "max_rss_growth_percent": max((e["rss_growth_percent_over_window"] for e in judged.values()), default=None),
        "max_fd_rise": max((e["fd_rise"] for e in judged.values()), default=None),
        "max_fd_peak_rise": max((e["fd_peak_rise"] for e in judged.values()), default=None),
        "max_fd_slope_per_minute": max((e["fd_slope_per_minute"] for e in judged.values()), default=None),
        "exited_during_soak": exits,
        "processes": processes,
    }


def plot(samples: list[ProcessSample], report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = report["analysis"]["round0_time"] or (samples[0].t if samples else 0.0)
    by_process: dict[str, list[ProcessSample]] = collections.defaultdict(list)
    for row in samples:
        by_process[row.key].append(row)
    figure, (memory, descriptors) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    for key, rows in sorted(by_process.items()):
        minutes = [(row.t - origin) / 60 for row in rows]
        style = {"color": "#c44e52" if key == "bootstrap" else "#8172b2" if key.endswith("/p2pd") else "#4c72b0",
                 "linewidth": 1.6 if key == "bootstrap" else 0.8, "alpha": 0.9}
        memory.plot(minutes, [row.rss_kb / 1024 for row in rows], **style)
        descriptors.plot(minutes, [row.fds for row in rows], **style)
    warmup = (report["analysis"]["warmup_end_time"] - origin) / 60
    for axis in (memory, descriptors):
        axis.axvline(warmup, color="gray", linestyle="--", linewidth=1)
        axis.axvline(0, color="black", linestyle=":", linewidth=1)
    memory.set_ylabel("resident memory (MB)")
    descriptors.set_ylabel("open file descriptors")
    descriptors.set_xlabel("minutes since round 0 (dotted); warm-up ends at the dashed line")
    analysis = report["analysis"]
    memory.set_title(
        f"soak: {report['config']['devices']} devices, {analysis['processes_sampled']} processes "
        f"(blue: devices, red: bootstrap, purple: p2pd) - {'flat' if analysis['all_flat'] else 'NOT FLAT'}; "
        f"max slope {analysis['max_rss_slope_mb_per_minute']} MB/min; fds: max median rise {analysis['max_fd_rise']}, "
        f"max peak {analysis['max_fd_peak_rise']}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m globetrain.validation.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=16, help="device processes (default %(default)s)")
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes sampled from round 0 (default %(default)s)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=-1.0, help="warm-up minutes (-1: 2, or 40%% of a shorter soak)")
    parser.add_argument("--preset", default="debug", help="demo preset (default %(default)s)")
    parser.add_argument("--start-delay", type=float, default=-1.0, help="seconds until round 0 (-1: 20 + 4 per device)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="report folder (default %(default)s)")
    parser.add_argument("--reanalyse", action="store_true",
                        help="run no fleet: judge the samples of the last soak in --out again (soak_samples.jsonl) "
                             "with this version's rule, and rewrite soak.json and soak.png")
    parser.add_argument("--run-dir", default=DEFAULT_RUNS, help="the fleet's logs and metrics (default %(default)s)")
    args = parser.parse_args(argv)
    config = SoakConfig(devices=args.devices, minutes=args.minutes, interval_s=args.interval, warmup_minutes=args.warmup,
                        preset=args.preset, start_delay_s=args.start_delay, out=args.out,
                        run_dir=args.run_dir)
    rule = FlatnessRule()
    console = Console()
    out = Path(config.out)
    if args.reanalyse:
        return reanalyse(out, rule, console)
    run_dir = Path(config.run_dir)
    # A reused folder would hand the demo's monitor the last run's metrics (it appends).
    shutil.rmtree(run_dir, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    demo_config = DemoConfig(devices=config.devices, out=str(run_dir), preset=config.preset, target_accuracy=1.0,
                             time_budget_s=config.minutes * 60 + 3600)
    started = time.monotonic()
    with StopSignals() as signals:
        run = SoakDemoRun(demo_config, signals, console, config)
        run.recipe = dataclasses.replace(run.recipe, start_delay_s=config.resolved_start_delay_s)
        code = run.run()
    if code == EXIT_INTERRUPTED:
        return code
    summary = json.loads((run_dir / "summary.json").read_text())
    report: dict[str, Any] = {
        "command": " ".join(["python -m globetrain.validation.soak", *sys.argv[1:]]),
        "config": config.to_dict(),
        "rule": dataclasses.asdict(rule),
        "demo": {key: summary.get(key) for key in ("stopped_by", "rounds", "val_accuracy", "exchanges_succeeded",
                                                   "exchanges_failed", "round_period_s", "wall_seconds")},
        "demo_exit_code": code,
        "analysis": analyse(run.samples, run.round0, run.exits, config, rule),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    with open(out / "soak_samples.jsonl", "w") as stream:
        for row in run.samples:
            stream.write(json.dumps(dataclasses.asdict(row)) + "\n")
    return write_report(out, report, run.samples, console)


def write_report(out: Path, report: dict[str, Any], samples: list[ProcessSample], console: Console) -> int:
    completed = report["demo"].get("stopped_by") == "budget"
    report["passed"] = completed and report["analysis"]["all_flat"] and not report["analysis"]["exited_during_soak"]
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(samples, report, out / "soak.png")
    analysis = report["analysis"]
    console.print(
        f"{'[green]flat[/]' if report['passed'] else '[red]NOT FLAT or incomplete[/]'}: {analysis['processes_sampled']} "
        f"processes ({analysis['python_processes']} Python, {analysis['p2pd_daemons']} p2pd) sampled {analysis['samples']} "
        f"times; max RSS slope {analysis['max_rss_slope_mb_per_minute']} MB/min, max growth "
        f"{analysis['max_rss_growth_percent']}%, max fd rise {analysis['max_fd_rise']} (peak {analysis['max_fd_peak_rise']}); "
        f"report {out / 'soak.json'}"
    )
    return 0 if report["passed"] else 1


def reanalyse(out: Path, rule: FlatnessRule, console: Console) -> int:
    """Judge a finished soak's samples again with ``rule`` (its first verdict is kept in the report)."""
    report = json.loads((out / "soak.json").read_text())
    samples = [ProcessSample(**json.loads(line)) for line in (out / "soak_samples.jsonl").read_text().splitlines() if line]
    config = SoakConfig.from_dict(report["config"])
    previous = {"rule": report.get("rule"), "passed": report.get("passed"),
                "not_flat": report["analysis"].get("not_flat"), "max_fd_rise": report["analysis"].get("max_fd_rise")}
    report.setdefault("earlier_verdicts", []).append(previous)
    report["rule"] = dataclasses.asdict(rule)
    report["analysis"] = analyse(samples, report["analysis"]["round0_time"], report["analysis"]["exited_during_soak"],
                                 config, rule)
    report["reanalysed_with"] = "python -m globetrain.validation.soak --reanalyse --out " + str(out)
    return write_report(out, report, samples, console)


if __name__ == "__main__":
    sys.exit(main())

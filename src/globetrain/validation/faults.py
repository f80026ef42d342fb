"""``python -m globetrain.validation.faults``: the fleet keeps training through faults (issue 6, item 2).

The demo's local fleet (bootstrap + N devices, loopback) trains while a seeded plan
(``fault_plan.py``) hits it: a device's checkpoint folder fills up (a small tmpfs mounted
over its run folder), the bootstrap is SIGKILLed and never comes back, a random 30 % of the
devices are SIGKILLed and restarted with ``--resume`` and no join address (they rejoin
through the peers in their ``peers.json``, the bootstrap being gone), the folder gets
room again, and a device is SIGSTOPped past its exchange timeout, then SIGCONTed.

The bootstrap evaluates the global model only while it lives, so the run also copies a
surviving device's checkpoint every ``--snapshot-every`` seconds and evaluates the
copies afterwards: the accuracy curve covers the whole run. At the end, every checkpoint
file left anywhere in the run's folder is loaded with ``globetrain.checkpoint``: the
count of those that do not load is the number of broken checkpoints (target: zero).

Writes ``faults.json`` and ``faults.png`` (accuracy over time with the faults marked, and
each device's rounds over time) to ``--out``. Needs root for the small folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from globetrain.checkpoint import CheckpointError, load_checkpoint
from globetrain.config import ConfigSection, field, require
from globetrain.errors import GlobetrainError
from globetrain.fleet.app.demo import DemoConfig
from globetrain.fleet.app.demo_presets import PRESETS
from globetrain.fleet.app.demo_report import evaluate_checkpoint
from globetrain.fleet.app.signals import EXIT_INTERRUPTED, StopSignals
from globetrain.report.metrics import read_metrics
from globetrain.validation.fault_injection import FaultInjector, SmallFolder
from globetrain.validation.fault_plan import plan_faults
from globetrain.validation.faults_report import plot_faults, summarize_faults
from globetrain.validation.lab_run import ValidationRun

DEFAULT_OUT = "benchmarks/results/validation"
DEFAULT_RUNS = "runs/validation/faults"
QUICK = {"devices": 4, "preset": "debug", "time_budget_s": 60.0, "target_accuracy": 0.5, "snapshot_every_s": 10.0}


@dataclasses.dataclass(frozen=True)
class FaultSettings(ConfigSection):
    devices: int = field(8, help="device processes (loopback), at least 4")
    preset: str = field("default", help="the demo's recipe")
    method: str = field("two-step", help="sync method")
    target_accuracy: float = field(0.6, help="validation accuracy the fleet must still reach")
    time_budget_s: float = field(300.0, help="seconds of training after round 0 (the run lasts this long)")
    churn_fraction: float = field(0.3, help="share of devices SIGKILLed and restarted (rounded up)")
    small_folder_mb: int = field(48, help="size of the filled device's checkpoint folder (tmpfs)")
    snapshot_every_s: float = field(20.0, help="seconds between two copies of a surviving device's checkpoint")
    seed: int = field(0, help="seed of the plan (which devices), the data and the model")

    def __post_init__(self) -> None:
        name = "faults"
        require(isinstance(self.devices, int) and self.devices >= 4, name, "devices", self.devices, "an integer >= 4")
        require(self.preset in PRESETS, name, "preset", self.preset, f"one of {list(PRESETS)}")
        require(0 < self.target_accuracy <= 1, name, "target_accuracy", self.target_accuracy, "a fraction in (0, 1]")
        require(0 < self.churn_fraction < 1, name, "churn_fraction", self.churn_fraction, "a fraction in (0, 1)")
        require(self.time_budget_s > 0, name, "time_budget_s", self.time_budget_s, "seconds > 0")
        require(self.small_folder_mb >= 4, name, "small_folder_mb", self.small_folder_mb, "MB >= 4")
        require(self.snapshot_every_s > 0, name, "snapshot_every_s", self.snapshot_every_s, "seconds > 0")


class CheckpointSnapshots:
    """Copies the newest checkpoint of the given devices every ``every_s`` seconds (for evaluation later)."""

    def __init__(self, sources: dict[str, Path], folder: Path, *, every_s: float) -> None:
        self.sources = sources
        self.folder = folder
        self.every_s = every_s
        self.taken: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._round_zero = 0.0

    def start_at(self, round_zero: float) -> None:
        self._round_zero = round_zero
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            present = [(path.stat().st_mtime, name, path) for name, path in self.sources.items() if path.is_file()]
            if not present:
                continue
            _, name, path = max(present)
            at = time.time() - self._round_zero
            copy = self.folder / f"t{at:06.1f}-{name}.pt"
            try:
                shutil.copyfile(path, copy)
            except OSError:
                continue  # replaced under us: the next tick takes the new one
            self.taken.append({"at_s": round(at, 2), "device": name, "path": str(copy)})

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)


def scan_checkpoints(root: Path) -> dict[str, Any]:
    """Load every checkpoint file under ``root``; temporaries left by killed writers are listed apart."""
    loaded, broken, temporaries = [], [], []
    for path in sorted(root.rglob("*.pt")):
        try:
            checkpoint = load_checkpoint(path)
            loaded.append({"path": str(path), "round": checkpoint.extra.get("fleet", {}).get("round")})
        except CheckpointError as error:
            broken.append({"path": str(path), "error": str(error)})
    for path in sorted(root.rglob(".*.tmp")):
        temporaries.append(str(path))
    return {"loaded": len(loaded), "broken": broken, "broken_count": len(broken), "files": loaded,
            "temporaries_left": temporaries}


def evaluate_snapshots(snapshots: list[dict[str, Any]], data_root: Path, console: Console) -> list[dict[str, Any]]:
    """Validation accuracy of each snapshot (one background-free pass each, all cores)."""
    results = []
    with Progress(TextColumn("evaluating checkpoint copies"), BarColumn(), MofNCompleteColumn(), console=console) as bars:
        task = bars.add_task("snapshots", total=len(snapshots))
        for snapshot in snapshots:
            entry = dict(snapshot)
            try:
                evaluation = evaluate_checkpoint(Path(snapshot["path"]), data_root, threads=os.cpu_count() or 1)
                entry["val_accuracy"] = evaluation["val"]["accuracy"] if evaluation.get("val") else None
            except GlobetrainError as error:
                entry["val_accuracy"], entry["error"] = None, str(error)
            results.append(entry)
            bars.advance(task)
    return results


def run_faults(settings: FaultSettings, out: Path, runs: Path, *, signals: StopSignals, console: Console) -> dict[str, Any]:
    run_dir = runs / f"{settings.method}-{settings.devices}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    demo = DemoConfig(devices=settings.devices, out=str(run_dir), method=settings.method, preset=settings.preset,
                      target_accuracy=settings.target_accuracy, time_budget_s=settings.time_budget_s, seed=settings.seed)
    run = ValidationRun(demo, signals, console)
    names = list(run.names)
    overrides = PRESETS[settings.preset].run_overrides(settings.devices)
    period = float(overrides.get("fleet", {}).get("round_period_s", 5.0))
    # The bootstrap's default: a round plus its aggregate deadline (0.85 T), waited a little longer.
    exchange_timeout = round(period * (0.85 + 1.5), 3)
    events = plan_faults(names, round_period_s=period, exchange_timeout_s=exchange_timeout,
                         churn_fraction=settings.churn_fraction, seed=settings.seed)
    filled = [event.target for event in events if event.kind == "fill"]
    folders = {name: SmallFolder(run_dir / "devices" / name, settings.small_folder_mb) for name in filled}
    killed = {event.target for event in events if event.kind == "kill"}
    survivors = {name: run_dir / "devices" / name / "checkpoint.pt" for name in names
                 if name not in killed and name not in filled}
    snapshots = CheckpointSnapshots(survivors, run_dir / "snapshots", every_s=settings.snapshot_every_s)
    injector = FaultInjector(run, events, small_folders=folders)
    run.at_round_zero = [injector.start_at, snapshots.start_at]
    # Reaching the target must not end the run before every fault happened and was survived.
    run.min_training_s = settings.time_budget_s
    error: str | None = None
    exit_code: int | None = None
    # Mounted once the demo cleared its output folder, right before the processes start.
    run.before_fleet = [folder.mount for folder in folders.values()]
    try:
        try:
            exit_code = run.run()
        except GlobetrainError as failure:
            error = str(failure)
        finally:
            injector.close()
            snapshots.close()
        # Before unmounting: the filled folder's checkpoint is read where the device left it.
        scan = scan_checkpoints(run_dir)
    finally:
        for folder in folders.values():
            folder.unmount()
    data_root = getattr(run, "data_root", None)
    evaluated = evaluate_snapshots(snapshots.taken, data_root, console) if data_root and not signals.stopped else []
    rows = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    return summarize_faults(
        settings=settings.to_dict(), events=[e.to_dict() for e in events], applied=injector.applied, rows=rows,
        summary=summary, round_zero=run.round_zero, snapshots=evaluated, scan=scan, exit_code=exit_code, error=error,
        hook_errors=run.hook_errors, round_period_s=period, names=names,
        device_logs={name: _read_text(run_dir / "devices" / name / "device.log") for name in names},
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m globetrain.validation.faults",
        description="Train a local fleet through SIGKILLed and restarted devices, a killed bootstrap, a full "
                    "checkpoint folder and a SIGSTOPped device; check the target and every checkpoint left.",
    )
    defaults = FaultSettings()
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for faults.json and faults.png (default %(default)s)")
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS, help="folder for the run itself (default %(default)s)")
    parser.add_argument("--devices", type=int, default=None, help=f"devices (default {defaults.devices})")
    parser.add_argument("--preset", default=None, help=f"the demo's recipe (default {defaults.preset})")
    parser.add_argument("--target", type=float, default=None, help=f"target accuracy (default {defaults.target_accuracy})")
    parser.add_argument("--budget", type=float, default=None, help=f"seconds of training (default {defaults.time_budget_s:g})")
    parser.add_argument("--seed", type=int, default=None, help="seed of the plan, data and model (default 0)")
    parser.add_argument("--quick", action="store_true", help="4 devices on the debug recipe for 60 s: a check of the harness")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    console = Console(stderr=True)
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for flag, name in (("devices", "devices"), ("preset", "preset"), ("target", "target_accuracy"),
                       ("budget", "time_budget_s"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            values[name] = getattr(args, flag)
    try:
        settings = FaultSettings(**values)
    except GlobetrainError as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    if os.geteuid() != 0:
        console.print("[red]cannot run the fault validation:[/] filling a checkpoint folder mounts a tmpfs, which needs root")
        return 2
    out = Path(args.out)
    started = time.monotonic()
    with StopSignals() as signals:
        report = run_faults(settings, out, Path(args.runs_dir), signals=signals, console=console)
    report["command"] = " ".join(["python -m globetrain.validation.faults", *sys.argv[1:]])
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    report["interrupted"] = signals.stopped
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / ".faults.json.tmp"
    temporary.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(temporary, out / "faults.json")
    plot_faults(report, out / "faults.png")
    console.print(f"targets: {report['targets']}")
    console.print(f"report: {out / 'faults.json'}, {out / 'faults.png'}")
    return EXIT_INTERRUPTED if signals.stopped else 0


if __name__ == "__main__":
    sys.exit(main())


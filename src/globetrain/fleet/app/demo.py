"""``globetrain demo``: a local fleet on this machine trains the default video model.

``DemoRun.run``, top to bottom:

1. the data: the synthetic action videos from the cache folder, generated if missing;
2. the fleet: a bootstrap peer and N device processes (separate OS processes over
   loopback, one torch thread each), devices sharded non-IID by class; a new run key
   reaches them through their environment only;
3. the run: progress bars from the metrics files the processes write, until the global
   model's validation accuracy (the bootstrap's evaluations) reaches the target, the
   time budget is spent, every device exited, or Ctrl+C;
4. the end: every child asked to leave (devices save their checkpoints), then their
   process groups SIGKILLed whatever happened; the newest global model is evaluated on
   the whole validation and test splits (skipped after Ctrl+C, which must end at once)
   and the outputs written: metrics.jsonl, summary.json, plots, checkpoint, report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from globetrain import __version__
from globetrain.config import ConfigSection, field, require
from globetrain.errors import GlobetrainError
from globetrain.fleet.app.demo_data import data_cache_root, ensure_dataset
from globetrain.fleet.app.demo_monitor import DemoProgress, FleetMonitor
from globetrain.fleet.app.demo_presets import PRESETS, DemoPreset
from globetrain.fleet.app.demo_report import (
    CHECKPOINT_NAME,
    DEVICE_TIME_PLOT,
    METRICS_NAME,
    PROGRESS_PLOT,
    REPORT_NAME,
    SUMMARY_NAME,
    evaluate_checkpoint,
    pick_checkpoint,
    write_outputs,
)
from globetrain.fleet.app.processes import ChildGroup, ChildProcess
from globetrain.fleet.app.signals import EXIT_INTERRUPTED, StopSignals
from globetrain.fleet.keys import RUN_KEY_ENV, new_run_key
from globetrain.report.metrics import MetricsWriter
from globetrain.sync.methods import get_method
from globetrain.video.sharding import default_classes_per_device

log = logging.getLogger(__name__)

BOOTSTRAP_READY_TIMEOUT_S = 90.0
"""Longest wait for the bootstrap's first metrics line (imports and daemon start on a busy machine)."""
CHILD_STOP_GRACE_S = 20.0
"""How long children get to save their checkpoint and leave before their groups are killed."""
INTERRUPT_STOP_GRACE_S = 8.0
"""The same after Ctrl+C: the user wants the terminal back within seconds."""


class DemoFailed(GlobetrainError):
    """The local fleet could not run; the message includes the failing process's log."""


@dataclasses.dataclass(frozen=True)
class DemoConfig(ConfigSection):
    """``globetrain demo``'s settings (the preset supplies the rest)."""

    devices: int = field(4, help="device processes (not counting the bootstrap)")
    out: str = field("runs/demo", help="output folder")
    method: str = field("two-step", help="sync method (globetrain.sync.methods)")
    preset: str = field("default", help=f"recipe: {', '.join(PRESETS)}")
    target_accuracy: float = field(-1.0, help="stop when the global model's validation accuracy reaches this (-1: the preset's)")
    time_budget_s: float = field(-1.0, help="seconds of training after round 0 at most (-1: the preset's)")
    seed: int = field(0, help="seed of the synthetic dataset and the model's initial weights")
    data: str = field("", help="dataset folder to use instead of the generated synthetic set")
    cache_dir: str = field("", help="clip cache folder of every process (default: ~/.cache/globetrain/clips)")
    round_models: bool = field(False, help="the bootstrap keeps every round's global model (bootstrap/round_models)")

    def __post_init__(self) -> None:
        name = "demo"
        require(isinstance(self.devices, int) and 1 <= self.devices <= 64, name, "devices", self.devices, "an integer in [1, 64]")
        require(self.preset in PRESETS, name, "preset", self.preset, f"one of {list(PRESETS)}")
        require(self.target_accuracy == -1.0 or 0 < self.target_accuracy <= 1, name, "target_accuracy",
                self.target_accuracy, "a fraction in (0, 1]")
        require(self.time_budget_s == -1.0 or self.time_budget_s > 0, name, "time_budget_s", self.time_budget_s, "seconds > 0")
        require(isinstance(self.seed, int) and self.seed >= 0, name, "seed", self.seed, "an integer >= 0")
        get_method(self.method)

    @property
    def recipe(self) -> DemoPreset:
        return PRESETS[self.preset]

    @property
    def resolved_target(self) -> float:
        return self.recipe.target_accuracy if self.target_accuracy == -1.0 else self.target_accuracy

    @property
    def resolved_budget(self) -> float:
        return self.recipe.time_budget_for(self.devices) if self.time_budget_s == -1.0 else self.time_budget_s


def process_start_monotonic() -> float:
    """When this process started, on the ``time.monotonic`` clock (Linux: /proc/self/stat).

    The demo's wall time includes its own start (importing torch takes seconds on a busy
    machine), not only what follows ``DemoRun``'s creation.
    """
    try:
        with open("/proc/self/stat") as stream:
            ticks = int(stream.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as stream:
            uptime = float(stream.read().split()[0])
        return time.monotonic() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic()


def child_environment(run_key: str) -> dict[str, str]:
    """The children's environment: the run key, one compute thread each, unbuffered output."""
    env = dict(os.environ)
    env[RUN_KEY_ENV] = run_key
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


class DemoRun:
    def __init__(self, config: DemoConfig, signals: StopSignals, console: Console, extra_run_settings: list[str]) -> None:
        self.config = config
        self.signals = signals
        self.console = console
        self.extra_run_settings = extra_run_settings
        self.out = Path(config.out)
        self.recipe = config.recipe
        self.synth = dataclasses.replace(self.recipe.synth, seed=config.seed)
        self.children = ChildGroup()
        self.names = [f"device-{index}" for index in range(config.devices)]
        self.started = process_start_monotonic()
        self.notes: list[str] = []

    # -- 1. data ---------------------------------------------------------------------------------

    def _prepare_data(self, env: dict[str, str]) -> tuple[Path, bool, float]:
        started = time.monotonic()
        if self.config.data:
            return Path(self.config.data), False, 0.0
        root = data_cache_root() / self.synth.folder_name(PRESETS["default"].synth)
        with Progress(TextColumn("writing synthetic videos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, transient=True) as progress:
            task = progress.add_task("synth", total=self.synth.total_clips)
            generated = ensure_dataset(
                root, self.synth, stop=self.signals.event, env=env,
                progress=lambda done, total: progress.update(task, completed=done),
            )
        seconds = time.monotonic() - started
        if generated:
            self.console.print(f"wrote {self.synth.total_clips} synthetic clips to {root} in {seconds:.0f} s")
        elif not self.signals.stopped:
            self.console.print(f"using the synthetic dataset in {root}")
        return root, generated, seconds

    # -- 2. the fleet ------------------------------------------------------------------------------

    def _python(self) -> list[str]:
        return [sys.executable, "-m", "globetrain"]

    def _start_fleet(self, data_root: Path, env: dict[str, str]) -> None:
        config = self.config
        boot_dir = self.out / "bootstrap"
        sets: list[str] = []
        for section, values in self.recipe.run_overrides(config.devices).items():
            for name, value in values.items():
                sets += ["--set", f"{section}.{name}={_json(value)}"]
        sets += [item for setting in self.extra_run_settings for item in ("--set", setting)]
        sets += ["--set", f"training.seed={config.seed}"]
        bootstrap = [
            *self._python(), "bootstrap", "--run-dir", str(boot_dir), "--method", config.method,
            "--start-delay", str(self.recipe.start_delay_s), "--eval-data", str(data_root),
            "--eval-every", str(self.recipe.eval_every_s), "--eval-clips", str(self.recipe.eval_clips),
            "--no-live", "--quiet", "--run-name", f"demo-{config.devices}", *sets,
        ]
        if config.cache_dir:
            bootstrap += ["--cache-dir", config.cache_dir]
        if config.round_models:
            bootstrap.append("--round-models")
        self.children.start("bootstrap", bootstrap, log_path=boot_dir / "bootstrap.log", env=env)
        for index, name in enumerate(self.names):
            run_dir = self.out / "devices" / name
            device = [
                *self._python(), "device", "--join-file", str(boot_dir / "addresses"), "--data", str(data_root),
                "--shard", f"{index}/{config.devices}", "--name", name, "--run-dir", str(run_dir),
                "--join-timeout", str(BOOTSTRAP_READY_TIMEOUT_S),
            ]
            if config.cache_dir:
                device += ["--cache-dir", config.cache_dir]
            self.children.start(name, device, log_path=run_dir / "device.log", env=env)

    # -- 3. the run ------------------------------------------------------------------------------

    def _bootstrap(self) -> ChildProcess:
        return self.children.children[0]

    def _watch(self, monitor: FleetMonitor) -> str:
        config = self.config
        target, budget = config.resolved_target, config.resolved_budget
        waiting_since = time.monotonic()
        period = float(self.recipe.run_overrides(config.devices).get("fleet", {}).get("round_period_s", 5.0))
        with DemoProgress(self.console, devices=self.names, target=target, budget_s=budget, round_period_s=period) as bars:
            while True:
                monitor.poll()
                bars.update(monitor)
                if self.signals.stopped:
                    return "interrupted"
                if monitor.start_time is None:
                    bootstrap = self._bootstrap()
                    if not bootstrap.alive():
                        raise DemoFailed(f"the bootstrap exited (code {bootstrap.returncode}) before the run started:\n"
                                         f"{bootstrap.log_tail()}")
                    if time.monotonic() - waiting_since > BOOTSTRAP_READY_TIMEOUT_S:
                        raise DemoFailed(f"the bootstrap did not start within {BOOTSTRAP_READY_TIMEOUT_S:.0f}s:\n"
                                         f"{bootstrap.log_tail()}")
                elif monitor.first_reaching(target) is not None:
                    return "target"
                elif monitor.training_seconds() >= budget:
                    return "budget"
                devices = self.children.children[1:]
                if not any(device.alive() for device in devices):
                    failed = [device for device in devices if device.returncode not in (0, EXIT_INTERRUPTED)]
                    if failed and monitor.start_time is not None and not any(p.rounds for p in monitor.progress.values()):
                        raise DemoFailed(f"{failed[0].name} exited with code {failed[0].returncode}:\n{failed[0].log_tail()}")
                    return "devices-exited"
                self.signals.event.wait(0.5)

    # -- 4. the end ------------------------------------------------------------------------------

    def _checkpoints(self) -> list[Path]:
        return [self.out / "devices" / name / CHECKPOINT_NAME for name in self.names] + [
            self.out / "bootstrap" / CHECKPOINT_NAME
        ]

    def _summary(self, monitor: FleetMonitor | None, stopped_by: str, data_root: Path | None,
                 data: dict[str, Any]) -> dict[str, Any]:
        config = self.config
        target = config.resolved_target
        summary: dict[str, Any] = {
            "val_accuracy": None,
            "test_accuracy": None,
            "devices": config.devices,
            "wall_seconds": None,
            "method": config.method,
            "stopped_by": stopped_by,
            "partial": stopped_by in ("interrupted", "error"),
            "target_accuracy": target,
            "time_budget_s": config.resolved_budget,
            "preset": self.recipe.name,
            "model": self.recipe.run.get("model", {}).get("name", "tsm-small"),
            "data": str(data_root) if data_root else None,
            "data_layout": f"non-IID by class ({self._classes_per_device()} of {len(self.synth.classes)} classes per device)",
            "round_period_s": float(self.recipe.run.get("fleet", {}).get("round_period_s", 5.0)),
            "globetrain_version": __version__,
            **data,
        }
        if monitor is not None:
            summary["parameters"] = monitor.parameters
            if monitor.run_config is not None:
                summary["round_period_s"] = monitor.run_config["fleet"]["round_period_s"]
                summary["model"] = monitor.run_config["model"]["config"]["name"]
                summary["run_config"] = monitor.run_config
            summary["round0_time"] = monitor.start_time
            summary["training_seconds"] = round(monitor.training_seconds(), 2) if monitor.start_time else 0.0
            summary["rounds"] = max((p.last_round + 1 for p in monitor.progress.values()), default=0)
            reached = monitor.first_reaching(target)
            summary["time_to_target_s"] = (
                round(float(reached["t"]) - monitor.start_time, 2) if reached and monitor.start_time else None
            )
            latest = monitor.latest_evaluation
            summary["last_bootstrap_evaluation"] = latest
            summary["bootstrap_evaluations"] = len(monitor.evaluations)
        return summary

    def _classes_per_device(self) -> int:
        chosen = self.recipe.run_overrides(self.config.devices).get("data", {}).get("classes_per_device")
        return int(chosen) if chosen else default_classes_per_device(self.config.devices, len(self.synth.classes))

    def _final_evaluation(self, summary: dict[str, Any], data_root: Path | None, *, quick: bool) -> None:
        picked = pick_checkpoint(self._checkpoints(), self.out / CHECKPOINT_NAME)
        summary["checkpoint"] = picked
        latest = summary.get("last_bootstrap_evaluation")
        if picked is None or data_root is None:
            self.notes.append("no peer left a readable checkpoint: nothing to evaluate")
            return
        if quick:
            # After Ctrl+C the user waits for the terminal: report the bootstrap's last evaluation.
            if latest is not None:
                summary["val_accuracy"] = latest.get("val_accuracy")
                self.notes.append(
                    f"interrupted: val_accuracy is the bootstrap's last evaluation (round {latest.get('round')}, "
                    f"{latest.get('clips')} clips); test_accuracy was not measured"
                )
            return
        try:
            with self.console.status("evaluating the global model on the validation and test splits"):
                results = evaluate_checkpoint(Path(picked["path"]), data_root, cache_dir=self.config.cache_dir,
                                              threads=os.cpu_count() or 1)
        except GlobetrainError as error:
            self.notes.append(f"the final evaluation failed: {error}")
            return
        summary["val_accuracy"] = results["val"]["accuracy"] if results.get("val") else None
        summary["test_accuracy"] = results["test"]["accuracy"] if results.get("test") else None
        summary["evaluation"] = results

    # -- everything ----------------------------------------------------------------------------------

    def _clear_previous_run(self) -> None:
        """Remove what an earlier demo wrote to ``--out``, and nothing else.

        A second ``globetrain demo`` into the same folder must start afresh: the monitor
        follows the bootstrap's and devices' metrics files (old lines would end the new run
        at once), and old checkpoints, identities and peers files belong to another run key.
        Only the demo's own products are removed, so an ``--out`` that holds other files
        keeps them.
        """
        for name in (METRICS_NAME, SUMMARY_NAME, REPORT_NAME, PROGRESS_PLOT, DEVICE_TIME_PLOT, CHECKPOINT_NAME):
            (self.out / name).unlink(missing_ok=True)
        for folder in (self.out / "bootstrap", self.out / "devices"):
            if folder.is_dir():
                shutil.rmtree(folder)

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self._clear_previous_run()
        env = child_environment(new_run_key())
        monitor: FleetMonitor | None = None
        data_root: Path | None = None
        data: dict[str, Any] = {}
        stopped_by = "error"
        failure: GlobetrainError | None = None
        merged = MetricsWriter(self.out / METRICS_NAME)
        try:
            data_root, generated, data_seconds = self._prepare_data(env)
            data = {"data_generated": generated, "data_seconds": round(data_seconds, 2),
                    "clips_per_class": self.synth.clips_per_class if not self.config.data else None}
            if self.signals.stopped:
                stopped_by = "interrupted"
            else:
                self._start_fleet(data_root, env)
                monitor = FleetMonitor(
                    bootstrap_metrics=self.out / "bootstrap" / "metrics.jsonl",
                    device_metrics={name: self.out / "devices" / name / "metrics.jsonl" for name in self.names},
                    merged=merged,
                )
                stopped_by = self._watch(monitor)
        except GlobetrainError as error:
            # Reported after the partial report is written: the user gets both.
            failure = error
            self.notes.append(f"error: {error}")
        finally:
            interrupted = self.signals.stopped
            if self.children.children:
                try:
                    with self.console.status("stopping the fleet (devices save their checkpoints)"):
                        self.children.stop(grace_s=INTERRUPT_STOP_GRACE_S if interrupted else CHILD_STOP_GRACE_S)
                finally:
                    self.children.kill()
                leftovers = self.children.leftovers()
                if leftovers:
                    self.notes.append(f"processes left after stopping: {leftovers}")
            if monitor is not None:
                monitor.poll()  # the devices' last lines (finished, last round)
            merged.close()
        if self.signals.stopped:
            stopped_by = "interrupted"
        summary = self._summary(monitor, stopped_by, data_root, data)
        self._final_evaluation(summary, data_root, quick=stopped_by in ("interrupted", "error") or monitor is None)
        summary["notes"] = self.notes
        summary["wall_seconds"] = round(time.monotonic() - self.started, 2)
        summary = write_outputs(self.out, summary, target_accuracy=self.config.resolved_target)
        if failure is not None:
            self.console.print(f"partial report: {self.out / 'report.md'}")
            raise failure
        self._print_result(summary)
        return EXIT_INTERRUPTED if stopped_by == "interrupted" else 0

    def _print_result(self, summary: dict[str, Any]) -> None:
        def percent(value: Any) -> str:
            return "n/a" if value is None else f"{100 * value:.1f}%"

        ratio = summary.get("dense_over_sent")
        self.console.print(
            f"[bold]{summary['stopped_by']}[/]: val accuracy {percent(summary['val_accuracy'])}, "
            f"test accuracy {percent(summary['test_accuracy'])}, {summary['devices']} devices, "
            f"{summary['wall_seconds']:.0f} s; sent {summary['bytes_sent_per_device'] / 1000:.0f} KB per device"
            + (f" ({ratio:,.0f}x less than dense fp32 all-reduce)" if ratio else "")
            + f", computing {percent(summary['compute_fraction'])} of the time"
        )
        self.console.print(f"report: {self.out / 'report.md'}")


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)

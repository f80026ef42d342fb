"""The hostile run: a real fleet on loopback, attacked from inside and outside, must not notice.

    python -m globetrain.validation.hostile --out benchmarks/results/validation

1. An honest reference: ``globetrain demo`` (the ``debug`` preset by default: a bootstrap
   and 3 devices, tiny model, 2-second rounds) for ``--budget`` seconds of training.
2. The same fleet again, plus:
   - a rogue WITH the run key (``hostile_rogue``): every round a NaN, 1000x, truncated,
     bit-flipped, wrong-shape or over-claiming contribution, envelopes broken in each
     field, stale and future rounds, bad archive/state requests; it serves a poisoned
     state and claims to hold the newest;
   - a device with another run key (``globetrain device``): must fail to join, clearly;
   - an attacker with another key who knows the run's public id (``testpeer
     --attack-run-id``): reads config, roster and state, sends contributions and
     requests to every peer; must open nothing;
   - a late honest device that joins after a few rounds and downloads state (with the
     rogue first in line to serve it).
3. Verdicts (``hostile.json``, ``hostile.png``): every honest process alive until the end
   and exiting 0, no traceback or failed handler in honest logs; every attack's
   ``kind/reason`` counted and logged with the rogue's peer id; the attacker's refusals
   attributed to its id and nothing it received readable; no rejection of an honest
   peer; no round averaged more contributors than honest devices; the final model
   finite and its accuracy within ``--accuracy-tolerance`` of the honest run's.
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

from globetrain.config import ConfigSection, field, require
from globetrain.fleet.app.demo import DemoConfig, DemoRun
from globetrain.fleet.app.processes import ChildProcess
from globetrain.fleet.app.signals import EXIT_INTERRUPTED, StopSignals
from globetrain.fleet.keys import RUN_KEY_ENV, RunKeys, new_run_key
from globetrain.validation.hostile_report import analyse, read_jsonl

DEFAULT_OUT = "benchmarks/results/validation"
DEFAULT_RUNS = "runs/validation/hostile"
ATTACKER_ATTEMPTS = 3
LATE_PARTS_TIMEOUT_S = 180.0
"""Longest extension of the run past its budget for the attacker and the late joiner to do their part."""


@dataclasses.dataclass(frozen=True)
class HostileConfig(ConfigSection):
    """Settings of the hostile run."""

    devices: int = field(3, help="honest devices from the start (a late joiner comes on top)")
    preset: str = field("debug", help="demo preset of both runs")
    budget_s: float = field(60.0, help="seconds of training after round 0, in each run")
    start_delay_s: float = field(30.0, help="seconds from the bootstrap's start to round 0 (devices start meanwhile; "
                                            "generous: a loaded machine takes long to import torch in every process)")
    late_join_round: int = field(3, help="round after which the late honest device starts (0: none)")
    honest_reference: bool = field(True, help="run the honest reference first (off: the hostile run only)")
    accuracy_tolerance: float = field(0.2, help="largest accuracy drop from the honest reference that passes")
    out: str = field(DEFAULT_OUT, help="report folder (hostile.json, hostile.png)")
    runs: str = field(DEFAULT_RUNS, help="folder of the two runs' outputs (logs, metrics, checkpoints)")

    def __post_init__(self) -> None:
        require(1 <= self.devices <= 16, "hostile", "devices", self.devices, "an integer in [1, 16]")
        require(self.budget_s > 0, "hostile", "budget_s", self.budget_s, "seconds > 0")
        require(self.start_delay_s > 0, "hostile", "start_delay_s", self.start_delay_s, "seconds > 0")
        require(self.late_join_round >= 0, "hostile", "late_join_round", self.late_join_round, "a round >= 0")
        require(0 <= self.accuracy_tolerance <= 1, "hostile", "accuracy_tolerance", self.accuracy_tolerance, "in [0, 1]")


class HostileDemoRun(DemoRun):
    """The demo's fleet, with the rogue, the wrong-key peers and the late joiner started beside it.

    It hooks ``DemoRun._start_fleet`` (the one place the demo starts children), so the
    demo's own watch, shutdown (every child's process group is killed at the end) and
    report apply to the extra processes too.
    """

    def __init__(self, config: DemoConfig, signals: StopSignals, console: Console, *, late_join_round: int) -> None:
        super().__init__(config, signals, console, [])
        self.late_join_round = late_join_round
        self.run_id_hex = ""
        self._scheduler: threading.Thread | None = None

    def _start_fleet(self, data_root: Path, env: dict[str, str]) -> None:
        super()._start_fleet(data_root, env)
        self.run_id_hex = RunKeys.from_text(env[RUN_KEY_ENV]).run_id_hex
        hostile = self.out / "hostile"
        join_file = self.out / "bootstrap" / "addresses"
        python = [sys.executable, "-m"]
        self.children.start("rogue", [*python, "globetrain.validation.hostile_rogue", "--join-file", str(join_file),
                                      "--status", str(hostile / "rogue.jsonl")],
                            log_path=hostile / "rogue.log", env=env)
        stranger_env = {**env, RUN_KEY_ENV: new_run_key()}
        self.children.start("stranger", [*self._python(), "device", "--join-file", str(join_file), "--data", str(data_root),
                                         "--shard", f"0/{self.config.devices}", "--name", "stranger",
                                         "--run-dir", str(hostile / "stranger"), "--join-timeout", "20"],
                            log_path=hostile / "stranger.log", env=stranger_env)
        self._scheduler = threading.Thread(target=self._start_later, args=(data_root, env, join_file), daemon=True,
                                           name="hostile-scheduler")
        self._scheduler.start()

    def _start_later(self, data_root: Path, env: dict[str, str], join_file: Path) -> None:
        """The attacker once the fleet has a roster, the late joiner after ``late_join_round`` rounds."""
        addresses: list[str] = []
        while not addresses and not self.signals.event.wait(0.2):
            try:
                addresses = [line.strip() for line in join_file.read_text().splitlines() if line.strip()]
            except FileNotFoundError:
                continue
        if not addresses:
            return
        period = float(self.recipe.run_overrides(self.config.devices)["fleet"].get("round_period_s", 2.0))
        hostile = self.out / "hostile"
        # The attacker needs peers in the roster to aim at: a couple of rounds in.
        if self.signals.event.wait(self.recipe.start_delay_s + 2 * period):
            return
        attacker = self._start_attacker(addresses[0], hostile, env, period)
        if self.late_join_round <= 0 or self.signals.event.wait(max(self.late_join_round - 2, 0) * period):
            return
        run_dir = self.out / "devices" / "device-late"
        self.children.start(
            "device-late",
            [*self._python(), "device", "--join-file", str(join_file), "--data", str(data_root),
             "--shard", f"0/{self.config.devices}", "--name", "device-late", "--run-dir", str(run_dir),
             "--join-timeout", "60"],
            log_path=run_dir / "device.log", env=env,
        )
        # The attacker's peer dials with a 3 s bound; on a loaded machine that can miss: try again.
        for _ in range(ATTACKER_ATTEMPTS - 1):
            while attacker.alive() and not self.signals.event.wait(0.5):
                pass
            if self.signals.stopped or attacker.returncode != 2:
                return
            attacker = self._start_attacker(addresses[0], hostile, env, period)

    def _start_attacker(self, address: str, hostile: Path, env: dict[str, str], period: float) -> ChildProcess:
        return self.children.start(
            "attacker",
            [sys.executable, "-m", "globetrain.fleet.testpeer", "--attack-run-id", self.run_id_hex, "--join", address,
             "--name", "attacker", "--status", str(hostile / "attacker.jsonl"), "--rounds", "3", "--period", str(period)],
            log_path=hostile / "attacker.log", env={**env, RUN_KEY_ENV: new_run_key()},
        )

    def _watch(self, monitor: Any) -> str:
        stopped_by = super()._watch(monitor)
        if stopped_by not in ("budget", "target"):
            return stopped_by
        # On a loaded machine the late processes may still be importing when the budget
        # ends: the run goes on (bounded) until the attacker reported and the late joiner
        # trained a round, so that every check has something to judge.
        deadline = time.monotonic() + LATE_PARTS_TIMEOUT_S
        while not self.signals.stopped and time.monotonic() < deadline and not self._late_parts_done():
            monitor.poll()
            self.signals.event.wait(0.5)
        return stopped_by

    def _late_parts_done(self) -> bool:
        started = {child.name: child for child in self.children.children}
        attacker = started.get("attacker")
        if attacker is None or attacker.alive():
            return False
        if self.late_join_round <= 0:
            return True
        metrics = self.out / "devices" / "device-late" / "metrics.jsonl"
        try:
            return any(json.loads(line).get("event") == "round" for line in metrics.read_text().splitlines() if line.strip())
        except (OSError, ValueError):
            return False

    def exit_codes(self) -> dict[str, int | None]:
        # The attacker may have several attempts: its last one counts.
        return {child.name: child.returncode for child in self.children.children}


def run_demo(config: HostileConfig, out: Path, console: Console, *, hostile: bool) -> tuple[dict[str, Any], Any]:
    # A reused folder would hand the demo's monitor the last run's metrics (it appends).
    shutil.rmtree(out, ignore_errors=True)
    demo_config = DemoConfig(devices=config.devices, out=str(out), preset=config.preset, target_accuracy=1.0,
                             time_budget_s=config.budget_s)
    with StopSignals() as signals:
        run: DemoRun = (HostileDemoRun(demo_config, signals, console, late_join_round=config.late_join_round)
                        if hostile else DemoRun(demo_config, signals, console, []))
        run.recipe = dataclasses.replace(run.recipe, start_delay_s=config.start_delay_s)
        code = run.run()
    summary = json.loads((out / "summary.json").read_text())
    summary["exit_code"] = code
    return summary, run


def final_model_finite(summary: dict[str, Any]) -> bool | None:
    """Whether every tensor of the checkpoint the demo evaluated is finite (None: no checkpoint)."""
    import torch

    from globetrain.checkpoint import CheckpointError, load_checkpoint

    picked = summary.get("checkpoint") or {}
    if not picked.get("path"):
        return None
    try:
        checkpoint = load_checkpoint(picked["path"])
    except CheckpointError:
        return None
    return all(bool(torch.isfinite(t).all()) for t in checkpoint.model_state.values() if t.is_floating_point())


def verdicts(report: dict[str, Any], config: HostileConfig) -> dict[str, bool]:
    findings = report["findings"]
    honest, rogue, wrong_key = findings["honest"], findings["rogue"], findings["wrong_key"]
    attacker = wrong_key["attacker_report"] or {}
    hostile_accuracy = report["hostile_run"]["val_accuracy"]
    reference = report["honest_run"]["val_accuracy"] if report.get("honest_run") else None
    return {
        "honest_processes_exit_0": bool(honest["exit_codes"]) and all(code == 0 for code in honest["exit_codes"].values()),
        "no_crash_in_honest_logs": not honest["crash_lines"],
        "every_rogue_attack_counted_with_its_id": rogue["attacks_sent"] > 0 and not rogue["expected_reasons_never_counted"],
        "rogue_never_accepted_at_admission": rogue["acks_accepted"] == 0 or "contribution/norm-bound" in rogue["refusals_counted_by_reason"],
        "poisoned_state_refused_and_counted": rogue["state_answers_served"] == 0
        or any(k.startswith("state/") for k in rogue["refusals_counted_by_reason"]),
        "wrong_key_device_cannot_join": wrong_key["stranger_exit_code"] == 2 and wrong_key["stranger_found_no_run"],
        "attacker_reads_nothing": bool(attacker) and attacker.get("answers_opened") == 0
        and not attacker.get("config_readable") and attacker.get("roster_readable") == 0,
        "attacker_refusals_counted_with_its_id": bool(wrong_key["attacker_refusals_counted_by_reason"]),
        "no_honest_peer_refused_for_content": not honest["refusals_of_honest_senders_for_content"],
        "no_round_averaged_more_than_the_honest_devices": 0 < honest["most_contributors_in_a_round"] <= config.devices + 1,
        "final_model_finite": report["hostile_run"]["final_model_finite"] is True and honest["losses_finite"],
        "accuracy_close_to_honest": hostile_accuracy is not None and (
            reference is None or hostile_accuracy >= reference - config.accuracy_tolerance
        ),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    findings = report["findings"]
    rogue = findings["rogue"]["refusals_counted_by_reason"]
    attacker = findings["wrong_key"]["attacker_refusals_counted_by_reason"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [3, 1]})
    labels = sorted(set(rogue) | set(attacker))
    positions = range(len(labels))
    left.barh([p - 0.2 for p in positions], [rogue.get(k, 0) for k in labels], height=0.4, label="rogue (right key)",
              color="#c44e52")
    left.barh([p + 0.2 for p in positions], [attacker.get(k, 0) for k in labels], height=0.4,
              label="attacker (wrong key)", color="#8172b2")
    left.set_yticks(list(positions), labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("refusals counted by honest peers (from their logs)")
    left.legend(fontsize=8)
    left.set_title("every refusal, by kind/reason and sender")
    runs = [(name, run) for name, run in (("honest", report.get("honest_run")), ("hostile", report["hostile_run"]))
            if run and run.get("val_accuracy") is not None]
    bars = right.bar([name for name, _ in runs], [run["val_accuracy"] for _, run in runs],
                     color=["#55a868", "#c44e52"][: len(runs)])
    for bar, (_, run) in zip(bars, runs):
        right.annotate(f"loss {run.get('final_training_loss')}\n{run.get('clips_trained')} clips",
                       (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    right.set_ylim(0, 1)
    right.set_ylabel("final validation accuracy")
    right.set_title("model quality")
    passed = all(report["verdicts"].values())
    figure.suptitle(f"hostile run: {'all checks pass' if passed else 'CHECKS FAILED'}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_summary(summary: dict[str, Any], run_dir: Path, devices: int) -> dict[str, Any]:
    keys = ("val_accuracy", "test_accuracy", "stopped_by", "rounds", "exchanges_succeeded", "exchanges_failed",
            "bytes_sent_per_device", "wall_seconds", "exit_code")
    names = [f"device-{index}" for index in range(devices)]
    return {**{key: summary.get(key) for key in keys}, **training_progress(run_dir, names)}


def training_progress(run_dir: Path, names: list[str], last: int = 5) -> dict[str, Any]:
    """Clips the devices present from the start trained on, and their training loss at the end.

    A second view of model quality beside accuracy, which on the debug preset's 8
    validation clips moves in steps of 12.5 %; read it with the clips, since the hostile
    run's extra processes take CPU from the devices.
    """
    clips, final_losses = 0, []
    for name in names:
        rounds = [row for row in read_jsonl(run_dir / "devices" / name / "metrics.jsonl") if row.get("event") == "round"]
        clips += sum(int(row.get("samples", 0)) for row in rounds)
        losses = [row["loss"] for row in rounds if row.get("loss") is not None]
        if losses:
            final_losses.append(sum(losses[-last:]) / len(losses[-last:]))
    return {"clips_trained": clips,
            "final_training_loss": round(sum(final_losses) / len(final_losses), 4) if final_losses else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m globetrain.validation.hostile", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="report folder (default %(default)s)")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="folder of the runs' logs and metrics (default %(default)s)")
    parser.add_argument("--devices", type=int, default=3, help="honest devices (default %(default)s)")
    parser.add_argument("--preset", default="debug", help="demo preset (default %(default)s)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training per run (default %(default)s)")
    parser.add_argument("--start-delay", type=float, default=30.0, help="seconds until round 0 (default %(default)s)")
    parser.add_argument("--late-join-round", type=int, default=3, help="round the late device joins after; 0: none")
    parser.add_argument("--no-honest-reference", action="store_true", help="skip the honest reference run")
    parser.add_argument("--accuracy-tolerance", type=float, default=0.2, help="largest accuracy drop that passes")
    args = parser.parse_args(argv)
    config = HostileConfig(devices=args.devices, preset=args.preset, budget_s=args.budget, start_delay_s=args.start_delay,
                           late_join_round=args.late_join_round, honest_reference=not args.no_honest_reference,
                           accuracy_tolerance=args.accuracy_tolerance, out=args.out, runs=args.runs)
    console = Console()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(config.runs)
    runs.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.monotonic()
    report: dict[str, Any] = {"command": " ".join(["python -m globetrain.validation.hostile", *sys.argv[1:]]),
                              "config": config.to_dict()}
    if config.honest_reference:
        console.rule("honest reference run")
        honest, _ = run_demo(config, runs / "honest", console, hostile=False)
        if honest["exit_code"] == EXIT_INTERRUPTED:
            return EXIT_INTERRUPTED
        report["honest_run"] = run_summary(honest, runs / "honest", config.devices)
    console.rule("hostile run: rogue, wrong-key device, wrong-key attacker, late joiner")
    summary, run = run_demo(config, runs / "hostile", console, hostile=True)
    assert isinstance(run, HostileDemoRun)
    if summary["exit_code"] == EXIT_INTERRUPTED:
        return EXIT_INTERRUPTED
    report["hostile_run"] = {**run_summary(summary, runs / "hostile", config.devices),
                             "final_model_finite": final_model_finite(summary)}
    hostile_out = runs / "hostile"
    names = [*run.names, "device-late"]
    report["findings"] = analyse(
        honest_logs={"bootstrap": hostile_out / "bootstrap" / "bootstrap.log",
                     **{name: hostile_out / "devices" / name / "device.log" for name in names}},
        honest_metrics={"bootstrap": hostile_out / "bootstrap" / "metrics.jsonl",
                        **{name: hostile_out / "devices" / name / "metrics.jsonl" for name in names}},
        rogue_status=hostile_out / "hostile" / "rogue.jsonl",
        rogue_log=hostile_out / "hostile" / "rogue.log",
        attacker_status=hostile_out / "hostile" / "attacker.jsonl",
        stranger_log=hostile_out / "hostile" / "stranger.log",
        exit_codes=run.exit_codes(),
    )
    report["verdicts"] = verdicts(report, config)
    report["passed"] = all(report["verdicts"].values())
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    (out / "hostile.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot(report, out / "hostile.png")
    for name, ok in report["verdicts"].items():
        console.print(f"{'[green]pass[/]' if ok else '[red]FAIL[/]'}  {name}")
    console.print(f"report: {out / 'hostile.json'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())


"""One case of the shaped-network validation: one method, shaped or not, in its own lab.

``run_case`` builds a lab for the fleet (one namespace per peer, htb rates and delay
relays from the profile, or the same hosts unshaped), runs the demo's fleet in it
(``ValidationRun`` with ``PlacedChildGroup``), applies the profile's timed changes from
round 0 on, samples every interface's byte counters, and removes the lab again (also on
errors and Ctrl+C: ``Lab`` is a context manager and cleans up on signals too).
``analyze_case`` turns what the run wrote into the reported numbers.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from globetrain.config import ConfigSection, field, require
from globetrain.errors import GlobetrainError
from globetrain.fleet.app.demo import DemoConfig
from globetrain.fleet.app.demo_presets import PRESETS
from globetrain.fleet.app.signals import StopSignals
from globetrain.netlab import Lab, NetworkProfile, Schedule, add_profile_hosts, resolve_profile
from globetrain.netlab.schedule import AppliedAction
from globetrain.report.metrics import read_metrics
from globetrain.sync.methods import get_method
from globetrain.validation.accounting import (
    CounterSeries,
    adaptation_after,
    change_was_needed,
    compare_bytes,
    progress_rates,
    qos_choice,
    time_to_target,
)
from globetrain.validation.fleet_in_lab import CounterSampler, PlacedChildGroup, placements_for, start_relays
from globetrain.validation.lab_profiles import device_index, fleet_profile, rate_drops, unshaped
from globetrain.validation.lab_run import ValidationRun


@dataclasses.dataclass(frozen=True)
class ShapedSettings(ConfigSection):
    """What every case of a shaped validation shares."""

    devices: int = field(8, help="device processes, each on its own lab host (the profile's first N devices)")
    profile: str = field("validation", help="network profile: a built-in name or a .json/.toml file")
    preset: str = field("default", help="the demo's recipe (model, data, round period)")
    target_accuracy: float = field(0.6, help="validation accuracy of the global model that counts as reached")
    time_budget_s: float = field(300.0, help="seconds of training after round 0 at most, per case")
    min_training_s: float = field(
        120.0, help="shaped cases run at least this long, so the profile's changes (60 s, 90 s) are observed")
    seed: int = field(0, help="seed of the data, the model and the relays' jitter")
    byte_tolerance: float = field(0.10, help="interface counters vs reported bytes: allowed relative difference")
    round_models: bool = field(
        False,
        help="the bootstrap keeps every round's global model; each case is then evaluated round by round (round_curve)",
    )
    run_settings: tuple[str, ...] = field(
        (), help="run settings on top of the recipe's, as SECTION.FIELD=VALUE (globetrain demo --set)"
    )
    counter_every_s: float = field(
        0.5,
        help=(
            "seconds between two reads of every interface's counters (the comparison interpolates "
            "between reads: a transfer burst near a window's edge costs up to one interval of error)"
        ),
    )

    def __post_init__(self) -> None:
        name = "shaped"
        require(isinstance(self.devices, int) and self.devices >= 1, name, "devices", self.devices, "an integer >= 1")
        require(self.preset in PRESETS, name, "preset", self.preset, f"one of {list(PRESETS)}")
        require(0 < self.target_accuracy <= 1, name, "target_accuracy", self.target_accuracy, "a fraction in (0, 1]")
        require(self.time_budget_s > 0, name, "time_budget_s", self.time_budget_s, "seconds > 0")
        require(self.min_training_s >= 0, name, "min_training_s", self.min_training_s, "seconds >= 0")
        require(0 < self.byte_tolerance < 1, name, "byte_tolerance", self.byte_tolerance, "a fraction in (0, 1)")
        require(self.counter_every_s > 0, name, "counter_every_s", self.counter_every_s, "seconds > 0")
        require(all(isinstance(item, str) and "=" in item for item in self.run_settings), name, "run_settings",
                self.run_settings, "SECTION.FIELD=VALUE strings")

    def network(self, shaped: bool) -> NetworkProfile:
        profile = fleet_profile(resolve_profile(self.profile), self.devices)
        return profile if shaped else unshaped(profile)


@dataclasses.dataclass(frozen=True)
class Case:
    method: str
    shaped: bool

    def __post_init__(self) -> None:
        get_method(self.method)

    @property
    def name(self) -> str:
        return f"{self.method}-{'shaped' if self.shaped else 'unshaped'}"


@dataclasses.dataclass
class CaseRecording:
    """What a case leaves behind for the analysis (besides the demo's own output folder)."""

    out: Path
    lab_prefix: str
    """The lab's namespace prefix (``gt<run-id>-``): nothing with it may exist after the case."""
    profile: NetworkProfile
    counters: dict[str, CounterSeries]
    applied: list[dict[str, Any]]
    round_zero: float | None
    exit_code: int | None
    error: str | None
    notes: list[str]


def applied_actions(applied: Sequence[AppliedAction]) -> list[dict[str, Any]]:
    """The schedule's applied actions as JSON-ready records (planned ``at_s`` and actual ``applied_at_s``)."""
    return [{"action": type(record.action).__name__, **dataclasses.asdict(record.action),
             "applied_at_s": round(record.applied_at_s, 3), "error": record.error} for record in applied]


def _schedule_runner(schedule: Schedule, threads: list[threading.Thread]) -> Any:
    def start(round_zero: float) -> None:
        # The profile's times count from round 0, not from when the lab was built.
        thread = threading.Thread(target=schedule.run, args=(round_zero,), name="network-schedule", daemon=True)
        threads.append(thread)
        thread.start()

    return start


def run_case(case: Case, settings: ShapedSettings, out_root: Path, *, signals: StopSignals,
             console: Console) -> CaseRecording:
    """Run one case in its own lab; the lab and every process are gone when this returns."""
    profile = settings.network(case.shaped)
    out = out_root / case.name
    if out.exists():
        shutil.rmtree(out)
    demo = DemoConfig(devices=settings.devices, out=str(out), method=case.method, preset=settings.preset,
                      target_accuracy=settings.target_accuracy, time_budget_s=settings.time_budget_s, seed=settings.seed,
                      round_models=settings.round_models)
    notes: list[str] = []
    error: str | None = None
    exit_code: int | None = None
    threads: list[threading.Thread] = []
    # Unix socket paths are limited to 107 bytes: the relays' control sockets go to a short folder.
    control_dir = Path(tempfile.mkdtemp(prefix="gt-relays-"))
    try:
        with Lab() as lab:
            hosts = add_profile_hosts(lab, profile)
            relays = start_relays(hosts, profile, control_dir, delays=case.shaped, seed=settings.seed)
            # time.time: round 0 is published as Unix time, and the schedule counts from it.
            schedule = Schedule(profile, lab, relays, clock=time.time)
            run = ValidationRun(
                demo, signals, console, settings.run_settings,
                children=PlacedChildGroup(placements_for(hosts, settings.devices)),
                at_round_zero=[_schedule_runner(schedule, threads)],
                min_training_s=settings.min_training_s if case.shaped else 0.0,
            )
            with CounterSampler(hosts, every_s=settings.counter_every_s) as sampler:
                try:
                    exit_code = run.run()
                except GlobetrainError as failure:
                    error = str(failure)
                finally:
                    schedule.stop()
                    for thread in threads:
                        thread.join(15)
                    sampler.sample()  # the last reading, after every peer left
            notes += run.hook_errors + [f"counters: {problem}" for problem in sampler.errors[:5]]
            applied = applied_actions(schedule.applied)
            return CaseRecording(out, lab.prefix, profile, sampler.series, applied, run.round_zero, exit_code, error, notes)
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)


def _device_rounds(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("source") == name and row.get("event") == "round"]


def analyze_case(case: Case, recording: CaseRecording, settings: ShapedSettings) -> dict[str, Any]:
    """The reported numbers of one case, from its output folder and its recording."""
    out = recording.out
    summary: dict[str, Any] = {}
    if (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
    rows = read_metrics(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
    round_zero = recording.round_zero or summary.get("round0_time")
    evaluations = [row for row in rows if row.get("source") == "bootstrap" and row.get("event") == "evaluation"]
    fleet_lines = [row for row in rows if row.get("source") == "bootstrap" and row.get("event") == "fleet"]
    result: dict[str, Any] = {
        "case": case.name, "method": case.method, "shaped": case.shaped, "profile": recording.profile.to_dict(),
        "exit_code": recording.exit_code, "error": recording.error, "notes": recording.notes + summary.get("notes", []),
        "stopped_by": summary.get("stopped_by"), "training_seconds": summary.get("training_seconds"),
        "rounds": summary.get("rounds"), "final_val_accuracy": summary.get("val_accuracy"),
        "final_test_accuracy": summary.get("test_accuracy"), "compute_fraction": summary.get("compute_fraction"),
        "bytes_sent_per_device": summary.get("bytes_sent_per_device"),
        "exchanges_succeeded": summary.get("exchanges_succeeded"), "exchanges_failed": summary.get("exchanges_failed"),
        "round_period_s": summary.get("round_period_s"), "network_actions": recording.applied,
    }
    if round_zero is None:
        result.update(time_to_target_s=None, reached=False, accuracy_curve=[], bytes=[])
        return result
    ttt = time_to_target(evaluations, start_time=round_zero, target=settings.target_accuracy)
    result["time_to_target_s"] = ttt
    result["reached"] = ttt is not None
    result["accuracy_curve"] = sorted(
        (round(float(row["t"]) - round_zero, 2), row["val_accuracy"]) for row in evaluations
        if row.get("val_accuracy") is not None
    )
    comparisons = []
    for index in range(settings.devices):
        host = f"dev{index}"
        series = recording.counters.get(host)
        if series is None:
            continue
        comparison = compare_bytes(f"device-{index}", _device_rounds(rows, f"device-{index}"), series)
        if comparison is not None:
            entry = comparison.to_dict()
            entry["uplink_mbit"] = recording.profile.host(host).uplink_mbit
            entry["within_tolerance"] = comparison.within(settings.byte_tolerance)
            comparisons.append(entry)
    result["bytes"] = comparisons
    ratios = [entry["sent_ratio"] for entry in comparisons if entry["sent_ratio"] is not None]
    result["bytes_all_within_tolerance"] = bool(comparisons) and all(entry["within_tolerance"] for entry in comparisons)
    result["bytes_ratio_range"] = [min(ratios), max(ratios)] if ratios else None
    result["adaptation"] = _adaptations(recording, rows, fleet_lines, round_zero, summary)
    result["counters"] = {host: dataclasses.asdict(series) for host, series in recording.counters.items()}
    return result


def recording_from_report(case: dict[str, Any], runs: Path) -> CaseRecording:
    """A case's recording rebuilt from its entry in shaped.json and its run folder (``--reanalyze``)."""
    counters = {host: CounterSeries(**series) for host, series in (case.get("counters") or {}).items()}
    summary_path = runs / case["case"] / "summary.json"
    round_zero = json.loads(summary_path.read_text()).get("round0_time") if summary_path.exists() else None
    return CaseRecording(runs / case["case"], "", NetworkProfile.from_dict(case["profile"]), counters,
                         list(case.get("network_actions") or []), round_zero, case.get("exit_code"), case.get("error"),
                         [note for note in case.get("notes", []) if isinstance(note, str)])


def _adaptations(recording: CaseRecording, rows: list[dict[str, Any]], fleet_lines: list[dict[str, Any]],
                 round_zero: float, summary: dict[str, Any]) -> list[dict[str, Any]]:
    period = float(summary.get("round_period_s") or 5.0)
    found = []
    for change, hosts in rate_drops(recording.profile):
        applied = [a for a in recording.applied if a["action"] == "SetRates" and a["host"] in hosts and not a["error"]
                   and abs(a["applied_at_s"] - change.at_s) < period * 3]
        change_time = round_zero + (applied[0]["applied_at_s"] if applied else change.at_s)
        for host in hosts:
            name = f"device-{device_index(host)}"
            rounds = _device_rounds(rows, name)
            adaptation = adaptation_after(rounds, change_time)
            window = [
                {"t": round(float(line["t"]) - round_zero, 2), "round": line["round"], "H": qos_choice(line)[0],
                 "density": qos_choice(line)[1], "bits": qos_choice(line)[2], "bytes_sent": line["bytes_sent"],
                 "status": line.get("status"), "reason": line.get("qos_reason"), "wait_s": line.get("wait_s")}
                for line in rounds if abs(float(line["t"]) - change_time) <= 8 * period
            ]
            found.append({
                "device": name, "host": host, "change_at_s": round(change_time - round_zero, 2),
                "uplink_factor": change.uplink_factor, **adaptation.to_dict(),
                "change_needed": change_was_needed(rounds, change_time),
                # None: the old choice still fitted, so there was nothing to adapt (not a pass, not a failure).
                "adapted_within_2_rounds": adaptation.adapted_within(2) if change_was_needed(rounds, change_time) else None,
                "progress": progress_rates(fleet_lines, change_time=change_time, settle_s=2 * period, window_s=6 * period),
                "rounds_around_change": window,
            })
    return found

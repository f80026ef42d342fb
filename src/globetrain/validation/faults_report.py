"""The fault run's report: did training go on, reach the target, and leave only intact checkpoints.

``summarize_faults`` reads the run's merged metrics lines (the devices' round lines, the
bootstrap's evaluations while it lived), the evaluated checkpoint copies, the applied
faults and the checkpoint scan, and answers per fault whether the fleet got over it.
``plot_faults`` draws accuracy over time with the faults marked, and each device's rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402


def _rounds_of(rows: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return sorted((row for row in rows if row.get("source") == name and row.get("event") == "round"),
                  key=lambda row: float(row["t"]))


def _applied_time(applied: Sequence[Mapping[str, Any]], kind: str, target: str) -> float | None:
    for record in applied:
        if record["kind"] == kind and record["target"] == target and not record.get("error"):
            return float(record["applied_at_s"])
    return None


FULL_DISK_MARKERS = ("No space left on device", "the disk is full")
CRASHED_WRITER_MARKER = "Exception in thread checkpoint-writer"


def full_disk_evidence(log_text: str) -> dict[str, int]:
    """What a device's log says about its full disk: lines naming it, and crashed checkpoint writers."""
    lines = log_text.splitlines()
    return {
        "full_disk_lines": sum(1 for line in lines if any(marker in line for marker in FULL_DISK_MARKERS)),
        "checkpoint_writer_crashes": sum(1 for line in lines if CRASHED_WRITER_MARKER in line),
    }


def accuracy_curve(rows: Sequence[Mapping[str, Any]], snapshots: Sequence[Mapping[str, Any]],
                   round_zero: float) -> list[dict[str, Any]]:
    """The bootstrap's evaluations (while it lived) and the evaluated checkpoint copies, in time order."""
    points = [{"at_s": round(float(row["t"]) - round_zero, 2), "val_accuracy": row["val_accuracy"], "source": "bootstrap"}
              for row in rows if row.get("source") == "bootstrap" and row.get("event") == "evaluation"
              and row.get("val_accuracy") is not None]
    points += [{"at_s": s["at_s"], "val_accuracy": s["val_accuracy"], "source": f"checkpoint of {s['device']}"}
               for s in snapshots if s.get("val_accuracy") is not None]
    return sorted(points, key=lambda point: point["at_s"])


def summarize_faults(
    *,
    settings: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    applied: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    round_zero: float | None,
    snapshots: Sequence[Mapping[str, Any]],
    scan: Mapping[str, Any],
    exit_code: int | None,
    error: str | None,
    hook_errors: Sequence[str],
    round_period_s: float,
    names: Sequence[str],
    device_logs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    target = float(settings["target_accuracy"])
    report: dict[str, Any] = {
        "benchmark": "validation-faults", "settings": dict(settings), "planned": list(events), "applied": list(applied),
        "exit_code": exit_code, "error": error, "hook_errors": list(hook_errors), "round_period_s": round_period_s,
        "final_val_accuracy": summary.get("val_accuracy"), "final_test_accuracy": summary.get("test_accuracy"),
        "final_checkpoint": summary.get("checkpoint"), "stopped_by": summary.get("stopped_by"),
        "exchanges_succeeded": summary.get("exchanges_succeeded"), "exchanges_failed": summary.get("exchanges_failed"),
        "checkpoints": dict(scan),
    }
    if round_zero is None:
        report["targets"] = {"run_started": False}
        return report
    curve = accuracy_curve(rows, snapshots, round_zero)
    report["accuracy_curve"] = curve
    first = next((point for point in curve if point["val_accuracy"] >= target), None)
    report["first_reached_at_s"] = None if first is None else first["at_s"]
    last_fault = max((float(record["applied_at_s"]) for record in applied), default=0.0)
    devices: dict[str, Any] = {}
    for name in names:
        rounds = _rounds_of(rows, name)
        times = [float(row["t"]) - round_zero for row in rounds]
        entry: dict[str, Any] = {
            "rounds": len(rounds),
            "applied_rounds_after_last_fault": sum(
                1 for row, at in zip(rounds, times) if at > last_fault and row.get("status") == "applied"),
            "round_times": [round(at, 2) for at in times], "round_indexes": [int(row["round"]) for row in rounds],
        }
        for kind, label in (("restart", "rounds_after_restart"), ("continue", "rounds_after_continue"),
                            ("fill", "rounds_after_fill")):
            at = _applied_time(applied, kind, name)
            if at is not None:
                entry[label] = sum(1 for moment in times if moment > at)
        finished = [row for row in rows if row.get("source") == name and row.get("event") == "finished"]
        if finished:
            entry["checkpoint_failures"] = finished[-1].get("checkpoint_failures")
            entry["last_checkpoint_round"] = finished[-1].get("checkpoint_round")
        entry.update(full_disk_evidence((device_logs or {}).get(name, "")))
        joined = [row for row in rows if row.get("source") == name and row.get("event") == "joined"]
        entry["joins"] = [{"resumed_round": row.get("resumed_round")} for row in joined]
        devices[name] = entry
    report["devices"] = devices
    restarted = [e["target"] for e in events if e["kind"] == "restart"]
    stopped = [e["target"] for e in events if e["kind"] == "continue"]
    filled = [e["target"] for e in events if e["kind"] == "fill"]
    final = summary.get("val_accuracy")
    report["targets"] = {
        "final_model_reaches_target": final is not None and final >= target,
        "zero_broken_checkpoints": scan.get("broken_count", 1) == 0,
        "restarted_devices_rejoined_and_trained": bool(restarted) and all(
            devices[n].get("rounds_after_restart", 0) > 0 and any(j["resumed_round"] is not None for j in devices[n]["joins"])
            for n in restarted),
        "stopped_device_trains_after_continue": bool(stopped) and all(devices[n].get("rounds_after_continue", 0) > 0
                                                                      for n in stopped),
        "filled_device_trained_on": bool(filled) and all(devices[n].get("rounds_after_fill", 0) > 0 for n in filled),
        # The checkpointer must have met the full disk (else the fault tested nothing) and survived it.
        "filled_device_met_the_full_disk": bool(filled) and all(
            (devices[n].get("checkpoint_failures") or 0) > 0 or devices[n]["full_disk_lines"] > 0 for n in filled),
        # A full disk must be a warning and a counted failure, not a thread dying with a traceback.
        "full_disk_handled_without_crash": bool(filled) and all(devices[n]["checkpoint_writer_crashes"] == 0
                                                                for n in filled),
        "every_fault_applied": len(applied) == len(events) and not any(record.get("error") for record in applied),
        "fleet_applies_rounds_after_last_fault": sum(d["applied_rounds_after_last_fault"] for d in devices.values()) > 0,
    }
    return report


def plot_faults(report: Mapping[str, Any], path: Path) -> None:
    figure, (accuracy_axis, rounds_axis) = plt.subplots(1, 2, figsize=(14, 4.8))
    curve = report.get("accuracy_curve") or []
    for source, marker in (("bootstrap", "o"), ("checkpoint", "s")):
        points = [p for p in curve if p["source"].startswith(source)]
        if points:
            accuracy_axis.plot([p["at_s"] for p in points], [p["val_accuracy"] for p in points], marker=marker,
                               markersize=3, label="bootstrap's evaluation" if source == "bootstrap" else
                               "evaluated copy of a device's checkpoint")
    target = report.get("settings", {}).get("target_accuracy")
    if target is not None:
        accuracy_axis.axhline(target, color="tab:red", linestyle=":", linewidth=1, label=f"target {target:.0%}")
    colors = {"kill": "black", "restart": "tab:green", "stop": "tab:purple", "continue": "tab:purple",
              "fill": "tab:orange", "free": "gold"}
    labelled: set[str] = set()
    for record in report.get("applied", []):
        kind = record["kind"]
        label = None if kind in labelled else kind
        labelled.add(kind)
        for axis in (accuracy_axis, rounds_axis):
            axis.axvline(record["applied_at_s"], color=colors.get(kind, "grey"), linewidth=0.8, alpha=0.7,
                         linestyle="--" if record["target"] == "bootstrap" else "-", label=label if axis is accuracy_axis else None)
    accuracy_axis.set(xlabel="seconds since round 0", ylabel="validation accuracy", ylim=(0, 1.02),
                      title="global model through the faults (dashed black: bootstrap killed)")
    accuracy_axis.grid(alpha=0.3)
    accuracy_axis.legend(fontsize=7, loc="upper left")
    for name, device in sorted((report.get("devices") or {}).items()):
        rounds_axis.plot(device["round_times"], device["round_indexes"], marker=".", markersize=3, linewidth=0.6, label=name)
    rounds_axis.set(xlabel="seconds since round 0", ylabel="round", title="each device's rounds (gaps: killed / stopped)")
    rounds_axis.grid(alpha=0.3)
    rounds_axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

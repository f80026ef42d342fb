"""The shaped validation's report: the headline numbers from the cases, and its figure.

``headline`` compares the cases side by side (time-to-target shaped/unshaped per method,
bytes from interface counters against the devices' reports, compute fraction, the
adaptation after the rate drop) and says for each target whether it was met.
``plot_shaped`` draws accuracy over time for every case, counters against reported bytes
per device, and the affected device's H, density and bits around the rate drop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402

from globetrain.validation.accounting import ratio_or_none  # noqa: E402

SHAPED_OVER_UNSHAPED_TARGET = 1.25
ADAPTATION_ROUNDS_TARGET = 2


def headline(cases: Mapping[str, Mapping[str, Any]], *, methods: Sequence[str], byte_tolerance: float) -> dict[str, Any]:
    """Per method: time-to-target shaped and unshaped and their ratio; then the other targets."""
    per_method: dict[str, Any] = {}
    for method in methods:
        shaped = cases.get(f"{method}-shaped", {})
        reference = cases.get(f"{method}-unshaped", {})
        shaped_ttt, reference_ttt = shaped.get("time_to_target_s"), reference.get("time_to_target_s")
        ratio = ratio_or_none(shaped_ttt, reference_ttt)
        # Shaped never reached it but unshaped did: the ratio is at least the shaped run's length over that.
        at_least = (ratio_or_none(shaped.get("training_seconds"), reference_ttt)
                    if shaped_ttt is None and reference_ttt is not None else None)
        per_method[method] = {
            "time_to_target_shaped_s": shaped_ttt,
            "time_to_target_unshaped_s": reference_ttt,
            "shaped_over_unshaped": None if ratio is None else round(ratio, 3),
            "shaped_over_unshaped_at_least": None if at_least is None else round(at_least, 3),
            "reached_shaped": bool(shaped.get("reached")),
            "reached_unshaped": bool(reference.get("reached")),
            "compute_fraction_shaped": shaped.get("compute_fraction"),
            "compute_fraction_unshaped": reference.get("compute_fraction"),
            "final_val_accuracy_shaped": shaped.get("final_val_accuracy"),
            "final_val_accuracy_unshaped": reference.get("final_val_accuracy"),
            "bytes_sent_per_device_shaped": shaped.get("bytes_sent_per_device"),
        }
    two_step = per_method.get("two-step", {})
    ratio = two_step.get("shaped_over_unshaped")
    bound = two_step.get("shaped_over_unshaped_at_least")
    if ratio is not None:
        within = ratio <= SHAPED_OVER_UNSHAPED_TARGET
    elif bound is not None and bound > SHAPED_OVER_UNSHAPED_TARGET:
        within = False
    else:
        within = None
    byte_ratios = [entry["sent_ratio"] for case in cases.values() if case.get("shaped")
                   for entry in case.get("bytes", []) if entry.get("sent_ratio") is not None]
    adaptations = [a for case in cases.values() if case.get("method") == "two-step" and case.get("shaped")
                   for a in case.get("adaptation", [])]
    recovered = [a["progress"]["recovered"] for a in adaptations if a["progress"].get("recovered") is not None]
    return {
        "methods": per_method,
        "targets": {
            "two_step_shaped_within_1.25x_of_unshaped": within,
            "bytes_counters_within_tolerance_of_reported": (
                None if not byte_ratios else all(abs(r - 1.0) <= byte_tolerance for r in byte_ratios)),
            "counter_over_reported_range_shaped": [min(byte_ratios), max(byte_ratios)] if byte_ratios else None,
            # None where no adaptation was needed (the old choice still fitted) or none was measured.
            "adapted_within_2_rounds": (None if not [a for a in adaptations if a.get("change_needed")]
                                        else all(a["adapted_within_2_rounds"] for a in adaptations if a.get("change_needed"))),
            "adaptation_needed_after_drop": [a.get("change_needed") for a in adaptations],
            "fleet_progress_after_over_before_drop": recovered,
        },
    }


def plot_shaped(cases: Mapping[str, Mapping[str, Any]], path: Path, *, target_accuracy: float) -> None:
    figure, (accuracy_axis, bytes_axis, qos_axis) = plt.subplots(1, 3, figsize=(17, 4.8))

    for name, case in sorted(cases.items()):
        curve = case.get("accuracy_curve") or []
        if curve:
            line, = accuracy_axis.plot([p[0] for p in curve], [p[1] for p in curve], marker="o", markersize=2.5,
                                       linestyle="-" if case.get("shaped") else "--", label=name)
            if case.get("final_val_accuracy") is not None and case.get("training_seconds"):
                # The newest checkpoint at the end, on the whole validation split: the curve's last word.
                accuracy_axis.scatter([case["training_seconds"]], [case["final_val_accuracy"]], marker="*", s=90,
                                      color=line.get_color(), zorder=3)
    accuracy_axis.axhline(target_accuracy, color="tab:red", linewidth=1, linestyle=":", label=f"target {target_accuracy:.0%}")
    for action in _network_actions(cases):
        accuracy_axis.axvline(action["applied_at_s"], color="grey", linewidth=0.6, alpha=0.5)
    accuracy_axis.set(xlabel="seconds since round 0 (grey: network changes; stars: final checkpoint)",
                      ylabel="validation accuracy",
                      title="global model accuracy", ylim=(0, 1.02))
    accuracy_axis.grid(alpha=0.3)
    accuracy_axis.legend(fontsize=7, loc="upper left")

    markers = {"two-step": "o", "dense": "s"}
    for name, case in sorted(cases.items()):
        entries = case.get("bytes") or []
        if not entries:
            continue
        bytes_axis.scatter([max(e["reported_sent"], 1) for e in entries], [max(e["counter_sent"], 1) for e in entries],
                           marker=markers.get(str(case.get("method")), "^"), s=22, alpha=0.8, label=name)
    limits = [v for case in cases.values() for e in case.get("bytes") or [] for v in (e["reported_sent"], e["counter_sent"]) if v > 0]
    if limits:
        low, high = min(limits) / 2, max(limits) * 2
        bytes_axis.plot([low, high], [low, high], color="black", linewidth=0.8, label="counter = reported")
        bytes_axis.fill_between([low, high], [low * 0.9, high * 0.9], [low * 1.1, high * 1.1], color="tab:green",
                                alpha=0.15, label="within 10 %")
        bytes_axis.set(xscale="log", yscale="log")
    bytes_axis.set(xlabel="bytes the device reported sending", ylabel="bytes its interface sent (kernel counter)",
                   title="per device, over the same window")
    bytes_axis.grid(alpha=0.3, which="both")
    bytes_axis.legend(fontsize=7)

    drawn = False
    for name, case in sorted(cases.items()):
        if case.get("method") != "two-step" or not case.get("shaped"):
            continue
        for adaptation in case.get("adaptation", []):
            rounds = adaptation["rounds_around_change"]
            if not rounds:
                continue
            times = [r["t"] for r in rounds]
            qos_axis.step(times, [r["H"] for r in rounds], where="post", label=f"{adaptation['device']} H (inner steps)")
            qos_axis.step(times, [r["density"] * 1000 for r in rounds], where="post", label="density x 1000")
            qos_axis.step(times, [r["bits"] for r in rounds], where="post", label="bits")
            # Bytes span three orders of magnitude (a leader's round, an idle round): own log axis.
            bytes_axis_right = qos_axis.twinx()
            bytes_axis_right.plot(times, [max(r["bytes_sent"], 1) / 1000 for r in rounds], marker=".", color="grey",
                                  linestyle="none", label="KB sent in the round (right, log)")
            bytes_axis_right.set(yscale="log", ylabel="KB sent in the round")
            bytes_axis_right.legend(fontsize=7, loc="lower right")
            qos_axis.axvline(adaptation["change_at_s"], color="tab:red", linewidth=1,
                             label=f"uplink x{adaptation['uplink_factor']:g}")
            drawn = True
    qos_axis.set(xlabel="seconds since round 0", title="affected device around the rate drop (two-step, shaped)")
    qos_axis.grid(alpha=0.3)
    if drawn:
        qos_axis.legend(fontsize=7)
    else:
        qos_axis.text(0.5, 0.5, "no rate drop in this run", ha="center", va="center", transform=qos_axis.transAxes)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _network_actions(cases: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    for case in cases.values():
        if case.get("network_actions"):
            return list(case["network_actions"])
    return []

"""Plots of a fleet run, drawn from its metrics lines (PNG files next to the JSON).

- ``plot_progress``: validation accuracy of the global model over time (with the
  target), and each device's cumulative bytes on the wire over time against what a
  dense fp32 ring all-reduce after every step would have sent (log scale);
- ``plot_device_time``: per device, seconds computing, waiting on exchanges, and the
  rest (encoding, applying, checkpoints), with the compute fraction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on devices or CI
import matplotlib.pyplot as plt  # noqa: E402

from globetrain.report.summary import DeviceTotals, dense_allreduce_bytes  # noqa: E402


def plot_progress(
    rows: Iterable[Mapping[str, Any]],
    evaluations: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    start_time: float,
    fleet_size: int,
    parameters: int,
    target_accuracy: float | None = None,
    title: str = "",
) -> None:
    """Accuracy over time (left) and bytes sent per device over time (right)."""
    figure, (accuracy_axis, bytes_axis) = plt.subplots(1, 2, figsize=(11, 4))

    points = sorted((float(e["t"]) - start_time, e["val_accuracy"]) for e in evaluations if e.get("val_accuracy") is not None)
    if points:
        accuracy_axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label="global model")
    if target_accuracy is not None:
        accuracy_axis.axhline(target_accuracy, color="tab:red", linestyle="--", linewidth=1, label=f"target {target_accuracy:.0%}")
    accuracy_axis.set(xlabel="seconds since round 0", ylabel="validation accuracy", title="accuracy", ylim=(0, 1.02))
    accuracy_axis.grid(alpha=0.3)
    accuracy_axis.legend(loc="lower right")

    by_device: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("event") == "round":
            by_device.setdefault(str(row["device"]), []).append(row)
    dense_drawn = False
    for index, (device, device_rows) in enumerate(sorted(by_device.items())):
        device_rows.sort(key=lambda row: row["t"])
        times, sent, dense = [], [], []
        total_sent, total_steps = 0, 0
        for row in device_rows:
            total_sent += int(row["bytes_sent"])
            total_steps += int(row["inner_steps"])
            if total_sent == 0 or total_steps == 0:
                continue  # nothing to draw on a log scale before the first bytes and steps
            times.append(float(row["t"]) - start_time)
            sent.append(total_sent)
            dense.append(dense_allreduce_bytes(total_steps, fleet_size, parameters))
        color = plt.cm.tab10.colors[index % 10]
        bytes_axis.plot(times, sent, color=color, label=device)
        if fleet_size >= 2:
            bytes_axis.plot(times, dense, color=color, linestyle=":", linewidth=1,
                            label="dense fp32 all-reduce, same steps" if not dense_drawn else None)
            dense_drawn = True
    bytes_axis.set_yscale("log")
    bytes_axis.set(xlabel="seconds since round 0", ylabel="bytes sent (cumulative)", title="bytes on the wire per device")
    bytes_axis.grid(alpha=0.3, which="both")
    if by_device:
        bytes_axis.legend(fontsize=7, loc="upper left")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_device_time(devices: Sequence[DeviceTotals], path: Path, *, title: str = "") -> None:
    """Stacked horizontal bars per device: compute, waiting on exchanges, other."""
    names = [device.device for device in devices]
    compute = [device.compute_s for device in devices]
    waiting = [device.wait_s for device in devices]
    other = [device.other_s for device in devices]
    figure, axis = plt.subplots(figsize=(8, 0.5 * max(len(devices), 2) + 1.5))
    positions = range(len(devices))
    axis.barh(positions, compute, color="tab:green", label="computing")
    axis.barh(positions, waiting, left=compute, color="tab:red", label="waiting on exchanges")
    axis.barh(positions, other, left=[c + w for c, w in zip(compute, waiting)], color="tab:gray",
              label="other (encode, apply, checkpoint, join)")
    for position, device in zip(positions, devices):
        axis.annotate(f"{device.compute_fraction:.0%} computing", (device.active_s, position),
                      xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    axis.set_yticks(list(positions), names)
    axis.invert_yaxis()
    axis.set(xlabel="seconds", title=title or "where each device's time went")
    axis.legend(fontsize=8, loc="lower right")
    axis.set_xlim(0, max((device.active_s for device in devices), default=1.0) * 1.3 + 1e-9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)

"""Writing a run's results: summary.json, the curve as CSV, the fleet and plots.

Files in the run folder:

- ``summary.json``: the numbers (``Simulation._summary``), the resolved config included;
- ``curve.csv``: one row per new global model: simulated time, validation accuracy, global
  steps, global samples, bytes sent by the whole fleet, devices online;
- ``devices.csv``: one row per device: class, region, access, rates, RTT to the first
  device, speed, online fraction, bytes sent and received, compute seconds;
- ``fleet.json``: the fleet profile used; ``machine_reference.json``: the speed anchor;
- ``accuracy.png``: accuracy against simulated time (target line), bytes against time
  (not drawn for the runs of a sweep, whose figures compare them).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from globetrain.sim.engine import SimulationResult

CURVE_FIELDS = ("time_s", "accuracy", "global_steps", "global_samples", "bytes_sent_total", "online_devices")


def write_run(result: SimulationResult, out: Path, *, plot: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", result.summary)
    with open(out / "curve.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        for point in result.curve:
            writer.writerow({key: point[key] for key in CURVE_FIELDS})
    (out / "fleet.json").write_text(result.profile.to_json())
    write_json(out / "machine_reference.json", result.reference.to_dict())
    _write_devices(result, out / "devices.csv")
    if plot:
        plot_run(result, out / "accuracy.png")


def write_json(path: Path, data: Any) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=False, default=_plain) + "\n")
    temporary.replace(path)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _write_devices(result: SimulationResult, path: Path) -> None:
    fleet = result.fleet
    end = float(result.summary["simulated_seconds"])
    per_device = result.per_device
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([
            "device", "class", "region", "access", "uplink_mbps", "downlink_mbps", "rtt_to_d00000_ms",
            "clips_per_s", "online_fraction", "bytes_sent", "bytes_received", "compute_seconds",
        ])
        for index in range(fleet.count):
            online = fleet.online_seconds(index, end) / end if end > 0 else 0.0
            writer.writerow([
                fleet.name(index),
                fleet.class_names[fleet.device_class[index]],
                fleet.region_names[fleet.region[index]],
                fleet.access_names[fleet.access[index]],
                round(float(fleet.uplink_bytes_per_s[index]) * 8 / 1e6, 3),
                round(float(fleet.downlink_bytes_per_s[index]) * 8 / 1e6, 3),
                round(fleet.rtt_s(0, index) * 1000, 1),
                round(float(fleet.samples_per_s[index]), 3),
                round(online, 4),
                *[_value(per_device, key, index) for key in ("bytes_sent", "bytes_received", "compute_seconds")],
            ])


def _value(per_device: dict[str, np.ndarray], key: str, index: int) -> float | str:
    values = per_device.get(key)
    return round(float(values[index]), 1) if values is not None else ""


def plot_run(result: SimulationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result.summary
    times = [p["time_s"] / 3600 for p in result.curve]
    figure, (accuracy_axes, bytes_axes) = plt.subplots(1, 2, figsize=(11, 4))
    accuracy_axes.plot(times, [p["accuracy"] for p in result.curve], label=summary["method"])
    accuracy_axes.axhline(summary["target_accuracy"], color="grey", linestyle="--", linewidth=1, label="target")
    if summary["time_to_target_s"] is not None:
        accuracy_axes.axvline(summary["time_to_target_s"] / 3600, color="grey", linestyle=":", linewidth=1)
    accuracy_axes.set_xlabel("simulated time (h)")
    accuracy_axes.set_ylabel("validation accuracy (proxy task)")
    accuracy_axes.set_title(f"{summary['method']} on {summary['fleet']}, {summary['devices']} devices")
    accuracy_axes.legend()
    devices = max(summary["devices"], 1)
    bytes_axes.plot(times, [p["bytes_sent_total"] / devices / 1e6 for p in result.curve])
    bytes_axes.set_xlabel("simulated time (h)")
    bytes_axes.set_ylabel(f"MB sent per device ({summary['model']} payloads)")
    bytes_axes.set_title(
        f"utilization {summary['compute_utilization']:.2f}, scaling efficiency {summary['scaling_efficiency']:.2f}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    target = summary["time_to_target_s"]
    reached = "not reached" if target is None else f"{target / 3600:.2f} h"
    lines = [
        f"{summary['method']} on {summary['fleet']} with {summary['devices']} devices: "
        f"accuracy {summary['val_accuracy']:.3f} after {summary['simulated_seconds'] / 3600:.2f} simulated hours "
        f"({summary['stopped_by']})",
        f"  time to {summary['target_accuracy']:.2f}: {reached}; global steps {summary['steps']}",
        f"  compute utilization {summary['compute_utilization']:.3f}, scaling efficiency {summary['scaling_efficiency']:.3f}",
        f"  sent per device {_bytes(summary['bytes_sent_per_device'])} ({summary['model']}, "
        f"{summary['model_parameters']:,} parameters); median uplink {summary['median_uplink_mbps']:.1f} Mbit/s",
        f"  math on the proxy: {summary['proxy_model']}",
        f"  wall {summary['wall_seconds']:.1f} s" + (" (wall-time guard hit)" if summary["wall_guard_hit"] else ""),
    ]
    return "\n".join(lines)


def _bytes(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"

"""The short human-readable report of a fleet run (Markdown), drawn from its summary.

It says what ran, how it ended (target reached, budget spent, interrupted), the
accuracy, the bytes against dense all-reduce, where the devices' time went, and which
files hold the details. Numbers only come from ``summary.json``, so the report never
disagrees with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENDINGS = {
    "target": "reached the target accuracy",
    "budget": "spent its time budget",
    "interrupted": "was interrupted (Ctrl+C); this is a partial report",
    "devices-exited": "ended because every device process exited",
    "error": "ended with an error; this is a partial report",
}


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def _bytes(value: Any) -> str:
    if value is None:
        return "n/a"
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} GB"


def render_report(summary: Mapping[str, Any], devices: Sequence[Mapping[str, Any]], files: Sequence[str]) -> str:
    """The report's text from ``summary.json``'s contents and its per-device rows."""
    ending = ENDINGS.get(str(summary.get("stopped_by")), str(summary.get("stopped_by")))
    ratio = summary.get("dense_over_sent")
    lines = [
        f"# globetrain demo: {summary.get('devices')} devices, {summary.get('method')}",
        "",
        f"The run {ending} after {float(summary.get('wall_seconds', 0)):.0f} s "
        f"({float(summary.get('training_seconds') or 0):.0f} s of training, "
        f"{summary.get('rounds', 0)} rounds of {summary.get('round_period_s', '?')} s).",
        "",
        "| | |",
        "| --- | --- |",
        f"| validation accuracy | {_percent(summary.get('val_accuracy'))} (target {_percent(summary.get('target_accuracy'))}) |",
        f"| test accuracy | {_percent(summary.get('test_accuracy'))} |",
        f"| model | {summary.get('model')} ({int(summary.get('parameters') or 0):,} parameters) |",
        f"| data | {summary.get('data_layout')} over {summary.get('devices')} devices |",
        f"| sent per device | {_bytes(summary.get('bytes_sent_per_device'))} |",
        f"| received per device | {_bytes(summary.get('bytes_received_per_device'))} |",
        f"| dense fp32 all-reduce, same steps | {_bytes(summary.get('dense_bytes_per_device'))} per device"
        + (f" ({ratio:,.0f}x more than sent) |" if ratio else " |"),
        f"| everything on the wire per device | {_bytes(summary.get('wire_bytes_sent_per_device'))} sent, "
        f"{_bytes(summary.get('wire_bytes_received_per_device'))} received (DHT, libp2p, TCP/IP headers included) |",
        f"| exchanges | {summary.get('exchanges_succeeded', 0)} applied, {summary.get('exchanges_failed', 0)} failed |",
        f"| time computing | {_percent(summary.get('compute_fraction'))} of the devices' time |",
    ]
    if summary.get("time_to_target_s") is not None:
        lines.append(f"| time to target | {float(summary['time_to_target_s']):.0f} s after round 0 |")
    lines += ["", "## Devices", "", "| device | rounds | inner steps | clips | computing | waiting | other | sent | received |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for device in devices:
        lines.append(
            f"| {device['device']} | {device['rounds']} | {device['inner_steps']} | {device['samples']} "
            f"| {float(device['compute_s']):.0f} s | {float(device['wait_s']):.1f} s | {float(device['other_s']):.1f} s "
            f"| {_bytes(device['bytes_sent'])} | {_bytes(device['bytes_received'])} |"
        )
    if summary.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in summary["notes"]]
    lines += ["", "## Files", ""] + [f"- `{name}`" for name in files]
    return "\n".join(lines) + "\n"


def write_report(path: Path, summary: Mapping[str, Any], devices: Sequence[Mapping[str, Any]], files: Sequence[str]) -> None:
    """Write the report atomically (a reader never sees half of it)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(render_report(summary, devices, files))
    os.replace(temporary, path)

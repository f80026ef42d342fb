"""Checking that a lab delivers what it is told: rates, delays, counters, live changes.

``python -m globetrain.netlab calibrate --out DIR`` builds a small lab and measures, with
real transfers, each ratio that a validation run relies on:
- goodput / configured uplink rate, for 1, 2, 5, 10 and 50 Mbit/s (expect a little
  under 1: the rate counts frame bytes, goodput counts payload);
- interface counter bytes / application bytes sent (expect 1.0-1.1: TCP/IP headers);
- measured one-way delay / relay delay, for 10, 50 and 150 ms (expect >= 1);
- goodput / rate after a live tenfold rate cut, through a shaped downlink, and at
  50 Mbit/s through a relay (the relay must not be the bottleneck).
It writes ``calibration.json`` and ``calibration.png`` (ratios side by side).
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from globetrain.netlab.lab import Lab
from globetrain.netlab.measure import measure_transfer

UPLINK_RATES_MBIT = (1.0, 2.0, 5.0, 10.0, 50.0)
RELAY_DELAYS_MS = (10.0, 50.0, 150.0)
DOWNLINK_RATE_MBIT = 5.0


def _payload_for(rate_mbit: float, seconds: float) -> int:
    return int(rate_mbit * 1e6 / 8 * seconds)


def calibrate(seconds_per_transfer: float = 3.0,
              progress: Callable[[str], None] = lambda step: None) -> dict[str, Any]:
    """Run every measurement in one fresh lab; return the rows (one per measurement)."""
    rows: list[dict[str, Any]] = []
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="netlab-calibrate-") as control_dir:
        meter = lab.add_host("meter")
        for rate in UPLINK_RATES_MBIT:
            progress(f"uplink {rate:g} Mbit/s")
            host = lab.add_host(f"up{int(rate)}", uplink_mbit=rate)
            transfer, _ = measure_transfer(host, meter, _payload_for(rate, seconds_per_transfer))
            rows.append({"measurement": "uplink", "configured": rate, "unit": "Mbit/s",
                         "measured": transfer.goodput_mbit, "ratio": transfer.goodput_mbit / rate,
                         "counter_ratio": transfer.source_tx_bytes / transfer.sent_bytes,
                         "bytes": transfer.sent_bytes, "seconds": transfer.transfer_s})
        progress("live cut 10 -> 1 Mbit/s")
        changed = lab.host("up10")
        changed.set_uplink(1.0)
        transfer, _ = measure_transfer(changed, meter, _payload_for(1.0, seconds_per_transfer))
        rows.append({"measurement": "uplink after live cut", "configured": 1.0, "unit": "Mbit/s",
                     "measured": transfer.goodput_mbit, "ratio": transfer.goodput_mbit / 1.0,
                     "counter_ratio": transfer.source_tx_bytes / transfer.sent_bytes,
                     "bytes": transfer.sent_bytes, "seconds": transfer.transfer_s})
        progress(f"downlink {DOWNLINK_RATE_MBIT:g} Mbit/s")
        receiver = lab.add_host("down5", downlink_mbit=DOWNLINK_RATE_MBIT)
        transfer, _ = measure_transfer(meter, receiver, _payload_for(DOWNLINK_RATE_MBIT, seconds_per_transfer))
        rows.append({"measurement": "downlink", "configured": DOWNLINK_RATE_MBIT, "unit": "Mbit/s",
                     "measured": transfer.goodput_mbit, "ratio": transfer.goodput_mbit / DOWNLINK_RATE_MBIT,
                     "counter_ratio": transfer.source_tx_bytes / transfer.sent_bytes,
                     "bytes": transfer.sent_bytes, "seconds": transfer.transfer_s})
        progress("50 Mbit/s through a 50 ms relay")
        transfer, _ = measure_transfer(lab.host("up50"), meter, _payload_for(50.0, seconds_per_transfer),
                                       relay_delay_ms=50.0, control_dir=Path(control_dir))
        rows.append({"measurement": "uplink via relay", "configured": 50.0, "unit": "Mbit/s",
                     "measured": transfer.goodput_mbit, "ratio": transfer.goodput_mbit / 50.0,
                     "counter_ratio": transfer.source_tx_bytes / transfer.sent_bytes,
                     "bytes": transfer.sent_bytes, "seconds": transfer.transfer_s})
        for delay in RELAY_DELAYS_MS:
            progress(f"relay delay {delay:g} ms")
            transfer, relay = measure_transfer(lab.host("up50"), meter, 10_000, relay_delay_ms=delay,
                                               control_dir=Path(control_dir))
            forwarded = relay["stats"]["forward_bytes"] if relay else 0
            rows.append({"measurement": "relay delay", "configured": delay, "unit": "ms",
                         "measured": transfer.one_way_delay_s * 1000,
                         "ratio": transfer.one_way_delay_s * 1000 / delay,
                         "relay_forwarded_ratio": forwarded / transfer.sent_bytes,
                         "bytes": transfer.sent_bytes, "seconds": transfer.transfer_s})
    return {"seconds_per_transfer": seconds_per_transfer, "rows": rows}


def write_report(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``calibration.json`` and a PNG of the ratios (1.0 is exact) in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "calibration.json"
    json_path.write_text(json.dumps(result, indent=2))
    rows = result["rows"]
    labels = [f"{textwrap.fill(row['measurement'], 12)}\n{row['configured']:g} {row['unit']}" for row in rows]
    figure, axis = plt.subplots(figsize=(max(8, len(rows) * 0.9), 4.5))
    axis.bar(range(len(rows)), [row["ratio"] for row in rows], color="tab:blue", label="measured / configured")
    counters = [(index, row["counter_ratio"]) for index, row in enumerate(rows) if "counter_ratio" in row]
    axis.scatter([i for i, _ in counters], [r for _, r in counters], color="tab:orange", zorder=3,
                 label="interface counter / app bytes")
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(rows)), labels, fontsize=7)
    axis.set_ylabel("ratio")
    axis.set_title("network lab calibration (1.0 = exactly as configured)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    png_path = out / "calibration.png"
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return json_path, png_path

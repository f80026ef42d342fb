"""The bootstrap's live view of the fleet: devices online, progress, bytes, accuracy.

Everything comes from what the bootstrap sees as a peer: the roster (each device
publishes its name, the bytes its protocol streams moved and its inner steps with its
heartbeat), the aggregates it follows (global samples, round) and its own evaluations
of the global model. In a terminal it is a live table; otherwise (a log file, the demo)
one plain line per round.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from globetrain.fleet.node import FleetNode
from globetrain.report.summary import dense_allreduce_bytes


def _amount(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


@dataclasses.dataclass
class FleetSnapshot:
    round: int
    devices: list[str]
    global_samples: int
    bytes_sent: int
    bytes_received: int
    dense_bytes: float
    accuracy: float | None
    accuracy_round: int | None

    @property
    def compression(self) -> float | None:
        return self.dense_bytes / self.bytes_sent if self.bytes_sent > 0 and self.dense_bytes > 0 else None

    def line(self) -> str:
        ratio = f"{self.compression:,.0f}x below dense" if self.compression else "n/a"
        accuracy = "n/a" if self.accuracy is None else f"{self.accuracy:.1%} (round {self.accuracy_round})"
        return (
            f"round {self.round}: {len(self.devices)} devices online, {self.global_samples:,} global samples, "
            f"devices sent {_amount(self.bytes_sent)} / received {_amount(self.bytes_received)} ({ratio}), "
            f"val accuracy {accuracy}"
        )


def take_snapshot(node: FleetNode, *, round_index: int, global_samples: int, parameters: int,
                  evaluation: dict[str, Any] | None) -> FleetSnapshot:
    devices = [record for record in node.roster.snapshot() if record.role == "device"]
    count = len(devices)
    return FleetSnapshot(
        round=round_index,
        devices=sorted(record.name for record in devices),
        global_samples=global_samples,
        bytes_sent=sum(record.bytes_sent for record in devices),
        bytes_received=sum(record.bytes_received for record in devices),
        dense_bytes=sum(dense_allreduce_bytes(record.inner_steps, count, parameters) for record in devices),
        accuracy=None if evaluation is None else evaluation.get("val_accuracy"),
        accuracy_round=None if evaluation is None else evaluation.get("round"),
    )


class FleetView:
    """A rich live table in a terminal, a plain line per update elsewhere."""

    def __init__(self, console: Console, *, title: str, live: bool) -> None:
        self.console = console
        self.title = title
        self.live = Live(console=console, auto_refresh=False, transient=False) if live and console.is_terminal else None
        self.started = time.monotonic()

    def __enter__(self) -> FleetView:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.live is not None:
            self.live.stop()

    def update(self, snapshot: FleetSnapshot) -> None:
        if self.live is None:
            self.console.print(snapshot.line(), highlight=False, soft_wrap=True)
            return
        table = Table(title=f"{self.title} - {time.monotonic() - self.started:.0f} s", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("round", str(snapshot.round))
        table.add_row("devices online", f"{len(snapshot.devices)}: {', '.join(snapshot.devices[:12])}"
                      + (" ..." if len(snapshot.devices) > 12 else ""))
        table.add_row("global samples", f"{snapshot.global_samples:,}")
        table.add_row("bytes up / down", f"{_amount(snapshot.bytes_sent)} / {_amount(snapshot.bytes_received)} (all devices)")
        table.add_row("compression", "n/a" if snapshot.compression is None
                      else f"{snapshot.compression:,.0f}x fewer bytes than a dense fp32 all-reduce of every step")
        table.add_row("validation accuracy", "n/a" if snapshot.accuracy is None
                      else f"{snapshot.accuracy:.1%} (global model after round {snapshot.accuracy_round})")
        self.live.update(table, refresh=True)

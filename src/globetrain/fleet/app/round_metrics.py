"""One metrics line per round boundary of a device, and its log line.

``RoundRecorder.record`` turns what ``RoundDriver`` reports at a boundary into the line
``globetrain.report.metrics.ROUND_FIELDS`` describes, adding what the driver does not
know: the steps, clips, compute seconds and loss of this round's window (from the
``LocalTrainer``), the bytes the peer moved since the previous line (its byte counter,
so state served to joiners and the aggregates a leader sends count too), and everything
its daemon put on the wire meanwhile (``wire_bytes_*``: DHT, libp2p and TCP/IP headers
too, from the kernel's socket counters).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from globetrain.fleet.app.local_training import LocalTrainer
from globetrain.fleet.node import FleetNode
from globetrain.report.metrics import MetricsWriter, finite_or_none

log = logging.getLogger(__name__)


def _kilobytes(amount: int) -> str:
    return f"{amount / 1000:.1f} KB"


class RoundRecorder:
    """Writes a device's (or a listener's) per-round metrics and keeps its running totals."""

    def __init__(
        self, *, name: str, node: FleetNode, writer: MetricsWriter | None, trainer: LocalTrainer | None
    ) -> None:
        self.name = name
        self.node = node
        self.writer = writer
        self.trainer = trainer
        self.origin: float | None = None
        self._last_time: float | None = None
        self._sent = 0
        self._received = 0
        self._wire_sent = 0
        self._wire_received = 0
        self.total_steps = 0
        self.total_samples = 0
        self.last_line: dict[str, Any] | None = None

    def start(self, origin: float) -> None:
        """Training begins at ``origin`` (Unix time): the first line's round time counts from it."""
        self.origin = origin
        self._last_time = origin

    def record(self, report: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        if self._last_time is None:
            self.start(now)
        round_seconds = max(now - (self._last_time or now), 0.0)
        self._last_time = now
        counter = self.node.peer.counter
        sent, received = counter.total("sent"), counter.total("received")
        sent_delta, received_delta = sent - self._sent, received - self._received
        self._sent, self._received = sent, received
        wire_sent_delta, wire_received_delta = self._wire_deltas()
        if self.trainer is not None:
            steps, samples, compute_seconds, loss = self.trainer.take_counters()
        else:
            steps, samples, compute_seconds, loss = 0, 0, 0.0, None
        self.total_steps += steps
        self.total_samples += samples
        settings = report.get("settings", {})
        applied = report.get("applied", [])
        exchange = report.get("last_exchange") or {}
        line = {
            "event": "round",
            "t": round(now, 3),
            "device": self.name,
            "round": int(report["round"]),
            "inner_steps": steps,
            "samples": samples,
            "compute_s": round(compute_seconds, 4),
            "wait_s": round(float(report.get("wait_seconds", 0.0)), 4),
            "round_s": round(round_seconds, 4),
            "bytes_sent": sent_delta,
            "bytes_received": received_delta,
            "wire_bytes_sent": wire_sent_delta,
            "wire_bytes_received": wire_received_delta,
            "density": float(settings.get("density", 0.0)),
            "bits": int(settings.get("bits", 0)),
            "status": applied[-1]["status"] if applied else "pending",
            "contributed": bool(report.get("contributed", False)),
            "payload_bytes": int(report.get("payload_bytes", 0)),
            "qos_inner_steps": int(settings.get("inner_steps", 0)),
            "qos_reason": str(settings.get("reason", "")),
            "loss": finite_or_none(loss),
            "applied": applied,
            "global_samples": int(report.get("global_samples", 0)),
            "leader": exchange.get("leader_name") or "",
            "note": report.get("note", ""),
        }
        if self.writer is not None:
            self.writer.write(line)
        self.node.roster.update_me(bytes_sent=sent, bytes_received=received, inner_steps=self.total_steps)
        self.last_line = line
        self._log(line)
        return line

    def _wire_deltas(self) -> tuple[int | None, int | None]:
        """Frames the peer's daemon sent and received since the previous line (all its
        traffic, headers included), or (None, None) where the kernel counters are unavailable."""
        wire = self.node.peer.wire
        totals = wire.totals() if wire is not None else None
        if totals is None:
            return None, None
        sent, received = totals.frames_sent, totals.frames_received
        deltas = sent - self._wire_sent, received - self._wire_received
        self._wire_sent, self._wire_received = sent, received
        return deltas

    def _log(self, line: dict[str, Any]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        applied = line["applied"]
        outcome = ", ".join(
            f"round {a['round']} {a['status']}" + (f" ({a['contributors']} contributors)" if a["status"] == "applied" else f": {a['reason']}")
            for a in applied
        ) or "nothing due"
        loss = "" if line["loss"] is None else f", loss {line['loss']:.3f}"
        log.info(
            "[%s round %d] H=%d, density %.4g, %d bits (%s)%s; %s; sent %s, received %s",
            self.name, line["round"], line["inner_steps"], line["density"], line["bits"], line["qos_reason"],
            loss, outcome, _kilobytes(line["bytes_sent"]), _kilobytes(line["bytes_received"]),
        )

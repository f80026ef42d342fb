"""A fleet run's numbers, computed from its devices' per-round metrics lines.

The comparison the two-step compression is judged by: the bytes a device really put on
the wire against what a data-center all-reduce would have moved for the same work,
``inner steps x 2(N-1)/N x 4 bytes x parameters`` (a ring all-reduce of fp32 gradients
after every step), and how much of its time a device spent computing rather than
waiting on the network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

FAILED_STATUSES = ("failed", "abandoned", "diverged")


def dense_allreduce_bytes(inner_steps: float, devices: int, parameters: int) -> float:
    """Bytes one device sends in a ring all-reduce of fp32 gradients after every step."""
    if devices < 2:
        return 0.0
    return float(inner_steps) * 2.0 * (devices - 1) / devices * 4.0 * parameters


@dataclasses.dataclass
class DeviceTotals:
    """One device over the whole run."""

    device: str
    rounds: int = 0
    inner_steps: int = 0
    samples: int = 0
    compute_s: float = 0.0
    wait_s: float = 0.0
    active_s: float = 0.0
    """Seconds from the start of its first round to its last boundary (sum of ``round_s``)."""
    bytes_sent: int = 0
    bytes_received: int = 0
    wire_bytes_sent: int | None = 0
    wire_bytes_received: int | None = 0
    """All traffic of the device's daemon (None once a line lacked the kernel counters)."""
    exchanges_succeeded: int = 0
    exchanges_failed: int = 0
    contributed_rounds: int = 0
    first_t: float | None = None
    last_t: float | None = None

    @property
    def other_s(self) -> float:
        """Active time neither computing nor waiting: encoding, applying, checkpoints, joining."""
        return max(self.active_s - self.compute_s - self.wait_s, 0.0)

    @property
    def compute_fraction(self) -> float:
        return self.compute_s / self.active_s if self.active_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "other_s": round(self.other_s, 3),
            "compute_fraction": round(self.compute_fraction, 4),
        }


@dataclasses.dataclass
class FleetTotals:
    """Per-device totals and the fleet-level numbers of ``summary.json``."""

    devices: list[DeviceTotals]
    fleet_size: int
    parameters: int

    def _mean(self, values: Iterable[float]) -> float:
        values = list(values)
        return sum(values) / len(values) if values else 0.0

    @property
    def bytes_sent_per_device(self) -> float:
        return self._mean(d.bytes_sent for d in self.devices)

    @property
    def bytes_received_per_device(self) -> float:
        return self._mean(d.bytes_received for d in self.devices)

    def _mean_or_none(self, values: Iterable[float | None]) -> float | None:
        values = list(values)
        return None if not values or any(v is None for v in values) else self._mean(values)  # type: ignore[arg-type]

    @property
    def wire_bytes_sent_per_device(self) -> float | None:
        return self._mean_or_none(d.wire_bytes_sent for d in self.devices)

    @property
    def wire_bytes_received_per_device(self) -> float | None:
        return self._mean_or_none(d.wire_bytes_received for d in self.devices)

    @property
    def dense_bytes_per_device(self) -> float:
        return self._mean(dense_allreduce_bytes(d.inner_steps, self.fleet_size, self.parameters) for d in self.devices)

    @property
    def compute_fraction(self) -> float:
        active = sum(d.active_s for d in self.devices)
        return sum(d.compute_s for d in self.devices) / active if active > 0 else 0.0

    @property
    def dense_over_sent(self) -> float | None:
        sent = self.bytes_sent_per_device
        return self.dense_bytes_per_device / sent if sent > 0 else None

    def to_dict(self) -> dict[str, Any]:
        ratio = self.dense_over_sent
        return {
            "bytes_sent_per_device": round(self.bytes_sent_per_device, 1),
            "bytes_received_per_device": round(self.bytes_received_per_device, 1),
            "dense_bytes_per_device": round(self.dense_bytes_per_device, 1),
            "dense_over_sent": None if ratio is None else round(ratio, 1),
            "wire_bytes_sent_per_device": _rounded(self.wire_bytes_sent_per_device),
            "wire_bytes_received_per_device": _rounded(self.wire_bytes_received_per_device),
            "dense_over_wire_sent": _ratio(self.dense_bytes_per_device, self.wire_bytes_sent_per_device),
            "exchanges_succeeded": sum(d.exchanges_succeeded for d in self.devices),
            "exchanges_failed": sum(d.exchanges_failed for d in self.devices),
            "compute_fraction": round(self.compute_fraction, 4),
            "inner_steps_per_device": round(self._mean(d.inner_steps for d in self.devices), 1),
            "samples": sum(d.samples for d in self.devices),
        }


def summarize_fleet(rows: Iterable[Mapping[str, Any]], *, fleet_size: int, parameters: int) -> FleetTotals:
    """Totals per device from round lines (``event == "round"``); other lines are ignored.

    ``fleet_size`` is N of the dense comparison (devices, not counting the bootstrap).
    An exchange counts as succeeded when its average was applied, as failed when it
    failed, timed out (abandoned) or met a diverged model.
    """
    totals: dict[str, DeviceTotals] = {}
    for row in rows:
        if row.get("event") != "round":
            continue
        name = str(row["device"])
        device = totals.setdefault(name, DeviceTotals(device=name))
        device.rounds += 1
        device.inner_steps += int(row.get("inner_steps", 0))
        device.samples += int(row.get("samples", 0))
        device.compute_s += float(row.get("compute_s", 0.0))
        device.wait_s += float(row.get("wait_s", 0.0))
        device.active_s += float(row.get("round_s", row.get("compute_s", 0.0) + row.get("wait_s", 0.0)))
        device.bytes_sent += int(row.get("bytes_sent", 0))
        device.bytes_received += int(row.get("bytes_received", 0))
        device.wire_bytes_sent = _add_known(device.wire_bytes_sent, row.get("wire_bytes_sent"))
        device.wire_bytes_received = _add_known(device.wire_bytes_received, row.get("wire_bytes_received"))
        device.contributed_rounds += bool(row.get("contributed", False))
        for applied in row.get("applied", ()):
            if applied.get("status") == "applied":
                device.exchanges_succeeded += 1
            elif applied.get("status") in FAILED_STATUSES:
                device.exchanges_failed += 1
        moment = float(row["t"])
        device.first_t = moment if device.first_t is None else min(device.first_t, moment)
        device.last_t = moment if device.last_t is None else max(device.last_t, moment)
    ordered = [totals[name] for name in sorted(totals)]
    return FleetTotals(devices=ordered, fleet_size=fleet_size, parameters=parameters)


def _add_known(total: int | None, value: Any) -> int | None:
    """A running total that becomes unknown (None) once one of its parts is."""
    return None if total is None or value is None else total + int(value)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _ratio(numerator: float, denominator: float | None) -> float | None:
    return None if not denominator else round(numerator / denominator, 1)

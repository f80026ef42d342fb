"""What a simulated run counts: compute time, bytes, global samples and the accuracy curve.

Definitions (also in docs/simulator.md):

- ``compute_utilization``: seconds devices spent in inner steps over seconds they were online
  (downloading state, waiting at barriers or on the network count as online, not computing);
- ``scaling_efficiency``: global samples per second (samples behind the updates the global
  model took, counted once per applied round or step, as the fleet's driver counts them)
  over the time-integral of the online devices' standalone samples per second;
- bytes are those of the real model's payloads (and the fleet's envelopes for two-step),
  counted per device as sent and received.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from globetrain.sim.population import FleetSample


@dataclasses.dataclass
class CurvePoint:
    time_s: float
    accuracy: float
    global_steps: int
    global_samples: int
    bytes_sent_total: float
    online_devices: int


class Ledger:
    def __init__(self, fleet: FleetSample) -> None:
        self.fleet = fleet
        count = fleet.count
        self.compute_seconds = np.zeros(count)
        self.inner_steps = np.zeros(count, dtype=np.int64)
        self.bytes_sent = np.zeros(count)
        self.bytes_received = np.zeros(count)
        self.computing_since = np.full(count, math.nan)
        """Start of compute still in progress (counted up to the end time at ``close``)."""
        self.computing_until = np.full(count, math.inf)
        self.global_samples = 0
        self.global_steps = 0
        self.curve: list[CurvePoint] = []
        self.events: dict[str, int] = {}

    def count(self, what: str, amount: int = 1) -> None:
        self.events[what] = self.events.get(what, 0) + amount

    def transfer(self, sender: int | None, receiver: int | None, size: float) -> None:
        if sender is not None:
            self.bytes_sent[sender] += size
        if receiver is not None:
            self.bytes_received[receiver] += size

    def start_compute(self, device: int, time_s: float, until_s: float = math.inf) -> None:
        """The device computes from ``time_s`` (until ``until_s`` if known, e.g. before a barrier)."""
        self.computing_since[device] = time_s
        self.computing_until[device] = until_s

    def stop_compute(self, device: int, time_s: float) -> None:
        started = self.computing_since[device]
        if not math.isnan(started):
            self.compute_seconds[device] += max(min(time_s, self.computing_until[device]) - started, 0.0)
        self.computing_since[device] = math.nan

    def global_update(self, samples: int) -> None:
        self.global_steps += 1
        self.global_samples += int(samples)

    def record(self, time_s: float, accuracy: float, online: int) -> None:
        self.curve.append(
            CurvePoint(time_s, accuracy, self.global_steps, self.global_samples, float(self.bytes_sent.sum()), online)
        )

    def close(self, end_s: float) -> None:
        for device in np.flatnonzero(~np.isnan(self.computing_since)):
            self.stop_compute(int(device), end_s)

    # -- summary numbers ------------------------------------------------------------------------

    def online_seconds(self, end_s: float) -> np.ndarray:
        return np.array([self.fleet.online_seconds(i, end_s) for i in range(self.fleet.count)])

    def compute_utilization(self, end_s: float) -> float:
        online = self.online_seconds(end_s).sum()
        return float(self.compute_seconds.sum() / online) if online > 0 else 0.0

    def scaling_efficiency(self, end_s: float) -> float:
        capacity = float((self.online_seconds(end_s) * self.fleet.samples_per_s).sum())
        return float(self.global_samples / capacity) if capacity > 0 else 0.0

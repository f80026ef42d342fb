"""Transfer times on the devices' own links.

A transfer from ``a`` to ``b`` moves at the smaller of ``a``'s uplink share and ``b``'s
downlink share (a link carrying k transfers of one exchange phase gives each 1/k), both
at the rates of that moment (the evening dip of ``population``), and arrives one-way
latency (half the round trip, plus jitter) after it was sent. Jitter is drawn from a
seeded stream in event order, so a run is reproducible.
"""

from __future__ import annotations

import numpy as np

from globetrain.sim.population import FleetSample


class Links:
    def __init__(self, fleet: FleetSample, *, seed: int) -> None:
        self.fleet = fleet
        self.rng = np.random.default_rng([seed, *b"jitter"])

    def base_rtt(self, a: int, b: int) -> float:
        return self.fleet.rtt_s(a, b)

    def rtt(self, a: int, b: int) -> float:
        """A measured round trip: base RTT plus each end's jitter."""
        if a == b:
            return 0.0
        return self.base_rtt(a, b) + self._jitter(a) + self._jitter(b)

    def _jitter(self, device: int) -> float:
        mean = float(self.fleet.jitter_s[device])
        return float(self.rng.exponential(mean)) if mean > 0 else 0.0

    def rate(self, sender: int, receiver: int, time_s: float, *, sender_share: int = 1, receiver_share: int = 1) -> float:
        """Bytes/s of one transfer while the sender's uplink and receiver's downlink are shared."""
        up = self.fleet.uplink(sender, time_s) / max(sender_share, 1)
        down = self.fleet.downlink(receiver, time_s) / max(receiver_share, 1)
        return min(up, down)

    def one_way(self, a: int, b: int) -> float:
        return 0.5 * self.rtt(a, b)

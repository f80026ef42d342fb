"""Timing of the baselines' collectives on the devices' own links (the alpha-beta model).

Each phase of a collective has every member send at once; a phase lasts as long as its
slowest transfer: one-way latency (half the base RTT, plus the mean jitter of both ends)
plus the bytes at the smaller of the sender's uplink and the receiver's downlink.

- ring all-reduce (dense-sync, diloco): 2(N-1) phases, each member sending M/N bytes to
  its successor on the ring (reduce-scatter, then all-gather);
- butterfly all-reduce (fp16-average, hivemind): two phases, each member sending N-1 parts
  of M/N bytes, one to every other member (scatter of parts to their reducers, then the
  reduced parts back);
- ring all-gather (dgc): N-1 phases, each member forwarding one sparse payload of P bytes.

``ring_allreduce_lower_bound`` is the physics check: no ring all-reduce on a fleet can beat
2(N-1) phases of (smallest possible latency + M/N bytes at the slowest device's link).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from globetrain.sim.population import FleetSample


@dataclasses.dataclass(frozen=True)
class CollectiveTiming:
    seconds: float
    bytes_sent_per_member: float
    bytes_received_per_member: float


def _rates(fleet: FleetSample, members: np.ndarray, time_s: float) -> tuple[np.ndarray, np.ndarray]:
    factor = fleet.bandwidth_factor(members, time_s)
    return fleet.uplink_bytes_per_s[members] * factor, fleet.downlink_bytes_per_s[members] * factor


def _one_way(fleet: FleetSample, senders: np.ndarray, receivers: np.ndarray) -> np.ndarray:
    rtt = np.array([fleet.rtt_s(int(a), int(b)) for a, b in zip(senders, receivers)])
    return 0.5 * rtt + fleet.jitter_s[senders] + fleet.jitter_s[receivers]


def ring_hop_seconds(fleet: FleetSample, ring: np.ndarray, chunk_bytes: float, time_s: float) -> float:
    """One phase of a ring: every member sends ``chunk_bytes`` to its successor."""
    successors = np.roll(ring, -1)
    up, _ = _rates(fleet, ring, time_s)
    _, down = _rates(fleet, successors, time_s)
    return float(np.max(_one_way(fleet, ring, successors) + chunk_bytes / np.minimum(up, down)))


def ring_allreduce(fleet: FleetSample, ring: np.ndarray, total_bytes: float, time_s: float) -> CollectiveTiming:
    count = len(ring)
    if count < 2:
        return CollectiveTiming(0.0, 0.0, 0.0)
    chunk = total_bytes / count
    seconds = 2 * (count - 1) * ring_hop_seconds(fleet, ring, chunk, time_s)
    moved = 2 * (count - 1) * chunk
    return CollectiveTiming(seconds, moved, moved)


def ring_allgather(fleet: FleetSample, ring: np.ndarray, payload_bytes: float, time_s: float) -> CollectiveTiming:
    count = len(ring)
    if count < 2:
        return CollectiveTiming(0.0, 0.0, 0.0)
    seconds = (count - 1) * ring_hop_seconds(fleet, ring, payload_bytes, time_s)
    moved = (count - 1) * payload_bytes
    return CollectiveTiming(seconds, moved, moved)


def butterfly_allreduce(fleet: FleetSample, members: np.ndarray, total_bytes: float, time_s: float) -> CollectiveTiming:
    count = len(members)
    if count < 2:
        return CollectiveTiming(0.0, 0.0, 0.0)
    part = total_bytes / count
    up, down = _rates(fleet, members, time_s)
    farthest = fleet.max_rtt_to_others(members)
    latency = 0.5 * farthest + fleet.jitter_s[members] + fleet.jitter_s[members].max()
    moved = (count - 1) * part
    phase = float(np.max(latency + np.maximum(moved / up, moved / down)))
    return CollectiveTiming(2 * phase, 2 * moved, 2 * moved)


def ring_allreduce_lower_bound(fleet: FleetSample, members: np.ndarray, total_bytes: float, time_s: float) -> float:
    """2(N-1) x (least one-way latency + (M/N) / slowest member's link): any ring's floor."""
    count = len(members)
    if count < 2:
        return 0.0
    up, down = _rates(fleet, members, time_s)
    slowest = float(np.min(np.minimum(up, down)))
    least_latency = float(np.min(fleet.access_rtt_s[members]))
    return 2 * (count - 1) * (least_latency + total_bytes / count / slowest)


def ring_order(fleet: FleetSample, members: np.ndarray) -> np.ndarray:
    """Neighbours by region, then longitude: the ring a topology-aware launcher would build."""
    members = np.asarray(members)
    order = np.lexsort((members, fleet.longitude[members], fleet.region[members]))
    return members[order]

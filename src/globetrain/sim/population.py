"""A concrete simulated fleet: N devices drawn from a ``FleetProfile`` with a seed.

Everything a device is made of is drawn once, up front, from seeded streams (one per
concern, so that changing, say, the churn model does not move the links): its class and
compute speed, its region and position, its access link and rates, and its online/offline
sessions up to the simulation horizon. Every method simulated on the same fleet and seed
therefore meets exactly the same devices, links and churn.

Arrays hold one entry per device (numpy), so fleets of 10,000 devices stay cheap.
"""

from __future__ import annotations

import bisect
import dataclasses
import math

import numpy as np

from globetrain.sim.devices import DeviceClass, device_class
from globetrain.sim.fleets import FleetProfile

SPEED_OF_LIGHT_KM_S = 299_792.458
EARTH_RADIUS_KM = 6371.0
# Availability peaks at this local hour (devices idle and charging overnight).
AVAILABILITY_PEAK_HOUR = 3.0
AVAILABILITY_BOUNDS = (0.02, 0.98)


def _stream(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, *purpose.encode()])


@dataclasses.dataclass
class FleetSample:
    """N devices with their static attributes and churn schedule."""

    profile: FleetProfile
    class_names: list[str]
    region_names: list[str]
    access_names: list[str]
    device_class: np.ndarray
    region: np.ndarray
    access: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    uplink_bytes_per_s: np.ndarray
    """Nominal (outside the evening dip)."""
    downlink_bytes_per_s: np.ndarray
    access_rtt_s: np.ndarray
    jitter_s: np.ndarray
    evening_dip: np.ndarray
    samples_per_s: np.ndarray
    """Standalone training speed of the real model, samples (clips) per second."""
    utc_offset_h: np.ndarray
    sessions: list[list[float]]
    """Per device, a flat sorted list [start0, end0, start1, end1, ...] of online intervals."""
    horizon_s: float

    @property
    def count(self) -> int:
        return len(self.device_class)

    def name(self, index: int) -> str:
        return f"d{index:05d}-{self.class_names[self.device_class[index]]}"

    # -- links -----------------------------------------------------------------------------

    def rtt_s(self, a: int, b: int) -> float:
        """Base round-trip time between devices ``a`` and ``b`` (no jitter)."""
        if a == b:
            return 0.0
        distance = _haversine_km(self.latitude[a], self.longitude[a], self.latitude[b], self.longitude[b])
        return float(self.access_rtt_s[a] + self.access_rtt_s[b] + self._propagation_rtt(distance))

    def rtt_from(self, a: int, others: np.ndarray) -> np.ndarray:
        distance = _haversine_km(self.latitude[a], self.longitude[a], self.latitude[others], self.longitude[others])
        rtt = self.access_rtt_s[a] + self.access_rtt_s[others] + self._propagation_rtt(distance)
        return np.where(others == a, 0.0, rtt)

    def max_rtt_to_others(self, members: np.ndarray, *, chunk: int = 256) -> np.ndarray:
        """For each member, its largest RTT to any other member (exact, chunked)."""
        result = np.zeros(len(members))
        for start in range(0, len(members), chunk):
            rows = members[start : start + chunk]
            distance = _haversine_km(
                self.latitude[rows][:, None], self.longitude[rows][:, None],
                self.latitude[members][None, :], self.longitude[members][None, :],
            )
            rtt = self.access_rtt_s[rows][:, None] + self.access_rtt_s[members][None, :] + self._propagation_rtt(distance)
            result[start : start + chunk] = rtt.max(axis=1)
        return result

    def _propagation_rtt(self, distance_km: np.ndarray | float) -> np.ndarray | float:
        return self.profile.rtt_inflation * 2.0 * distance_km / SPEED_OF_LIGHT_KM_S

    def bandwidth_factor(self, index: int | np.ndarray, time_s: float) -> np.ndarray | float:
        """1 outside the evening peak, ``1 - evening_dip`` at the local peak hour."""
        hour = (self.profile.start_hour_utc + time_s / 3600.0 + self.utc_offset_h[index]) % 24.0
        closeness = (1.0 + np.cos(2 * math.pi * (hour - self.profile.peak_hour_local) / 24.0)) / 2.0
        return 1.0 - self.evening_dip[index] * closeness

    def uplink(self, index: int, time_s: float) -> float:
        return float(self.uplink_bytes_per_s[index] * self.bandwidth_factor(index, time_s))

    def downlink(self, index: int, time_s: float) -> float:
        return float(self.downlink_bytes_per_s[index] * self.bandwidth_factor(index, time_s))

    # -- churn -----------------------------------------------------------------------------

    def online(self, index: int, time_s: float) -> bool:
        intervals = self.sessions[index]
        position = bisect.bisect_right(intervals, time_s)
        return position % 2 == 1

    def online_until(self, index: int, time_s: float) -> float:
        """End of the online session containing ``time_s`` (``inf`` past the horizon)."""
        intervals = self.sessions[index]
        position = bisect.bisect_right(intervals, time_s)
        if position % 2 == 0:
            return time_s
        return intervals[position] if position < len(intervals) else math.inf

    def transitions(self) -> list[tuple[float, int, bool]]:
        """Every (time, device, comes_online) after time 0, in time order."""
        events = []
        for index, intervals in enumerate(self.sessions):
            for position, moment in enumerate(intervals):
                if moment <= 0.0 or math.isinf(moment):
                    continue
                events.append((moment, index, position % 2 == 0))
        events.sort()
        return events

    def online_seconds(self, index: int, until_s: float) -> float:
        intervals = self.sessions[index]
        total = 0.0
        for start, end in zip(intervals[::2], intervals[1::2]):
            if start >= until_s:
                break
            total += max(0.0, min(end, until_s) - start)
        return total

    def classes(self) -> list[DeviceClass]:
        return [device_class(name) for name in self.class_names]


def sample_fleet(
    profile: FleetProfile,
    count: int,
    *,
    seed: int,
    clips_per_hpl_gflop: float,
    batch_size: int,
    horizon_s: float,
    clips_per_s_override: float = 0.0,
) -> FleetSample:
    """Draw ``count`` devices; ``clips_per_hpl_gflop`` turns device HPL into clips/s (``devices``).

    ``clips_per_s_override`` > 0 gives every device that speed instead (a calibrated fleet).
    """
    class_names = [share.device for share in profile.devices]
    region_names = [region.name for region in profile.regions]
    access_names = [link.name for link in profile.access]

    kinds = _stream(seed, "classes").choice(len(class_names), size=count, p=_shares(profile.devices))
    hpl = np.array([device_class(name).hpl_gflops for name in class_names])
    spread = _stream(seed, "compute").lognormal(0.0, profile.compute_spread, size=count) if profile.compute_spread else np.ones(count)
    base_speed = np.full(count, clips_per_s_override) if clips_per_s_override > 0 else hpl[kinds] * clips_per_hpl_gflop
    samples_per_s = base_speed * spread

    place = _stream(seed, "regions")
    regions = place.choice(len(region_names), size=count, p=_shares(profile.regions))
    hub_lat = np.array([r.latitude for r in profile.regions])[regions]
    hub_lon = np.array([r.longitude for r in profile.regions])[regions]
    radius = np.array([r.radius_km for r in profile.regions])[regions] * np.sqrt(place.random(count))
    angle = place.random(count) * 2 * math.pi
    latitude = np.clip(hub_lat + radius * np.cos(angle) / 111.2, -89.9, 89.9)
    longitude = hub_lon + radius * np.sin(angle) / (111.2 * np.maximum(np.cos(np.radians(latitude)), 0.05))
    longitude = (longitude + 180.0) % 360.0 - 180.0

    links = _stream(seed, "links")
    access = links.choice(len(access_names), size=count, p=_shares(profile.access))
    link_spread = np.array([a.spread for a in profile.access])[access]
    up_median = np.array([a.uplink_mbps for a in profile.access])[access] * np.array([r.uplink_factor for r in profile.regions])[regions]
    down_median = np.array([a.downlink_mbps for a in profile.access])[access] * np.array([r.downlink_factor for r in profile.regions])[regions]
    # Up and down of one line move together (same line quality), so one draw scales both.
    quality = links.standard_normal(count)
    uplink = up_median * np.exp(link_spread * quality) * 1e6 / 8
    downlink = down_median * np.exp(link_spread * quality) * 1e6 / 8

    sessions = _sessions(profile, kinds, class_names, longitude, seed=seed, horizon_s=horizon_s)
    return FleetSample(
        profile=profile,
        class_names=class_names,
        region_names=region_names,
        access_names=access_names,
        device_class=kinds,
        region=regions,
        access=access,
        latitude=latitude,
        longitude=longitude,
        uplink_bytes_per_s=uplink,
        downlink_bytes_per_s=downlink,
        access_rtt_s=np.array([a.access_rtt_ms for a in profile.access])[access] / 1000.0,
        jitter_s=np.array([a.jitter_ms for a in profile.access])[access] / 1000.0,
        evening_dip=np.array([a.evening_dip for a in profile.access])[access],
        samples_per_s=samples_per_s,
        utc_offset_h=longitude / 15.0,
        sessions=sessions,
        horizon_s=horizon_s,
    )


def _shares(items) -> np.ndarray:
    shares = np.array([item.share for item in items], dtype=float)
    return shares / shares.sum()


def _sessions(
    profile: FleetProfile, kinds: np.ndarray, class_names: list[str], longitude: np.ndarray, *, seed: int, horizon_s: float
) -> list[list[float]]:
    rng = _stream(seed, "churn")
    sessions: list[list[float]] = []
    for index, kind in enumerate(kinds):
        spec = profile.availability_of(class_names[kind])
        if spec.mean_offline_s == 0:
            sessions.append([0.0, math.inf])
            continue
        offset = longitude[index] / 15.0

        def availability(moment: float) -> float:
            hour = (profile.start_hour_utc + moment / 3600.0 + offset) % 24.0
            swing = spec.diurnal_swing * math.cos(2 * math.pi * (hour - AVAILABILITY_PEAK_HOUR) / 24.0)
            return min(max(spec.availability * (1.0 + swing), AVAILABILITY_BOUNDS[0]), AVAILABILITY_BOUNDS[1])

        intervals: list[float] = []
        moment = 0.0
        online = rng.random() < availability(0.0)
        if online:
            intervals.append(0.0)
        while moment < horizon_s:
            if online:
                moment += rng.exponential(spec.mean_online_s)
                intervals.append(moment)
            else:
                # Offline gaps are shorter when availability is high (the night for phones).
                share = availability(moment)
                moment += rng.exponential(spec.mean_online_s * (1.0 - share) / share)
                intervals.append(moment)
            online = not online
        if len(intervals) % 2 == 1:
            intervals.append(math.inf)
        sessions.append(intervals)
    return sessions


def _haversine_km(lat1, lon1, lat2, lon2):
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(v, dtype=float)) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))

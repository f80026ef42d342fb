"""Fleet profiles: which devices, on which links, where on earth, online when.

A ``FleetProfile`` is plain data (frozen config sections, loadable from JSON or TOML):

- ``devices``: shares of device classes (``globetrain.sim.devices``);
- ``access``: access-link types (home broadband, cellular, campus Ethernet) with median
  uplink/downlink rates, the spread of rates between devices (log-normal), last-mile RTT,
  jitter and the evening dip of bandwidth;
- ``regions``: where devices are (a hub coordinate and a radius), with factors on the rates;
  the RTT between two devices is both last-mile RTTs plus the great-circle distance at
  the speed of light times ``rtt_inflation`` (routes are not straight, fibre is slower than c);
- ``availability``: online/offline sessions per device class (exponential durations), with a
  diurnal swing of availability.

Every number carries a ``source``: a published measurement or survey, a datasheet, or the
word "assumption" with the reason. Three fleets are built in (``global-iot``, ``campus-lan``,
``cellular-edge``); ``globetrain simulate fleets --show NAME`` prints one as a template for
a file of your own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from globetrain.config import ConfigSection, field, require
from globetrain.errors import ConfigError
from globetrain.sim.devices import DEVICE_CLASSES

SHARE_TOLERANCE = 1e-6


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _probability(section: str, name: str, value: Any) -> None:
    require(_finite(value) and 0.0 < value <= 1.0, section, name, value, "a share/probability in (0, 1]")


def _positive(section: str, name: str, value: Any, unit: str) -> None:
    require(_finite(value) and value > 0, section, name, value, f"{unit} > 0")


def _non_negative(section: str, name: str, value: Any, unit: str) -> None:
    require(_finite(value) and value >= 0, section, name, value, f"{unit} >= 0")


@dataclasses.dataclass(frozen=True)
class DeviceShare(ConfigSection):
    device: str = field(help=f"device class, one of {sorted(DEVICE_CLASSES)}")
    share: float = field(help="fraction of the fleet's devices of this class (shares sum to 1)")
    source: str = field("assumption", help="where the share comes from")

    def __post_init__(self) -> None:
        section = f"devices[{self.device}]"
        require(self.device in DEVICE_CLASSES, section, "device", self.device, f"one of {sorted(DEVICE_CLASSES)}")
        _probability(section, "share", self.share)


@dataclasses.dataclass(frozen=True)
class AccessLink(ConfigSection):
    """One kind of access link; per-device rates are log-normal around the medians."""

    name: str = field(help="e.g. 'fixed-broadband', 'cellular'")
    share: float = field(help="fraction of devices on this kind of link (shares sum to 1)")
    uplink_mbps: float = field(help="median uplink, Mbit/s")
    downlink_mbps: float = field(help="median downlink, Mbit/s")
    spread: float = field(help="sigma of log(rate) between devices (0: every device at the median)")
    access_rtt_ms: float = field(help="last-mile round trip added at each end of a connection, ms")
    jitter_ms: float = field(help="mean extra one-way delay per transfer (exponential), ms")
    evening_dip: float = field(help="fraction of bandwidth lost at the local peak hour (0: none)")
    source: str = field(help="where these numbers come from")

    def __post_init__(self) -> None:
        section = f"access[{self.name}]"
        _probability(section, "share", self.share)
        _positive(section, "uplink_mbps", self.uplink_mbps, "a rate in Mbit/s")
        _positive(section, "downlink_mbps", self.downlink_mbps, "a rate in Mbit/s")
        _non_negative(section, "spread", self.spread, "a log-normal sigma")
        require(self.spread <= 3, section, "spread", self.spread, "a log-normal sigma <= 3")
        _non_negative(section, "access_rtt_ms", self.access_rtt_ms, "milliseconds")
        _non_negative(section, "jitter_ms", self.jitter_ms, "milliseconds")
        require(_finite(self.evening_dip) and 0 <= self.evening_dip < 1, section, "evening_dip", self.evening_dip,
                "a fraction in [0, 1)")


@dataclasses.dataclass(frozen=True)
class Region(ConfigSection):
    """Where some of the devices are: a hub and a radius around it."""

    name: str = field(help="e.g. 'europe'")
    share: float = field(help="fraction of devices in this region (shares sum to 1)")
    latitude: float = field(help="hub latitude, degrees")
    longitude: float = field(help="hub longitude, degrees (also sets local time: 15 degrees per hour)")
    radius_km: float = field(help="devices are spread uniformly over a disc of this radius around the hub")
    uplink_factor: float = field(1.0, help="multiplies the access links' median uplink here")
    downlink_factor: float = field(1.0, help="multiplies the access links' median downlink here")
    source: str = field("assumption", help="where the share and factors come from")

    def __post_init__(self) -> None:
        section = f"regions[{self.name}]"
        _probability(section, "share", self.share)
        require(_finite(self.latitude) and -90 <= self.latitude <= 90, section, "latitude", self.latitude,
                "degrees in [-90, 90]")
        require(_finite(self.longitude) and -180 <= self.longitude <= 180, section, "longitude", self.longitude,
                "degrees in [-180, 180]")
        _non_negative(section, "radius_km", self.radius_km, "kilometres")
        _positive(section, "uplink_factor", self.uplink_factor, "a factor")
        _positive(section, "downlink_factor", self.downlink_factor, "a factor")


@dataclasses.dataclass(frozen=True)
class Availability(ConfigSection):
    """Online/offline sessions of one device class ('*': every class not listed)."""

    device: str = field(help="device class, or '*' for the default")
    mean_online_s: float = field(help="mean length of an online session, seconds (exponential)")
    mean_offline_s: float = field(help="mean length of an offline gap, seconds (exponential); 0: never offline")
    diurnal_swing: float = field(
        0.0, help="relative swing of availability over the day (0.6: +-60% around the mean, highest at night)"
    )
    source: str = field("assumption", help="where these numbers come from")

    def __post_init__(self) -> None:
        section = f"availability[{self.device}]"
        require(self.device == "*" or self.device in DEVICE_CLASSES, section, "device", self.device,
                f"'*' or one of {sorted(DEVICE_CLASSES)}")
        _positive(section, "mean_online_s", self.mean_online_s, "seconds")
        _non_negative(section, "mean_offline_s", self.mean_offline_s, "seconds")
        require(_finite(self.diurnal_swing) and 0 <= self.diurnal_swing < 1, section, "diurnal_swing",
                self.diurnal_swing, "a fraction in [0, 1)")

    @property
    def availability(self) -> float:
        return self.mean_online_s / (self.mean_online_s + self.mean_offline_s)


@dataclasses.dataclass(frozen=True)
class FleetProfile(ConfigSection):
    """A population of devices to sample a simulated fleet from."""

    name: str = field(help="short name shown in reports")
    description: str = field(help="what this fleet stands for")
    devices: tuple[DeviceShare, ...] = field(help="device classes and their shares")
    access: tuple[AccessLink, ...] = field(help="access-link types and their shares")
    regions: tuple[Region, ...] = field(help="regions and their shares")
    availability: tuple[Availability, ...] = field(help="online/offline sessions per device class ('*' default)")
    rtt_inflation: float = field(
        3.0, help="RTT between regions = this x the great-circle distance's round trip at the speed of light"
    )
    rtt_inflation_source: str = field("assumption", help="where rtt_inflation comes from")
    compute_spread: float = field(
        0.15, help="sigma of log(speed) between devices of one class (background load, throttling, cooling)"
    )
    step_jitter: float = field(0.05, help="sigma of log(step time) from one round to the next (stragglers)")
    compute_source: str = field("assumption", help="where compute_spread and step_jitter come from")
    start_hour_utc: float = field(0.0, help="UTC hour at simulated time 0 (sets diurnal phases)")
    peak_hour_local: float = field(21.0, help="local hour of the evening peak of traffic (lowest bandwidth)")

    def __post_init__(self) -> None:
        for what in ("devices", "access", "regions", "availability"):
            items = getattr(self, what)
            require(len(items) > 0, "fleet", what, list(items), "at least one entry")
        for what, key in (("devices", "device"), ("access", "name"), ("regions", "name"), ("availability", "device")):
            names = [getattr(item, key) for item in getattr(self, what)]
            require(len(names) == len(set(names)), "fleet", what, names, f"distinct {key}s")
        for what in ("devices", "access", "regions"):
            total = sum(item.share for item in getattr(self, what))
            require(abs(total - 1.0) <= SHARE_TOLERANCE, "fleet", f"{what}[*].share", round(total, 9),
                    "shares that sum to 1")
        require(_finite(self.rtt_inflation) and self.rtt_inflation >= 1, "fleet", "rtt_inflation", self.rtt_inflation,
                "a factor >= 1 (nothing beats light in a straight line)")
        _non_negative("fleet", "compute_spread", self.compute_spread, "a log-normal sigma")
        _non_negative("fleet", "step_jitter", self.step_jitter, "a log-normal sigma")
        require(_finite(self.start_hour_utc) and 0 <= self.start_hour_utc < 24, "fleet", "start_hour_utc",
                self.start_hour_utc, "an hour in [0, 24)")
        require(_finite(self.peak_hour_local) and 0 <= self.peak_hour_local < 24, "fleet", "peak_hour_local",
                self.peak_hour_local, "an hour in [0, 24)")

    def availability_of(self, device: str) -> Availability:
        by_device = {item.device: item for item in self.availability}
        if device in by_device:
            return by_device[device]
        if "*" in by_device:
            return by_device["*"]
        raise ConfigError(f"fleet {self.name!r}: availability has no entry for {device!r} and no '*' default")

    def to_dict(self) -> dict[str, Any]:
        # ConfigSection.to_dict leaves the sections inside tuples as objects.
        return {
            name: [item.to_dict() if hasattr(item, "to_dict") else item for item in value] if isinstance(value, list) else value
            for name, value in super().to_dict().items()
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


# ------------------------------------------------------------------------- built-in fleets

OOKLA = "Ookla Speedtest Global Index, global medians 2024 (approx., rounded)"
OOKLA_REGIONS = "Ookla Speedtest Global Index 2024 country medians of the region's large markets, relative to the global median (approx.)"
INFLATION_SOURCE = (
    "Bozkurt et al., 'Why Is the Internet so Slow?!', PAM 2017: median ping RTTs are about 3x the "
    "great-circle c-latency; WonderNetwork's public ping tables between world cities agree in magnitude"
)
FIXED_BROADBAND = AccessLink(
    name="fixed-broadband", share=0.75, uplink_mbps=45.0, downlink_mbps=90.0, spread=1.0,
    access_rtt_ms=12.0, jitter_ms=3.0, evening_dip=0.15,
    source=(
        f"medians: {OOKLA} (fixed: ~90 down / ~45 up, idle latency ~10-15 ms); spread (10th-90th percentile "
        "~13x) and jitter: assumption in line with M-Lab NDT's wide per-test spread; evening dip: "
        "assumption in line with FCC Measuring Broadband America's peak-hour (7-11 pm) results; share: assumption"
    ),
)
CELLULAR = AccessLink(
    name="cellular", share=0.25, uplink_mbps=10.0, downlink_mbps=55.0, spread=1.0,
    access_rtt_ms=30.0, jitter_ms=15.0, evening_dip=0.3,
    source=(
        f"medians: {OOKLA} (mobile: ~55 down / ~10 up, latency ~25-30 ms); spread, jitter and evening dip: "
        "assumption (cellular cells are shared and load-dependent); share: assumption"
    ),
)
ALWAYS_ON = "assumption: mains-powered boards on home links stay up for days; outages, reboots and updates take ~1 h a day"
PHONES = (
    "Bonawitz et al., 'Towards Federated Learning at Scale: System Design', SysML 2019: phones take part "
    "only while idle, charging and on unmetered Wi-Fi, mostly at night; participation swings several-fold "
    "over the day. Session lengths: assumption"
)

GLOBAL_IOT = FleetProfile(
    name="global-iot",
    description="home broadband and cellular IoT devices across continents (the default)",
    devices=(
        DeviceShare("raspberry-pi-4", 0.30), DeviceShare("raspberry-pi-5", 0.20),
        DeviceShare("jetson-nano", 0.10), DeviceShare("jetson-orin-nano", 0.10),
        DeviceShare("phone-soc", 0.15), DeviceShare("x86-mini-pc", 0.15),
    ),
    access=(FIXED_BROADBAND, CELLULAR),
    regions=(
        Region("north-america", 0.20, 41.9, -87.6, 2000.0, uplink_factor=0.8, downlink_factor=2.4, source=OOKLA_REGIONS),
        Region("europe", 0.25, 50.1, 8.7, 1500.0, uplink_factor=1.3, downlink_factor=1.4, source=OOKLA_REGIONS),
        Region("east-asia", 0.25, 35.7, 139.7, 1500.0, uplink_factor=2.5, downlink_factor=2.0, source=OOKLA_REGIONS),
        Region("south-asia", 0.10, 19.1, 72.9, 1500.0, uplink_factor=0.9, downlink_factor=0.8, source=OOKLA_REGIONS),
        Region("south-america", 0.10, -23.5, -46.6, 1500.0, uplink_factor=1.0, downlink_factor=1.0, source=OOKLA_REGIONS),
        Region("africa", 0.07, 6.5, 3.4, 2000.0, uplink_factor=0.35, downlink_factor=0.3, source=OOKLA_REGIONS),
        Region("oceania", 0.03, -33.9, 151.2, 1000.0, uplink_factor=0.45, downlink_factor=0.7, source=OOKLA_REGIONS),
    ),
    availability=(
        Availability("*", mean_online_s=23 * 3600.0, mean_offline_s=3600.0, source=ALWAYS_ON),
        Availability("phone-soc", mean_online_s=4 * 3600.0, mean_offline_s=8 * 3600.0, diurnal_swing=0.6, source=PHONES),
    ),
    rtt_inflation=3.0,
    rtt_inflation_source=INFLATION_SOURCE,
    compute_source="assumption: same-class devices differ by background load, cooling and throttling",
)

CAMPUS_LAN = FleetProfile(
    name="campus-lan",
    description="devices on one campus's switched Gigabit Ethernet",
    devices=(
        DeviceShare("raspberry-pi-4", 0.3), DeviceShare("raspberry-pi-5", 0.3),
        DeviceShare("jetson-orin-nano", 0.2), DeviceShare("x86-mini-pc", 0.2),
    ),
    access=(
        AccessLink(
            name="campus-ethernet", share=1.0, uplink_mbps=900.0, downlink_mbps=900.0, spread=0.1,
            access_rtt_ms=0.25, jitter_ms=0.05, evening_dip=0.0,
            source=(
                "Gigabit Ethernet on every device (Raspberry Pi 4/5, Jetson and N100 datasheets), ~940 Mbit/s "
                "TCP goodput less switch sharing; sub-millisecond LAN RTT; spread and jitter: assumption"
            ),
        ),
    ),
    regions=(Region("campus", 1.0, 47.4, 8.5, 1.0, source="assumption: one campus"),),
    availability=(
        Availability("*", mean_online_s=7 * 24 * 3600.0, mean_offline_s=600.0,
                     source="assumption: lab devices are always on; a reboot a week"),
    ),
    rtt_inflation=3.0,
    rtt_inflation_source=INFLATION_SOURCE,
    compute_source="assumption: same-class devices differ by background load, cooling and throttling",
)

CELLULAR_EDGE = FleetProfile(
    name="cellular-edge",
    description="field devices on 4G/5G across one continent (Europe)",
    devices=(
        DeviceShare("raspberry-pi-4", 0.3), DeviceShare("raspberry-pi-5", 0.2), DeviceShare("jetson-nano", 0.2),
        DeviceShare("jetson-orin-nano", 0.1), DeviceShare("phone-soc", 0.2),
    ),
    access=(dataclasses.replace(CELLULAR, share=1.0),),
    regions=(Region("europe", 1.0, 50.1, 8.7, 1500.0, uplink_factor=1.2, downlink_factor=1.1, source=OOKLA_REGIONS),),
    availability=(
        Availability("*", mean_online_s=6 * 3600.0, mean_offline_s=3600.0,
                     source="assumption: field devices lose coverage or power for about an hour every six"),
        Availability("phone-soc", mean_online_s=4 * 3600.0, mean_offline_s=8 * 3600.0, diurnal_swing=0.6, source=PHONES),
    ),
    rtt_inflation=3.0,
    rtt_inflation_source=INFLATION_SOURCE,
    compute_source="assumption: same-class devices differ by background load, cooling and throttling",
)

NAMED_FLEETS: dict[str, FleetProfile] = {fleet.name: fleet for fleet in (GLOBAL_IOT, CAMPUS_LAN, CELLULAR_EDGE)}
DEFAULT_FLEET = GLOBAL_IOT.name


def fleet_names() -> list[str]:
    return sorted(NAMED_FLEETS)


def load_fleet(name_or_path: str) -> FleetProfile:
    """A named fleet, or one read from a JSON or TOML file; errors name the bad field."""
    if name_or_path in NAMED_FLEETS:
        return NAMED_FLEETS[name_or_path]
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        raise ConfigError(
            f"unknown fleet {name_or_path!r}; valid fleets are {fleet_names()} or the path of a JSON/TOML fleet file"
        )
    if not path.is_file():
        raise ConfigError(f"fleet file {path} does not exist; valid named fleets are {fleet_names()}")
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"fleet file {path} cannot be read as {'TOML' if path.suffix == '.toml' else 'JSON'}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"fleet file {path} must hold one object with the FleetProfile fields")
    try:
        return FleetProfile.from_dict(data)
    except TypeError as error:
        # A required field is missing: dataclasses say which in a TypeError.
        raise ConfigError(f"fleet file {path}: {error}") from None
    except ConfigError as error:
        raise ConfigError(f"fleet file {path}: {error}") from None

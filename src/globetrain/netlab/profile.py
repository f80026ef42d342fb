"""Network profiles: each host's rates, latency and disturbances, and timed changes.

A profile is plain data (frozen config sections), loadable from JSON or TOML::

    name = "two-devices"
    [[hosts]]
    name = "dev0"
    uplink_mbit = 2
    delay_ms = 40
    stalls = [{at_s = 30, duration_s = 5}]
    [[changes]]
    at_s = 60
    hosts = ["dev0"]
    uplink_factor = 0.1

Rates are enforced by the lab's tc shaping; delay, jitter, stalls and drops by the
device's delay relay (see relay.py), so they act on connections *to* a host. Factors in
``changes`` multiply the host's values at that moment (changes compound); an unshaped
rate (None) stays unshaped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from globetrain.config import ConfigSection, field, require
from globetrain.errors import ConfigError
from globetrain.netlab.events import DropEvent, StallEvent
from globetrain.netlab.naming import host_name_problem


def _plain(value: Any) -> Any:
    """JSON-ready form of a section value (sections inside tuples included)."""
    if isinstance(value, ConfigSection):
        return {name: _plain(item) for name, item in vars(value).items()}
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


def _rate_ok(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and math.isfinite(value) and value >= 0.008)


def _non_negative(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class HostProfile(ConfigSection):
    """One machine of the lab network and its access link."""

    name: str = field(help="host name: 1-12 of a-z, 0-9, _; starts with a letter (becomes a namespace name)")
    role: Literal["device", "bootstrap"] = field("device", help="what the harness runs on this host")
    uplink_mbit: float | None = field(None, help="rate of what the host sends, Mbit/s (None: unshaped)")
    downlink_mbit: float | None = field(None, help="rate of what the host receives, Mbit/s (None: unshaped)")
    delay_ms: float = field(0.0, help="one-way delay added each way on connections to this host, ms")
    jitter_ms: float = field(0.0, help="up to this much extra delay per chunk (order kept), ms")
    stalls: tuple[StallEvent, ...] = field((), help="times at which the host's path forwards nothing for a while")
    drops: tuple[DropEvent, ...] = field((), help="times at which connections to the host are cut")

    def __post_init__(self) -> None:
        problem = host_name_problem(self.name)
        require(problem is None, "HostProfile", "name", self.name, problem or "")
        section = f"HostProfile[{self.name}]"
        for name in ("uplink_mbit", "downlink_mbit"):
            value = getattr(self, name)
            require(_rate_ok(value), section, name, value, "a rate in Mbit/s >= 0.008, or null for unshaped")
        for name in ("delay_ms", "jitter_ms"):
            value = getattr(self, name)
            require(_non_negative(value), section, name, value, "milliseconds >= 0")

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class ProfileChange(ConfigSection):
    """At ``at_s``, multiply some hosts' rates and/or latency (a line degrades, a route changes)."""

    at_s: float = field(help="when the change happens, seconds after the run started")
    hosts: tuple[str, ...] = field((), help="hosts it applies to; empty: every host")
    uplink_factor: float = field(1.0, help="multiplies the uplink rate (0.1: ten times slower)")
    downlink_factor: float = field(1.0, help="multiplies the downlink rate")
    delay_factor: float = field(1.0, help="multiplies the one-way delay (2: latency doubles)")
    jitter_factor: float = field(1.0, help="multiplies the jitter")

    FACTORS = ("uplink_factor", "downlink_factor", "delay_factor", "jitter_factor")

    def __post_init__(self) -> None:
        require(_non_negative(self.at_s), "ProfileChange", "at_s", self.at_s, "seconds >= 0")
        for name in self.FACTORS:
            value = getattr(self, name)
            require(_non_negative(value) and value > 0, "ProfileChange", name, value, "a factor > 0")
        require(any(getattr(self, name) != 1.0 for name in self.FACTORS), "ProfileChange", "factors",
                {name: getattr(self, name) for name in self.FACTORS},
                "at least one factor other than 1 (this change would change nothing)")

    def applies_to(self, host: str) -> bool:
        return not self.hosts or host in self.hosts

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class NetworkProfile(ConfigSection):
    """The network of one lab run: its hosts and the changes that happen during the run."""

    hosts: tuple[HostProfile, ...] = field(help="the machines, in the order their addresses are given out")
    name: str = field("custom", help="short name, shown in reports")
    description: str = field("", help="what this network stands for")
    changes: tuple[ProfileChange, ...] = field((), help="timed changes of rates and latency")

    def __post_init__(self) -> None:
        require(len(self.hosts) > 0, "NetworkProfile", "hosts", self.hosts, "at least one host")
        names = [host.name for host in self.hosts]
        repeated = sorted({name for name in names if names.count(name) > 1})
        require(not repeated, "NetworkProfile", "hosts", names, f"unique host names; repeated: {repeated}")
        for index, change in enumerate(self.changes):
            unknown = sorted(set(change.hosts) - set(names))
            require(not unknown, "NetworkProfile", f"changes[{index}].hosts", list(change.hosts),
                    f"names of hosts in this profile {names}; unknown: {unknown}")

    def host(self, name: str) -> HostProfile:
        for host in self.hosts:
            if host.name == name:
                return host
        raise ConfigError(f"profile {self.name!r} has no host {name!r}; its hosts are {[h.name for h in self.hosts]}")

    def devices(self) -> tuple[HostProfile, ...]:
        return tuple(host for host in self.hosts if host.role == "device")

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


def load_profile(path: str | Path) -> NetworkProfile:
    """Read a profile from a .json or .toml file; ``ConfigError`` says what is wrong and where."""
    path = Path(path)
    if path.suffix not in (".json", ".toml"):
        raise ConfigError(f"{path}: unknown profile format {path.suffix!r}; use .json or .toml")
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read network profile {path}: {error.strerror}") from error
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:  # .toml
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                raise ConfigError(f"{path}: TOML profiles need Python >= 3.11; write the profile as JSON") from None
            data = tomllib.loads(text)
    except ConfigError:
        raise
    except ValueError as error:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise ConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile is a table/object of settings, got {type(data).__name__}")
    try:
        return NetworkProfile.from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def validation_profile() -> NetworkProfile:
    """The network of the fleet validation run (issue 6): a bootstrap peer and ten devices.

    Two devices per uplink class 1, 2, 5, 10, 50 Mbit/s, interleaved so that the first
    k devices of a smaller run still span the classes. Rates follow the access
    technologies IoT devices sit behind; delays (one-way, from the device to a
    well-connected peer) spread from a same-city fibre hop (10 ms) to another continent
    over a cellular link (150 ms).
    """

    def device(name: str, up: float, down: float, delay: float, jitter: float, **extra: Any) -> HostProfile:
        return HostProfile(name=name, uplink_mbit=up, downlink_mbit=down, delay_ms=delay, jitter_ms=jitter, **extra)

    hosts = (
        # A small cloud VM: 100 Mbit/s is a common bandwidth cap of the smallest instance
        # types; 5 ms: data centres sit next to internet exchanges.
        HostProfile(name="bootstrap", role="bootstrap", uplink_mbit=100.0, downlink_mbit=100.0,
                    delay_ms=5.0, jitter_ms=1.0),
        # LTE gateway at the cell edge on another continent: ~1 Mbit/s up where the signal
        # is weak; ~100 ms of intercontinental path plus ~50 ms of cellular access; radio
        # scheduling makes it the most jittery. Its rate drops tenfold at 60 s too (to
        # 100 kbit/s, a 3G fallback): there the exchange no longer fits and QoS must act.
        device("dev0", 1.0, 8.0, 150.0, 30.0),
        # LTE in the same region: a few Mbit/s up at moderate signal; 60 ms is typical
        # cellular latency within a continent.
        device("dev1", 2.0, 16.0, 60.0, 20.0,
               # A handover / radio link failure: cellular links hang for seconds.
               stalls=(StallEvent(at_s=45.0, duration_s=5.0),)),
        # Cable (DOCSIS 3.0) nearby: 5 Mbit/s is the upload of entry cable tariffs (~10:1).
        device("dev2", 5.0, 50.0, 25.0, 5.0),
        # VDSL2 on another continent: 10 Mbit/s is the upstream of common 50/10 profiles;
        # it is the device whose rate drops tenfold at 60 s (see the changes below).
        device("dev3", 10.0, 50.0, 90.0, 5.0),
        # Fibre (FTTH) in the same city: 50 Mbit/s up; 10 ms and ~1 ms jitter.
        device("dev4", 50.0, 250.0, 10.0, 1.0),
        # ADSL2+ far away: ~1 Mbit/s is what ADSL upstream delivers; interleaving and
        # distance give 120 ms.
        device("dev5", 1.0, 16.0, 120.0, 10.0,
               # The home router reboots: every NAT mapping, so every connection, is lost.
               drops=(DropEvent(at_s=75.0, fraction=1.0),)),
        # ADSL2+ Annex M within the continent: 2 Mbit/s up, 40 ms.
        device("dev6", 2.0, 16.0, 40.0, 5.0),
        # LTE with good signal: 5 Mbit/s up, 50 ms, cellular jitter.
        device("dev7", 5.0, 40.0, 50.0, 15.0),
        # Cable in the region: 10 Mbit/s up, 30 ms.
        device("dev8", 10.0, 100.0, 30.0, 5.0),
        # Fibre on another continent: fast but far (75 ms), little jitter.
        device("dev9", 50.0, 250.0, 75.0, 2.0),
    )
    changes = (
        # Someone in the household starts an upload / the line retrains: tenfold less rate.
        ProfileChange(at_s=60.0, hosts=("dev3",), uplink_factor=0.1, downlink_factor=0.1),
        # The cell-edge gateway falls back to 3G: tenfold less rate on an already slow link.
        ProfileChange(at_s=60.0, hosts=("dev0",), uplink_factor=0.1, downlink_factor=0.1),
        # A backbone route change or congestion: every path's latency (and jitter) doubles.
        ProfileChange(at_s=90.0, delay_factor=2.0, jitter_factor=2.0),
    )
    return NetworkProfile(
        name="validation",
        description="bootstrap + 10 devices, uplinks 1-50 Mbit/s, one-way delays 10-150 ms; "
        "the rates of dev3 (10 Mbit/s) and dev0 (1 Mbit/s) drop tenfold at 60 s, all delays double at 90 s",
        hosts=hosts,
        changes=changes,
    )


BUILTIN_PROFILES = {"validation": validation_profile}


def resolve_profile(spec: str) -> NetworkProfile:
    """A built-in profile by name (``validation``) or a profile file by path."""
    if spec in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[spec]()
    if not Path(spec).exists():
        raise ConfigError(f"network profile {spec!r} is neither a built-in ({sorted(BUILTIN_PROFILES)}) nor a file")
    return load_profile(spec)


class HostFactory(Protocol):
    def add_host(self, name: str, *, uplink_mbit: float | None = None, downlink_mbit: float | None = None) -> Any: ...


def add_profile_hosts(lab: HostFactory, profile: NetworkProfile) -> dict[str, Any]:
    """Add every host of ``profile`` to ``lab`` with its initial rates; return them by name."""
    return {
        host.name: lab.add_host(host.name, uplink_mbit=host.uplink_mbit, downlink_mbit=host.downlink_mbit)
        for host in profile.hosts
    }

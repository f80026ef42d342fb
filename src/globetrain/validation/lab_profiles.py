"""The network a validation run uses: a profile cut to the fleet's size, and its unshaped twin.

Pure functions on ``NetworkProfile`` (tested without a lab):

- ``fleet_profile``: the bootstrap plus the first N devices of a profile (the built-in
  ``validation`` profile interleaves uplink classes, so any prefix spans them), with the
  changes that still name a host of the cut;
- ``unshaped``: the same hosts without rates, delays, jitter, stalls, drops or changes: the
  reference run on the same lab, so the only difference between the two is the network;
- ``rate_drops``: the changes that cut a host's uplink (whose adaptation is reported).
"""

from __future__ import annotations

import dataclasses

from globetrain.errors import ConfigError
from globetrain.netlab import HostProfile, NetworkProfile, ProfileChange


def fleet_profile(profile: NetworkProfile, devices: int) -> NetworkProfile:
    """The profile's bootstrap and its first ``devices`` devices; changes keep only those hosts."""
    bootstraps = [host for host in profile.hosts if host.role == "bootstrap"]
    if len(bootstraps) != 1:
        raise ConfigError(f"profile {profile.name!r} needs exactly one host with role 'bootstrap', has {len(bootstraps)}")
    available = profile.devices()
    if not 1 <= devices <= len(available):
        raise ConfigError(
            f"profile {profile.name!r} has {len(available)} devices; a run of {devices} needs a profile with more hosts"
        )
    hosts = (bootstraps[0], *available[:devices])
    names = {host.name for host in hosts}
    changes = []
    for change in profile.changes:
        if not change.hosts:
            changes.append(change)
        elif kept := tuple(name for name in change.hosts if name in names):
            changes.append(dataclasses.replace(change, hosts=kept))
    return dataclasses.replace(profile, hosts=hosts, changes=tuple(changes))


def unshaped(profile: NetworkProfile) -> NetworkProfile:
    """The same hosts with nothing in the way: no rates, no delay, no disturbance, no changes."""
    hosts = tuple(
        HostProfile(name=host.name, role=host.role) for host in profile.hosts
    )
    return NetworkProfile(hosts=hosts, name=f"{profile.name}-unshaped",
                          description=f"the hosts of {profile.name!r}, unshaped", changes=())


def rate_drops(profile: NetworkProfile) -> list[tuple[ProfileChange, tuple[str, ...]]]:
    """Changes that lower some hosts' uplink rate, with the shaped devices they hit."""
    shaped_devices = {host.name for host in profile.devices() if host.uplink_mbit is not None}
    found = []
    for change in profile.changes:
        if change.uplink_factor < 1.0:
            hit = tuple(name for name in (change.hosts or tuple(sorted(shaped_devices))) if name in shaped_devices)
            if hit:
                found.append((change, hit))
    return found


def device_index(host_name: str) -> int:
    """``dev3`` -> 3: the demo's ``device-3`` runs on host ``dev3``."""
    if not host_name.startswith("dev") or not host_name[3:].isdigit():
        raise ValueError(f"not a device host name: {host_name!r} (expected devN)")
    return int(host_name[3:])

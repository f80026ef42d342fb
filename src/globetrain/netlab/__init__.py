"""The network lab: real shaped networks on one machine, for runs under internet conditions.

- ``Lab`` / ``Host`` (lab.py): hosts in network namespaces on a private switch, uplink
  and downlink rates enforced by tc htb, processes started inside, byte counters, and
  cleanup on exit, exceptions, SIGINT and SIGTERM.
- ``cleanup_stale`` / ``list_namespaces`` (state.py): leftovers of killed runs.
- the delay relay (relay.py, ``python -m globetrain.netlab.relay``): latency, jitter,
  stalls and drops, since this kernel has no netem; ``RelayControl`` changes it live.
- ``NetworkProfile`` (profile.py) and ``Schedule`` (schedule.py): what the network
  looks like and how it changes during a run.

See docs/netlab.md.
"""

from globetrain.netlab.errors import LabError
from globetrain.netlab.events import DropEvent, StallEvent
from globetrain.netlab.lab import Host, InterfaceCounters, Lab, support_problem
from globetrain.netlab.naming import LAB_SUBNET
from globetrain.netlab.profile import (
    HostProfile,
    NetworkProfile,
    ProfileChange,
    add_profile_hosts,
    load_profile,
    resolve_profile,
    validation_profile,
)
from globetrain.netlab.relay import Relay, RelayConfig, relay_command
from globetrain.netlab.relay_control import RelayControl
from globetrain.netlab.schedule import Schedule, plan_actions
from globetrain.netlab.state import cleanup_stale, list_namespaces

__all__ = [
    "LAB_SUBNET",
    "DropEvent",
    "Host",
    "HostProfile",
    "InterfaceCounters",
    "Lab",
    "LabError",
    "NetworkProfile",
    "ProfileChange",
    "Relay",
    "RelayConfig",
    "RelayControl",
    "Schedule",
    "StallEvent",
    "add_profile_hosts",
    "cleanup_stale",
    "list_namespaces",
    "load_profile",
    "plan_actions",
    "relay_command",
    "resolve_profile",
    "support_problem",
    "validation_profile",
]

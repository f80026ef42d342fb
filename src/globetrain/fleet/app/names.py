"""One name per device in a run: a second device under a name already taken is refused.

Names are what people read in logs, metrics and the fleet view, so two devices sharing
one would make every report ambiguous. A device checks the roster when it joins, before
it takes part, and once more after its own first heartbeat, which catches two devices
that joined at the same moment: the one that joined later (then the larger peer id)
leaves. A device restarting with its run folder keeps its peer id (the identity file),
so its own previous record is not taken for another device.
"""

from __future__ import annotations

from globetrain.errors import GlobetrainError
from globetrain.fleet.node import FleetNode
from globetrain.fleet.roster import RosterRecord


class DuplicateName(GlobetrainError):
    """Another peer of the run already uses this device's name."""


def _conflicts(node: FleetNode) -> list[RosterRecord]:
    me = node.peer.peer_id
    return [record for record in node.roster.snapshot() if record.name == node.name and record.peer_id != me]


def _message(node: FleetNode, other: RosterRecord) -> str:
    ttl = node.fleet.seconds(node.fleet.roster_ttl)
    return (
        f"another device named {node.name!r} is already in this run (peer {other.peer_id}, "
        f"at {', '.join(other.addresses[:2]) or 'unknown addresses'}): give this device another --name. "
        f"If that was this device before a restart, reuse its --run-dir (it keeps the device's identity), "
        f"or wait {ttl:.0f}s for its old record to expire"
    )


def refuse_taken_name(node: FleetNode, *, timeout: float) -> None:
    """Before taking part: raise ``DuplicateName`` if an alive peer of the run has this name."""
    node.peer.call(node.roster.refresh(), timeout=timeout)
    conflicts = _conflicts(node)
    if conflicts:
        raise DuplicateName(_message(node, conflicts[0]))


def yield_shared_name(node: FleetNode, *, timeout: float) -> None:
    """After this peer's first heartbeat: of two peers that joined under one name, the later leaves."""
    node.peer.call(node.roster.refresh(), timeout=timeout)
    mine = (node.roster.me.joined_at, node.peer.peer_id)
    for other in _conflicts(node):
        if (other.joined_at, other.peer_id) < mine:
            raise DuplicateName(_message(node, other))

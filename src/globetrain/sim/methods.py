"""The methods the simulator compares: a sync preset plus how its exchange moves bytes.

The algorithm of every method is a preset of ``globetrain.sync.methods`` run by
``SyncLoop``; what the simulator adds is the exchange's shape on a real network:

- ``dense-sync``: the data-center way. fp32 update of every step, ring all-reduce
  (2(N-1) hops of M/N bytes, each hop limited by the slower of the two links plus its
  latency); the slowest device gates every step.
- ``fp16-average``: what hivemind ships. fp16 update of every step, butterfly all-reduce
  (every peer reduces 1/N of the vector: all-to-all scatter then gather), after
  hivemind's matchmaking.
- ``dgc``: top-0.1% fp32 update of every step with error feedback, all-gather of the sparse
  payloads around a ring.
- ``diloco``: H local steps, then a blocking ring all-reduce of the dense fp32 pseudo-gradient.
- ``two-step``: ours. Time-based rounds; the compressed pseudo-gradient goes to the round's
  group leader, which averages, re-encodes and sends the aggregate back (leaders of groups
  aggregate among themselves for large fleets); applied one round late; H, density and
  bits adapted per device (QoS).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from globetrain.errors import ConfigError

Collective = Literal["ring-allreduce", "butterfly-allreduce", "ring-allgather"]


@dataclasses.dataclass(frozen=True)
class SimMethod:
    name: str
    sync_method: str
    """Name in ``globetrain.sync.methods`` (the preset ``SyncLoop`` runs)."""
    protocol: Literal["rounds", "collective"]
    collective: Collective | None
    matchmaking: bool
    """Whether a group must be formed before each all-reduce (hivemind's matchmaking)."""
    description: str


SIM_METHODS: dict[str, SimMethod] = {
    method.name: method
    for method in (
        SimMethod("dense-sync", "dense", "collective", "ring-allreduce", False,
                  "fp32 ring all-reduce of every step's update (the data-center way)"),
        SimMethod("fp16-average", "fp16-average", "collective", "butterfly-allreduce", True,
                  "fp16 butterfly all-reduce of every step's update after matchmaking (what hivemind ships)"),
        SimMethod("dgc", "dgc", "collective", "ring-allgather", False,
                  "top-0.1% fp32 update of every step with error feedback, ring all-gather"),
        SimMethod("diloco", "diloco", "collective", "ring-allreduce", False,
                  "H local steps, then a blocking fp32 ring all-reduce of the pseudo-gradient"),
        SimMethod("two-step", "two-step", "rounds", None, False,
                  "ours: time-based rounds, compressed pseudo-gradient to a group leader, applied one round late, QoS"),
    )
}
ALIASES = {"dense": "dense-sync"}


def sim_method_names() -> list[str]:
    return list(SIM_METHODS)


def sim_method(name: str) -> SimMethod:
    name = ALIASES.get(name, name)
    if name not in SIM_METHODS:
        raise ConfigError(f"unknown method {name!r}; valid methods are {sim_method_names()} ('dense' = 'dense-sync')")
    return SIM_METHODS[name]

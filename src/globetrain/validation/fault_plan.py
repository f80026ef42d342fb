"""The fault run's plan: which fault hits which process when (pure, seeded, checked before the run).

Times count from round 0 and scale with the round period T, so the same plan means the
same thing for a 4 s or a 9 s round:

    fill      a device's checkpoint folder fills up (its own small filesystem)    ~4 T
    kill      the bootstrap peer is SIGKILLed (it is never restarted)              ~6 T
    kill      a random 30 % of the devices are SIGKILLed ...                       ~9 T
    restart   ... and restarted with --resume, without --join (peers file only)   ~10 T
    free      the checkpoint folder has room again                                ~12 T
    stop      a device is SIGSTOPped past its exchange timeout ...                ~14 T
    continue  ... and SIGCONTed                                                    ~14 T + stop_s

The bootstrap dies before the devices restart, so they can only rejoin through other
peers. The filled and the stopped device are not among the killed ones, so each fault is
seen on its own.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import Literal

FaultKind = Literal["fill", "free", "kill", "restart", "stop", "continue"]


@dataclasses.dataclass(frozen=True)
class FaultEvent:
    at_s: float
    """Seconds after round 0."""
    kind: FaultKind
    target: str
    """A demo process name: ``bootstrap`` or ``device-N``."""

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def churn_count(devices: int, fraction: float) -> int:
    """Devices to kill for ``fraction`` of the fleet: rounded up, at least 1, never all."""
    if devices < 2:
        raise ValueError(f"a churn plan needs at least 2 devices (one must stay), got {devices}")
    return min(max(math.ceil(devices * fraction - 1e-9), 1), devices - 1)


def plan_faults(
    devices: Sequence[str],
    *,
    round_period_s: float,
    exchange_timeout_s: float,
    churn_fraction: float = 0.3,
    seed: int = 0,
) -> list[FaultEvent]:
    """The fault events of one run, in time order."""
    if len(devices) < 4:
        raise ValueError(f"the fault plan needs at least 4 devices (churned, filled, stopped, one untouched), got {len(devices)}")
    period = round_period_s
    rng = random.Random(seed)
    killed = sorted(rng.sample(list(devices), churn_count(len(devices), churn_fraction)), key=list(devices).index)
    others = [name for name in devices if name not in killed]
    filled, stopped = rng.sample(others, 2)
    # Past the exchange timeout and at least two whole rounds: the fleet must give up on it.
    stop_s = max(exchange_timeout_s + period, 2 * period) + 2.0
    events = [FaultEvent(4 * period, "fill", filled), FaultEvent(6 * period, "kill", "bootstrap")]
    events += [FaultEvent(9 * period, "kill", name) for name in killed]
    events += [FaultEvent(10 * period, "restart", name) for name in killed]
    events += [FaultEvent(12 * period, "free", filled), FaultEvent(14 * period, "stop", stopped),
               FaultEvent(14 * period + stop_s, "continue", stopped)]
    return sorted(events, key=lambda event: event.at_s)


def resume_argv(argv: Sequence[str]) -> list[str]:
    """A device's command to restart it: ``--resume``, and no ``--join``/``--join-file``.

    Without join addresses the device rejoins through the peers in its run folder's
    ``peers.json``: the way a device comes back when its bootstrap is gone.
    """
    restarted: list[str] = []
    skipping = False
    for item in argv:
        if item in ("--join-file", "--join"):
            skipping = True
            continue
        if skipping and not item.startswith("--"):
            continue  # the option's value(s)
        skipping = False
        restarted.append(item)
    if "--resume" not in restarted:
        restarted.append("--resume")
    return restarted


def last_fault_time(events: Sequence[FaultEvent]) -> float:
    return max((event.at_s for event in events), default=0.0)

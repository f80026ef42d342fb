"""Timed disturbances of a path: stalls and connection drops (config sections, JSON/TOML-ready)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from globetrain.config import ConfigSection, field, require


def _finite_at_least(value: object, low: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= low)


@dataclass(frozen=True)
class StallEvent(ConfigSection):
    """From ``at_s`` on, for ``duration_s``, the path forwards nothing (a link that hangs)."""

    at_s: float = field(help="when the stall starts, seconds after the run (or relay) started")
    duration_s: float = field(help="how long nothing is forwarded, in seconds; queued bytes flow after it")

    def __post_init__(self) -> None:
        require(_finite_at_least(self.at_s, 0), "StallEvent", "at_s", self.at_s, "seconds >= 0")
        require(_finite_at_least(self.duration_s, 0) and self.duration_s > 0,
                "StallEvent", "duration_s", self.duration_s, "seconds > 0")


@dataclass(frozen=True)
class DropEvent(ConfigSection):
    """At ``at_s``, cut ``fraction`` of the path's open connections (1.0: all; as a NAT reboot does)."""

    at_s: float = field(help="when the connections are cut, seconds after the run (or relay) started")
    fraction: float = field(
        1.0, help="share of the open connections to cut, in (0, 1]; rounded up to whole connections"
    )

    def __post_init__(self) -> None:
        require(_finite_at_least(self.at_s, 0), "DropEvent", "at_s", self.at_s, "seconds >= 0")
        require(_finite_at_least(self.fraction, 0) and 0 < self.fraction <= 1,
                "DropEvent", "fraction", self.fraction, "a share in (0, 1]")

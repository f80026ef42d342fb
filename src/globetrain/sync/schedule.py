"""Per-round settings (H, density, bits) and the adaptive QoS scheduler that picks them.

A device measures how long an inner step takes and how fast its exchanges move bytes,
then picks, for the next round, the settings whose exchange fits inside the next
round's compute (with the delayed update the exchange of round r overlaps the compute
of round r + 1, so that compute time is the budget). Preference order: the base H
with the richest payload that fits; if even the leanest payload does not fit, a larger
H (rarer syncs), doubling up to the configured maximum.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Protocol

from globetrain.sync.config import QoSConfig, SyncConfig

log = logging.getLogger(__name__)

# Density ladder the scheduler walks (clipped to QoSConfig's [min_density, max_density]).
DENSITY_LADDER = (1.0, 0.3, 0.1, 0.03, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001)


@dataclasses.dataclass(frozen=True)
class RoundSettings:
    """What one round uses: H inner steps, then a payload at this density and bit width."""

    inner_steps: int
    density: float
    bits: int
    reason: str = ""
    """Why the scheduler chose these settings (logged per round)."""


@dataclasses.dataclass(frozen=True)
class RoundObservation:
    """What a finished round and its exchange measured (wall or simulated seconds)."""

    inner_steps: int
    compute_seconds: float
    """Time spent in inner steps during the round."""
    exchange_seconds: float | None = None
    """Submission to resolution of the round's exchange (None if it failed)."""
    bytes_sent: int | None = None
    uplink_bytes_per_s: float | None = None
    """Measured uplink throughput, if the exchange measured it."""
    rtt_s: float | None = None
    """Measured round-trip time to peers, if known."""


class RoundSchedule(Protocol):
    def settings_for(self, round_index: int) -> RoundSettings: ...

    def observe(self, observation: RoundObservation) -> None: ...


class FixedSchedule:
    """The same settings every round (after an optional dense warm-up)."""

    def __init__(self, config: SyncConfig) -> None:
        self.config = config

    def settings_for(self, round_index: int) -> RoundSettings:
        if round_index < self.config.dense_warmup_rounds:
            return RoundSettings(self.config.inner_steps, 1.0, 32, "dense warm-up")
        return RoundSettings(self.config.inner_steps, self.config.density, self.config.bits, "fixed")

    def observe(self, observation: RoundObservation) -> None:
        """Fixed settings ignore measurements."""


class AdaptiveSchedule:
    """Chooses H, density and bits so that an exchange fits inside a round's compute."""

    def __init__(
        self,
        sync: SyncConfig,
        qos: QoSConfig,
        payload_bytes: Callable[[float, int], int],
    ) -> None:
        """``payload_bytes(density, bits)`` predicts the codec payload of this device's model."""
        self.sync = sync
        self.qos = qos
        self.payload_bytes = payload_bytes
        self.step_seconds: float | None = None
        self.uplink_bytes_per_s: float | None = None
        self.rtt_s: float | None = None
        densities = [d for d in DENSITY_LADDER if qos.min_density <= d <= qos.max_density]
        for bound in (qos.max_density, qos.min_density):
            if bound not in densities:
                densities.append(bound)
        # Every (density, bits) pair, richest payload first.
        self.candidates = sorted(
            ((d, b) for d in densities for b in qos.bits_choices),
            key=lambda pair: (-self.payload_bytes(*pair), -pair[0]),
        )

    # -- measurements -------------------------------------------------------------------------

    def observe(self, observation: RoundObservation) -> None:
        if observation.inner_steps > 0 and observation.compute_seconds > 0:
            self.step_seconds = self._smooth(
                self.step_seconds, observation.compute_seconds / observation.inner_steps, take_rise_at_once=True
            )
        throughput = observation.uplink_bytes_per_s
        if throughput is None and observation.exchange_seconds and observation.bytes_sent:
            # Without a direct measurement, the whole exchange time bounds throughput from below.
            latency = (self.rtt_s or 0.0) * self.qos.round_trips
            transfer = max(observation.exchange_seconds - latency, 1e-3)
            throughput = observation.bytes_sent / transfer
        if throughput is not None and throughput > 0:
            # A drop (slower link) is taken at once; a rise is smoothed, so one lucky round
            # does not make the next round's payload overflow its budget.
            self.uplink_bytes_per_s = self._smooth(self.uplink_bytes_per_s, throughput, take_drop_at_once=True)
        if observation.rtt_s is not None and observation.rtt_s >= 0:
            self.rtt_s = self._smooth(self.rtt_s, observation.rtt_s, take_rise_at_once=True)

    def _smooth(
        self,
        previous: float | None,
        new: float,
        *,
        take_drop_at_once: bool = False,
        take_rise_at_once: bool = False,
    ) -> float:
        if previous is None or (take_drop_at_once and new < previous) or (take_rise_at_once and new > previous):
            return new
        weight = self.qos.smoothing
        return weight * new + (1 - weight) * previous

    # -- decisions ----------------------------------------------------------------------------

    def exchange_seconds(self, density: float, bits: int) -> float:
        """Predicted exchange time of one round's payload on the measured link."""
        assert self.uplink_bytes_per_s is not None
        return self.exchange_seconds_on(density, bits, self.uplink_bytes_per_s, self.rtt_s)

    def exchange_seconds_on(self, density: float, bits: int, uplink_bytes_per_s: float, rtt_s: float | None) -> float:
        """Predicted exchange time of a payload at (density, bits) on the given link."""
        upload = self.qos.upload_factor * self.payload_bytes(density, bits)
        return (rtt_s or 0.0) * self.qos.round_trips + upload / uplink_bytes_per_s

    def settings_for(self, round_index: int) -> RoundSettings:
        """The settings for the link the measurements estimate."""
        return self.settings_on_link(
            round_index, uplink_bytes_per_s=self.uplink_bytes_per_s, rtt_s=self.rtt_s, max_inner_steps=self.qos.max_inner_steps
        )

    def settings_on_link(
        self,
        round_index: int,
        *,
        uplink_bytes_per_s: float | None,
        rtt_s: float | None,
        max_inner_steps: int,
        extra_budget_s: float = 0.0,
        warn_if_too_slow: bool = True,
    ) -> RoundSettings:
        """The settings this schedule would choose on the given link, H at most ``max_inner_steps``.

        ``settings_for`` asks about the link the measurements estimate; a caller may ask about
        another one (the fleet's QoS: the link its latest exchange alone saw), and give the
        exchange ``extra_budget_s`` beyond the compute it overlaps (the fleet's QoS: a device
        that submits ahead of the round's end).
        """
        sync, qos = self.sync, self.qos
        max_steps = max(qos.min_inner_steps, max_inner_steps)
        if round_index < sync.dense_warmup_rounds:
            return RoundSettings(sync.inner_steps, 1.0, 32, "dense warm-up")
        base_steps = min(max(sync.inner_steps, qos.min_inner_steps), max_steps)
        default_density = min(max(sync.density, qos.min_density), qos.max_density)
        default_bits = sync.bits if sync.bits in qos.bits_choices else qos.bits_choices[0]
        if not qos.enabled:
            return RoundSettings(sync.inner_steps, sync.density, sync.bits, "qos off")
        if self.step_seconds is None or uplink_bytes_per_s is None:
            return RoundSettings(base_steps, default_density, default_bits, "no measurements yet")
        fitting = self.fitting_settings(
            uplink_bytes_per_s=uplink_bytes_per_s, rtt_s=rtt_s, max_inner_steps=max_steps, extra_budget_s=extra_budget_s
        )
        if fitting is not None:
            return fitting
        density, bits = self.candidates[-1]
        steps = _doubling(base_steps, max_steps)[-1]
        needed = self.exchange_seconds_on(density, bits, uplink_bytes_per_s, rtt_s)
        if warn_if_too_slow:
            log.warning(
                "link too slow for any setting: exchange needs %.2fs but H=%d gives %.2fs of compute; "
                "rounds will wait on the network (raise qos.max_inner_steps or lower qos.min_density)",
                needed,
                steps,
                steps * self.step_seconds + extra_budget_s,
            )
        return RoundSettings(steps, density, bits, f"leanest setting; exchange {needed:.2f}s exceeds compute")

    def budget_seconds(self, steps: int, extra_budget_s: float = 0.0) -> float:
        """How long an exchange may take beside ``steps`` inner steps (needs ``step_seconds``)."""
        assert self.step_seconds is not None
        return steps * self.step_seconds * self.qos.fit_fraction + extra_budget_s

    def fitting_settings(
        self, *, uplink_bytes_per_s: float, rtt_s: float | None, max_inner_steps: int, extra_budget_s: float = 0.0
    ) -> RoundSettings | None:
        """The smallest H (doubling from the base) with the richest payload whose exchange fits; None if none does.

        Needs a step time measured (``step_seconds``); without one nothing is known to fit.
        """
        if self.step_seconds is None:
            return None
        qos = self.qos
        max_steps = max(qos.min_inner_steps, max_inner_steps)
        base_steps = min(max(self.sync.inner_steps, qos.min_inner_steps), max_steps)
        for steps in _doubling(base_steps, max_steps):
            budget = self.budget_seconds(steps, extra_budget_s)
            for density, bits in self.candidates:
                needed = self.exchange_seconds_on(density, bits, uplink_bytes_per_s, rtt_s)
                if needed <= budget:
                    return RoundSettings(
                        steps,
                        density,
                        bits,
                        f"exchange {needed:.2f}s fits {budget:.2f}s of compute "
                        f"(uplink {uplink_bytes_per_s * 8 / 1e6:.2f} Mbit/s, rtt {1000 * (rtt_s or 0):.0f} ms)",
                    )
        return None


def _doubling(start: int, limit: int) -> list[int]:
    values = [start]
    while values[-1] * 2 <= limit:
        values.append(values[-1] * 2)
    if values[-1] != limit and limit > start:
        values.append(limit)
    return values


def make_payload_estimator(shapes: Sequence[Sequence[int]]) -> Callable[[float, int], int]:
    """Cached ``payload_bytes(density, bits)`` for tensors of ``shapes`` using the real codec."""
    from globetrain.compression import Codec

    cache: dict[tuple[float, int], int] = {}
    frozen_shapes = [tuple(int(n) for n in shape) for shape in shapes]

    def estimate(density: float, bits: int) -> int:
        key = (float(density), int(bits))
        if key not in cache:
            cache[key] = int(Codec(density, bits).estimate_payload_bytes(frozen_shapes))
        return cache[key]

    return estimate


def number_of_elements(shapes: Sequence[Sequence[int]]) -> int:
    return sum(math.prod(shape) for shape in shapes)

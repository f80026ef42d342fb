"""Adaptive QoS on the fleet's time-based rounds.

``AdaptiveSchedule`` (``globetrain.sync.schedule``) picks H, density and bits so that an
exchange fits in the compute time of H steps. In the fleet a round is a fixed window of
T seconds and H is whatever a device computes in it, so this wrapper feeds it the steps
a round actually yields and turns its choice into what a device can do:

- density and bits: used as chosen, within the run's bounds (the run's ``sync.density``
  and ``sync.bits`` are the richest a device sends; QoS only goes leaner);
- H: when even the leanest payload does not fit in one round, the schedule asks for a
  multiple of a round's steps; the device then contributes every k-th round and only
  listens in between (its progress stays in its local model and goes with the next
  contribution), which is "rarer syncs" on time-based rounds.

The budget is what the protocol allows: a contribution must reach the round's leader
within the collection window (``fleet.collection_window`` x T after the round ends).

Two speeds, as in AIMD congestion control: one signal makes the next payload leaner, only
a confirmed one makes contributions rarer, and richer comes slowly.

- The estimates the schedule sees are the median of the last few rounds' measurements:
  one exchange's ack timing also includes how long the leader's busy CPU took to answer,
  so single rounds swing by orders of magnitude on a loaded machine (measured on loopback:
  0.01 to 700 Mbit/s in consecutive rounds). When the exchanges of the last
  ``CONFIRMING_ROUNDS`` rounds all saw a slower link (uplink or round trip) than the
  median, that worse value counts at once; a device that contributes every k-th round
  measures once per k rounds, so fewer exchanges confirm (one for k >= 2).
- The latest exchange alone: when it saw the link at least ``SUDDEN_SLOWDOWN`` times
  slower than the estimates (uplink, or round trip), the next round's payload is the one
  that would fit on that link (same H: never rarer on one signal). A tenfold drop thus
  shows in the first payload compressed after its first exchange was measured, without
  waiting for a second; an outlier costs one leaner round (fewer values sent, the rest
  kept in error feedback for the next), not a lasting change. Smaller swings (a relay's
  jitter, a busy leader) go through the median only: otherwise a device whose budget is
  nearly all round trips would change its payload every other round.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import deque
from collections.abc import Callable

from globetrain.fleet.config import FleetConfig
from globetrain.sync.config import QoSConfig, SyncConfig
from globetrain.sync.schedule import AdaptiveSchedule, RoundObservation, RoundSettings

ROUNDS_PER_CONTRIBUTION_MAX = 8
"""On the slowest links a device contributes at least every this many rounds."""
MEASUREMENT_WINDOW = 5
"""Rounds of uplink and round-trip measurements the schedule sees the median of."""
CONFIRMING_ROUNDS = 2
"""Rounds whose exchanges must agree on a slower link before it counts ahead of the median."""
SUDDEN_SLOWDOWN = 2.0
"""How much slower than the estimates (uplink / this, or round trip x this) one exchange must see to count alone."""


def qos_for_run(sync: SyncConfig, fleet: FleetConfig, base: QoSConfig | None = None) -> QoSConfig:
    """The QoS bounds of a device in this run: never richer than the run's density and bits."""
    base = base or QoSConfig()
    bits = tuple(b for b in base.bits_choices if b <= sync.bits) or (sync.bits,)
    return base.replace(
        max_density=sync.density,
        min_density=min(base.min_density, sync.density),
        bits_choices=bits,
        # A contribution must arrive within the collection window; keep a fifth of it spare.
        fit_fraction=min(base.fit_fraction, 0.8 * fleet.collection_window),
        min_inner_steps=1,
        max_inner_steps=max(base.max_inner_steps, 1),
    )


class RoundPeriodSchedule:
    """A ``RoundSchedule`` for time-based rounds, delegating the choice to ``AdaptiveSchedule``."""

    def __init__(self, sync: SyncConfig, qos: QoSConfig, payload_bytes: Callable[[float, int], int]) -> None:
        self.sync = sync
        self.qos = qos
        self.adaptive = AdaptiveSchedule(sync, qos, payload_bytes)
        self.recent_steps: deque[int] = deque(maxlen=5)
        self.recent_uplinks: deque[float] = deque(maxlen=MEASUREMENT_WINDOW)
        self.recent_rtts: deque[float] = deque(maxlen=MEASUREMENT_WINDOW)
        self.base_steps = sync.inner_steps
        """The base H of the latest ``settings_for`` (one round's steps): k rounds per contribution = H / base."""
        self.latest_rounds_per_contribution = 1
        """k of the latest ``settings_for``: measurements come once per k rounds."""
        self.latest_uplink: float | None = None
        self.latest_rtt: float | None = None
        """What the latest measured exchange alone saw (``leaner_for_latest``)."""

    def note_round_steps(self, steps: int) -> None:
        """Inner steps the device computed in one round's window (the driver's H)."""
        if steps > 0:
            self.recent_steps.append(steps)

    @property
    def steps_per_round(self) -> int:
        if not self.recent_steps:
            return self.sync.inner_steps
        return max(1, int(statistics.median(self.recent_steps)))

    def settings_for(self, round_index: int) -> RoundSettings:
        steps = self.steps_per_round
        self.base_steps = steps
        # The schedule's base H is one round's worth of steps; doubling it means rarer syncs.
        self.adaptive.sync = self.sync.replace(inner_steps=steps)
        self.adaptive.qos = self.qos.replace(max_inner_steps=max(steps * ROUNDS_PER_CONTRIBUTION_MAX, 1))
        settings = self.leaner_for_latest(round_index, self.adaptive.settings_for(round_index))
        self.latest_rounds_per_contribution = self.rounds_per_contribution(settings)
        return settings

    def leaner_for_latest(self, round_index: int, settings: RoundSettings) -> RoundSettings:
        """``settings``, or a leaner payload at the same H if the latest exchange alone saw a much slower link."""
        estimate = self.adaptive
        if estimate.uplink_bytes_per_s is None or self.latest_uplink is None:
            return settings
        uplink, rtt = estimate.uplink_bytes_per_s, estimate.rtt_s or 0.0
        latest_rtt = self.latest_rtt or 0.0
        sudden_uplink = self.latest_uplink * SUDDEN_SLOWDOWN <= uplink
        sudden_rtt = latest_rtt > 0 and latest_rtt >= SUDDEN_SLOWDOWN * rtt
        if not (sudden_uplink or sudden_rtt):
            return settings
        uplink = self.latest_uplink if sudden_uplink else uplink
        rtt = latest_rtt if sudden_rtt else rtt
        on_latest = estimate.settings_on_link(
            round_index, uplink_bytes_per_s=uplink, rtt_s=rtt, max_inner_steps=settings.inner_steps, warn_if_too_slow=False
        )
        payload = estimate.payload_bytes
        if payload(on_latest.density, on_latest.bits) >= payload(settings.density, settings.bits):
            return settings
        return RoundSettings(
            settings.inner_steps,
            on_latest.density,
            on_latest.bits,
            f"latest exchange alone saw a much slower link, leaner until confirmed: {on_latest.reason}",
        )

    def observe(self, observation: RoundObservation) -> None:
        if observation.uplink_bytes_per_s is not None and observation.uplink_bytes_per_s > 0:
            self.recent_uplinks.append(observation.uplink_bytes_per_s)
            # The latest measured exchange stands until the next one: a device contributing
            # every k-th round keeps what its last exchange saw through the rounds between.
            self.latest_uplink, self.latest_rtt = observation.uplink_bytes_per_s, None
        if observation.rtt_s is not None and observation.rtt_s >= 0:
            self.recent_rtts.append(observation.rtt_s)
            self.latest_rtt = observation.rtt_s
        # Measurements come once per contribution: confirm over rounds, not over exchanges.
        confirming = max(1, math.ceil(CONFIRMING_ROUNDS / self.latest_rounds_per_contribution))
        self.adaptive.observe(
            dataclasses.replace(
                observation,
                uplink_bytes_per_s=cautious_estimate(self.recent_uplinks, slower_is_larger=False, confirming=confirming),
                rtt_s=cautious_estimate(self.recent_rtts, slower_is_larger=True, confirming=confirming),
            )
        )

    def rounds_per_contribution(self, settings: RoundSettings) -> int:
        """Rounds per contribution the latest settings ask for (1 unless the link is too slow)."""
        return min(max(1, round(settings.inner_steps / max(self.base_steps, 1))), ROUNDS_PER_CONTRIBUTION_MAX)


def cautious_estimate(
    recent: deque[float], *, slower_is_larger: bool, confirming: int = CONFIRMING_ROUNDS
) -> float | None:
    """The median of ``recent``, or the slower value the last ``confirming`` measurements agree on.

    "Agree": even the best of the last measurements is worse than the median (for an uplink,
    its largest value is below the median; for a round trip, its smallest is above).
    """
    if not recent:
        return None
    median = statistics.median(recent)
    if len(recent) < confirming:
        return median
    last = list(recent)[-confirming:]
    if slower_is_larger:
        return max(median, min(last))
    return min(median, max(last))

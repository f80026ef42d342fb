"""Adaptive QoS on the fleet's time-based rounds.

``AdaptiveSchedule`` (``globetrain.sync.schedule``) picks H, density and bits so that an
exchange fits in the compute time of H steps. In the fleet a round is a fixed window of
T seconds and H is whatever a device computes in it, so this wrapper feeds it the steps
a round actually yields and turns its choice into what a device can do:

- density and bits: used as chosen, within the run's bounds (the run's ``sync.density``
  and ``sync.bits`` are the richest a device sends; QoS only goes leaner);
- H: always one round's steps. A device contributes every round: "rarer syncs" cannot
  help here, because a contribution sent every k-th round must still reach the leader
  within that round's collection window, and a k-fold payload only arrives later
  (measured in the shaped lab, run Q: the device cut to 0.1 Mbit/s chose every 2nd-4th
  round with 18 KB payloads, three of them arrived after the window closed, and the
  rounds it was missing from tilted the label-skewed model: 0.62 -> 0.33 in two rounds);
- instead, when even the leanest payload does not fit in the window, the device submits
  *earlier*: ``submit_lead_s`` seconds before the round ends (at most half the window,
  which the leaders accept as clock skew) while it goes on computing; so does a device
  whose payload fits but needs more than half the window (``EARLY_FOR_SLACK``). The steps after
  the submission count for the next round, so no compute is lost and its rounds stay T
  long, only shifted; the aggregate it applies still falls due at the round's end.

The budget is what the protocol allows: a contribution must reach the round's leader
within the collection window (``fleet.collection_window`` x T after the round ends), plus
the lead when the device submits early.

Two speeds, as in AIMD congestion control: one signal makes the next payload leaner, only
a confirmed one moves the submission earlier, and richer comes slowly.

- The estimates the schedule sees are the median of the last few rounds' measurements:
  one exchange's ack timing also includes how long the leader's busy CPU took to answer,
  so single rounds swing by orders of magnitude on a loaded machine (measured on loopback:
  0.01 to 700 Mbit/s in consecutive rounds). When the exchanges of the last
  ``CONFIRMING_ROUNDS`` rounds all saw a slower link (uplink or round trip) than the
  median, that worse value counts at once.
- The latest exchange alone: when it saw the link at least ``SUDDEN_SLOWDOWN`` times
  slower than the estimates (uplink, or round trip), the next round's payload is the one
  that would fit on that link (at the same lead: never earlier on one signal). A tenfold
  drop thus shows in the first payload compressed after its first exchange was measured,
  without waiting for a second; an outlier costs one leaner round (fewer values sent, the
  rest kept in error feedback for the next), not a lasting change. Smaller swings (a
  relay's jitter, a busy leader) go through the median only: otherwise a device whose
  budget is nearly all round trips would change its payload every other round.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections import deque
from collections.abc import Callable

from globetrain.fleet.config import FleetConfig
from globetrain.sync.config import QoSConfig, SyncConfig
from globetrain.sync.schedule import AdaptiveSchedule, RoundObservation, RoundSettings

log = logging.getLogger(__name__)

UNCONFIRMED = "leaner until confirmed"
"""In the reason of a round made leaner by one slow exchange alone (the analyses look for it)."""

SPARE = 0.8
"""Of the time an exchange has (the collection window, plus a lead), the part it may plan to use."""
MAX_LEAD_FRACTION_OF_WINDOW = 0.5
"""A device submits at most this part of the collection window before its round ends.

Leaders accept contributions from a whole window before the round's end (``LeaderService``
refuses earlier ones as a clock ahead); half of it leaves the other half for clock skew."""
EARLY_FOR_SLACK = 0.5
"""An exchange planned to need more than this part of its budget is submitted early all the same.

On a slow link a long upload is the one that jitter and the device's own other traffic push
past the window: in run V an 18 KB upload at 0.1 Mbit/s, planned at 1.67 s of a 1.69 s
budget, took 4 s and was refused (twice in three rounds; the model fell 0.34). The lead
costs nothing, so such a device keeps its payload and gains half a window of slack."""
ROUND_TRIPS_TO_LEADER = 2.5
"""Round trips before a contribution is at its leader: the stream's protocol negotiation,
the ping that measures the RTT, and half a round trip for the envelope itself.

What must fit in the collection window ends there: the ack and the aggregate come later.
``QoSConfig.round_trips`` (4) counts an all-reduce's matchmaking and two phases, which
the fleet does not have; with it, a device 0.6 s of RTT away (the lab's 3G fallback after
the delays doubled) found no payload fitting even half a window early."""
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
        fit_fraction=min(base.fit_fraction, SPARE * fleet.collection_window),
        round_trips=min(base.round_trips, ROUND_TRIPS_TO_LEADER),
        min_inner_steps=1,
        max_inner_steps=max(base.max_inner_steps, 1),
    )


class RoundPeriodSchedule:
    """A ``RoundSchedule`` for time-based rounds, delegating the choice to ``AdaptiveSchedule``."""

    def __init__(
        self, sync: SyncConfig, qos: QoSConfig, payload_bytes: Callable[[float, int], int], *, max_lead_s: float = 0.0
    ) -> None:
        """``max_lead_s``: how long before its round's end a device may submit (0: never early)."""
        self.sync = sync
        self.qos = qos
        self.max_lead_s = max(float(max_lead_s), 0.0)
        self.adaptive = AdaptiveSchedule(sync, qos, payload_bytes)
        self.recent_steps: deque[int] = deque(maxlen=5)
        self.recent_uplinks: deque[float] = deque(maxlen=MEASUREMENT_WINDOW)
        self.recent_rtts: deque[float] = deque(maxlen=MEASUREMENT_WINDOW)
        self.submit_lead_s = 0.0
        """Of the latest ``settings_for``: submit this long before the round ends (0: at its end)."""
        self.latest_uplink: float | None = None
        self.latest_rtt: float | None = None
        """What the latest measured exchange alone saw (``leaner_for_latest``)."""
        self._warned_too_slow = False

    @classmethod
    def for_run(
        cls, sync: SyncConfig, fleet: FleetConfig, payload_bytes: Callable[[float, int], int], base: QoSConfig | None = None
    ) -> RoundPeriodSchedule:
        """The schedule of a device in this run: its bounds from ``qos_for_run``, its lead from the window."""
        max_lead = MAX_LEAD_FRACTION_OF_WINDOW * fleet.seconds(fleet.collection_window)
        return cls(sync, qos_for_run(sync, fleet, base), payload_bytes, max_lead_s=max_lead)

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
        # H is one round's worth of steps, never a multiple (see the module's docstring).
        self.adaptive.sync = self.sync.replace(inner_steps=steps)
        self.adaptive.qos = self.qos.replace(max_inner_steps=steps)
        estimate = self.adaptive
        settings, lead = self.settings_on_link(round_index, estimate.uplink_bytes_per_s, estimate.rtt_s)
        settings, lead = self.leaner_for_latest(round_index, settings, lead)
        self.submit_lead_s = lead
        return settings

    def settings_on_link(self, round_index: int, uplink: float | None, rtt: float | None) -> tuple[RoundSettings, float]:
        """Settings and lead on a link: the richest payload that fits at the round's end, else early.

        Early means ``max_lead_s`` before the end: the richest payload that fits then, or the
        leanest one (with a warning) when none does. A payload that fits at the end but needs
        more than ``EARLY_FOR_SLACK`` of the budget also goes early, for slack.
        """
        estimate, steps = self.adaptive, self.adaptive.sync.inner_steps
        if uplink is None or estimate.step_seconds is None or not self.qos.enabled or round_index < self.sync.dense_warmup_rounds:
            # Nothing measured yet (or QoS off, or a dense warm-up): the schedule's defaults, at the round's end.
            return estimate.settings_on_link(
                round_index, uplink_bytes_per_s=uplink, rtt_s=rtt, max_inner_steps=steps, warn_if_too_slow=False
            ), 0.0
        at_end = estimate.fitting_settings(uplink_bytes_per_s=uplink, rtt_s=rtt, max_inner_steps=steps)
        lead = self.max_lead_s
        if at_end is not None:
            self._warned_too_slow = False
            needed = estimate.exchange_seconds_on(at_end.density, at_end.bits, uplink, rtt)
            if lead <= 0 or needed <= EARLY_FOR_SLACK * estimate.budget_seconds(steps):
                return at_end, 0.0
            return dataclasses.replace(at_end, reason=f"submitted {lead:.1f}s early for slack: {at_end.reason}"), lead
        early = estimate.fitting_settings(
            uplink_bytes_per_s=uplink, rtt_s=rtt, max_inner_steps=steps, extra_budget_s=SPARE * lead
        )
        if early is None:
            self._warn_too_slow(uplink, rtt)
            density, bits = estimate.candidates[-1]
            early = RoundSettings(steps, density, bits, "leanest setting; its exchange does not fit the window")
        if lead <= 0:
            return early, 0.0
        return dataclasses.replace(early, reason=f"submitted {lead:.1f}s early: {early.reason}"), lead

    def leaner_for_latest(self, round_index: int, settings: RoundSettings, lead: float) -> tuple[RoundSettings, float]:
        """``settings``, or a leaner payload at the same lead if the latest exchange alone saw a much slower link."""
        estimate = self.adaptive
        if estimate.uplink_bytes_per_s is None or estimate.step_seconds is None or self.latest_uplink is None:
            return settings, lead
        uplink, rtt = estimate.uplink_bytes_per_s, estimate.rtt_s or 0.0
        latest_rtt = self.latest_rtt or 0.0
        sudden_uplink = self.latest_uplink * SUDDEN_SLOWDOWN <= uplink
        sudden_rtt = latest_rtt > 0 and latest_rtt >= SUDDEN_SLOWDOWN * rtt
        if not (sudden_uplink or sudden_rtt):
            return settings, lead
        uplink = self.latest_uplink if sudden_uplink else uplink
        rtt = latest_rtt if sudden_rtt else rtt
        on_latest = estimate.settings_on_link(
            round_index, uplink_bytes_per_s=uplink, rtt_s=rtt, max_inner_steps=settings.inner_steps,
            extra_budget_s=SPARE * lead, warn_if_too_slow=False,
        )
        payload = estimate.payload_bytes
        if payload(on_latest.density, on_latest.bits) >= payload(settings.density, settings.bits):
            return settings, lead
        leaner = RoundSettings(
            settings.inner_steps,
            on_latest.density,
            on_latest.bits,
            f"latest exchange alone saw a much slower link, {UNCONFIRMED}: {on_latest.reason}",
        )
        return leaner, lead

    def observe(self, observation: RoundObservation) -> None:
        if observation.uplink_bytes_per_s is not None and observation.uplink_bytes_per_s > 0:
            self.recent_uplinks.append(observation.uplink_bytes_per_s)
            # The latest measured exchange stands until the next one.
            self.latest_uplink, self.latest_rtt = observation.uplink_bytes_per_s, None
        if observation.rtt_s is not None and observation.rtt_s >= 0:
            self.recent_rtts.append(observation.rtt_s)
            self.latest_rtt = observation.rtt_s
        self.adaptive.observe(
            dataclasses.replace(
                observation,
                uplink_bytes_per_s=cautious_estimate(self.recent_uplinks, slower_is_larger=False),
                rtt_s=cautious_estimate(self.recent_rtts, slower_is_larger=True),
            )
        )

    def _warn_too_slow(self, uplink: float, rtt: float | None) -> None:
        if self._warned_too_slow:
            return
        self._warned_too_slow = True
        log.warning(
            "link too slow for the collection window even with the leanest payload submitted early "
            "(uplink %.3f Mbit/s, rtt %.0f ms): contributions may arrive after the leader closed and go back into "
            "error feedback; raise fleet.round_period_s or fleet.collection_window, or lower qos.min_density",
            uplink * 8 / 1e6, 1000 * (rtt or 0.0),
        )


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

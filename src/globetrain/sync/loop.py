"""The sync loop: step 1 (temporal) of the two-step deep compression.

``SyncLoop`` wraps a user's model and inner optimizer. Each round the device runs H
inner steps, forms the pseudo-gradient (the drift of its parameters since the round
started), compresses it with error feedback (step 2, ``globetrain.compression``),
hands it to an ``Exchange`` and, ``apply_delay`` rounds later, applies the group's
sample-weighted average to the global model with the outer optimizer (its step
optionally scaled by sqrt(contributors) up to a cap, ``SyncConfig.outer_lr_scaling``).

State kept per device (all float32, parameter shapes):

- ``global_params``: the global model. Devices that averaged together hold identical
  copies: it only changes by outer steps on averaged updates.
- ``anchor``: where the current round started; the round's drift is ``anchor - params``.
- the error-feedback residual: what was not sent yet.
- one drift per exchange still in flight (so local progress survives a rebase).

The local model is kept at ``global - (drift of rounds still in flight)`` plus the
progress of the round in compute. With ``apply_delay=1`` the exchange of round r
overlaps the compute of round r + 1 and its average is applied at the end of round
r + 1: the device never waits for the network unless an exchange takes longer than a
whole round.

Staleness bound: an update is applied exactly ``apply_delay`` rounds after it was
submitted, never later, so every device applies the same sequence of averages to its
global model. If a due exchange has not resolved, the boundary waits for it up to what
is left of ``exchange_timeout_s`` since submission; past that (or when the exchange
fails) the round is abandoned: the global model is left unchanged for it, the
device's own sent values go back into error feedback (re-sent next round, nothing is
lost), and a result that arrives later is discarded and counted.

Adaptive settings: the schedule sees what an exchange measured of the link (uplink,
round trip) as soon as the exchange has resolved, at the next round boundary, and the
payload compressed there uses it; the round's update is applied (and its compute
observed) ``apply_delay`` rounds after submission as above. A link that got slower thus
shapes the payload of the round during which its first slow exchange ended.

Drivers: a real-time driver calls ``step()`` after each inner step (or
``finish_round()`` itself); the in-process harness and the simulator call
``submit_round()`` and ``apply_due(wait=...)`` separately, so that many devices can be
stepped in lockstep or in simulated time without threads.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import math
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import torch

from globetrain.compression import Codec, ErrorFeedback
from globetrain.errors import ExchangeFailed
from globetrain.sync.config import SyncConfig
from globetrain.sync.exchange import Contribution, Exchange, ExchangeOutcome
from globetrain.sync.outer import OuterOptimizer
from globetrain.sync.schedule import FixedSchedule, RoundObservation, RoundSchedule, RoundSettings

log = logging.getLogger(__name__)


@dataclasses.dataclass
class AppliedExchange:
    """What happened to one submitted round when it became due."""

    round: int
    status: str
    """``applied``, ``failed`` (the exchange reported a failure), ``abandoned`` (timed out) or
    ``diverged`` (the aggregator's global model differs from this device's: download state)."""
    contributors: int = 0
    samples: int = 0
    reason: str = ""
    outcome: ExchangeOutcome | None = None


@dataclasses.dataclass
class RoundReport:
    """One round boundary, for logs and metrics."""

    round: int
    settings: RoundSettings
    inner_steps: int
    samples: int
    compute_seconds: float
    payload_bytes: int
    sent_values: int
    residual_norm: float
    contributed: bool = True
    """False for a listen-only round (nothing sent, progress kept for the next round)."""
    applied: list[AppliedExchange] = dataclasses.field(default_factory=list)
    wait_seconds: float = 0.0
    """Time the boundary spent waiting for due exchanges (0 when compute hid them)."""


@dataclasses.dataclass
class _InFlight:
    round: int
    future: Future[ExchangeOutcome]
    sent: list[Any]
    drift: list[torch.Tensor] | None
    """None for a listen-only round: its progress stays in the local model."""
    submitted_at: float
    payload_bytes: int
    samples: int
    link_observed: bool = False
    """Whether the schedule has already seen what this exchange measured of the link."""


class SyncLoop:
    """Local steps + compressed, delayed averaging around a user's model and optimizer."""

    def __init__(
        self,
        model: torch.nn.Module,
        inner_optimizer: torch.optim.Optimizer | None,
        exchange: Exchange,
        config: SyncConfig | None = None,
        *,
        schedule: RoundSchedule | None = None,
        clock: Callable[[], float] = time.monotonic,
        device_index: int = 0,
        name: str = "",
    ) -> None:
        self.config = config or SyncConfig()
        self.model = model
        self.inner_optimizer = inner_optimizer
        self.exchange = exchange
        self.schedule: RoundSchedule = schedule or FixedSchedule(self.config)
        self.clock = clock
        self.device_index = device_index
        self.name = name or f"device{device_index}"
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("the model has no trainable parameters; nothing to synchronise")
        self.shapes = [tuple(p.shape) for p in self.parameters]
        with torch.no_grad():
            self.global_params = [p.detach().float().clone() for p in self.parameters]
            self.anchor = [p.clone() for p in self.global_params]
        self.error_feedback = ErrorFeedback(self.global_params) if self.config.error_feedback else None
        self.outer = OuterOptimizer(self.config.outer_lr, self.config.outer_momentum, self.config.nesterov)
        self.in_flight: collections.deque[_InFlight] = collections.deque()
        self.round = 0
        self.settings = self.schedule.settings_for(0)
        self.steps_in_round = 0
        self.samples_in_round = 0
        self.samples_total = 0
        self.round_started_at = self.clock()
        # The last submitted round's compute, reported to the schedule once its exchange ends.
        self.last_round_steps = 0
        self.last_compute_seconds = 0.0
        self.stats: collections.Counter[str] = collections.Counter()
        # Digests of the global model after each processed round, kept when an exchange
        # checks that devices stay bit-identical (the fleet turns this on).
        self.track_digests = False
        self.processed_digests: collections.OrderedDict[int, str] = collections.OrderedDict()
        self.last_digest: tuple[int, str] | None = None
        """(round, digest of the global model after processing it); read from other threads."""
        self.diverged_round: int | None = None
        """Set when an aggregate was refused because this device's global model diverged."""

    # -- inner loop ---------------------------------------------------------------------------

    def step(self, samples: int) -> RoundReport | None:
        """One inner step for a real-time driver: optimizer step, count, sync at the round's end.

        Call after ``loss.backward()``; zero the gradients yourself as usual. Returns the
        round report when this step ended a round, else ``None``.
        """
        if self.inner_optimizer is None:
            raise RuntimeError("SyncLoop.step() needs the inner optimizer passed to SyncLoop")
        self.inner_optimizer.step()
        if self.count_step(samples):
            return self.finish_round(wait=True)
        return None

    def count_step(self, samples: int) -> bool:
        """Record one inner step of ``samples`` samples; True when the round's H steps are done."""
        self.steps_in_round += 1
        self.samples_in_round += int(samples)
        return self.round_complete

    @property
    def round_complete(self) -> bool:
        return self.steps_in_round >= self.settings.inner_steps

    # -- round boundary -----------------------------------------------------------------------

    def finish_round(self, *, wait: bool = True) -> RoundReport:
        """Submit this round's update, then apply what is due (waiting within the bound)."""
        report = self.submit_round()
        self.apply_due(wait=wait, report=report)
        return report

    @torch.no_grad()
    def submit_round(self, *, contribute: bool = True) -> RoundReport:
        """End the round: hand its compressed drift to the exchange and start the next round.

        With ``contribute=False`` the device only listens: it submits an empty contribution
        (it still needs the round's average to keep its global model in step) and keeps
        this round's progress, samples and steps for its next contribution. A device whose
        link is too slow to send every round, or a monitor that follows the global model,
        does this.
        """
        compute_seconds = max(self.clock() - self.round_started_at, 0.0)
        if self._observe_resolved_links():
            # An exchange that resolved during this round measured the link: its density and
            # bits count for the payload compressed now, a round before its update is applied.
            fresh = self.schedule.settings_for(self.round)
            self.settings = dataclasses.replace(self.settings, density=fresh.density, bits=fresh.bits, reason=fresh.reason)
        settings = self.settings
        if contribute:
            current = [p.detach().float() for p in self.parameters]
            drift = torch._foreach_sub(self.anchor, current)
            codec = Codec(settings.density, settings.bits)
            seed = self._seed(self.round)
            if self.error_feedback is not None:
                encoded = self.error_feedback.compress(drift, codec, seed=seed)
            else:
                encoded = codec.encode_with_sent(drift, seed=seed)
            payload, sent, samples = encoded.payload, encoded.sent, self.samples_in_round
            for anchor, value in zip(self.anchor, current):
                anchor.copy_(value)
        else:
            payload, sent, drift, samples = b"", [], None, 0
        future = self.exchange.submit(Contribution(round=self.round, payload=payload, samples=samples))
        self.in_flight.append(
            _InFlight(
                round=self.round,
                future=future,
                sent=sent,
                drift=drift,
                submitted_at=self.clock(),
                payload_bytes=len(payload),
                samples=samples,
            )
        )
        report = RoundReport(
            round=self.round,
            settings=settings,
            inner_steps=self.steps_in_round,
            samples=samples,
            compute_seconds=compute_seconds,
            payload_bytes=len(payload),
            sent_values=sum(int(s.indices.numel()) for s in sent),
            residual_norm=self.error_feedback.norm() if self.error_feedback is not None else 0.0,
            contributed=contribute,
        )
        self.stats["rounds_submitted" if contribute else "rounds_listened"] += 1
        self.stats["bytes_payload"] += len(payload)
        self.round += 1
        if contribute:
            self.last_round_steps = self.steps_in_round
            self.last_compute_seconds = compute_seconds
            self.samples_total += self.samples_in_round
            self.steps_in_round = 0
            self.samples_in_round = 0
        self.settings = self.schedule.settings_for(self.round)
        self.round_started_at = self.clock()
        return report

    def _observe_resolved_links(self) -> bool:
        """Hand the schedule the link measurements of exchanges that resolved since the last look.

        Only exchanges that measured the uplink, and only the link (uplink, round trip), are
        observed here; the round's compute is observed when its update is applied. True when
        anything new was observed.
        """
        observed = False
        for item in self.in_flight:
            if item.link_observed or not item.future.done() or item.future.exception() is not None:
                continue
            outcome = item.future.result()
            if outcome.uplink_bytes_per_s is None:
                continue
            item.link_observed = True
            self.schedule.observe(
                RoundObservation(
                    inner_steps=0, compute_seconds=0.0, uplink_bytes_per_s=outcome.uplink_bytes_per_s, rtt_s=outcome.rtt_s
                )
            )
            observed = True
        return observed

    def due(self) -> list[Future[ExchangeOutcome]]:
        """Futures of in-flight exchanges that must be applied before the next round ends."""
        return [item.future for item in self.in_flight if self._is_due(item, self.config.apply_delay)]

    def _is_due(self, item: _InFlight, delay: int) -> bool:
        # ``self.round`` is the round now computing; round s is due once
        # ``delay`` more rounds have been submitted after it.
        return self.round - 1 - item.round >= delay

    @torch.no_grad()
    def apply_due(
        self, *, wait: bool = True, report: RoundReport | None = None, delay: int | None = None
    ) -> list[AppliedExchange]:
        """Apply due exchanges in round order.

        With ``wait`` a due exchange that has not resolved is waited for up to what is
        left of ``exchange_timeout_s`` since it was submitted, then abandoned. Without
        ``wait`` (simulated time) the first unresolved due exchange stops the pass; the
        driver calls again once it resolved. ``delay`` overrides ``apply_delay`` (``drain``).
        """
        delay = self.config.apply_delay if delay is None else delay
        results: list[AppliedExchange] = []
        wait_started = self.clock()
        while self.in_flight and self._is_due(self.in_flight[0], delay):
            item = self.in_flight[0]
            if not item.future.done():
                if not wait:
                    break
                remaining = self.config.exchange_timeout_s - (self.clock() - item.submitted_at)
                try:
                    item.future.result(timeout=max(remaining, 0.0))
                except FutureTimeout:
                    self.in_flight.popleft()
                    results.append(self._abandon(item, f"no result within {self.config.exchange_timeout_s:.0f}s"))
                    continue
                except Exception:  # noqa: BLE001 - handled below from the future itself
                    pass
            self.in_flight.popleft()
            results.append(self._resolve(item))
        if results and self.steps_in_round == 0:
            # The round now starting had its settings chosen when the previous one was
            # submitted, before these results were observed; choose again so that what
            # they measured (a link that got slower) counts from this round, not the next.
            self.settings = self.schedule.settings_for(self.round)
        if report is not None:
            report.applied.extend(results)
            report.wait_seconds = max(self.clock() - wait_started, 0.0)
        return results

    def _resolve(self, item: _InFlight) -> AppliedExchange:
        error = item.future.exception()
        if error is not None:
            reason = str(error) if isinstance(error, ExchangeFailed) else f"{type(error).__name__}: {error}"
            if not isinstance(error, ExchangeFailed):
                log.error("[%s round %d] exchange raised unexpectedly: %s", self.name, item.round, reason)
            return self._give_back(item, "failed", reason)
        outcome = item.future.result()
        self._check_outcome(outcome)
        if self._diverged_from(outcome):
            self.diverged_round = item.round
            return self._give_back(
                item,
                "diverged",
                f"global model differs from the aggregator's after round {outcome.base_round}: download state to resync",
            )
        self.outer.step(self.global_params, outcome.update, lr_scale=self._outer_lr_scale(outcome.contributors))
        if outcome.returned is not None and self.error_feedback is not None:
            self.error_feedback.restore(outcome.returned)
        self._rebase()
        self.record_digest(item.round)
        self.stats["rounds_applied"] += 1
        # The link part goes in once: here, unless the boundary after the exchange resolved took it.
        link = {} if item.link_observed else {
            "exchange_seconds": outcome.seconds or None,
            "bytes_sent": outcome.bytes_sent or None,
            "uplink_bytes_per_s": outcome.uplink_bytes_per_s,
            "rtt_s": outcome.rtt_s,
        }
        self.schedule.observe(
            RoundObservation(inner_steps=self.last_round_steps, compute_seconds=self.last_compute_seconds, **link)
        )
        return AppliedExchange(
            round=item.round,
            status="applied",
            contributors=outcome.contributors,
            samples=outcome.samples,
            outcome=outcome,
        )

    def _outer_lr_scale(self, contributors: int) -> float:
        # Every member of a group reads the same contributor count from the aggregate, so
        # the scaled step keeps their global models identical.
        if self.config.outer_lr_scaling == "sqrt-contributors":
            return min(math.sqrt(max(contributors, 1)), self.config.outer_lr_max_scale)
        return 1.0

    def _abandon(self, item: _InFlight, reason: str) -> AppliedExchange:
        # A result that arrives after this point must not be applied: every device applies
        # round s exactly apply_delay rounds later or not at all.
        item.future.add_done_callback(lambda _f: self.stats.update(["late_results_discarded"]))
        return self._give_back(item, "abandoned", reason)

    def _give_back(self, item: _InFlight, status: str, reason: str) -> AppliedExchange:
        log.warning("[%s round %d] exchange %s: %s; own update kept in error feedback", self.name, item.round, status, reason)
        if self.error_feedback is not None and item.sent:
            self.error_feedback.restore(item.sent)
        self._rebase()
        self.record_digest(item.round)
        self.stats[f"rounds_{status}"] += 1
        self.schedule.observe(
            RoundObservation(inner_steps=self.last_round_steps, compute_seconds=self.last_compute_seconds)
        )
        return AppliedExchange(round=item.round, status=status, reason=reason)

    def _check_outcome(self, outcome: ExchangeOutcome) -> None:
        if len(outcome.update) != len(self.global_params) or any(
            tuple(u.shape) != tuple(g.shape) for u, g in zip(outcome.update, self.global_params)
        ):
            raise ExchangeFailed("exchange returned an update whose shapes do not match the model")

    def _diverged_from(self, outcome: ExchangeOutcome) -> bool:
        if not self.track_digests or outcome.base_digest is None or outcome.base_round is None:
            return False
        mine = self.processed_digests.get(outcome.base_round)
        return mine is not None and mine != outcome.base_digest

    def record_digest(self, round_index: int) -> None:
        """Remember the global model's digest as the one after processing ``round_index``.

        The loop calls it after each processed round; a driver calls it once for the
        model it starts from (round ``self.round - 1``).
        """
        if not self.track_digests:
            return
        digest = global_model_digest(self.global_params)
        self.processed_digests[round_index] = digest
        while len(self.processed_digests) > 16:
            self.processed_digests.popitem(last=False)
        self.last_digest = (round_index, digest)

    def _rebase(self) -> None:
        """Move the local model to ``global - in-flight drifts``, keeping in-round progress."""
        target = [g.clone() for g in self.global_params]
        for item in self.in_flight:
            if item.drift is not None:
                torch._foreach_sub_(target, item.drift)
        shift = torch._foreach_sub(target, self.anchor)
        for parameter, delta in zip(self.parameters, shift):
            parameter.add_(delta.to(parameter.dtype))
        for anchor, value in zip(self.anchor, target):
            anchor.copy_(value)

    def _seed(self, round_index: int) -> int:
        # Distinct, reproducible stochastic-rounding streams per run, device and round.
        return zlib.crc32(f"{self.config.seed}/{self.device_index}/{round_index}".encode())

    # -- whole-model operations ----------------------------------------------------------------

    def drain(self, *, wait: bool = True) -> list[AppliedExchange]:
        """Apply (or abandon) every exchange still in flight, e.g. before a final evaluation."""
        return self.apply_due(wait=wait, delay=0)

    @torch.no_grad()
    def load_global_into(self, model: torch.nn.Module) -> None:
        """Copy the global model (not the local one) into ``model`` of the same architecture."""
        targets = [p for p in model.parameters() if p.requires_grad]
        if len(targets) != len(self.global_params):
            raise ValueError("model does not match the synchronised one")
        for target, value in zip(targets, self.global_params):
            target.copy_(value.to(target.dtype))

    def state_dict(self) -> dict[str, Any]:
        """Sync state for checkpoints: global model, outer optimizer, error feedback, round."""
        return {
            "round": self.round,
            "samples_total": self.samples_total,
            "global_params": [g.clone() for g in self.global_params],
            "outer": self.outer.state_dict(),
            "error_feedback": self.error_feedback.state_dict() if self.error_feedback is not None else None,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any], *, reset_local: bool = True) -> None:
        """Restore sync state (e.g. a late joiner's download); the local model restarts from it."""
        global_params = state["global_params"]
        if [tuple(g.shape) for g in global_params] != self.shapes:
            raise ValueError("sync state does not match this model's parameter shapes")
        for target, value in zip(self.global_params, global_params):
            target.copy_(value.float())
        self.outer.load_state_dict(state["outer"])
        if self.error_feedback is not None and state.get("error_feedback") is not None:
            self.error_feedback.load_state_dict(state["error_feedback"])
        self.round = int(state["round"])
        self.samples_total = int(state.get("samples_total", 0))
        self.in_flight.clear()
        self.processed_digests.clear()
        self.diverged_round = None
        # The loaded global model is the one after processing every round before ``round``.
        self.record_digest(self.round - 1)
        if reset_local:
            for parameter, value in zip(self.parameters, self.global_params):
                parameter.copy_(value.to(parameter.dtype))
            for anchor, value in zip(self.anchor, self.global_params):
                anchor.copy_(value)
        self.settings = self.schedule.settings_for(self.round)
        self.steps_in_round = 0
        self.samples_in_round = 0
        self.round_started_at = self.clock()


def global_model_digest(tensors: list[torch.Tensor]) -> str:
    """SHA-256 (hex) of tensors' shapes and float32 bytes: equal iff bit-identical models."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()

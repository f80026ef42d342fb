"""``RoundDriver``: runs a ``SyncLoop`` on the fleet's time-based rounds.

The fleet's rounds are windows of wall-clock time (``RoundClock``), not counts of steps:
a device computes inner steps until its round's deadline, then submits what it did
(H = the steps it managed; the average is weighted by samples), applies what is due and
goes on. Stragglers never hold the others up: a slow device just does fewer steps. A
device whose link is too slow for its contribution to reach the leader within the
collection window submits a little before the deadline (the QoS's ``submit_lead``) and
computes on: those steps count for its next round, and it applies what is due at the
deadline as everyone does.

The driver also gets a device in step and keeps it there:

- ``join``: before round 1 starts, a device needs nothing (every device builds the same
  initial model from the run config); later, it downloads the state (``FleetNode``) and
  catches up, listening to the rounds that ended since that state was taken, so it
  applies exactly the aggregates everyone else applies, then contributes;
- a device that falls behind (a long step, a stall) submits the round it is in late while
  the leader still collects, or listens to it otherwise, keeping its progress for later;
- a round reported ``diverged`` (the leader's model digest differs from this device's)
  triggers a resync: download state, catch up.

A listener (the bootstrap, or a monitor) passes no ``train_step`` and only listens.
Every round boundary calls ``on_round`` with a plain dict for logs and metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from globetrain.errors import GlobetrainError
from globetrain.fleet.node import FleetNode
from globetrain.fleet.state import DownloadReport
from globetrain.sync.loop import RoundReport, SyncLoop

log = logging.getLogger(__name__)

TrainStep = Callable[[], int]
"""One inner step (forward, backward, optimizer step); returns the samples it used."""


class RoundDriver:
    """Drives ``loop`` through the run's rounds on ``node``."""

    def __init__(
        self,
        node: FleetNode,
        loop: SyncLoop,
        *,
        train_step: TrainStep | None,
        stop: threading.Event | None = None,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        max_steps_per_round: int | None = None,
        submit_lead: Callable[[], float] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.loop = loop
        self.clock = node.clock
        self.train_step = train_step
        self.stop = stop or threading.Event()
        self.on_round = on_round
        self.max_steps_per_round = max_steps_per_round
        # QoS on a slow link: submit this many seconds before the round ends (and go on computing).
        self.submit_lead = submit_lead
        self.now = now
        self.global_samples = 0
        self.resyncs = 0
        self.downloads: list[DownloadReport] = []
        fleet = node.run_config.fleet
        needed = fleet.seconds(fleet.aggregate_deadline + 1.0)
        if loop.config.exchange_timeout_s < needed:
            log.warning(
                "[%s] sync.exchange_timeout_s=%.1f is shorter than a round plus the aggregate deadline (%.1fs): "
                "rounds may be abandoned while their aggregate is on its way",
                node.name, loop.config.exchange_timeout_s, needed,
            )

    # -- getting in step ------------------------------------------------------------------------

    def join(self) -> DownloadReport | None:
        """Wait for round 0, or download state and catch up when the run is under way."""
        current = self.clock.round_at(self.now())
        if current <= 0:
            self._wait_until(self.clock.start_of(0))
            self.loop.round_started_at = self.loop.clock()
            self.node.publish_state(self.global_samples)
            return None
        return self.resync()

    def resync(self, *, prefer: str | None = None) -> DownloadReport:
        """Download the state (from ``prefer`` first, if given), load it and catch up."""
        snapshot, report = self.node.download_state(prefer=prefer)
        self.loop.load_state_dict(snapshot.loop_state())
        self.global_samples = snapshot.global_samples
        self.downloads.append(report)
        log.info(
            "[%s] loaded state of round %d (%d bytes in %d chunks, %.1fs, %d resumes)",
            self.node.name, snapshot.next_round, report.bytes, report.chunks, report.seconds, report.resumes,
        )
        self.catch_up()
        return report

    def catch_up(self) -> None:
        """Listen to every round whose compute window has passed, applying what falls due."""
        while not self.stop.is_set() and self.loop.round < self.clock.round_at(self.now()):
            self._boundary(contribute=False, note="catch-up")

    # -- the rounds -----------------------------------------------------------------------------

    def run(self, *, until_round: int | None = None) -> None:
        """Compute and sync round after round until ``stop`` is set or ``until_round`` is done."""
        while not self.stop.is_set():
            round_index = self.loop.round
            if until_round is not None and round_index > until_round:
                return
            current = self.clock.round_at(self.now())
            if round_index < current:
                # Behind the fleet: send now if the leader still collects, else only listen
                # (the round's progress then stays in the local model for the next one).
                still_collecting = self.now() < self.clock.collection_deadline(round_index) - 0.1 * self.clock.period
                self._boundary(contribute=self._contributes() and still_collecting, note="late")
                continue
            end = self.clock.end_of(round_index)
            lead = self._lead()
            self._compute_until(end - lead)
            if self.stop.is_set():
                return
            self._boundary(contribute=self._contributes(), note="early" if lead > 0 else "", apply_at=end if lead > 0 else None)

    def _contributes(self) -> bool:
        return self.train_step is not None and self.loop.steps_in_round > 0

    def _lead(self) -> float:
        """Seconds before the round's end to submit at: the QoS's lead, within [0, half a period]."""
        if self.submit_lead is None or self.train_step is None:
            return 0.0
        return min(max(float(self.submit_lead()), 0.0), 0.5 * self.clock.period)

    def _compute_until(self, deadline: float) -> None:
        steps = 0
        while not self.stop.is_set() and self.now() < deadline:
            if self.train_step is None or (self.max_steps_per_round is not None and steps >= self.max_steps_per_round):
                self._wait_until(deadline)
                return
            samples = self.train_step()
            self.loop.count_step(samples)
            steps += 1

    def _wait_until(self, moment: float) -> None:
        while not self.stop.is_set():
            remaining = moment - self.now()
            if remaining <= 0:
                return
            self.stop.wait(min(remaining, 0.5))

    def _boundary(self, *, contribute: bool, note: str, apply_at: float | None = None) -> RoundReport:
        report = self.loop.submit_round(contribute=contribute)
        if apply_at is not None:
            # Submitted early: the steps until the round's end count for the next round, and the
            # aggregate due now falls due at the round's end as for everyone else.
            self._compute_until(apply_at)
        self.loop.apply_due(wait=not self.stop.is_set(), report=report)
        diverged_round = None
        for applied in report.applied:
            if applied.status == "applied":
                self.global_samples += applied.samples
            if applied.status == "diverged":
                diverged_round = applied.round
        self.node.publish_state(self.global_samples)
        self._emit(report, note)
        if diverged_round is not None and note != "catch-up":
            self.resyncs += 1
            reference = self._leader_of(diverged_round)
            log.warning(
                "[%s round %d] global model diverged from the leader's: downloading state", self.node.name, diverged_round
            )
            try:
                self.resync(prefer=reference)
            except GlobetrainError as error:
                log.error("[%s] resync failed (%s); will retry at the next divergence", self.node.name, error)
        return report

    def _leader_of(self, round_index: int) -> str | None:
        exchange = self.node.exchange
        for entry in reversed(exchange.history if exchange is not None else []):
            if entry["round"] == round_index:
                return entry["leader"] or None
        return None

    def _emit(self, report: RoundReport, note: str) -> None:
        if self.on_round is None:
            return
        digest = self.loop.last_digest
        exchange = self.node.exchange
        last = exchange.history[-1] if exchange is not None and exchange.history else {}
        self.on_round(
            {
                "round": report.round,
                "note": note,
                "contributed": report.contributed,
                "inner_steps": report.inner_steps,
                "samples": report.samples,
                "payload_bytes": report.payload_bytes,
                "settings": dataclasses.asdict(report.settings),
                "applied": [
                    {"round": a.round, "status": a.status, "contributors": a.contributors, "samples": a.samples, "reason": a.reason[:200]}
                    for a in report.applied
                ],
                "digest_round": None if digest is None else digest[0],
                "digest": None if digest is None else digest[1],
                "global_samples": self.global_samples,
                "resyncs": self.resyncs,
                "wait_seconds": report.wait_seconds,
                "last_exchange": last,
            }
        )

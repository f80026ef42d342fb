"""SyncLoop: the algorithm of step 1, checked against fakes and independent arithmetic."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
import torch
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from globetrain.compression import Codec
from globetrain.errors import ExchangeFailed
from globetrain.sync import Contribution, Exchange, ExchangeOutcome, InProcessGroup, SyncConfig, SyncLoop


class ManualExchange(Exchange):
    """A one-member exchange whose futures the test resolves or fails by hand."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Contribution, Future[ExchangeOutcome]]] = []

    def submit(self, contribution: Contribution) -> Future[ExchangeOutcome]:
        future: Future[ExchangeOutcome] = Future()
        self.submitted.append((contribution, future))
        return future

    def resolve(self, index: int, *, uplink_bytes_per_s: float | None = None) -> None:
        contribution, future = self.submitted[index]
        update = [t.float() for t in Codec(1.0, 32).decode(contribution.payload)] if contribution.payload else None
        future.set_result(
            ExchangeOutcome(
                round=contribution.round, update=update, contributors=1, samples=contribution.samples,
                uplink_bytes_per_s=uplink_bytes_per_s,
            )
        )

    def fail(self, index: int) -> None:
        self.submitted[index][1].set_exception(ExchangeFailed("injected"))


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def nudge(model: torch.nn.Module, generator: torch.Generator, scale: float = 0.1) -> None:
    """One fake inner step: a random change of every parameter."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def plain_config(**changes) -> SyncConfig:
    """Outer SGD with lr 1 and no momentum: the global model moves by exactly the average."""
    base = SyncConfig(inner_steps=3, outer_lr=1.0, outer_momentum=0.0, nesterov=False, density=1.0, bits=32)
    return base.replace(**changes)


@pytest.mark.parametrize("apply_delay", [0, 1])
def test_single_worker_lossless_sync_reproduces_local_training(apply_delay: int) -> None:
    # With one worker, a lossless codec and an outer step of lr 1, syncing must not change
    # the trajectory at all: the local model after every boundary equals plain training.
    model, reference = make_model(), make_model()
    exchange = ManualExchange()
    loop = SyncLoop(model, None, exchange, plain_config(apply_delay=apply_delay))
    generator_a, generator_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for round_index in range(5):
        for _ in range(3):
            nudge(model, generator_a)
            nudge(reference, generator_b)
            loop.count_step(4)
        loop.submit_round()
        exchange.resolve(round_index)
        loop.apply_due(wait=False)
        for ours, theirs in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    loop.drain()
    for global_value, theirs in zip(loop.global_params, reference.parameters()):
        torch.testing.assert_close(global_value, theirs.detach(), rtol=0, atol=1e-5)


def test_delayed_update_is_applied_exactly_one_round_late() -> None:
    model = make_model()
    exchange = ManualExchange()
    loop = SyncLoop(model, None, exchange, plain_config(apply_delay=1))
    initial = [g.clone() for g in loop.global_params]
    generator = torch.Generator().manual_seed(3)
    nudge(model, generator)
    loop.submit_round()
    exchange.resolve(0)
    assert loop.apply_due(wait=False) == []  # resolved, but not due before round 1 ends
    assert all(torch.equal(a, b) for a, b in zip(initial, loop.global_params))
    nudge(model, generator)
    loop.submit_round()
    applied = loop.apply_due(wait=False)
    assert [a.round for a in applied] == [0] and applied[0].status == "applied"
    assert not all(torch.equal(a, b) for a, b in zip(initial, loop.global_params))


def test_unresolved_due_exchange_blocks_only_when_waiting() -> None:
    exchange = ManualExchange()
    loop = SyncLoop(make_model(), None, exchange, plain_config(apply_delay=0, exchange_timeout_s=0.05))
    loop.submit_round()
    assert loop.apply_due(wait=False) == []  # simulated-time drivers come back later
    assert len(loop.due()) == 1
    applied = loop.apply_due(wait=True)  # a real-time driver waits, bounded, then abandons
    assert [a.status for a in applied] == ["abandoned"]
    exchange.resolve(0)  # a late result is discarded and counted, never applied
    assert loop.stats["late_results_discarded"] == 1
    assert loop.stats["rounds_applied"] == 0


def test_failed_round_keeps_own_update_in_error_feedback_and_global_model_unchanged() -> None:
    model = make_model()
    exchange = ManualExchange()
    loop = SyncLoop(model, None, exchange, plain_config(apply_delay=0, density=0.2, bits=8))
    before_global = [g.clone() for g in loop.global_params]
    nudge(model, torch.Generator().manual_seed(5))
    residual_before = [r.clone() for r in loop.error_feedback.residual]
    drift = [a - p.detach() for a, p in zip(loop.anchor, model.parameters())]
    loop.submit_round()
    exchange.fail(0)
    applied = loop.apply_due(wait=False)
    assert applied[0].status == "failed"
    assert all(torch.equal(a, b) for a, b in zip(before_global, loop.global_params))
    # Nothing lost: the whole drift is now in the residual (what was kept + what was sent).
    for residual, previous, change in zip(loop.error_feedback.residual, residual_before, drift):
        torch.testing.assert_close(residual, previous + change, rtol=0, atol=1e-6)
    # And the local model is back on the (unchanged) global model.
    for parameter, global_value in zip(model.parameters(), loop.global_params):
        torch.testing.assert_close(parameter.detach(), global_value, rtol=0, atol=1e-6)


def test_listen_only_round_keeps_progress_for_the_next_contribution() -> None:
    model = make_model()
    exchange = ManualExchange()
    loop = SyncLoop(model, None, exchange, plain_config(apply_delay=0))
    generator = torch.Generator().manual_seed(9)
    start = [p.detach().clone() for p in model.parameters()]
    nudge(model, generator)
    loop.count_step(8)
    report = loop.submit_round(contribute=False)
    assert exchange.submitted[0][0].payload == b"" and exchange.submitted[0][0].samples == 0
    assert not report.contributed
    nudge(model, generator)
    loop.count_step(8)
    loop.submit_round()
    contribution = exchange.submitted[1][0]
    assert contribution.samples == 16
    sent = Codec(1.0, 32).decode(contribution.payload)
    for value, before, now in zip(sent, start, model.parameters()):
        torch.testing.assert_close(value, before - now.detach(), rtol=0, atol=1e-6)


def test_in_process_group_averages_weighted_by_samples_up_to_the_median_and_keeps_globals_identical() -> None:
    group = InProcessGroup(3)
    models = [make_model() for _ in range(3)]
    loops = [SyncLoop(m, None, group.exchange(i), plain_config(apply_delay=0), device_index=i) for i, m in enumerate(models)]
    start = [p.detach().clone() for p in models[0].parameters()]
    weights = [1, 2, 5]
    drifts = []
    for index, (model, loop) in enumerate(zip(models, loops)):
        nudge(model, torch.Generator().manual_seed(100 + index))
        drifts.append([s - p.detach() for s, p in zip(start, model.parameters())])
        loop.count_step(weights[index])
    for loop in loops:
        loop.submit_round()
    for loop in loops:
        assert [a.status for a in loop.apply_due(wait=False)] == ["applied"]
    capped = [1, 2, 2]  # samples capped at their median (2): the 5 count as 2
    expected = [
        s - sum(w * d[i] for w, d in zip(capped, drifts)) / sum(capped) for i, s in enumerate(start)
    ]
    for loop in loops:
        for value, want in zip(loop.global_params, expected):
            torch.testing.assert_close(value, want, rtol=0, atol=1e-6)
    assert all(torch.equal(a, b) for loop in loops[1:] for a, b in zip(loops[0].global_params, loop.global_params))


def test_in_process_group_averages_only_the_members_that_contributed() -> None:
    group = InProcessGroup(3)
    models = [make_model() for _ in range(3)]
    loops = [SyncLoop(m, None, group.exchange(i), plain_config(apply_delay=0), device_index=i) for i, m in enumerate(models)]
    start = [p.detach().clone() for p in models[0].parameters()]
    drifts = []
    for index, (model, loop) in enumerate(zip(models, loops)):
        nudge(model, torch.Generator().manual_seed(200 + index))
        drifts.append([s - p.detach() for s, p in zip(start, model.parameters())])
        loop.count_step(4)
    loops[0].submit_round(contribute=False)
    for loop in loops[1:]:
        loop.submit_round()
    outcomes = [loop.apply_due(wait=False) for loop in loops]
    assert [[(a.status, a.contributors, a.samples) for a in applied] for applied in outcomes] == [[("applied", 2, 8)]] * 3
    expected = [s - (drifts[1][i] + drifts[2][i]) / 2 for i, s in enumerate(start)]
    for loop in loops:
        for value, want in zip(loop.global_params, expected):
            torch.testing.assert_close(value, want, rtol=0, atol=1e-6)


def test_in_process_round_where_every_member_listens_fails_for_all() -> None:
    group = InProcessGroup(2)
    loops = [SyncLoop(make_model(), None, group.exchange(i), plain_config(apply_delay=0), device_index=i) for i in range(2)]
    for loop in loops:
        loop.submit_round(contribute=False)
    assert [[a.status for a in loop.apply_due(wait=False)] for loop in loops] == [["failed"], ["failed"]]


def test_state_dict_round_trip_restores_global_model_and_outer_momentum() -> None:
    exchange = ManualExchange()
    loop = SyncLoop(make_model(), None, exchange, SyncConfig(apply_delay=0, density=0.5, outer_momentum=0.9, nesterov=True))
    nudge(loop.model, torch.Generator().manual_seed(2))
    loop.submit_round()
    exchange.resolve(0)
    loop.apply_due(wait=False)
    state = loop.state_dict()
    other = SyncLoop(make_model(seed=7), None, ManualExchange(), SyncConfig(apply_delay=0, density=0.5, outer_momentum=0.9, nesterov=True))
    other.load_state_dict(state)
    assert other.round == loop.round
    for a, b in zip(other.global_params, loop.global_params):
        assert torch.equal(a, b)
    for a, b in zip(other.parameters, loop.global_params):
        assert torch.equal(a.detach(), b)
    for a, b in zip(other.outer.momentum_buffers, loop.outer.momentum_buffers):
        assert torch.equal(a, b)


class SyncLoopMachine(RuleBasedStateMachine):
    """Random interleavings of steps, submissions, resolutions, failures and applies.

    Invariants (single worker, outer lr 1 without momentum, lossy codec):
    - anchor == global - (drifts in flight): the local model sits on the global model;
    - conservation: global - residual - (sent values in flight) == initial - (all drifts
      submitted): every bit of progress is either applied, in flight or in error feedback.
    """

    @initialize(apply_delay=st.sampled_from([0, 1]), density=st.sampled_from([0.1, 0.5, 1.0]), bits=st.sampled_from([4, 8, 32]))
    def setup(self, apply_delay: int, density: float, bits: int) -> None:
        self.model = make_model()
        self.exchange = ManualExchange()
        self.loop = SyncLoop(self.model, None, self.exchange, plain_config(apply_delay=apply_delay, density=density, bits=bits))
        self.initial = [g.clone() for g in self.loop.global_params]
        self.submitted_drift = [torch.zeros_like(g) for g in self.initial]
        self.generator = torch.Generator().manual_seed(0)
        self.sent_in_flight: dict[int, list[torch.Tensor]] = {}
        self.next_to_settle = 0

    @rule()
    def inner_step(self) -> None:
        nudge(self.model, self.generator, scale=0.05)
        self.loop.count_step(2)

    @rule(contribute=st.booleans())
    def submit(self, contribute: bool) -> None:
        drift = [a - p.detach().float() for a, p in zip(self.loop.anchor, self.model.parameters())]
        index = len(self.exchange.submitted)
        self.loop.submit_round(contribute=contribute)
        if contribute:
            for total, change in zip(self.submitted_drift, drift):
                total.add_(change)
            payload = self.exchange.submitted[index][0].payload
            self.sent_in_flight[index] = [t.float() for t in Codec(1.0, 32).decode(payload)]
        else:
            self.sent_in_flight[index] = [torch.zeros_like(g) for g in self.initial]

    @rule(succeed=st.booleans())
    def settle_next(self, succeed: bool) -> None:
        if self.next_to_settle >= len(self.exchange.submitted):
            return
        index = self.next_to_settle
        self.next_to_settle += 1
        contribution = self.exchange.submitted[index][0]
        if succeed and contribution.payload:
            self.exchange.resolve(index)
        elif succeed:
            self.exchange.submitted[index][1].set_result(
                ExchangeOutcome(round=contribution.round, update=[torch.zeros_like(g) for g in self.initial], contributors=1, samples=0)
            )
        else:
            self.exchange.fail(index)

    @rule()
    def apply(self) -> None:
        for applied in self.loop.apply_due(wait=False):
            self.sent_in_flight.pop(self._index_of_round(applied.round), None)

    def _index_of_round(self, round_index: int) -> int:
        return next(i for i, (c, _) in enumerate(self.exchange.submitted) if c.round == round_index)

    @invariant()
    def anchor_sits_on_global_minus_in_flight(self) -> None:
        expected = [g.clone() for g in self.loop.global_params]
        for item in self.loop.in_flight:
            if item.drift is not None:
                expected = [e - d for e, d in zip(expected, item.drift)]
        for anchor, want in zip(self.loop.anchor, expected):
            torch.testing.assert_close(anchor, want, rtol=0, atol=1e-5)

    @invariant()
    def progress_is_conserved(self) -> None:
        in_flight = [torch.zeros_like(g) for g in self.initial]
        for sent in self.sent_in_flight.values():
            in_flight = [a + b for a, b in zip(in_flight, sent)]
        for global_value, residual, flying, start, drift in zip(
            self.loop.global_params, self.loop.error_feedback.residual, in_flight, self.initial, self.submitted_drift
        ):
            torch.testing.assert_close(global_value - residual - flying, start - drift, rtol=0, atol=1e-4)


TestSyncLoopMachine = SyncLoopMachine.TestCase
TestSyncLoopMachine.settings = __import__("hypothesis").settings(max_examples=40, stateful_step_count=25, deadline=None)


class RecordingSchedule:
    """Chooses 8 bits until it has observed an exchange, then 4."""

    def __init__(self) -> None:
        self.observed = 0

    def settings_for(self, round_index: int):
        from globetrain.sync.schedule import RoundSettings

        return RoundSettings(3, 1.0, 4 if self.observed else 8, f"observed {self.observed}")

    def observe(self, observation) -> None:
        self.observed += 1


def test_results_applied_at_a_boundary_count_for_the_round_that_starts_there() -> None:
    # Settings for round 2 are first chosen when round 1 is submitted, before the exchange
    # of round 0 is applied; applying it (and observing what it measured) chooses again.
    model = make_model()
    exchange = ManualExchange()
    schedule = RecordingSchedule()
    loop = SyncLoop(model, None, exchange, plain_config(apply_delay=1), schedule=schedule)
    generator = torch.Generator().manual_seed(5)
    nudge(model, generator)
    loop.submit_round()
    exchange.resolve(0)
    nudge(model, generator)
    report = loop.submit_round()
    assert report.settings.bits == 8 and loop.settings.bits == 8  # nothing observed yet
    loop.apply_due(wait=False)
    assert schedule.observed == 1 and loop.settings.bits == 4


class LinkRecordingSchedule(RecordingSchedule):
    """Chooses 8 bits until it has seen an uplink measurement, then 4; records every observation."""

    def __init__(self) -> None:
        super().__init__()
        self.observations: list = []

    def settings_for(self, round_index: int):
        from globetrain.sync.schedule import RoundSettings

        measured = any(o.uplink_bytes_per_s is not None for o in self.observations)
        return RoundSettings(3, 1.0, 4 if measured else 8, "")

    def observe(self, observation) -> None:
        self.observations.append(observation)


def test_a_link_measured_during_a_round_counts_for_the_payload_sent_at_its_end() -> None:
    # Prepare: round 0 submitted; its exchange resolves (with an uplink measurement) while
    # round 1 computes, a whole round before its update is due.
    model = make_model()
    exchange = ManualExchange()
    schedule = LinkRecordingSchedule()
    loop = SyncLoop(model, None, exchange, plain_config(apply_delay=1), schedule=schedule)
    generator = torch.Generator().manual_seed(6)
    nudge(model, generator)
    loop.submit_round()
    exchange.resolve(0, uplink_bytes_per_s=1000.0)
    nudge(model, generator)
    # Execute: the boundary of round 1.
    report = loop.submit_round()
    # Assert: round 1's payload already used what round 0's exchange measured...
    assert report.settings.bits == 4
    assert [o.uplink_bytes_per_s for o in schedule.observations] == [1000.0]
    # ...and applying round 0 later observes its compute, not the same link measurement again.
    loop.apply_due(wait=False)
    assert len(schedule.observations) == 2
    assert schedule.observations[1].uplink_bytes_per_s is None and schedule.observations[1].exchange_seconds is None


def test_an_exchange_without_a_link_measurement_is_observed_only_when_applied() -> None:
    model = make_model()
    exchange = ManualExchange()
    schedule = LinkRecordingSchedule()
    loop = SyncLoop(model, None, exchange, plain_config(apply_delay=1), schedule=schedule)
    generator = torch.Generator().manual_seed(7)
    nudge(model, generator)
    loop.submit_round()
    exchange.resolve(0)
    nudge(model, generator)
    loop.submit_round()
    assert schedule.observations == []
    loop.apply_due(wait=False)
    assert len(schedule.observations) == 1


@pytest.mark.parametrize(
    "workers,scaling,max_scale,expected_scale",
    [(4, "none", 2.0, 1.0), (4, "sqrt-contributors", 2.0, 2.0), (9, "sqrt-contributors", 2.0, 2.0),
     (9, "sqrt-contributors", float("inf"), 3.0), (2, "sqrt-contributors", 2.0, 2**0.5)],
)
def test_outer_lr_scaling_multiplies_the_average_of_k_updates_by_sqrt_k_up_to_the_cap(
    workers: int, scaling: str, max_scale: float, expected_scale: float
) -> None:
    # Prepare: K workers from one start, each with its own random drift, lossless codec.
    group = InProcessGroup(workers)
    config = plain_config(apply_delay=0, outer_lr_scaling=scaling, outer_lr_max_scale=max_scale)
    models = [make_model() for _ in range(workers)]
    loops = [SyncLoop(model, None, group.exchange(index), config, device_index=index) for index, model in enumerate(models)]
    start = [p.detach().clone() for p in models[0].parameters()]
    generator = torch.Generator().manual_seed(8)
    for model in models:
        nudge(model, generator)
    drifts = [[s - p.detach() for s, p in zip(start, model.parameters())] for model in models]
    # Execute: one round, applied at once.
    for loop in loops:
        loop.submit_round()
    for loop in loops:
        loop.apply_due(wait=True)
    # Assert: every worker's global model moved by expected_scale x the average drift.
    for loop in loops:
        for position, (global_value, initial) in enumerate(zip(loop.global_params, start)):
            average = sum(drift[position] for drift in drifts) / workers
            torch.testing.assert_close(global_value, initial - expected_scale * average, rtol=0, atol=1e-5)

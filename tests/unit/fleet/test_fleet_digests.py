"""The sync loop's digest check, as the fleet uses it: a diverged device does not apply."""

from __future__ import annotations

from concurrent.futures import Future

import torch

from globetrain.compression import Codec
from globetrain.sync import Contribution, Exchange, ExchangeOutcome, SyncConfig, SyncLoop
from globetrain.sync.loop import global_model_digest


class HandExchange(Exchange):
    def __init__(self) -> None:
        self.futures: list[tuple[Contribution, Future[ExchangeOutcome]]] = []

    def submit(self, contribution: Contribution) -> Future[ExchangeOutcome]:
        future: Future[ExchangeOutcome] = Future()
        self.futures.append((contribution, future))
        return future


def make_loop() -> tuple[SyncLoop, HandExchange]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    exchange = HandExchange()
    config = SyncConfig(inner_steps=1, apply_delay=0, density=1.0, bits=32, outer_lr=1.0, outer_momentum=0.0, nesterov=False)
    loop = SyncLoop(model, torch.optim.SGD(model.parameters(), lr=0.1), exchange, config)
    loop.track_digests = True
    loop.record_digest(loop.round - 1)
    return loop, exchange


def resolve(exchange: HandExchange, base: tuple[int, str] | None) -> None:
    contribution, future = exchange.futures[-1]
    update = Codec(1.0, 32).decode(contribution.payload)
    future.set_result(
        ExchangeOutcome(
            round=contribution.round, update=update, contributors=1, samples=1,
            base_round=None if base is None else base[0], base_digest=None if base is None else base[1],
        )
    )


def step(loop: SyncLoop) -> None:
    with torch.no_grad():
        for parameter in loop.model.parameters():
            parameter.add_(0.1)
    loop.count_step(1)


def test_matching_digest_applies_and_records_the_new_one() -> None:
    loop, exchange = make_loop()
    start = loop.last_digest
    assert start == (-1, global_model_digest(loop.global_params))
    step(loop)
    report = loop.submit_round()
    resolve(exchange, start)
    loop.apply_due(wait=True, report=report)
    assert [a.status for a in report.applied] == ["applied"]
    assert loop.last_digest == (0, global_model_digest(loop.global_params)) and loop.last_digest != start


def test_mismatching_digest_is_reported_as_diverged_and_not_applied() -> None:
    loop, exchange = make_loop()
    before = [g.clone() for g in loop.global_params]
    step(loop)
    report = loop.submit_round()
    resolve(exchange, (-1, "0" * 64))
    loop.apply_due(wait=True, report=report)
    assert [a.status for a in report.applied] == ["diverged"]
    assert loop.diverged_round == 0
    assert all(torch.equal(a, b) for a, b in zip(before, loop.global_params))
    # Its own update went back into error feedback, nothing lost.
    assert loop.error_feedback is not None and loop.error_feedback.norm() > 0


def test_unknown_base_round_is_not_judged() -> None:
    loop, exchange = make_loop()
    step(loop)
    report = loop.submit_round()
    resolve(exchange, (57, "0" * 64))
    loop.apply_due(wait=True, report=report)
    assert [a.status for a in report.applied] == ["applied"]

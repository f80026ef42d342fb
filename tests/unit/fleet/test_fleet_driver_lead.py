"""The round driver's early submission (the QoS's lead on a slow link), on a fake clock.

A device that submits ``lead`` seconds before its round ends goes on computing: those
steps count for its next round (nothing is lost), and it applies what is due at the
round's end, as a device without a lead does.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
import torch

from globetrain.fleet.config import FleetConfig
from globetrain.fleet.driver import RoundDriver
from globetrain.fleet.run import RoundClock
from globetrain.sync.config import SyncConfig
from globetrain.sync.exchange import Contribution, Exchange, ExchangeOutcome
from globetrain.sync.loop import SyncLoop

STEP_SECONDS = 0.125  # exact in binary: step boundaries land exactly on the deadlines
PERIOD = 2.0


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ImmediateExchange(Exchange):
    """Resolves every round at once with a zero update; records when each was submitted."""

    def __init__(self, time: FakeTime, shapes: list[tuple[int, ...]]) -> None:
        self.time = time
        self.shapes = shapes
        self.submitted: list[tuple[int, float, int]] = []

    def submit(self, contribution: Contribution) -> Future[ExchangeOutcome]:
        self.submitted.append((contribution.round, self.time.now, contribution.samples))
        future: Future[ExchangeOutcome] = Future()
        update = [torch.zeros(shape) for shape in self.shapes]
        future.set_result(ExchangeOutcome(round=contribution.round, update=update, contributors=1, samples=contribution.samples))
        return future


def drive(lead: float, rounds: int = 4) -> tuple[ImmediateExchange, list[dict], int]:
    time = FakeTime()
    model = torch.nn.Linear(2, 1)
    exchange = ImmediateExchange(time, [tuple(p.shape) for p in model.parameters()])
    loop = SyncLoop(model, None, exchange, SyncConfig(inner_steps=1), clock=time)
    fleet = FleetConfig(round_period_s=PERIOD)
    node = SimpleNamespace(
        clock=RoundClock(start_time=0.0, fleet=fleet), run_config=SimpleNamespace(fleet=fleet), name="dev",
        exchange=None, publish_state=lambda samples: None,
    )
    steps = 0

    def train_step() -> int:
        nonlocal steps
        steps += 1
        time.now += STEP_SECONDS
        return 1

    lines: list[dict] = []
    driver = RoundDriver(
        node, loop, train_step=train_step, stop=threading.Event(), now=time,
        on_round=lambda line: lines.append({**line, "t": time.now}), submit_lead=lambda: lead,
    )
    driver.run(until_round=rounds - 1)
    return exchange, lines, steps


def test_a_device_with_a_lead_submits_early_computes_on_and_applies_at_the_rounds_end():
    exchange, lines, steps = drive(lead=0.5)
    assert [t for _r, t, _s in exchange.submitted] == [1.5, 3.5, 5.5, 7.5]
    # The first round is shorter by the lead; every later one is a whole period of steps.
    assert [s for _r, _t, s in exchange.submitted] == [12, 16, 16, 16]
    assert [line["t"] for line in lines] == [2.0, 4.0, 6.0, 8.0]
    assert all(line["note"] == "early" for line in lines)
    # Round r - 1's aggregate is applied at the end of round r, as without a lead.
    assert [[a["round"] for a in line["applied"]] for line in lines] == [[], [0], [1], [2]]
    # Nothing computed is lost: what was not submitted yet is in the round in progress.
    assert sum(s for _r, _t, s in exchange.submitted) + 4 == steps


def test_without_a_lead_a_device_submits_at_the_rounds_end():
    exchange, lines, steps = drive(lead=0.0)
    assert [t for _r, t, _s in exchange.submitted] == [2.0, 4.0, 6.0, 8.0]
    assert [s for _r, _t, s in exchange.submitted] == [16, 16, 16, 16]
    assert all(line["note"] == "" for line in lines)
    assert sum(s for _r, _t, s in exchange.submitted) == steps


@pytest.mark.parametrize("asked, used", [(-1.0, 2.0), (5.0, 1.0)])
def test_a_lead_is_kept_within_zero_and_half_a_period(asked, used):
    exchange, _lines, _steps = drive(lead=asked, rounds=1)
    assert exchange.submitted[0][1] == used

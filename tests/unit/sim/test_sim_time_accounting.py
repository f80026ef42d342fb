"""Event ordering and time accounting on fleets of 2-3 devices, checked against hand arithmetic.

Tiny fleet: every device at one spot with 8 Mbit/s (1e6 bytes/s) up and down and 10 ms of
last-mile RTT at each end (RTT 20 ms, one way 10 ms), one inner step = 1 s, no jitter,
no churn. Payload sizes are the codec's estimate for the fixed "real" model's shapes.
"""

from __future__ import annotations

import math

import pytest

from conftest import REAL_SHAPES, tiny_config
from globetrain.sim import rounds as rounds_module
from globetrain.sim.engine import Simulation
from globetrain.sim.events import EventQueue
from globetrain.sim.wire import measure_wire_sizes
from globetrain.sync.schedule import make_payload_estimator

RATE = 1e6  # bytes/s: 8 Mbit/s
RTT = 0.020
ONE_WAY = RTT / 2
payload = make_payload_estimator(REAL_SHAPES)


def test_events_run_in_time_then_priority_then_insertion_order() -> None:
    queue, seen = EventQueue(), []
    queue.schedule(2.0, seen.append, "late")
    queue.schedule(1.0, seen.append, "first at 1")
    queue.schedule(1.0, seen.append, "second at 1")
    queue.schedule(1.0, seen.append, "priority at 1", priority=-1)
    cancelled = queue.schedule(1.5, seen.append, "cancelled")
    cancelled.cancel()
    queue.run_until(10.0)
    assert seen == ["priority at 1", "first at 1", "second at 1", "late"]
    assert queue.now == 10.0
    with pytest.raises(ValueError, match="before now"):
        queue.schedule(5.0, seen.append, "in the past")


def test_two_step_round_zero_times_match_hand_arithmetic(tiny_fleet, reference, monkeypatch) -> None:
    # Prepare: record every outcome the protocol resolves, with the simulated time.
    resolved: list[tuple[float, object]] = []
    simulation = Simulation(tiny_config(tiny_fleet(), devices=2, max_sim_seconds=15.0), reference=reference)
    real_resolve = rounds_module.resolve

    def spy(future, outcome, failure=""):
        resolved.append((simulation.context.queue.now, outcome))
        return real_resolve(future, outcome, failure)

    monkeypatch.setattr(rounds_module, "resolve", spy)

    # Execute: round 0 ends at exactly t = 10 s (10 steps of 1 s) for both devices.
    simulation.run()

    # Assert: device 0 leads (equal uplinks, lowest index); device 1 pings it (1 RTT), sends
    # its contribution (half an RTT plus the bytes at 1e6 B/s), the leader averages at once
    # (everyone arrived), keeps its copy and sends one copy to device 1 (one way + bytes).
    wire = measure_wire_sizes()
    contribution = wire.contribution(payload(0.01, 8))
    arrival = 10.0 + 1.5 * RTT + contribution / RATE
    aggregate = wire.aggregate(payload(0.02, 8), 2)
    delivered = arrival + ONE_WAY + aggregate / RATE
    outcomes = sorted(((time, o) for time, o in resolved if o is not None), key=lambda item: item[0])
    assert len(outcomes) == 2
    (leader_time, leader_outcome), (member_time, member_outcome) = outcomes
    assert leader_time == pytest.approx(arrival, abs=1e-9)
    assert member_time == pytest.approx(delivered, abs=1e-9)
    assert member_outcome.seconds == pytest.approx(delivered - 10.0, abs=1e-9)
    assert member_outcome.rtt_s == pytest.approx(RTT, abs=1e-12)
    assert member_outcome.uplink_bytes_per_s == pytest.approx(RATE)
    assert member_outcome.bytes_sent == contribution + wire.ping_round_trip // 2
    assert member_outcome.contributors == 2 and member_outcome.samples == 2 * 10 * 16


def test_two_step_never_waits_so_compute_fills_online_time(tiny_fleet, reference) -> None:
    summary = Simulation(tiny_config(tiny_fleet(), devices=3, max_sim_seconds=60.0), reference=reference).run().summary
    # Rounds end every 10 s; round r is applied at the boundary of round r + 1, so by 60 s
    # rounds 0..4 are applied (round 5's boundary is at 60 s, the cap).
    assert summary["steps"] == 5
    assert summary["compute_utilization"] == pytest.approx(1.0, abs=1e-6)
    assert summary["scaling_efficiency"] == pytest.approx(5 * 10 * 16 * 3 / (60.0 * 3 * 16), abs=1e-6)


def test_dense_sync_step_is_compute_plus_ring_all_reduce(tiny_fleet, reference) -> None:
    # Prepare: 3 devices; one step: 1 s compute, then 2(N-1) = 4 ring hops of M/3 bytes.
    cap = 30.0
    result = Simulation(tiny_config(tiny_fleet(), devices=3, method="dense-sync", max_sim_seconds=cap),
                        reference=reference).run()
    hop = ONE_WAY + payload(1.0, 32) / 3 / RATE
    step = 1.0 + 4 * hop
    # Assert: a new global model exactly every step; utilization is compute over step time.
    times = [point["time_s"] for point in result.curve[1:]]
    assert times == pytest.approx([step * (k + 1) for k in range(len(times))], abs=1e-9)
    assert len(times) == math.floor(cap / step)
    # Compute of the step in progress at the cap counts (the devices were computing).
    steps_done = math.floor(cap / step)
    computing = steps_done * 1.0 + min(cap - steps_done * step, 1.0)
    assert result.summary["compute_utilization"] == pytest.approx(computing / cap, abs=1e-6)
    assert result.summary["last_collective_seconds"] == pytest.approx(4 * hop, abs=1e-6)


def test_diloco_waits_for_the_slowest_then_all_reduces(tiny_fleet, reference) -> None:
    result = Simulation(tiny_config(tiny_fleet(), devices=2, method="diloco", inner_steps=4, max_sim_seconds=20.0),
                        reference=reference).run()
    step = 4 * 1.0 + 2 * (ONE_WAY + payload(1.0, 32) / 2 / RATE)
    times = [point["time_s"] for point in result.curve[1:]]
    assert times == pytest.approx([step * (k + 1) for k in range(len(times))], abs=1e-9)
    assert result.summary["steps"] == len(times) == math.floor(20.0 / step)


def leader_leaves_at(monkeypatch, moment: float) -> None:
    """Device 0 (the leader: equal uplinks, lowest index) goes offline at ``moment``, back at 25 s."""
    from globetrain.sim.population import FleetSample

    monkeypatch.setattr(FleetSample, "transitions", lambda self: [(moment, 0, False), (25.0, 0, True)])


def test_a_leader_leaving_before_averaging_fails_the_round_for_everyone(tiny_fleet, reference, monkeypatch) -> None:
    leader_leaves_at(monkeypatch, 10.02)  # the members' contributions are still on their way
    simulation = Simulation(tiny_config(tiny_fleet(), devices=3, max_sim_seconds=22.0), reference=reference)
    result = simulation.run()
    assert result.summary["events"]["leader_deaths"] == 1
    # Nobody applied round 0 (it failed for all alike), so the others stay in step.
    loops = [node.loop for node in simulation.context.nodes[1:]]
    assert all(loop.stats["rounds_failed"] == 1 and loop.stats["rounds_applied"] == 0 for loop in loops)
    assert all(torch_equal(loops[0].global_params, loop.global_params) for loop in loops[1:])
    assert "resyncs" not in result.summary["events"]


def test_a_leader_leaving_while_sending_the_aggregate(tiny_fleet, reference, monkeypatch) -> None:
    # Prepare: the leader averages at ~10.031 s and leaves at 10.035 s, before its copies
    # reach the members (~10.042 s); it is back at 25 s.
    leader_leaves_at(monkeypatch, 10.035)
    simulation = Simulation(tiny_config(tiny_fleet(), devices=3, max_sim_seconds=35.0), reference=reference)

    # Execute
    result = simulation.run()

    # Assert: nobody else held the aggregate, so the members miss the deadline; as nobody
    # alive applied it, they stay in step (no resync). The leader comes back through a
    # state download from them and applies what they apply from then on.
    events = result.summary["events"]
    assert events["deadline_misses"] == 2 and "resyncs" not in events
    nodes = simulation.context.nodes
    assert all(node.in_step for node in nodes)
    assert all(torch_equal(nodes[1].loop.global_params, node.loop.global_params) for node in nodes)
    assert result.per_device["bytes_sent"][1] >= simulation.context.state_bytes


def torch_equal(a, b) -> bool:
    import torch

    return all(torch.equal(x, y) for x, y in zip(a, b))

"""Simulated devices run the real codec and sync loop (not a copy); a seed fixes the result."""

from __future__ import annotations

import torch

from conftest import tiny_config
from globetrain.compression import Codec, ErrorFeedback
from globetrain.sim.engine import Simulation, without_wall_clock_fields
from globetrain.sim.exchange import SimExchange
from globetrain.sync.exchange import Exchange
from globetrain.sync.loop import SyncLoop


def churning(tiny_fleet) -> str:
    return tiny_fleet(mean_online_s=120.0, mean_offline_s=30.0)


def test_every_device_submits_and_applies_through_its_own_sync_loop(tiny_fleet, reference, monkeypatch) -> None:
    # Prepare: count calls into the real SyncLoop, error feedback and codec.
    calls = {"submit": set(), "apply": set(), "compress": 0, "encode": 0}
    submit, apply_due = SyncLoop.submit_round, SyncLoop.apply_due
    compress, encode = ErrorFeedback.compress, Codec.encode_with_sent

    def spy_submit(self, *args, **kwargs):
        calls["submit"].add((self.device_index, self.round))
        return submit(self, *args, **kwargs)

    def spy_apply(self, *args, **kwargs):
        calls["apply"].add(self.device_index)
        return apply_due(self, *args, **kwargs)

    def spy_compress(self, *args, **kwargs):
        calls["compress"] += 1
        return compress(self, *args, **kwargs)

    def spy_encode(self, *args, **kwargs):
        calls["encode"] += 1
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(SyncLoop, "submit_round", spy_submit)
    monkeypatch.setattr(SyncLoop, "apply_due", spy_apply)
    monkeypatch.setattr(ErrorFeedback, "compress", spy_compress)
    monkeypatch.setattr(Codec, "encode_with_sent", spy_encode)
    simulation = Simulation(tiny_config(tiny_fleet(), devices=3, max_sim_seconds=50.0), reference=reference)

    # Execute
    simulation.run()

    # Assert: 3 devices x rounds 0..4 submitted, each through its own loop and exchange port.
    assert calls["submit"] == {(device, r) for device in range(3) for r in range(5)}
    assert calls["apply"] == {0, 1, 2}
    assert calls["compress"] == 15  # two-step: error feedback on every contribution
    assert calls["encode"] >= 15 + 4  # the devices' payloads and the leader's aggregates
    nodes = simulation.context.nodes
    loops = [node.loop for node in nodes]
    assert len({id(loop) for loop in loops}) == 3
    assert all(isinstance(node.exchange, SimExchange) and isinstance(node.exchange, Exchange) for node in nodes)
    # The loop's parameters are the device's row of the stacked proxy models.
    bank = simulation.context.bank
    for node in nodes:
        first = next(node.loop.model.parameters())
        assert first.data_ptr() == bank.flat[node.index].data_ptr()
    # Devices in step applied the same aggregates: bit-identical global models.
    for loop in loops[1:]:
        assert all(torch.equal(a, b) for a, b in zip(loops[0].global_params, loop.global_params))


def test_same_seed_same_summary_other_seed_other_fleet(tiny_fleet, reference) -> None:
    path = churning(tiny_fleet)
    for method in ("two-step", "dgc"):
        runs = [
            Simulation(tiny_config(path, devices=4, method=method, max_sim_seconds=400.0, seed=seed),
                       reference=reference).run().summary
            for seed in (3, 3, 4)
        ]
        first, again, other = (without_wall_clock_fields(summary) for summary in runs)
        assert first == again
        assert first != other


def test_churn_makes_devices_leave_and_rejoin_through_a_state_download(tiny_fleet, reference) -> None:
    simulation = Simulation(tiny_config(churning(tiny_fleet), devices=4, max_sim_seconds=900.0), reference=reference)
    result = simulation.run()
    fleet = result.fleet
    transitions = [t for t in fleet.transitions() if t[0] <= 900.0]
    assert any(not online for _, _, online in transitions) and any(online for _, _, online in transitions)
    # Joining devices downloaded two float32 copies of the real model from a peer.
    assert result.per_device["bytes_received"].sum() >= simulation.context.state_bytes
    assert result.summary["compute_utilization"] < 1.0
    assert result.summary["steps"] > 0

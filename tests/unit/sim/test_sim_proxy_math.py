"""The batched proxy step is plain SGD on each device's own MLP; leaders return what they drop."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import TINY_PROXY
from globetrain.compression import Codec
from globetrain.fleet.aggregate import returned_values
from globetrain.sim.aggregation import carried_positions, values_not_carried
from globetrain.sim.proxy import ProxyBank


def test_batched_gradients_equal_autograd_on_each_device() -> None:
    bank = ProxyBank(TINY_PROXY, 4)
    with torch.no_grad():
        for tensor in bank.stacked:
            tensor.add_(torch.randn(tensor.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    rows = torch.arange(4)
    state = bank.generator.get_state()
    gradients = bank._gradients([t.clone() for t in bank.stacked], rows, 5)
    bank.generator.set_state(state)
    draws = torch.rand(4, 5, generator=bank.generator, dtype=torch.float64)
    samples = bank.shard_index.gather(1, (draws * bank.shard_size.unsqueeze(1)).long())
    for device in range(4):
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
        with torch.no_grad():
            for parameter, stacked in zip(model.parameters(), bank.stacked):
                parameter.copy_(stacked[device])
        loss = nn.functional.cross_entropy(model(bank.train_x[samples[device]]), bank.train_y[samples[device]])
        loss.backward()
        for parameter, gradient in zip(model.parameters(), gradients):
            assert torch.allclose(parameter.grad, gradient[device], atol=1e-6)


def test_training_touches_only_the_devices_that_owe_steps() -> None:
    bank = ProxyBank(TINY_PROXY, 5)
    before = [t.clone() for t in bank.stacked]
    bank.train(np.array([1, 3, 4]), np.array([2, 0, 5]), 8)
    changed = [not torch.equal(before[0][d], bank.stacked[0][d]) for d in range(5)]
    assert changed == [False, True, False, False, True]
    assert bank.steps_run == 7
    # The device's module sees the trained row (its one flat parameter is a view of it).
    assert torch.equal(next(bank.model(4).parameters()), bank.flat[4])
    assert torch.equal(bank.layers(next(bank.model(4).parameters()))[0], bank.stacked[0][4])


@settings(max_examples=30)
@given(seed=st.integers(0, 1000), density=st.sampled_from([0.01, 0.05, 0.2]), factor=st.floats(1.0, 3.0))
def test_one_level_returns_exactly_what_the_fleet_returns(seed, density, factor) -> None:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(40, 30), (30,), (7, 40)]
    own = Codec(density, 8).encode_with_sent([torch.randn(s, generator=generator) for s in shapes], seed=seed).sent
    other = [torch.randn(s, generator=generator) for s in shapes]
    aggregate = Codec(min(1.0, density * factor), 8).encode_with_sent(other, seed=seed + 1).sent
    mine = values_not_carried(own, [carried_positions(aggregate)])
    fleets = returned_values(own, aggregate)
    assert (mine is None) == (fleets is None)
    if mine is not None:
        assert all(torch.equal(a, b) for a, b in zip(mine, fleets))

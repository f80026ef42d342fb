"""The device's inner step: the restricted softmax of ``training.restricted_softmax``."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from globetrain.errors import ConfigError
from globetrain.fleet.app.local_training import LocalTrainer
from globetrain.fleet.app.spec import LocalTrainingConfig
from globetrain.video.loader import Batch

CLASSES = 5
LOCAL = {1, 3}


def batches(seed: int) -> itertools.cycle:
    """Batches of the device's own classes only (1 and 3), as a label-skewed shard gives."""
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(8, 6, generator=generator)
    labels = torch.tensor([1, 3, 1, 3, 3, 1, 1, 3])
    return itertools.cycle([Batch(clips, labels)])


def trainer_for(restricted: bool, *, seed: int = 0) -> LocalTrainer:
    torch.manual_seed(seed)
    model = torch.nn.Linear(6, CLASSES)
    training = LocalTrainingConfig(optimizer="sgd", learning_rate=0.1, momentum=0.0, weight_decay=0.0,
                                   warmup_steps=0, batch_size=8, restricted_softmax=restricted)
    return LocalTrainer(model, batches(seed), training, local_classes=LOCAL)


def absent_rows(trainer: LocalTrainer) -> torch.Tensor:
    layer = trainer.model
    absent = [c for c in range(CLASSES) if c not in LOCAL]
    return torch.cat([layer.weight[absent].detach().flatten(), layer.bias[absent].detach()])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 5))
def test_restricted_the_classes_a_device_lacks_are_not_trained_and_its_bias_shift_sums_to_zero(seed: int, steps: int) -> None:
    trainer = trainer_for(True, seed=seed)
    absent_before = absent_rows(trainer).clone()
    bias_before = trainer.model.bias.detach().clone()
    for _ in range(steps):
        trainer.step()
    torch.testing.assert_close(absent_rows(trainer), absent_before, rtol=0, atol=0)
    # A softmax over the present classes only: its bias gradient sums to zero over them,
    # so plain SGD moves no class group up or down as a whole.
    assert float((trainer.model.bias.detach() - bias_before).sum()) == pytest.approx(0.0, abs=1e-6)


def test_plain_cross_entropy_pushes_the_missing_classes_down() -> None:
    trainer = trainer_for(False)
    before = trainer.model.bias.detach().clone()
    for _ in range(20):
        trainer.step()
    absent = [c for c in range(CLASSES) if c not in LOCAL]
    assert float((trainer.model.bias.detach() - before)[absent].max()) < 0.0


def test_a_device_with_every_class_or_no_class_list_trains_with_plain_cross_entropy() -> None:
    for local in (set(range(CLASSES)), None):
        torch.manual_seed(0)
        restricted = LocalTrainer(torch.nn.Linear(6, CLASSES), batches(0),
                                  LocalTrainingConfig(optimizer="sgd", warmup_steps=0, restricted_softmax=True),
                                  local_classes=local)
        torch.manual_seed(0)
        plain = LocalTrainer(torch.nn.Linear(6, CLASSES), batches(0), LocalTrainingConfig(optimizer="sgd", warmup_steps=0))
        for _ in range(3):
            restricted.step()
            plain.step()
        for a, b in zip(restricted.model.parameters(), plain.model.parameters()):
            assert torch.equal(a, b)


def test_a_label_the_device_did_not_declare_joins_its_classes_instead_of_an_infinite_loss() -> None:
    torch.manual_seed(0)
    trainer = LocalTrainer(torch.nn.Linear(6, CLASSES), batches(0),
                           LocalTrainingConfig(optimizer="sgd", warmup_steps=0, restricted_softmax=True), local_classes={1})
    trainer.step()
    assert trainer.local_classes == LOCAL
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.take_counters()[3] < float("inf")


def test_restricted_softmax_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="restricted_softmax"):
        LocalTrainingConfig(restricted_softmax="yes")  # type: ignore[arg-type]

"""Error feedback: conservation, top-k against an independent reference, state, restore."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from globetrain.compression import Codec, ErrorFeedback, ErrorFeedbackStateMismatch

SHAPES = [(40, 30), (17,), (), (300_000,)]


def model_like(seed: int, scale: float = 1.0, shapes: list[tuple[int, ...]] = SHAPES) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) * scale for shape in shapes]


@settings(max_examples=25)
@given(st.integers(0, 10_000), st.sampled_from([0.001, 0.01, 0.3]), st.sampled_from([2, 4, 8, 16, 32]))
def test_conserves_what_was_not_sent_and_sends_the_top_k(seed: int, density: float, bits: int) -> None:
    shapes = [(40, 30), (17,), (), (5000,)]
    feedback = ErrorFeedback(model_like(0, shapes=shapes))
    feedback.compress(model_like(seed + 1, shapes=shapes), Codec(0.05, 8), seed=seed)  # a nonzero residual
    before = [tensor.clone() for tensor in feedback.residual]
    update = model_like(seed + 2, scale=0.5, shapes=shapes)
    codec = Codec(density, bits)

    encoded = feedback.compress(update, codec, seed=seed)

    sparse_accumulated, sparse_masks = [], []
    for residual_before, tensor, residual_after, sent in zip(before, update, feedback.residual, encoded.sent):
        accumulated = (residual_before + tensor).numpy().reshape(-1)  # what the codec saw (float32)
        after = residual_after.numpy().reshape(-1)
        sent_dense = sent.to_dense().numpy().reshape(-1)
        # residual_after + sent == residual_before + update: exact where nothing was sent,
        # to float32 rounding of one subtraction where something was
        mask = np.zeros(len(accumulated), dtype=bool)
        mask[sent.indices.numpy()] = True
        assert np.array_equal(after[~mask], accumulated[~mask])
        # two float32 roundings (the subtraction, and this check's addition), each at most
        # half a unit in the last place of the largest operand
        largest = np.maximum(np.abs(accumulated[mask]), np.abs(sent_dense[mask]))
        assert np.all(np.abs((after[mask] + sent_dense[mask]) - accumulated[mask]) <= 2 * np.spacing(largest))
        if not sent.is_dense:
            sparse_accumulated.append(accumulated)
            sparse_masks.append(mask)
    if not sparse_accumulated:
        return
    # The sent positions are the global top of |accumulated| over the tensors sent sparse,
    # computed independently with a full sort.
    everything = np.concatenate(sparse_accumulated)
    sent_mask = np.concatenate(sparse_masks)
    target = codec.target_count(len(everything))
    order = np.argsort(-np.abs(everything.astype(np.float64)), kind="stable")
    assert sent_mask.sum() == min(target, int(np.count_nonzero(everything)))
    assert set(np.flatnonzero(sent_mask).tolist()) == set(order[: sent_mask.sum()].tolist())
    magnitudes = np.abs(everything)
    assert magnitudes[sent_mask].min() >= magnitudes[~sent_mask].max()


def test_large_tensor_sends_exact_top_k_through_error_feedback() -> None:
    feedback = ErrorFeedback([torch.zeros(300_000)])
    update = model_like(1, shapes=[(300_000,)])

    encoded = feedback.compress(update, Codec(0.001, 8), seed=3)

    order = np.argsort(-np.abs(update[0].numpy()), kind="stable")[:300]
    assert np.array_equal(np.sort(order), encoded.sent[0].indices.numpy())


def test_restore_puts_a_failed_round_back() -> None:
    feedback = ErrorFeedback(model_like(0))
    update = model_like(1)
    encoded = feedback.compress(update, Codec(0.01, 4), seed=0)

    feedback.restore(encoded.sent)

    for residual, tensor in zip(feedback.residual, update):
        torch.testing.assert_close(residual, tensor, rtol=1e-6, atol=1e-7)


def test_restore_accepts_dense_tensors() -> None:
    feedback = ErrorFeedback(model_like(0))
    returned = model_like(5)

    feedback.restore(returned)

    for residual, tensor in zip(feedback.residual, returned):
        assert torch.equal(residual, tensor)


def test_state_dict_round_trips_and_is_a_copy() -> None:
    feedback = ErrorFeedback(model_like(0))
    feedback.compress(model_like(1), Codec(0.01, 8), seed=0)
    state = feedback.state_dict()
    other = ErrorFeedback(model_like(0))

    other.load_state_dict(state)
    feedback.residual[0].zero_()

    assert torch.equal(other.residual[0], state["residual"][0])
    assert other.norm() == pytest.approx(float(torch.cat([t.reshape(-1) for t in state["residual"]]).double().norm()))


def test_load_state_dict_refuses_other_shapes_with_a_clear_error() -> None:
    feedback = ErrorFeedback(model_like(0))
    wrong = {"version": 1, "residual": [torch.zeros(40, 31), torch.zeros(17), torch.zeros(()), torch.zeros(300_000)]}

    with pytest.raises(ErrorFeedbackStateMismatch, match=r"tensor 0 has shape \(40, 31\), expected \(40, 30\)"):
        feedback.load_state_dict(wrong)
    with pytest.raises(ErrorFeedbackStateMismatch, match="has 1 tensors but the error feedback holds 4"):
        feedback.load_state_dict({"residual": [torch.zeros(3)]})
    with pytest.raises(ErrorFeedbackStateMismatch, match="mapping with a 'residual'"):
        feedback.load_state_dict({"weights": []})


def test_non_finite_update_is_refused_and_leaves_the_residual_alone() -> None:
    feedback = ErrorFeedback(model_like(0))
    feedback.compress(model_like(1), Codec(0.01, 8), seed=0)
    before = [tensor.clone() for tensor in feedback.residual]
    update = model_like(2)
    update[1][3] = float("nan")

    with pytest.raises(ValueError, match="update tensor 1"):
        feedback.compress(update, Codec(0.01, 8))

    assert all(torch.equal(a, b) for a, b in zip(before, feedback.residual))


def test_update_of_other_shapes_is_refused() -> None:
    feedback = ErrorFeedback(model_like(0))
    with pytest.raises(ValueError, match="tensor 1 has shape"):
        feedback.compress([torch.zeros(40, 30), torch.zeros(18), torch.zeros(()), torch.zeros(300_000)], Codec(0.1, 8))


class ErrorFeedbackMachine(RuleBasedStateMachine):
    """Against a float64 ledger: residual == sum(updates) - sum(sent) + sum(restored)."""

    shapes = [(6, 5), (3,), (257,)]

    def __init__(self) -> None:
        super().__init__()
        self.feedback = ErrorFeedback([torch.zeros(shape) for shape in self.shapes])
        self.ledger = [np.zeros(shape, dtype=np.float64) for shape in self.shapes]
        # sum of |every term| per element: float32 rounding is bounded relative to it
        self.magnitude = [np.zeros(shape, dtype=np.float64) for shape in self.shapes]
        self.operations = 0
        self.pending: list = []

    @rule(
        seed=st.integers(0, 2**16),
        density=st.sampled_from([0.01, 0.1, 0.5, 1.0]),
        bits=st.sampled_from([2, 4, 8, 16, 32]),
        scale=st.sampled_from([1e-3, 1.0, 50.0]),
    )
    def compress(self, seed: int, density: float, bits: int, scale: float) -> None:
        update = model_like(seed, scale, self.shapes)
        encoded = self.feedback.compress(update, Codec(density, bits), seed=seed)
        for ledger, magnitude, tensor, sent in zip(self.ledger, self.magnitude, update, encoded.sent):
            ledger += tensor.double().numpy()
            ledger -= sent.to_dense().double().numpy()
            magnitude += np.abs(tensor.double().numpy()) + np.abs(sent.to_dense().double().numpy())
        self.operations += 2
        self.pending.append(encoded.sent)

    @precondition(lambda self: self.pending)
    @rule()
    def restore_last(self) -> None:
        sent = self.pending.pop()
        self.feedback.restore(sent)
        for ledger, magnitude, part in zip(self.ledger, self.magnitude, sent):
            ledger += part.to_dense().double().numpy()
            magnitude += np.abs(part.to_dense().double().numpy())
        self.operations += 1

    @rule()
    def checkpoint_and_reload(self) -> None:
        state = self.feedback.state_dict()
        self.feedback = ErrorFeedback([torch.zeros(shape) for shape in self.shapes])
        self.feedback.load_state_dict(state)

    @invariant()
    def residual_matches_ledger(self) -> None:
        for residual, ledger, magnitude in zip(self.feedback.residual, self.ledger, self.magnitude):
            # each float32 operation rounds by at most 2**-24 of its result, which is at
            # most the sum of the magnitudes of all terms so far
            bound = self.operations * 2.0**-24 * magnitude
            assert np.all(np.abs(residual.double().numpy() - ledger) <= bound)


TestErrorFeedbackMachine = ErrorFeedbackMachine.TestCase
TestErrorFeedbackMachine.settings = settings(max_examples=30, stateful_step_count=12)

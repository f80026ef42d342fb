"""The temporal shift: which channels move, in which direction, and what fills the ends."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from globetrain.video.models.shift import relu_temporal_shift, temporal_shift


def _frame_coded(clips: int, frames: int, channels: int) -> torch.Tensor:
    """Activations whose value is 1000 * clip + 10 * frame + 1 (never 0), per channel."""
    values = torch.empty(clips, frames, channels, 2, 2)
    for clip in range(clips):
        for frame in range(frames):
            values[clip, frame] = 1000 * clip + 10 * frame + 1
    return values.view(clips * frames, channels, 2, 2)


def test_shift_moves_one_fold_from_the_next_frame_one_from_the_previous_and_zero_pads_the_ends():
    clips, frames, channels = 2, 4, 8
    activations = _frame_coded(clips, frames, channels)

    shifted = temporal_shift(activations, frames, shift_fraction=0.5).view(clips, frames, channels, 2, 2)

    fold = 2  # 0.5 of 8 channels, half each way
    original = activations.view(clips, frames, channels, 2, 2)
    for frame in range(frames):
        # channels [0, fold): the next frame's values; the last frame has no next: zeros
        expected_next = original[:, frame + 1, :fold] if frame + 1 < frames else torch.zeros_like(original[:, 0, :fold])
        assert torch.equal(shifted[:, frame, :fold], expected_next)
        # channels [fold, 2 fold): the previous frame's values; the first has none: zeros
        expected_previous = original[:, frame - 1, fold : 2 * fold] if frame > 0 else torch.zeros_like(original[:, 0, fold : 2 * fold])
        assert torch.equal(shifted[:, frame, fold : 2 * fold], expected_previous)
        # the other channels stay
        assert torch.equal(shifted[:, frame, 2 * fold :], original[:, frame, 2 * fold :])


def test_shift_never_mixes_clips():
    activations = _frame_coded(3, 4, 8)
    shifted = temporal_shift(activations, 4, shift_fraction=0.5).view(3, 4, 8, 2, 2)
    for clip in range(3):
        nonzero = shifted[clip][shifted[clip] != 0]
        assert torch.all((nonzero // 1000) == clip)


def test_shift_keeps_channels_last_layout():
    activations = torch.randn(8, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    assert temporal_shift(activations, 4).is_contiguous(memory_format=torch.channels_last)
    assert relu_temporal_shift(activations, 4).is_contiguous(memory_format=torch.channels_last)


@given(
    clips=st.integers(1, 3),
    frames=st.integers(1, 5),
    channels=st.integers(1, 12),
    shift_fraction=st.sampled_from([0.125, 0.25, 0.5, 1.0]),
    channels_last=st.booleans(),
)
def test_fused_relu_shift_equals_relu_then_shift_forwards_and_backwards(clips, frames, channels, shift_fraction, channels_last):
    torch.manual_seed(clips * 100 + frames * 10 + channels)
    data = torch.randn(clips * frames, channels, 3, 3)
    if channels_last:
        data = data.contiguous(memory_format=torch.channels_last)
    fused_input = data.clone().requires_grad_()
    plain_input = data.clone().requires_grad_()
    upstream = torch.randn(clips * frames, channels, 3, 3)

    fused = relu_temporal_shift(fused_input, frames, shift_fraction)
    plain = temporal_shift(torch.relu(plain_input), frames, shift_fraction)
    (fused * upstream).sum().backward()
    (plain * upstream).sum().backward()

    assert torch.equal(fused, plain)
    assert torch.allclose(fused_input.grad, plain_input.grad)


def test_shift_gradients_are_exact():
    activations = torch.randn(2 * 3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: temporal_shift(x, 3, 0.5), (activations,))
    assert torch.autograd.gradcheck(lambda x: relu_temporal_shift(x, 3, 0.5), (activations,))


def test_shift_refuses_a_batch_that_is_not_whole_clips():
    with pytest.raises(ValueError, match="not whole clips"):
        temporal_shift(torch.zeros(7, 4, 2, 2), 4)

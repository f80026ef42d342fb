"""Segment sampling and the model-input tensor."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from globetrain.video.clips import PIXEL_MEAN, PIXEL_STD, clips_to_tensor, segment_indices


@given(num_frames=st.integers(1, 300), segments=st.integers(1, 16), seed=st.integers(0, 10))
def test_training_picks_one_frame_inside_each_segment_in_time_order(num_frames, segments, seed):
    indices = segment_indices(num_frames, segments, training=True, rng=np.random.default_rng(seed))
    assert len(indices) == segments
    assert np.all(np.diff(indices) >= 0)
    assert indices.min() >= 0 and indices.max() < num_frames
    edges = np.linspace(0, num_frames, segments + 1)
    assert np.all(indices >= np.floor(edges[:-1])) and np.all(indices <= np.maximum(np.ceil(edges[1:]) - 1, 0))


@given(num_frames=st.integers(1, 300), segments=st.integers(1, 16))
def test_evaluation_picks_the_segment_centres_every_time(num_frames, segments):
    first = segment_indices(num_frames, segments, training=False)
    assert np.array_equal(first, segment_indices(num_frames, segments, training=False))
    centres = (np.arange(segments) + 0.5) * num_frames / segments
    assert np.all(np.abs(first + 0.5 - centres) <= 0.5 + 1e-9)


def test_training_varies_between_draws():
    rng = np.random.default_rng(0)
    draws = {tuple(segment_indices(64, 8, training=True, rng=rng)) for _ in range(10)}
    assert len(draws) > 1


def test_clips_become_normalised_channel_first_frames():
    clips = np.zeros((2, 3, 4, 5, 3), dtype=np.uint8)
    clips[..., 0] = 255
    tensor = clips_to_tensor(clips)
    assert tensor.shape == (2, 3, 3, 4, 5)
    assert torch.allclose(tensor[:, :, 0], torch.tensor((1.0 - PIXEL_MEAN[0]) / PIXEL_STD[0]))
    assert torch.allclose(tensor[:, :, 1], torch.tensor(-PIXEL_MEAN[1] / PIXEL_STD[1]))
    # Flattening clips and frames gives a channels_last image batch without a copy.
    assert tensor.reshape(6, 3, 4, 5).is_contiguous(memory_format=torch.channels_last)

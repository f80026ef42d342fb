"""Contribution weights: proportional to samples, none above the round's median contribution."""

from __future__ import annotations

import math
import statistics

from hypothesis import given
from hypothesis import strategies as st

from globetrain.sync.weighting import proportional_weights, sample_weights

SAMPLES = st.lists(st.integers(-5, 10_000), min_size=1, max_size=40)


def test_a_contribution_of_seven_rounds_counts_as_much_as_a_typical_one() -> None:
    # Run K's round 27: five devices with one round each, one with seven rounds at once.
    weights = sample_weights([190, 188, 184, 196, 196, 1290])
    assert math.isclose(weights[-1], max(weights[:-1]))
    median = (190 + 196) / 2
    assert math.isclose(weights[-1], median / (190 + 188 + 184 + 3 * median))
    # The plain FedAvg rule gave it more than half.
    assert proportional_weights([190, 188, 184, 196, 196, 1290])[-1] > 0.5


def test_devices_below_the_median_keep_their_smaller_share() -> None:
    assert sample_weights([50, 200, 200]) == [50 / 450, 200 / 450, 200 / 450]
    assert sample_weights([1, 3]) == [1 / 3, 2 / 3]
    assert sample_weights([0, 0]) == [0.5, 0.5]
    assert sample_weights([]) == []


@given(SAMPLES)
def test_weights_sum_to_one_follow_the_samples_and_none_exceeds_the_median_ones(samples: list[int]) -> None:
    weights = sample_weights(samples)
    assert len(weights) == len(samples)
    assert math.isclose(sum(weights), 1.0, rel_tol=1e-9)
    assert all(w >= 0 for w in weights)
    order = sorted(range(len(samples)), key=lambda i: samples[i])
    assert all(weights[a] <= weights[b] + 1e-12 for a, b in zip(order, order[1:]))
    # Every contribution at or above the median gets the largest weight, and the same one.
    counts = [max(s, 0) for s in samples]
    at_or_above = [weights[i] for i, count in enumerate(counts) if count >= statistics.median(counts)]
    assert at_or_above and all(math.isclose(w, max(weights)) for w in at_or_above)


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=40))
def test_proportional_weights_are_fedavgs(samples: list[int]) -> None:
    weights = proportional_weights(samples)
    assert math.isclose(sum(weights), 1.0, rel_tol=1e-9)
    if sum(samples) > 0:
        assert all(math.isclose(w, s / sum(samples), abs_tol=1e-12) for w, s in zip(weights, samples))

"""Giving each device its shard: iid and by-class (non-IID), as properties."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from globetrain.errors import ConfigError
from globetrain.video.dataset import VideoSample
from globetrain.video.sharding import classes_of_device, default_classes_per_device, shard


def _samples(num_classes: int, per_class: int) -> list[VideoSample]:
    return [VideoSample(Path(f"c{label}/{index}.mp4"), label) for label in range(num_classes) for index in range(per_class)]


@given(num_classes=st.integers(2, 12), per_class=st.integers(0, 9), num_devices=st.integers(1, 10), seed=st.integers(0, 3))
def test_iid_shards_partition_the_samples(num_classes, per_class, num_devices, seed):
    samples = _samples(num_classes, per_class)
    shards = [shard(samples, device, num_devices, "iid", seed=seed) for device in range(num_devices)]
    assert Counter(sample for part in shards for sample in part) == Counter(samples)
    sizes = [len(part) for part in shards]
    assert max(sizes) - min(sizes) <= 1


@given(
    num_classes=st.integers(2, 12),
    per_class=st.integers(1, 9),
    num_devices=st.integers(1, 10),
    extra_classes=st.integers(0, 3),
    seed=st.integers(0, 3),
)
def test_by_class_shards_see_only_their_classes_and_together_everything_once(
    num_classes, per_class, num_devices, extra_classes, seed
):
    samples = _samples(num_classes, per_class)
    per_device = min(num_classes, default_classes_per_device(num_devices, num_classes) + extra_classes)
    shards = [
        shard(samples, device, num_devices, "by-class", classes_per_device=per_device, num_classes=num_classes, seed=seed)
        for device in range(num_devices)
    ]
    assert Counter(sample for part in shards for sample in part) == Counter(samples)  # every clip exactly once
    for device, part in enumerate(shards):
        allowed = set(classes_of_device(device, num_devices, num_classes, per_device))
        assert {sample.label for sample in part} <= allowed
        assert len(allowed) == per_device


def test_four_devices_on_eight_classes_see_two_classes_each():
    samples = _samples(8, 5)
    seen = [sorted({s.label for s in shard(samples, device, 4, "by-class")}) for device in range(4)]
    assert seen == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_too_few_classes_per_device_is_refused():
    with pytest.raises(ConfigError, match="unseen"):
        shard(_samples(8, 2), 0, 2, "by-class", classes_per_device=3)


@pytest.mark.parametrize(("device", "devices"), [(-1, 2), (2, 2), (0, 0)])
def test_a_bad_device_index_is_refused(device, devices):
    with pytest.raises(ConfigError):
        shard(_samples(2, 2), device, devices)

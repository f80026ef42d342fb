"""Giving one device its own part of a dataset.

Two ways, as a fleet would see them:

- ``"iid"``: every device gets an even, random share of every class.
- ``"by-class"`` (non-IID): each device sees only some classes, as cameras in
  different places see different actions. Device d holds a window of
  ``classes_per_device`` consecutive classes starting at class ``floor(d * C / N)``;
  windows overlap where needed so that every class is seen by at least one device,
  and a class held by several devices has its clips dealt out among them (no clip is
  on two devices).

Shards are deterministic for a seed: every device computes its own shard alone, and
all of them agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from globetrain.errors import ConfigError
from globetrain.video.dataset import VideoSample

ShardMode = Literal["iid", "by-class"]


def classes_of_device(device_index: int, num_devices: int, num_classes: int, classes_per_device: int) -> list[int]:
    """The classes device ``device_index`` sees in ``"by-class"`` mode."""
    start = (device_index * num_classes) // num_devices
    return sorted({(start + offset) % num_classes for offset in range(classes_per_device)})


def default_classes_per_device(num_devices: int, num_classes: int) -> int:
    """The fewest classes per device with which every class is still seen."""
    return min(num_classes, math.ceil(num_classes / num_devices))


def shard(
    samples: Sequence[VideoSample],
    device_index: int,
    num_devices: int,
    mode: ShardMode = "iid",
    *,
    classes_per_device: int | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> list[VideoSample]:
    """The samples of device ``device_index`` out of ``num_devices``.

    ``num_classes`` defaults to the largest label + 1 (pass the dataset's class count
    when a split may lack its last classes).
    """
    if not isinstance(num_devices, int) or num_devices < 1:
        raise ConfigError(f"num_devices = {num_devices!r} is invalid: expected an integer >= 1")
    if not isinstance(device_index, int) or not 0 <= device_index < num_devices:
        raise ConfigError(f"device_index = {device_index!r} is invalid: expected an integer in [0, {num_devices - 1}]")
    if mode == "iid":
        order = np.random.default_rng([seed, 1]).permutation(len(samples))
        return [samples[index] for index in sorted(order[device_index::num_devices].tolist())]
    if mode != "by-class":
        raise ConfigError(f"shard mode {mode!r} is invalid: expected 'iid' or 'by-class'")

    if num_classes is None:
        num_classes = max((sample.label for sample in samples), default=-1) + 1
    minimum = default_classes_per_device(num_devices, num_classes)
    if classes_per_device is None:
        classes_per_device = minimum
    if not isinstance(classes_per_device, int) or not minimum <= classes_per_device <= num_classes:
        raise ConfigError(
            f"classes_per_device = {classes_per_device!r} is invalid for {num_devices} devices and "
            f"{num_classes} classes: expected an integer in [{minimum}, {num_classes}] "
            f"(fewer than {minimum} would leave some classes unseen by every device)"
        )
    holders: dict[int, list[int]] = {label: [] for label in range(num_classes)}
    for device in range(num_devices):
        for label in classes_of_device(device, num_devices, num_classes, classes_per_device):
            holders[label].append(device)

    mine: list[VideoSample] = []
    for label in classes_of_device(device_index, num_devices, num_classes, classes_per_device):
        of_class = [index for index, sample in enumerate(samples) if sample.label == label]
        order = np.random.default_rng([seed, 2, label]).permutation(len(of_class))
        position = holders[label].index(device_index)
        mine.extend(samples[of_class[index]] for index in order[position :: len(holders[label])])
    mine.sort(key=lambda sample: (sample.label, str(sample.path)))
    return mine

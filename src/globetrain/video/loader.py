"""Batches of clips for training and evaluation, prepared in the background.

``ClipLoader`` is a small DataLoader for video: each iteration is one epoch of
``Batch(clips, labels)``, clips shaped (batch, frames, 3, h, w) and normalised. It
samples frames segment-wise (random in training, centred in evaluation), takes the
frames from a ``FrameSource`` (clip cache or decode), and prepares up to
``prefetch_batches`` batches ahead in one background thread. One thread, not a pool of
worker processes: 4-8 device processes share two cores here, and after the first epoch
the cache makes a batch cheap. Unreadable videos are dropped from their batch (the
``FrameSource`` warns and counts them) and the epoch goes on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from globetrain.video.clips import clips_to_tensor, segment_indices
from globetrain.video.dataset import DatasetError, VideoSample
from globetrain.video.frame_source import FrameSource

_END = object()


class Batch(NamedTuple):
    clips: torch.Tensor
    """(batch, frames, 3, height, width) float32, normalised."""
    labels: torch.Tensor
    """(batch,) int64 class indices."""


class ClipLoader:
    """Epochs of batches over ``samples`` (for example one device's shard)."""

    def __init__(
        self,
        samples: Sequence[VideoSample],
        source: FrameSource,
        *,
        frames: int,
        batch_size: int,
        training: bool,
        seed: int = 0,
        prefetch_batches: int = 2,
    ) -> None:
        if not samples:
            raise DatasetError("ClipLoader: no videos to load (an empty split or shard)")
        if batch_size < 1 or frames < 1 or prefetch_batches < 0:
            raise ValueError("ClipLoader: batch_size and frames must be >= 1, prefetch_batches >= 0")
        self.samples = list(samples)
        self.source = source
        self.frames = frames
        self.batch_size = batch_size
        self.training = training
        self.seed = seed
        self.prefetch_batches = prefetch_batches
        self.epoch = 0
        self.clips_delivered = 0

    def __len__(self) -> int:
        """Batches per epoch (fewer if whole batches of videos turn out unreadable)."""
        return -(-len(self.samples) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its shuffle and frame choice)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch += 1
        batches = self._epoch_batches(epoch)
        if self.prefetch_batches == 0:
            yield from batches
        else:
            yield from _prefetched(batches, self.prefetch_batches)

    def endless(self) -> Iterator[Batch]:
        """Epoch after epoch, forever (the fleet's inner loop draws from this)."""
        while True:
            delivered = False
            for batch in self:
                delivered = True
                yield batch
            if not delivered:
                raise DatasetError(
                    f"every one of the {len(self.samples)} videos was unreadable; "
                    "check the dataset (the warnings above name the files)"
                )

    def _epoch_batches(self, epoch: int) -> Iterator[Batch]:
        # One stream per epoch: the same seed and epoch give the same batches, whatever
        # happened in earlier epochs.
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.samples)) if self.training else np.arange(len(self.samples))
        for start in range(0, len(order), self.batch_size):
            clips: list[np.ndarray] = []
            labels: list[int] = []
            for index in order[start : start + self.batch_size]:
                sample = self.samples[index]
                frames = self.source.read(sample.path)
                if frames is None:
                    continue
                chosen = segment_indices(len(frames), self.frames, training=self.training, rng=rng)
                clips.append(frames[chosen])
                labels.append(sample.label)
            if not clips:
                continue
            self.clips_delivered += len(clips)
            yield Batch(clips_to_tensor(np.stack(clips)), torch.tensor(labels, dtype=torch.int64))


def _prefetched(batches: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Run ``batches`` in a background thread, ``depth`` items ahead of the consumer."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: object = _END
        except BaseException as error:  # handed to the consumer, re-raised there
            item = error
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    worker = threading.Thread(target=produce, name="clip-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # Also when the consumer stops early: let the producer see it and end.
        stop.set()
        worker.join(timeout=10.0)
        if not worker.is_alive():
            batches.close()  # type: ignore[attr-defined]

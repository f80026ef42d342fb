"""Batches of clips: shapes, determinism, prefetch, and bad files that never stop a run."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import pytest
import torch

from globetrain.video.cache import ClipCache
from globetrain.video.dataset import DatasetError, VideoSample, load_dataset
from globetrain.video.evaluation import evaluate
from globetrain.video.frame_source import FrameSource
from globetrain.video.loader import ClipLoader


def _loader(samples, *, training=True, prefetch=0, seed=0, cache_dir: Path | None = None, batch_size=5) -> ClipLoader:
    cache = ClipCache(cache_dir, max_bytes=2**26) if cache_dir else None
    source = FrameSource(frame_size=16, max_frames=32, cache=cache)
    return ClipLoader(samples, source, frames=4, batch_size=batch_size, training=training, seed=seed, prefetch_batches=prefetch)


def _epoch(loader: ClipLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(batch.clips.clone(), batch.labels.clone()) for batch in loader]


def test_an_epoch_covers_every_clip_once_in_batches(tiny_dataset: Path):
    samples = load_dataset(tiny_dataset).split("train")
    batches = _epoch(_loader(samples))
    assert [len(labels) for _, labels in batches] == [5, 5, 5, 1]
    assert all(clips.shape[1:] == (4, 3, 16, 16) and clips.dtype == torch.float32 for clips, _ in batches)
    labels = torch.cat([labels for _, labels in batches])
    assert sorted(labels.tolist()) == sorted(sample.label for sample in samples)


def test_the_same_seed_and_epoch_give_the_same_batches_with_or_without_prefetch_and_cache(tiny_dataset: Path, tmp_path: Path):
    samples = load_dataset(tiny_dataset).split("train")
    plain = _epoch(_loader(samples, seed=4))
    prefetched_cached = _epoch(_loader(samples, seed=4, prefetch=2, cache_dir=tmp_path / "cache"))
    next_epoch = _loader(samples, seed=4)
    next_epoch.set_epoch(1)
    for (clips, labels), (other_clips, other_labels) in zip(plain, prefetched_cached):
        assert torch.equal(clips, other_clips) and torch.equal(labels, other_labels)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(plain, _epoch(next_epoch)))


def test_evaluation_order_and_frames_are_fixed(tiny_dataset: Path):
    samples = load_dataset(tiny_dataset).split("val")
    first, second = _epoch(_loader(samples, training=False)), _epoch(_loader(samples, training=False, seed=9))
    assert torch.cat([labels for _, labels in first]).tolist() == [sample.label for sample in samples]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))


def test_unreadable_videos_are_skipped_with_one_warning_each_and_counted(tiny_dataset: Path, tmp_path: Path, caplog):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    samples = list(load_dataset(root).split("train"))
    broken, cut = samples[0].path, samples[1].path
    broken.write_text("not a video")
    cut.write_bytes(cut.read_bytes()[:200])
    loader = _loader(samples, prefetch=2, cache_dir=tmp_path / "cache")

    with caplog.at_level(logging.WARNING):
        first, second = _epoch(loader), _epoch(loader)

    for epoch in (first, second):
        assert sum(len(labels) for _, labels in epoch) == len(samples) - 2
    assert set(loader.source.stats.skipped) == {str(broken), str(cut)}
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert any(str(broken) in message for message in warnings) and any(str(cut) in message for message in warnings)


def test_a_file_deleted_during_training_is_skipped(tiny_dataset: Path, tmp_path: Path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    samples = list(load_dataset(root).split("train"))
    samples[3].path.unlink()
    batches = _epoch(_loader(samples))
    assert sum(len(labels) for _, labels in batches) == len(samples) - 1


def test_stopping_early_ends_the_prefetch_thread(tiny_dataset: Path):
    samples = load_dataset(tiny_dataset).split("train")
    before = {thread.ident for thread in threading.enumerate()}
    iterator = iter(_loader(samples, prefetch=1, batch_size=1))
    next(iterator)
    iterator.close()
    leftover = [thread for thread in threading.enumerate() if thread.ident not in before and thread.name == "clip-prefetch"]
    assert leftover == []


def test_endless_gives_up_when_every_video_is_unreadable(tmp_path: Path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    loader = _loader([VideoSample(bad, 0)], prefetch=1)
    with pytest.raises(DatasetError, match="every one of the 1 videos was unreadable"):
        next(loader.endless())


def test_endless_runs_epoch_after_epoch(tiny_dataset: Path):
    samples = load_dataset(tiny_dataset).split("val")[:3]
    stream = _loader(samples, batch_size=2).endless()
    sizes = [len(next(stream).labels) for _ in range(5)]
    assert sizes == [2, 1, 2, 1, 2]


def test_an_empty_shard_is_refused_at_once():
    with pytest.raises(DatasetError, match="no videos"):
        _loader([])


class _OracleModel(torch.nn.Module):
    """Predicts class 0 always: accuracy is the share of class-0 clips."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(clips), 8)
        logits[:, 0] = 10.0
        return logits


def test_evaluate_reports_accuracy_and_loss(tiny_dataset: Path):
    samples = load_dataset(tiny_dataset).split("test")
    result = evaluate(_OracleModel(), _loader(samples, training=False))
    share = sum(sample.label == 0 for sample in samples) / len(samples)
    assert result.clips == len(samples)
    assert result.accuracy == pytest.approx(share)
    assert result.loss > 0

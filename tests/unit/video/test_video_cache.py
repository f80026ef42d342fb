"""The clip cache: exact frames, never stale, within its cap, safe when the disk fills."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import globetrain.video.cache as cache_module
from globetrain.video.cache import ClipCache
from globetrain.video.files import read_video
from globetrain.video.frame_source import FrameSource

MiB = 2**20


def _source(cache_dir: Path, max_bytes: int = 64 * MiB) -> FrameSource:
    return FrameSource(frame_size=32, max_frames=32, cache=ClipCache(cache_dir, max_bytes=max_bytes))


def test_cached_frames_equal_a_fresh_decode(tmp_path: Path, write_clip):
    paths = [write_clip(f"clip{index}.mp4", class_index=index, clip_index=index) for index in range(4)]
    source = _source(tmp_path / "cache")

    first = [np.array(source.read(path)) for path in paths]  # decode, then store
    second = [source.read(path) for path in paths]  # from the cache
    reopened = _source(tmp_path / "cache")  # a new process's view of the same folder
    third = [reopened.read(path) for path in paths]

    for path, *copies in zip(paths, first, second, third):
        fresh = read_video(path, frame_size=32, max_frames=32)
        for frames in copies:
            assert np.array_equal(frames, fresh)
    assert source.stats.decoded == 4 and source.stats.cache_hits == 4
    assert reopened.stats.decoded == 0 and reopened.stats.cache_hits == 4


def test_a_changed_file_is_decoded_again_not_served_stale(tmp_path: Path, write_clip):
    path = write_clip("clip.mp4", class_index=0, clip_index=0)
    source = _source(tmp_path / "cache")
    before = np.array(source.read(path))

    # Same name, new content, written at once (same second, perhaps the same size).
    replacement = write_clip("other.mp4", class_index=5, clip_index=9)
    os.replace(replacement, path)
    after = source.read(path)

    assert np.array_equal(after, read_video(path, frame_size=32, max_frames=32))
    assert not np.array_equal(after, before)
    assert source.stats.decoded == 2


def test_other_decoding_settings_are_other_entries(tmp_path: Path, write_clip):
    path = write_clip()
    cache = ClipCache(tmp_path / "cache", max_bytes=64 * MiB)
    small = FrameSource(frame_size=16, max_frames=32, cache=cache).read(path)
    large = FrameSource(frame_size=32, max_frames=32, cache=cache).read(path)
    assert small.shape[1:3] == (16, 16) and large.shape[1:3] == (32, 32)


@settings(max_examples=25)
@given(sizes=st.lists(st.integers(1, 60_000), min_size=1, max_size=40), cap=st.integers(50_000, 400_000))
def test_the_folder_never_exceeds_its_cap_and_keeps_what_fits(tmp_path_factory, sizes, cap):
    cache = ClipCache(tmp_path_factory.mktemp("cache"), max_bytes=cap, shard_bytes=cap // 8)
    rng = np.random.default_rng(len(sizes))
    stored: dict[str, np.ndarray] = {}
    for index, size in enumerate(sizes):
        frames = rng.integers(0, 256, size=(size, 1, 1, 1), dtype=np.uint8)
        key = f"clip-{index}"
        # An entry over half the cap is not worth the evictions it would cause.
        assert cache.put(key, frames) == (size <= cap // 2)
        if size <= cap // 2:
            stored[key] = frames
            # The newest entry survives its own eviction round.
            assert np.array_equal(cache.get(key), frames)
        assert cache.size_bytes() <= cap
    # Whatever is still served is exact.
    for key, frames in stored.items():
        found = cache.get(key)
        assert found is None or np.array_equal(found, frames)


def test_least_recently_used_shards_go_first(tmp_path: Path):
    cache = ClipCache(tmp_path, max_bytes=40_000, shard_bytes=10_000)
    block = np.zeros((10_000, 1, 1, 1), dtype=np.uint8)
    for index in range(3):
        cache.put(f"old-{index}", block + index)
    cache.get("old-0")  # used again: now newer than old-1
    cache.put("new", block)  # over the cap: one shard must go
    assert cache.get("old-1") is None
    assert cache.get("old-0") is not None and cache.get("new") is not None


def test_damaged_bytes_are_a_miss_not_wrong_frames(tmp_path: Path):
    cache = ClipCache(tmp_path, max_bytes=MiB)
    cache.put("clip", np.arange(600, dtype=np.uint8).reshape(6, 10, 10, 1) % 251)
    cache.close()
    shard = next(tmp_path.glob("*.frames"))
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    reopened = ClipCache(tmp_path, max_bytes=MiB)
    assert reopened.get("clip") is None
    assert reopened.stats.corrupt_entries == 1


def test_a_full_disk_falls_back_to_decoding_with_a_warning(tmp_path: Path, write_clip, monkeypatch, caplog):
    paths = [write_clip(f"clip{index}.mp4", clip_index=index) for index in range(3)]

    def disk_full(descriptor, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "_write_all", disk_full)
    source = _source(tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        frames = [source.read(path) for path in paths * 2]

    for path, got in zip(paths * 2, frames):
        assert np.array_equal(got, read_video(path, frame_size=32, max_frames=32))
    assert source.stats.decoded == 6  # nothing cached, everything decoded
    assert source.cache.stats.write_failures == 1  # tried once, then stopped trying
    assert not source.cache.writable
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "disk is full" in warnings[0] and "decoding" in warnings[0]


def test_entries_written_by_another_process_are_found(tmp_path: Path):
    writer = ClipCache(tmp_path, max_bytes=MiB)
    reader = ClipCache(tmp_path, max_bytes=MiB)
    writer.put("shared", np.full((2, 4, 4, 3), 7, dtype=np.uint8))
    reader.refresh()
    assert np.array_equal(reader.get("shared"), np.full((2, 4, 4, 3), 7, dtype=np.uint8))


def test_an_unwritable_folder_means_no_caching_not_a_crash(tmp_path: Path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        cache = ClipCache(blocker / "cache", max_bytes=MiB)
    assert not cache.writable
    assert cache.put("key", np.zeros((1, 1, 1, 1), dtype=np.uint8)) is False
    assert cache.get("key") is None


def test_a_file_rewritten_in_place_with_its_old_timestamp_is_not_served_stale(tmp_path: Path, write_clip):
    path = write_clip("clip.mp4", class_index=1, clip_index=1)
    long_ago = 1_600_000_000
    os.utime(path, (long_ago, long_ago))  # old enough for its hash to be remembered
    source = _source(tmp_path / "cache")
    before = np.array(source.read(path))
    assert np.array_equal(source.read(path), before)  # a hit, from the remembered hash

    new_content = write_clip("other.mp4", class_index=2, clip_index=4).read_bytes()
    with open(path, "r+b") as file:  # same inode, same name
        file.write(new_content)
        file.truncate()
    os.utime(path, (long_ago, long_ago))  # and the old modification time
    after = source.read(path)

    assert np.array_equal(after, read_video(path, frame_size=32, max_frames=32))
    assert not np.array_equal(after, before)

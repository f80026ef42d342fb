"""The frames of a video file: from the clip cache when it has them, else decoded once.

``FrameSource.read`` is what the loader calls per clip. It never raises for a bad file:
an unreadable, truncated or zero-frame video is logged once with its name, counted in
``stats.skipped``, and answered with None from then on, so one bad file in a dataset of
thousands never stops a run.

The cache key is a hash of the file's bytes, so a hit would need to read the whole file
just to hash it. Instead the key is remembered with the file's status (size, inode,
modification and change times) and reused while those are unchanged. As in git's
"racy" check, a remembered key is only trusted if the file had not been touched for a
while when it was hashed: a rewrite within the filesystem's timestamp granularity could
otherwise keep the same status with new content.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from globetrain.video.cache import ClipCache
from globetrain.video.config import DataConfig, ModelConfig
from globetrain.video.files import UnreadableVideo, read_video

logger = logging.getLogger(__name__)

# Bumped whenever read_video's output for the same file and settings changes, so that
# caches written by an older version miss instead of serving different pixels.
DECODER_VERSION = 1
# A file's remembered hash is trusted only if it was last modified this long before hashing.
_STABLE_BEFORE_HASH_NS = 2_000_000_000


@dataclasses.dataclass
class ReadStats:
    videos_read: int = 0
    cache_hits: int = 0
    decoded: int = 0
    decode_seconds: float = 0.0
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    """Unreadable files (path -> reason); each is warned about once and then left out."""

    def to_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "skipped_files": len(self.skipped)}


@dataclasses.dataclass(frozen=True)
class _KnownKey:
    status: tuple[int, ...]
    key: str


class FrameSource:
    """uint8 frames (frames, frame_size, frame_size, 3) of video files, cached or decoded."""

    def __init__(
        self,
        *,
        frame_size: int,
        max_frames: int,
        cache: ClipCache | None = None,
        decode_threads: int = 1,
    ) -> None:
        self.frame_size = frame_size
        self.max_frames = max_frames
        self.cache = cache
        self.decode_threads = decode_threads
        self.stats = ReadStats()
        self.settings = f"decoder=v{DECODER_VERSION} frame_size={frame_size} max_frames={max_frames}"
        self._known_keys: dict[str, _KnownKey] = {}
        self._lock = threading.Lock()

    def read(self, path: Path | str) -> np.ndarray | None:
        """The frames of ``path``; None (warned and counted once) if it is unreadable.

        Frames from the cache are a read-only view of its memory map: index or copy them,
        never write into them.
        """
        path_text = str(path)
        if path_text in self.stats.skipped:
            return None
        try:
            frames = self._read(Path(path))
        except UnreadableVideo as error:
            self._skip(path_text, error.reason)
            return None
        with self._lock:
            self.stats.videos_read += 1
        return frames

    def is_skipped(self, path: Path | str) -> bool:
        return str(path) in self.stats.skipped

    def _read(self, path: Path) -> np.ndarray:
        if self.cache is None:
            return self._decode(path, None)
        known = self._known_keys.get(str(path))
        if known is not None and known.status == _file_status(path):
            cached = self.cache.get(known.key)
            if cached is not None:
                with self._lock:
                    self.stats.cache_hits += 1
                return cached
        try:
            hashed_at = time.time_ns()
            data = path.read_bytes()
        except FileNotFoundError as error:
            raise UnreadableVideo(path, "file does not exist (deleted after the dataset was listed?)") from error
        except OSError as error:
            raise UnreadableVideo(path, f"cannot be read ({error.strerror or error})") from error
        key = ClipCache.key(data, self.settings)
        status = _file_status(path)
        if status and max(status[2], status[3]) < hashed_at - _STABLE_BEFORE_HASH_NS:
            self._known_keys[str(path)] = _KnownKey(status, key)
        cached = self.cache.get(key)
        if cached is not None:
            with self._lock:
                self.stats.cache_hits += 1
            return cached
        frames = self._decode(path, data)
        self.cache.put(key, frames)
        return frames

    def _decode(self, path: Path, data: bytes | None) -> np.ndarray:
        started = time.perf_counter()
        frames = read_video(
            path, data=data, frame_size=self.frame_size, max_frames=self.max_frames, decode_threads=self.decode_threads
        )
        with self._lock:
            self.stats.decoded += 1
            self.stats.decode_seconds += time.perf_counter() - started
        return frames

    def _skip(self, path: str, reason: str) -> None:
        with self._lock:
            if path in self.stats.skipped:
                return
            self.stats.skipped[path] = reason
        logger.warning("skipping unreadable video %s: %s (left out of training from now on)", path, reason)


def _file_status(path: Path) -> tuple[int, ...]:
    """(size, inode, mtime_ns, ctime_ns, device): changes whenever the file is written."""
    try:
        status = os.stat(path)
    except OSError:
        return ()
    return (status.st_size, status.st_ino, status.st_mtime_ns, status.st_ctime_ns, status.st_dev)


def open_frame_source(data: DataConfig, model: ModelConfig) -> FrameSource:
    """A frame source for a run's settings: frames sized for the model, cached if asked."""
    cache = None
    if data.cache:
        cache = ClipCache(data.resolved_cache_dir(), max_bytes=int(data.cache_max_mb * 2**20))
    return FrameSource(
        frame_size=model.frame_size,
        max_frames=max(data.max_cached_frames, model.frames),
        cache=cache,
        decode_threads=data.decode_threads,
    )

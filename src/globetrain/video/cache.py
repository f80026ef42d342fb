"""The decode-once clip cache: decoded uint8 frames in memory-mapped shards on disk.

Decoding video is the slow part of loading it; a device decodes each video once and
afterwards reads its frames from here. Entries are keyed by a hash of the video file's
bytes together with the decoding settings (frame size, frames kept), so a changed file,
or a change of settings, is a different key: nothing stale is ever served.

Layout: entries are appended to shard files (``*.frames``, raw uint8 bytes), each with
a sidecar ``*.index`` of JSON lines (key, offset, shape, CRC-32). A shard is written by
one process only (its name carries a writer id), so several device processes on one
machine can share a cache folder without locks: each reads the others' index files.
Data is written before its index line, and every read checks the CRC, so a crash or a
flaky SD card yields a miss, never wrong frames.

Devices have small SD cards: the folder is held under ``max_bytes`` by deleting whole
shards, least recently used first, after every write (with several writers, another
process's newest entry may overshoot until that process's own eviction round). A full disk (or any write error) turns writing off
with a warning; the caller then decodes as if there were no cache.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import secrets
import threading
import time
import zlib
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_FRAMES_SUFFIX = ".frames"
_INDEX_SUFFIX = ".index"
_MAX_SHARD_BYTES = 64 * 2**20
# How often a miss may rescan the folder for other processes' new entries.
_REFRESH_INTERVAL_S = 1.0
# How often a read refreshes a shard's modification time (its age for eviction).
_TOUCH_INTERVAL_S = 60.0


def _write_all(descriptor: int, data: bytes | memoryview) -> None:
    """The one place the cache's bytes reach the disk (tests simulate a full disk here)."""
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


@dataclasses.dataclass
class CacheStats:
    writes: int = 0
    write_failures: int = 0
    evicted_shards: int = 0
    corrupt_entries: int = 0


@dataclasses.dataclass(frozen=True)
class _Entry:
    shard: str
    offset: int
    shape: tuple[int, ...]
    checksum: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class ClipCache:
    """A size-capped on-disk cache of decoded frames (uint8 arrays), safe across threads
    and across processes sharing one folder."""

    def __init__(self, directory: Path | str, *, max_bytes: int, shard_bytes: int | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError(f"ClipCache: max_bytes = {max_bytes} is invalid: expected > 0")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        # Eviction frees whole shards: keep them small against the cap.
        self.shard_bytes = shard_bytes or max(2**16, min(_MAX_SHARD_BYTES, self.max_bytes // 8))
        self.stats = CacheStats()
        self.writable = True
        self._writer = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._shard_counter = 0
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._index_read_offsets: dict[str, int] = {}
        self._maps: dict[str, np.memmap] = {}
        self._last_used: dict[str, float] = {}
        self._last_touched: dict[str, float] = {}
        self._last_refresh = 0.0
        self._shard: str | None = None  # the shard this process appends to
        self._shard_size = 0
        self._frames_fd: int | None = None
        self._index_fd: int | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self._stop_writing(error)
        self.refresh()

    # -- keys -----------------------------------------------------------------------

    @staticmethod
    def key(content: bytes, settings: str) -> str:
        """The cache key of a video's bytes decoded with ``settings``."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(settings.encode())
        digest.update(b"\0")
        digest.update(content)
        return digest.hexdigest()

    # -- reading --------------------------------------------------------------------

    def get(self, key: str) -> np.ndarray | None:
        """The cached frames (a read-only memory-mapped array), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None and time.monotonic() - self._last_refresh >= _REFRESH_INTERVAL_S:
                self.refresh()
                entry = self._entries.get(key)
            if entry is None:
                return None
            mapping = self._map(entry.shard, entry.offset + entry.size)
            if mapping is None:
                self._forget_shard(entry.shard)
                return None
            frames = mapping[entry.offset : entry.offset + entry.size].reshape(entry.shape)
            if zlib.crc32(frames) != entry.checksum:
                self.stats.corrupt_entries += 1
                del self._entries[key]
                return None
            self._mark_used(entry.shard)
            return frames

    def refresh(self) -> None:
        """Pick up entries other processes wrote; forget shards that were evicted."""
        with self._lock:
            self._last_refresh = time.monotonic()
            try:
                names = {path.name for path in self.directory.iterdir()}
            except OSError:
                return
            present = {name[: -len(_INDEX_SUFFIX)] for name in names if name.endswith(_INDEX_SUFFIX)}
            for shard in list(self._index_read_offsets):
                if shard not in present:
                    self._forget_shard(shard)
            for shard in sorted(present):
                self._read_new_index_lines(shard)

    def _read_new_index_lines(self, shard: str) -> None:
        offset = self._index_read_offsets.get(shard, 0)
        try:
            with open(self.directory / f"{shard}{_INDEX_SUFFIX}", "rb") as index:
                index.seek(offset)
                chunk = index.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
        self._index_read_offsets[shard] = offset + len(complete)
        for line in complete.splitlines():
            try:
                record = json.loads(line)
                entry = _Entry(shard, int(record["offset"]), tuple(int(n) for n in record["shape"]), int(record["crc32"]))
                self._entries[str(record["key"])] = entry
            except (ValueError, KeyError, TypeError):
                self.stats.corrupt_entries += 1

    def _map(self, shard: str, needed: int) -> np.memmap | None:
        mapping = self._maps.get(shard)
        if mapping is None or len(mapping) < needed:
            try:
                mapping = np.memmap(self.directory / f"{shard}{_FRAMES_SUFFIX}", dtype=np.uint8, mode="r")
            except (OSError, ValueError):
                return None
            if len(mapping) < needed:
                return None
            # Arrays handed out earlier keep their old mapping alive; this one is for new reads.
            self._maps[shard] = mapping
        return mapping

    def _mark_used(self, shard: str) -> None:
        now = time.time()
        self._last_used[shard] = now
        if now - self._last_touched.get(shard, 0.0) >= _TOUCH_INTERVAL_S:
            # The file's mtime is how other processes see this shard's age.
            self._last_touched[shard] = now
            try:
                os.utime(self.directory / f"{shard}{_FRAMES_SUFFIX}")
            except OSError:
                pass

    def _forget_shard(self, shard: str) -> None:
        self._entries = {key: entry for key, entry in self._entries.items() if entry.shard != shard}
        self._maps.pop(shard, None)
        self._index_read_offsets.pop(shard, None)
        self._last_used.pop(shard, None)
        if shard == self._shard:
            self._close_shard()

    # -- writing --------------------------------------------------------------------

    def put(self, key: str, frames: np.ndarray) -> bool:
        """Store ``frames`` (uint8) under ``key``; False if not stored (too big, or
        writing is off after a write error)."""
        data = np.ascontiguousarray(frames, dtype=np.uint8)
        if not self.writable or data.nbytes > self.max_bytes // 2:
            return False
        with self._lock:
            if key in self._entries:
                return True
            try:
                self._ensure_shard(data.nbytes)
                assert self._frames_fd is not None and self._index_fd is not None and self._shard is not None
                offset = self._shard_size
                checksum = zlib.crc32(data)
                _write_all(self._frames_fd, data.data)
                self._shard_size += data.nbytes
                record = {"key": key, "offset": offset, "shape": list(data.shape), "crc32": checksum}
                line = (json.dumps(record) + "\n").encode()
                _write_all(self._index_fd, line)
            except OSError as error:
                self._stop_writing(error)
                return False
            self._index_read_offsets[self._shard] = self._index_read_offsets.get(self._shard, 0) + len(line)
            self._entries[key] = _Entry(self._shard, offset, tuple(data.shape), checksum)
            self._last_used[self._shard] = time.time()
            self.stats.writes += 1
            self._evict_over_cap()
            return True

    def _ensure_shard(self, incoming: int) -> None:
        if self._shard is not None and self._shard_size > 0 and self._shard_size + incoming > self.shard_bytes:
            self._close_shard()
        if self._shard is not None and not (self.directory / f"{self._shard}{_FRAMES_SUFFIX}").exists():
            self._forget_shard(self._shard)  # evicted by another process
        if self._shard is None:
            self._shard_counter += 1
            shard = f"clips-{self._writer}-{self._shard_counter:05d}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            self._frames_fd = os.open(self.directory / f"{shard}{_FRAMES_SUFFIX}", flags, 0o644)
            self._index_fd = os.open(self.directory / f"{shard}{_INDEX_SUFFIX}", flags, 0o644)
            self._shard, self._shard_size = shard, 0
            self._index_read_offsets[shard] = 0

    def _close_shard(self) -> None:
        for descriptor in (self._frames_fd, self._index_fd):
            if descriptor is not None:
                try:
                    os.close(descriptor)
                except OSError:
                    pass
        self._frames_fd = self._index_fd = None
        self._shard, self._shard_size = None, 0

    def _stop_writing(self, error: OSError) -> None:
        self.writable = False
        self.stats.write_failures += 1
        reason = "the disk is full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else str(error)
        logger.warning(
            "clip cache %s: cannot write (%s); decoding every video from now on, without caching. "
            "Free space or lower data.cache_max_mb to cache again.",
            self.directory,
            reason,
        )
        if self._shard is not None:
            # Cut off a partly written entry so the shard holds whole entries only.
            try:
                os.truncate(self.directory / f"{self._shard}{_FRAMES_SUFFIX}", self._shard_size)
            except OSError:
                pass
            self._close_shard()

    # -- size cap -------------------------------------------------------------------

    def size_bytes(self) -> int:
        """Bytes the cache folder holds now (all processes' shards)."""
        return sum(size for size, _ in self._shard_files().values())

    def _shard_files(self) -> dict[str, tuple[int, float]]:
        """shard -> (bytes on disk, last use), from the folder as it is now."""
        shards: dict[str, tuple[int, float]] = {}
        try:
            listing = list(os.scandir(self.directory))
        except OSError:
            return shards
        for item in listing:
            for suffix in (_FRAMES_SUFFIX, _INDEX_SUFFIX):
                if item.name.endswith(suffix):
                    shard = item.name[: -len(suffix)]
                    try:
                        status = item.stat()
                    except OSError:
                        continue
                    size, used = shards.get(shard, (0, 0.0))
                    used = max(used, status.st_mtime, self._last_used.get(shard, 0.0))
                    shards[shard] = (size + status.st_size, used)
        return shards

    def _evict_over_cap(self) -> None:
        shards = self._shard_files()
        total = sum(size for size, _ in shards.values())
        for shard, (size, _) in sorted(shards.items(), key=lambda item: item[1][1]):
            if total <= self.max_bytes:
                break
            for suffix in (_FRAMES_SUFFIX, _INDEX_SUFFIX):
                try:
                    (self.directory / f"{shard}{suffix}").unlink()
                except FileNotFoundError:
                    pass
                except OSError:
                    continue
            self._forget_shard(shard)
            self.stats.evicted_shards += 1
            total -= size

    def close(self) -> None:
        with self._lock:
            self._close_shard()
            self._maps.clear()

    def __enter__(self) -> ClipCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""Frames on libp2p streams: bounded reads, bounded waits, bytes counted per message kind.

A stream carries frames: a 4-byte big-endian length, then that many bytes (one
envelope). ``read_frame`` checks the length against the caller's bound before it reads
(or allocates) anything, so a peer cannot make another one buffer gigabytes by
announcing them. Every read and write takes a timeout: nothing here waits unbounded.

``Conversation`` is one stream seen from this side, with the remote peer id that libp2p
authenticated (a receiver compares it to the sender named inside the envelope).
``ByteCounter`` adds up bytes on the wire per direction and message kind, for the fleet
view and for ``ExchangeOutcome.bytes_sent``/``bytes_received``.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import threading

from globetrain.errors import GlobetrainError
from globetrain.fleet.envelope import MAGIC, MessageKind

FRAME_HEADER = struct.Struct(">I")
FRAME_HEADER_BYTES = FRAME_HEADER.size


class TransportError(GlobetrainError):
    """A stream broke, timed out or carried a frame beyond its bound."""


def frame_kind(data: bytes) -> str:
    """The message kind label of an envelope frame (``other`` if it is not one)."""
    if len(data) > 5 and data[:4] == MAGIC and data[5] in MessageKind._value2member_map_:
        return MessageKind(data[5]).label
    return "other"


class ByteCounter:
    """Bytes on the wire per (direction, message kind), safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes: collections.Counter[tuple[str, str]] = collections.Counter()

    def add(self, direction: str, data_or_kind: bytes | str, size: int | None = None) -> int:
        kind = data_or_kind if isinstance(data_or_kind, str) else frame_kind(data_or_kind)
        amount = size if size is not None else len(data_or_kind) + FRAME_HEADER_BYTES
        with self._lock:
            self._bytes[(direction, kind)] += amount
        return amount

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{"sent": {kind: bytes}, "received": {kind: bytes}}``."""
        with self._lock:
            out: dict[str, dict[str, int]] = {"sent": {}, "received": {}}
            for (direction, kind), amount in sorted(self._bytes.items()):
                out.setdefault(direction, {})[kind] = amount
            return out

    def total(self, direction: str) -> int:
        with self._lock:
            return sum(amount for (d, _), amount in self._bytes.items() if d == direction)


class Conversation:
    """One libp2p stream: send and receive whole frames, each with a deadline."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote_peer_id: str,
        counter: ByteCounter,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.remote_peer_id = remote_peer_id
        self.counter = counter
        self.bytes_sent = 0
        self.bytes_received = 0

    async def send(self, data: bytes, *, timeout: float) -> None:
        try:
            self.writer.write(FRAME_HEADER.pack(len(data)))
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout=max(timeout, 0.0))
        except asyncio.TimeoutError:
            raise TransportError(f"sending {len(data)} bytes to {self.remote_peer_id} took over {timeout:.1f}s") from None
        except (ConnectionError, OSError, RuntimeError) as error:
            raise TransportError(f"stream to {self.remote_peer_id} broke while sending: {error}") from None
        self.bytes_sent += self.counter.add("sent", data)

    async def receive(self, *, max_bytes: int, timeout: float) -> bytes:
        try:
            return await asyncio.wait_for(self._receive(max_bytes), timeout=max(timeout, 0.0))
        except asyncio.TimeoutError:
            raise TransportError(f"no answer from {self.remote_peer_id} within {timeout:.1f}s") from None
        except asyncio.IncompleteReadError:
            raise TransportError(f"{self.remote_peer_id} closed the stream") from None
        except (ConnectionError, OSError) as error:
            raise TransportError(f"stream from {self.remote_peer_id} broke while receiving: {error}") from None

    async def _receive(self, max_bytes: int) -> bytes:
        (size,) = FRAME_HEADER.unpack(await self.reader.readexactly(FRAME_HEADER_BYTES))
        if size > max_bytes:
            raise TransportError(
                f"{self.remote_peer_id} announced a frame of {size} bytes, more than the {max_bytes} allowed here"
            )
        data = await self.reader.readexactly(size)
        self.bytes_received += self.counter.add("received", data)
        return data

    def close(self) -> None:
        try:
            self.writer.close()
        except (ConnectionError, OSError, RuntimeError):
            pass

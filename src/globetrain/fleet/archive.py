"""The last few rounds' aggregates, kept by every peer and served to peers that missed one.

A device that did not get round r's aggregate from its leader (the leader died after
serving some, or the stream broke) asks other peers for it before the round is due. The
archive stores the sealed envelope exactly as the leader sent it, so the asker checks it
like any aggregate. Request: an ``aggregate-request`` envelope for round r (empty
payload); answer: the aggregate envelope, or a ``reply`` ``{"found": false}``.
"""

from __future__ import annotations

import collections
import json
import threading

from globetrain.fleet.checks import RejectionLog
from globetrain.fleet.envelope import EnvelopeRejected, MessageKind, open_envelope, seal
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.transport import Conversation

MAX_REQUEST_FRAME = 4096


class AggregateArchive:
    """Sealed aggregates of the newest ``keep`` rounds."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._sealed: collections.OrderedDict[int, bytes] = collections.OrderedDict()

    def put(self, round_index: int, sealed: bytes) -> None:
        with self._lock:
            self._sealed[round_index] = sealed
            for old in sorted(self._sealed)[: max(len(self._sealed) - self.keep, 0)]:
                del self._sealed[old]

    def get(self, round_index: int) -> bytes | None:
        with self._lock:
            return self._sealed.get(round_index)

    def rounds(self) -> list[int]:
        with self._lock:
            return sorted(self._sealed)


class ArchiveService:
    """Answers ``aggregate-request`` streams from the archive."""

    def __init__(
        self, archive: AggregateArchive, keys: RunKeys, rejections: RejectionLog, *, me: str, name: str, timeout: float
    ) -> None:
        self.archive = archive
        self.keys = keys
        self.rejections = rejections
        self.me = me
        self.name = name
        self.timeout = timeout

    async def handle(self, conversation: Conversation) -> None:
        data = await conversation.receive(max_bytes=MAX_REQUEST_FRAME, timeout=self.timeout)
        try:
            request = open_envelope(self.keys, data, kinds=(MessageKind.AGGREGATE_REQUEST,), max_payload_bytes=0)
        except EnvelopeRejected as error:
            self.rejections.reject(
                "aggregate-request", error.reason, sender=error.sender or conversation.remote_peer_id,
                name=error.name, detail=error.detail,
            )
            return
        if request.sender != conversation.remote_peer_id:
            self.rejections.reject(
                "aggregate-request", "sender-mismatch", sender=conversation.remote_peer_id, name=request.name,
                detail=f"envelope names {request.sender}",
            )
            return
        sealed = self.archive.get(request.round)
        if sealed is None:
            sealed = seal(
                self.keys, MessageKind.REPLY, json.dumps({"found": False}).encode(),
                sender=self.me, name=self.name, round_index=request.round,
            )
        await conversation.send(sealed, timeout=self.timeout)

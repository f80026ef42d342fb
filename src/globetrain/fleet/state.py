"""Model state for late joiners and resyncs: served by every peer, downloaded in chunks.

What a device needs to join in step is the state every in-step device shares: the
global model, the outer optimizer (momentum buffers, step count), the next round to
apply, the global count of samples, and the digest of the run config it belongs to.
Error feedback is per device and is not part of it.

Every peer publishes a snapshot at each round boundary (``StateServer.publish``, cloned
on the training thread) and keeps the newest ``states_kept``. The bytes are a
deterministic encoding (``encode_state``: a JSON header and raw little-endian float32
tensors, no pickle), so in-step peers serve byte-identical states for the same round.
That is what makes a download resumable across peers: the manifest lists the SHA-256 of
every chunk and of the whole, and a download interrupted by a dying peer continues, chunk
by chunk, from another peer whose manifest for that round has the same digest. Each
chunk is checked on arrival and the whole before use; the download as a whole is bounded
in time.

Stream protocol (``state``): a ``state-request`` envelope with JSON
``{"what": "manifest", "round": null | r}`` or ``{"what": "chunk", "round": r, "index": i}``;
the answer is a ``state-manifest`` envelope, a ``state-chunk`` envelope (4-byte index,
then the bytes), or a ``reply`` ``{"found": false}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from globetrain.errors import CorruptPayload, GlobetrainError
from globetrain.fleet.checks import RejectionLog
from globetrain.fleet.envelope import EnvelopeRejected, MessageKind, open_envelope, seal
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.transport import Conversation, TransportError

log = logging.getLogger(__name__)

STATE_MAGIC = b"GTST"
STATE_VERSION = 1
MAX_STATE_HEADER = 1 << 20
MAX_MANIFEST_BYTES = 4 << 20
MAX_REQUEST_BYTES = 4096
_U32 = struct.Struct(">I")


class StateDownloadFailed(GlobetrainError):
    """No peer delivered a complete, verified state in time."""


# ------------------------------------------------------------------------------------------
# the state and its bytes


@dataclasses.dataclass
class StateSnapshot:
    """The shared state of in-step devices at a round boundary."""

    next_round: int
    """The first round not yet applied to ``global_params`` (``SyncLoop.round`` after loading)."""
    global_params: list[torch.Tensor]
    outer_lr: float
    outer_momentum: float
    outer_nesterov: bool
    outer_steps: int
    momentum_buffers: list[torch.Tensor] | None
    global_samples: int
    config_digest: str

    def loop_state(self) -> dict[str, Any]:
        """The dict ``SyncLoop.load_state_dict`` takes (error feedback stays the device's own)."""
        return {
            "round": self.next_round,
            "samples_total": self.global_samples,
            "global_params": [t.clone() for t in self.global_params],
            "outer": {
                "lr": self.outer_lr,
                "momentum": self.outer_momentum,
                "nesterov": self.outer_nesterov,
                "steps": self.outer_steps,
                "momentum_buffers": None if self.momentum_buffers is None else [b.clone() for b in self.momentum_buffers],
            },
            "error_feedback": None,
        }


def snapshot_from_loop(loop: Any, *, global_samples: int, config_digest: str) -> StateSnapshot:
    """Clone a ``SyncLoop``'s shared state (call on the thread that trains)."""
    outer = loop.outer.state_dict()
    # Rounds still in flight are not in the global model yet: the joiner applies them itself.
    next_round = int(loop.round) - len(loop.in_flight)
    return StateSnapshot(
        next_round=next_round,
        global_params=[g.detach().float().clone() for g in loop.global_params],
        outer_lr=float(outer["lr"]),
        outer_momentum=float(outer["momentum"]),
        outer_nesterov=bool(outer["nesterov"]),
        outer_steps=int(outer["steps"]),
        momentum_buffers=outer["momentum_buffers"],
        global_samples=int(global_samples),
        config_digest=config_digest,
    )


def encode_state(snapshot: StateSnapshot) -> bytes:
    """Deterministic bytes: magic, version, header length, JSON header, float32 tensors."""
    tensors = list(snapshot.global_params) + list(snapshot.momentum_buffers or [])
    header = {
        "next_round": snapshot.next_round,
        "global_samples": snapshot.global_samples,
        "config_digest": snapshot.config_digest,
        "outer": {
            "lr": snapshot.outer_lr,
            "momentum": snapshot.outer_momentum,
            "nesterov": snapshot.outer_nesterov,
            "steps": snapshot.outer_steps,
            "has_momentum": snapshot.momentum_buffers is not None,
        },
        "shapes": [list(t.shape) for t in snapshot.global_params],
    }
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    parts = [STATE_MAGIC, bytes([STATE_VERSION]), _U32.pack(len(head)), head]
    parts.extend(t.detach().to(torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes() for t in tensors)
    return b"".join(parts)


def decode_state(data: bytes, *, shapes: Sequence[tuple[int, ...]], config_digest: str | None) -> StateSnapshot:
    """Parse and check state bytes against the model's shapes and the run config's digest."""
    prefix = len(STATE_MAGIC) + 1 + _U32.size
    if len(data) < prefix or data[: len(STATE_MAGIC)] != STATE_MAGIC:
        raise CorruptPayload("not a globetrain state (bad magic)")
    if data[len(STATE_MAGIC)] != STATE_VERSION:
        raise CorruptPayload(f"state version {data[len(STATE_MAGIC)]} is not {STATE_VERSION}")
    (head_size,) = _U32.unpack_from(data, len(STATE_MAGIC) + 1)
    if head_size > MAX_STATE_HEADER or prefix + head_size > len(data):
        raise CorruptPayload("state header length is out of range")
    try:
        header = json.loads(data[prefix : prefix + head_size])
        outer = header["outer"]
        stated_shapes = [tuple(int(d) for d in s) for s in header["shapes"]]
        next_round = int(header["next_round"])
        global_samples = int(header["global_samples"])
        digest = str(header["config_digest"])
        has_momentum = bool(outer["has_momentum"])
        lr, momentum, nesterov, steps = float(outer["lr"]), float(outer["momentum"]), bool(outer["nesterov"]), int(outer["steps"])
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as error:
        # OverflowError (int(Infinity), float(10**400)) and RecursionError (deep nesting): found by the fuzz.
        raise CorruptPayload(f"state header is malformed: {str(error)[:200]}") from None
    expected = [tuple(int(d) for d in s) for s in shapes]
    if stated_shapes != expected:
        raise CorruptPayload(f"state is for parameter shapes {stated_shapes[:4]}..., this model has {expected[:4]}...")
    if config_digest is not None and digest != config_digest:
        raise CorruptPayload(f"state belongs to run config {digest[:12]}, this run's is {config_digest[:12]}")
    count = 2 if has_momentum else 1
    numel = sum(math.prod(s) for s in expected)
    body = memoryview(data)[prefix + head_size :]
    if len(body) != 4 * numel * count:
        raise CorruptPayload(f"state holds {len(body)} tensor bytes, expected {4 * numel * count}")
    tensors: list[torch.Tensor] = []
    offset = 0
    for _ in range(count):
        for shape in expected:
            size = math.prod(shape)
            values = torch.frombuffer(bytearray(body[offset : offset + 4 * size]), dtype=torch.float32).reshape(shape)
            if not bool(torch.isfinite(values).all()):
                raise CorruptPayload("state holds NaN or infinite values")
            tensors.append(values)
            offset += 4 * size
    params = tensors[: len(expected)]
    buffers = tensors[len(expected) :] if has_momentum else None
    return StateSnapshot(next_round, params, lr, momentum, nesterov, steps, buffers, global_samples, digest)


@dataclasses.dataclass(frozen=True)
class StateManifest:
    """How a state's bytes are cut into chunks, with their digests."""

    next_round: int
    total_bytes: int
    chunk_bytes: int
    chunk_digests: tuple[str, ...]
    digest: str
    config_digest: str

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, *, max_total_bytes: int) -> StateManifest:
        try:
            raw = json.loads(data)
            manifest = cls(
                next_round=int(raw["next_round"]),
                total_bytes=int(raw["total_bytes"]),
                chunk_bytes=int(raw["chunk_bytes"]),
                chunk_digests=tuple(str(d) for d in raw["chunk_digests"]),
                digest=str(raw["digest"]),
                config_digest=str(raw["config_digest"]),
            )
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as error:
            # OverflowError (int(Infinity)) and RecursionError (deep nesting): found by the fuzz.
            raise CorruptPayload(f"state manifest is malformed: {str(error)[:200]}") from None
        if not 0 < manifest.total_bytes <= max_total_bytes or manifest.chunk_bytes < 1:
            raise CorruptPayload(f"state manifest declares {manifest.total_bytes} bytes (bound {max_total_bytes})")
        if len(manifest.chunk_digests) != math.ceil(manifest.total_bytes / manifest.chunk_bytes):
            raise CorruptPayload("state manifest's chunk count does not match its sizes")
        return manifest

    def chunk_size(self, index: int) -> int:
        return min(self.chunk_bytes, self.total_bytes - index * self.chunk_bytes)


@dataclasses.dataclass(frozen=True)
class PreparedState:
    manifest: StateManifest
    chunks: tuple[bytes, ...]


def prepare_state(snapshot: StateSnapshot, chunk_bytes: int) -> PreparedState:
    data = encode_state(snapshot)
    chunks = tuple(data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes))
    manifest = StateManifest(
        next_round=snapshot.next_round,
        total_bytes=len(data),
        chunk_bytes=chunk_bytes,
        chunk_digests=tuple(hashlib.sha256(c).hexdigest() for c in chunks),
        digest=hashlib.sha256(data).hexdigest(),
        config_digest=snapshot.config_digest,
    )
    return PreparedState(manifest, chunks)


def state_size_bound(shapes: Sequence[tuple[int, ...]]) -> int:
    """Most bytes a state of this model can take (two float32 copies plus the header)."""
    return 8 * sum(math.prod(s) for s in shapes) + MAX_STATE_HEADER + 64


# ------------------------------------------------------------------------------------------
# serving


class StateServer:
    """Keeps the newest snapshots and answers ``state`` streams."""

    def __init__(
        self, keys: RunKeys, rejections: RejectionLog, *, me: str, name: str, keep: int, chunk_bytes: int, timeout: float
    ) -> None:
        self.keys = keys
        self.rejections = rejections
        self.me = me
        self.name = name
        self.keep = keep
        self.chunk_bytes = chunk_bytes
        self.timeout = timeout
        self._lock = threading.Lock()
        self._snapshots: dict[int, StateSnapshot] = {}
        self._prepared: dict[int, asyncio.Future[PreparedState]] = {}

    def publish(self, snapshot: StateSnapshot) -> None:
        with self._lock:
            self._snapshots[snapshot.next_round] = snapshot
            for old in sorted(self._snapshots)[: max(len(self._snapshots) - self.keep, 0)]:
                del self._snapshots[old]

    def newest_round(self) -> int:
        with self._lock:
            return max(self._snapshots, default=-1)

    async def prepared(self, round_index: int | None) -> PreparedState | None:
        with self._lock:
            if round_index is None:
                round_index = max(self._snapshots, default=None)
            snapshot = self._snapshots.get(round_index) if round_index is not None else None
            for old in [r for r in self._prepared if r not in self._snapshots]:
                del self._prepared[old]
        if snapshot is None or round_index is None:
            return None
        future = self._prepared.get(round_index)
        if future is None:
            # Encoding and hashing a large model is CPU work: keep it off the event loop.
            future = asyncio.ensure_future(
                asyncio.get_running_loop().run_in_executor(None, prepare_state, snapshot, self.chunk_bytes)
            )
            self._prepared[round_index] = future
        return await asyncio.shield(future)

    async def handle(self, conversation: Conversation) -> None:
        data = await conversation.receive(max_bytes=MAX_REQUEST_BYTES, timeout=self.timeout)
        try:
            request = open_envelope(self.keys, data, kinds=(MessageKind.STATE_REQUEST,), max_payload_bytes=1024)
            if request.sender != conversation.remote_peer_id:
                raise EnvelopeRejected("sender-mismatch", f"envelope names {request.sender}", name=request.name)
            what = json.loads(request.payload)
            if not isinstance(what, dict) or what.get("what") not in ("manifest", "chunk"):
                raise EnvelopeRejected("malformed", "state request is not {what: manifest|chunk}")
            if what.get("round") is not None and not isinstance(what.get("round"), int):
                # Was refused silently, neither counted nor logged (found by the fuzz).
                raise EnvelopeRejected("malformed", f"state request round {str(what.get('round'))[:40]} is not an integer")
        except (EnvelopeRejected, ValueError, RecursionError) as error:
            self.rejections.reject(
                "state-request", getattr(error, "reason", "malformed"),
                sender=getattr(error, "sender", "") or conversation.remote_peer_id,
                name=getattr(error, "name", ""), detail=str(error),
            )
            return
        round_index = what.get("round")
        state = await self.prepared(round_index)
        if state is None:
            answer = seal(self.keys, MessageKind.REPLY, b'{"found": false}', sender=self.me, name=self.name)
        elif what["what"] == "manifest":
            answer = seal(
                self.keys, MessageKind.STATE_MANIFEST, state.manifest.to_json(),
                sender=self.me, name=self.name, round_index=state.manifest.next_round,
            )
        else:
            index = what.get("index")
            if not isinstance(index, int) or not 0 <= index < len(state.chunks):
                answer = seal(self.keys, MessageKind.REPLY, b'{"found": false}', sender=self.me, name=self.name)
            else:
                answer = seal(
                    self.keys, MessageKind.STATE_CHUNK, _U32.pack(index) + state.chunks[index],
                    sender=self.me, name=self.name, round_index=state.manifest.next_round,
                )
        await conversation.send(answer, timeout=self.timeout)


# ------------------------------------------------------------------------------------------
# downloading


class StateSource(Protocol):
    """Where chunks come from: the network (``NetworkStateSource``) or a test's fake."""

    async def manifest(self, holder: str, round_index: int | None) -> StateManifest | None: ...

    async def chunk(self, holder: str, round_index: int, index: int, manifest: StateManifest) -> bytes | None: ...


class NetworkStateSource:
    """``StateSource`` over ``state`` streams of the fleet's peers."""

    def __init__(
        self,
        peer: Any,
        keys: RunKeys,
        protocol: str,
        *,
        connect_timeout: float,
        request_timeout: float,
        max_total_bytes: int,
        addresses: dict[str, Sequence[str]] | None = None,
    ) -> None:
        self.peer = peer
        self.addresses = addresses or {}
        self.keys = keys
        self.protocol = protocol
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.max_total_bytes = max_total_bytes

    async def _ask(self, holder: str, request: dict[str, Any], max_frame: int) -> bytes:
        conversation = await self.peer.converse(
            holder, self.protocol, timeout=self.connect_timeout, addresses=self.addresses.get(holder, ())
        )
        try:
            sealed = seal(self.keys, MessageKind.STATE_REQUEST, json.dumps(request).encode(), sender=self.peer.peer_id, name=self.peer.name)
            await conversation.send(sealed, timeout=self.request_timeout)
            return await conversation.receive(max_bytes=max_frame, timeout=self.request_timeout)
        finally:
            conversation.close()

    async def manifest(self, holder: str, round_index: int | None) -> StateManifest | None:
        answer = await self._ask(holder, {"what": "manifest", "round": round_index}, MAX_MANIFEST_BYTES + 1024)
        envelope = open_envelope(
            self.keys, answer, kinds=(MessageKind.STATE_MANIFEST, MessageKind.REPLY), max_payload_bytes=MAX_MANIFEST_BYTES
        )
        if envelope.kind is MessageKind.REPLY:
            return None
        return StateManifest.from_json(envelope.payload, max_total_bytes=self.max_total_bytes)

    async def chunk(self, holder: str, round_index: int, index: int, manifest: StateManifest) -> bytes | None:
        bound = manifest.chunk_bytes + _U32.size
        answer = await self._ask(holder, {"what": "chunk", "round": round_index, "index": index}, bound + 1024)
        envelope = open_envelope(self.keys, answer, kinds=(MessageKind.STATE_CHUNK, MessageKind.REPLY), max_payload_bytes=bound)
        if envelope.kind is MessageKind.REPLY:
            return None
        if len(envelope.payload) < _U32.size or _U32.unpack_from(envelope.payload)[0] != index:
            raise CorruptPayload(f"state chunk answer is not chunk {index}")
        return envelope.payload[_U32.size :]


@dataclasses.dataclass
class DownloadReport:
    """How a download went: which peers served which chunks, and the switches between them."""

    next_round: int = -1
    chunks: int = 0
    bytes: int = 0
    chunks_by_holder: dict[str, int] = dataclasses.field(default_factory=dict)
    resumes: int = 0
    seconds: float = 0.0


async def download_state(
    source: StateSource,
    holders: Sequence[str],
    *,
    shapes: Sequence[tuple[int, ...]],
    config_digest: str | None,
    timeout: float,
    report: DownloadReport | None = None,
    rejections: RejectionLog | None = None,
) -> StateSnapshot:
    """Download the newest state any of ``holders`` serves; resume from the next on failure.

    A holder that serves bad bytes (a manifest that does not parse, a chunk off its
    digest, a state that does not decode) is counted in ``rejections`` as ``state/<reason>``
    with its peer id and not asked again during this download; a manifest it offered is
    dropped, so a peer holding the key cannot keep a joiner from the honest peers' state.
    """
    report = report if report is not None else DownloadReport()
    distrusted: set[str] = set()
    manifest_from = ""
    started = time.monotonic()
    deadline = started + timeout
    manifest: StateManifest | None = None
    chunks: dict[int, bytes] = {}
    problems: list[str] = []
    if not holders:
        raise StateDownloadFailed("no peer serves model state yet (is any device past its first round?)")
    while time.monotonic() < deadline:
        progress = False
        for holder in holders:
            if time.monotonic() >= deadline:
                break
            if holder in distrusted:
                continue
            try:
                if manifest is None:
                    offered = await source.manifest(holder, None)
                    if offered is None:
                        continue
                    if config_digest is not None and offered.config_digest != config_digest:
                        problems.append(f"{holder}: state of another run config")
                        continue
                    manifest, chunks, manifest_from = offered, {}, holder
                    report.next_round = manifest.next_round
                else:
                    offered = await source.manifest(holder, manifest.next_round)
                    if offered is None or offered.digest != manifest.digest:
                        continue
                    report.resumes += 1
                    log.info("state download: resuming round %d from %s at chunk %d", manifest.next_round, holder, len(chunks))
                for index in range(len(manifest.chunk_digests)):
                    if index in chunks:
                        continue
                    data = await source.chunk(holder, manifest.next_round, index, manifest)
                    if data is None:
                        # A peer that moved on is not lying: not counted, asked again later.
                        raise GlobetrainError(f"no longer has chunk {index} of round {manifest.next_round}")
                    if len(data) != manifest.chunk_size(index) or hashlib.sha256(data).hexdigest() != manifest.chunk_digests[index]:
                        raise CorruptPayload(f"chunk {index} does not match the manifest's digest")
                    chunks[index] = data
                    progress = True
                    report.chunks += 1
                    report.bytes += len(data)
                    report.chunks_by_holder[holder] = report.chunks_by_holder.get(holder, 0) + 1
                whole = b"".join(chunks[i] for i in range(len(manifest.chunk_digests)))
                if hashlib.sha256(whole).hexdigest() != manifest.digest:
                    raise CorruptPayload("assembled state does not match the manifest's digest")
                snapshot = decode_state(whole, shapes=shapes, config_digest=config_digest)
                report.seconds = time.monotonic() - started
                return snapshot
            except CorruptPayload as error:
                # Was only logged at INFO, neither counted nor attributed (found by the hostile run).
                problems.append(f"{holder}: {error}")
                distrusted.add(holder)
                if rejections is not None:
                    rejections.reject("state", getattr(error, "reason", "corrupt"), sender=holder, detail=str(error))
                if holder == manifest_from:
                    manifest, chunks = None, {}
            except (TransportError, GlobetrainError, OSError) as error:
                problems.append(f"{holder}: {error}")
                log.info("state download from %s interrupted (%s); trying another peer", holder, error)
        if not progress and manifest is not None:
            # Nobody serves that round any more (peers moved on): start over with a newer one.
            manifest, chunks = None, {}
        await asyncio.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
    summary = "; ".join(problems[-4:]) or "no peer offered a state"
    raise StateDownloadFailed(f"state download timed out after {timeout:.0f}s ({summary}); raise network.state_download_timeout_s")

"""The leader's side of a round: collect contributions, check them, average, answer everyone.

Any peer runs this service; it acts for whatever round peers send to it (the roster makes
them agree on one leader per round). Per round a ``RoundCollection`` gathers what arrives
during the collection window, closing early once every peer the roster expects has
submitted. Then:

1. the outlier bounds (norm and samples, ``checks.OutlierBound``) refuse outsized updates;
2. the accepted updates are averaged, weighted by samples capped at the round's median
   (``sync.weighting``), and re-encoded (``aggregate``);
3. the aggregate envelope (with the contributor list, the total samples and the leader's
   global-model digest) goes to every contributor and listener of the round, on the
   stream each of them opened, and into this peer's archive.

Stream protocol (``contribute``): optional ``ping`` -> ``reply`` (for the sender's RTT),
then a ``contribution`` (empty payload = listen-only) -> ``reply`` ack
``{"accepted", "reason", "listening"}`` -> later the ``aggregate``. A contribution refused
for its content (stale, corrupt, non-finite, outsized...) still gets the aggregate: its
sender keeps its global model in step and takes its own update back into error feedback.
A message that fails the envelope checks (wrong key, tampered) gets nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence

from globetrain.compression import Codec, SparseTensorUpdate
from globetrain.errors import CorruptPayload
from globetrain.fleet.aggregate import (
    AggregateInfo,
    aggregate_codec,
    aggregate_seed,
    pack_aggregate,
    weighted_average,
)
from globetrain.fleet.archive import AggregateArchive
from globetrain.fleet.checks import (
    OutlierBound,
    RejectionLog,
    codec_rejection_reason,
    non_finite_problem,
    shape_problem,
    update_norm,
)
from globetrain.fleet.envelope import Envelope, EnvelopeRejected, MessageKind, open_envelope, seal
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.roster import Roster
from globetrain.fleet.run import RoundClock
from globetrain.fleet.transport import Conversation, frame_kind
from globetrain.sync.weighting import sample_weights

log = logging.getLogger(__name__)

DigestSource = Callable[[], "tuple[int, str] | None"]


@dataclasses.dataclass
class Received:
    sender: str
    name: str
    samples: int
    update: list[SparseTensorUpdate]
    norm: float


@dataclasses.dataclass(frozen=True)
class LeaderResult:
    sealed: bytes
    info: AggregateInfo


@dataclasses.dataclass(frozen=True)
class Admission:
    """What the leader makes of one submission."""

    accepted: bool
    reason: str = ""
    listening: bool = True
    """Whether the sender will get the aggregate (False: the stream is closed)."""
    result: asyncio.Future[LeaderResult] | None = None


class RoundCollection:
    def __init__(self, round_index: int) -> None:
        self.round = round_index
        self.contributions: dict[str, Received] = {}
        self.listeners: set[str] = set()
        self.arrived: set[str] = set()
        self.pending_decodes = 0
        self.closed = False
        self.result: asyncio.Future[LeaderResult] = asyncio.get_running_loop().create_future()
        self.wake = asyncio.Event()
        self.remote_recipients = 0


class LeaderService:
    """Collects, checks and averages the contributions sent to this peer."""

    def __init__(
        self,
        *,
        keys: RunKeys,
        clock: RoundClock,
        roster: Roster,
        archive: AggregateArchive,
        rejections: RejectionLog,
        shapes: Sequence[tuple[int, ...]],
        bits: int,
        me: str,
        name: str,
        digest_source: DigestSource,
        request_timeout: float,
        max_payload_bytes: int,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.fleet = clock.fleet
        self.roster = roster
        self.archive = archive
        self.rejections = rejections
        self.shapes = [tuple(int(d) for d in shape) for shape in shapes]
        self.numel = sum(_numel(shape) for shape in self.shapes)
        self.bits = bits
        self.me = me
        self.name = name
        self.digest_source = digest_source
        self.request_timeout = request_timeout
        self.max_payload_bytes = max_payload_bytes
        self.now = now
        self.collections: dict[int, RoundCollection] = {}
        self.norm_bound = OutlierBound(self.fleet.norm_kappa, self.fleet.norm_history)
        self.samples_bound = OutlierBound(self.fleet.norm_kappa, self.fleet.norm_history)
        self.rounds_led = 0

    @property
    def max_frame_bytes(self) -> int:
        return self.max_payload_bytes + 1024

    # -- the stream handler -------------------------------------------------------------------

    async def handle(self, conversation: Conversation) -> None:
        data = await conversation.receive(max_bytes=self.max_frame_bytes, timeout=self.request_timeout)
        if frame_kind(data) == MessageKind.PING.label:
            if self._open(conversation, data, MessageKind.PING, 0) is None:
                return
            await conversation.send(self._reply(0, {"pong": True}), timeout=self.request_timeout)
            data = await conversation.receive(max_bytes=self.max_frame_bytes, timeout=self.request_timeout)
        envelope = self._open(conversation, data, MessageKind.CONTRIBUTION, self.max_payload_bytes)
        if envelope is None:
            return
        admission = await self.admit(envelope)
        answer = {"accepted": admission.accepted, "reason": admission.reason, "listening": admission.listening}
        await conversation.send(self._reply(envelope.round, answer), timeout=self.request_timeout)
        if admission.result is None:
            return
        deadline = self.clock.aggregate_deadline(envelope.round)
        try:
            result = await asyncio.wait_for(asyncio.shield(admission.result), timeout=max(deadline - self.now(), 0.0))
        except asyncio.TimeoutError:
            return
        await conversation.send(result.sealed, timeout=max(deadline - self.now(), self.request_timeout))
        collection = self.collections.get(envelope.round)
        if collection is not None:
            collection.remote_recipients += 1

    def _open(self, conversation: Conversation, data: bytes, kind: MessageKind, bound: int) -> Envelope | None:
        try:
            envelope = open_envelope(self.keys, data, kinds=(kind,), max_payload_bytes=bound)
        except EnvelopeRejected as error:
            self.rejections.reject(
                kind.label, error.reason, sender=error.sender or conversation.remote_peer_id,
                name=error.name, detail=error.detail,
            )
            return None
        if envelope.sender != conversation.remote_peer_id:
            self.rejections.reject(
                kind.label, "sender-mismatch", sender=conversation.remote_peer_id, name=envelope.name,
                round_index=envelope.round, detail=f"envelope claims to be from {envelope.sender}",
            )
            return None
        return envelope

    def _reply(self, round_index: int, content: dict[str, object]) -> bytes:
        return seal(
            self.keys, MessageKind.REPLY, json.dumps(content).encode(), sender=self.me, name=self.name, round_index=round_index
        )

    # -- admission ----------------------------------------------------------------------------

    async def contribute_local(self, sealed: bytes) -> Admission:
        """This peer's own submission to a round it leads (no network, same checks)."""
        envelope = open_envelope(self.keys, sealed, kinds=(MessageKind.CONTRIBUTION,), max_payload_bytes=self.max_payload_bytes)
        return await self.admit(envelope)

    async def admit(self, envelope: Envelope) -> Admission:
        round_index = envelope.round
        listen = len(envelope.payload) == 0
        now = self.now()
        window = self.fleet.seconds(self.fleet.collection_window)

        def refuse(reason: str, detail: str, *, listening: bool, result: asyncio.Future[LeaderResult] | None = None) -> Admission:
            self.rejections.reject(
                "contribution", reason, sender=envelope.sender, name=envelope.name, round_index=round_index, detail=detail
            )
            return Admission(False, reason, listening and result is not None, result if listening else None)

        stored = self.archive.get(round_index)
        if stored is not None:
            done = _resolved(LeaderResult(stored, AggregateInfo(status="ok", leader=self.me)))
            if listen:
                return Admission(True, "", True, done)
            return refuse("stale-round", f"round {round_index} is already aggregated", listening=True, result=done)
        if now < self.clock.end_of(round_index) - window:
            return refuse(
                "future-round",
                f"round {round_index} ends in {self.clock.end_of(round_index) - now:.1f}s (sender's clock ahead?)",
                listening=False,
            )
        collection = self.collections.get(round_index)
        if collection is None:
            if now > self.clock.collection_deadline(round_index):
                if listen:
                    return Admission(False, "unknown-round", False)
                return refuse(
                    "stale-round",
                    f"round {round_index}'s collection window closed {now - self.clock.collection_deadline(round_index):.1f}s ago",
                    listening=False,
                )
            collection = self._open_collection(round_index)
        if envelope.sender in collection.arrived:
            return refuse("duplicate", f"second submission for round {round_index}", listening=False)
        if listen:
            collection.listeners.add(envelope.sender)
            collection.arrived.add(envelope.sender)
            collection.wake.set()
            return Admission(True, "", True, collection.result)
        if collection.closed:
            collection.listeners.add(envelope.sender)
            return refuse("stale-round", "arrived after the collection closed", listening=True, result=collection.result)
        if len(collection.contributions) + collection.pending_decodes >= self.fleet.max_group_size:
            collection.listeners.add(envelope.sender)
            collection.arrived.add(envelope.sender)
            return refuse(
                "group-full", f"{self.fleet.max_group_size} contributions already", listening=True, result=collection.result
            )
        collection.arrived.add(envelope.sender)
        collection.pending_decodes += 1
        try:
            problem, received = await asyncio.get_running_loop().run_in_executor(None, self._decode, envelope)
        finally:
            collection.pending_decodes -= 1
        if problem is not None:
            collection.listeners.add(envelope.sender)
            collection.wake.set()
            return refuse(problem[0], problem[1], listening=True, result=collection.result)
        if collection.closed:
            collection.listeners.add(envelope.sender)
            return refuse("stale-round", "arrived after the collection closed", listening=True, result=collection.result)
        assert received is not None
        collection.contributions[envelope.sender] = received
        collection.wake.set()
        return Admission(True, "", True, collection.result)

    def _decode(self, envelope: Envelope) -> tuple[tuple[str, str] | None, Received | None]:
        try:
            update = Codec(1.0, 32, max_elements=max(self.numel, 1)).decode_sparse(envelope.payload)
        except CorruptPayload as error:
            return (codec_rejection_reason(error), str(error)), None
        problem = shape_problem(update, self.shapes)
        if problem is not None:
            return ("shape-mismatch", problem), None
        problem = non_finite_problem(update)
        if problem is not None:
            return ("non-finite", problem), None
        return None, Received(envelope.sender, envelope.name, envelope.samples, update, update_norm(update))

    # -- closing a round ----------------------------------------------------------------------

    def _open_collection(self, round_index: int) -> RoundCollection:
        collection = RoundCollection(round_index)
        self.collections[round_index] = collection
        for old in [r for r in self.collections if r < round_index - self.fleet.aggregates_kept]:
            del self.collections[old]
        asyncio.get_running_loop().create_task(self._close_when_due(collection))
        return collection

    async def _close_when_due(self, collection: RoundCollection) -> None:
        round_index = collection.round
        try:
            while True:
                remaining = self.clock.collection_deadline(round_index) - self.now()
                if remaining <= 0 or self._complete(collection):
                    break
                collection.wake.clear()
                try:
                    await asyncio.wait_for(collection.wake.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
            collection.closed = True
            result = await self._finish(collection)
        except asyncio.CancelledError:
            collection.closed = True
            if not collection.result.done():
                collection.result.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - the round fails, the service goes on
            log.error("[%s round %d] aggregation failed: %s", self.name, round_index, error)
            result = self._seal(round_index, AggregateInfo(status="failed", leader=self.me, reason=f"aggregation failed: {error}"), b"", 0)
        self.archive.put(round_index, result.sealed)
        if not collection.result.done():
            collection.result.set_result(result)

    def _complete(self, collection: RoundCollection) -> bool:
        if collection.pending_decodes or self.now() < self.clock.end_of(collection.round):
            return False
        expected = self.roster.participants(collection.round)
        return bool(collection.arrived) and expected <= collection.arrived

    async def _finish(self, collection: RoundCollection) -> LeaderResult:
        round_index = collection.round
        received = list(collection.contributions.values())
        norm_verdicts = self.norm_bound.judge({r.sender: r.norm for r in received})
        samples_verdicts = self.samples_bound.judge({r.sender: float(r.samples) for r in received})
        accepted: list[Received] = []
        for item in received:
            norm_limit, samples_limit = norm_verdicts[item.sender], samples_verdicts[item.sender]
            if norm_limit is not None:
                reason, detail = "norm-bound", f"norm {item.norm:.4g} exceeds the bound {norm_limit:.4g}"
            elif samples_limit is not None:
                reason, detail = "samples-bound", f"{item.samples} samples exceed the bound {samples_limit:.4g}"
            else:
                accepted.append(item)
                continue
            self.rejections.reject("contribution", reason, sender=item.sender, name=item.name, round_index=round_index, detail=detail)
            collection.listeners.add(item.sender)
        self.norm_bound.remember([item.norm for item in accepted])
        self.samples_bound.remember([float(item.samples) for item in accepted])
        listeners = len(collection.listeners - {item.sender for item in accepted})
        if not accepted:
            info = AggregateInfo(
                status="failed", leader=self.me, listeners=listeners,
                reason=f"no contribution accepted ({len(received)} received, {listeners} listeners)",
            )
            log.warning("[%s round %d] leader: %s", self.name, round_index, info.reason)
            return self._seal(round_index, info, b"", 0)
        accepted.sort(key=lambda item: item.sender)
        payload, codec = await asyncio.get_running_loop().run_in_executor(None, self._average, accepted, round_index)
        base = self.digest_source()
        info = AggregateInfo(
            status="ok",
            leader=self.me,
            contributors=tuple(item.sender for item in accepted),
            listeners=listeners,
            base_round=None if base is None else base[0],
            base_digest=None if base is None else base[1],
            density=codec.density,
            bits=codec.bits,
        )
        total_samples = sum(max(item.samples, 0) for item in accepted)
        self.rounds_led += 1
        log.info(
            "[%s round %d] leader: averaged %d contributions (%d samples) for %d listeners, %d bytes; "
            "samples/norm per sender: %s",
            self.name, round_index, len(accepted), total_samples, listeners, len(payload),
            ", ".join(f"{item.name} {item.samples}/{item.norm:.3g}" for item in accepted),
        )
        return self._seal(round_index, info, payload, total_samples)

    def _average(self, accepted: list[Received], round_index: int) -> tuple[bytes, Codec]:
        weights = sample_weights([item.samples for item in accepted])
        average = weighted_average([item.update for item in accepted], weights, self.shapes)
        codec = aggregate_codec(
            [item.update for item in accepted],
            density_factor=self.fleet.aggregate_density_factor,
            bits=self.bits,
            max_elements=max(self.numel, 1),
        )
        return codec.encode(average, seed=aggregate_seed(self.keys.run_id, round_index)), codec

    def _seal(self, round_index: int, info: AggregateInfo, payload: bytes, samples: int) -> LeaderResult:
        sealed = seal(
            self.keys, MessageKind.AGGREGATE, pack_aggregate(info, payload),
            sender=self.me, name=self.name, round_index=round_index, samples=samples,
        )
        return LeaderResult(sealed, info)


def _resolved(result: LeaderResult) -> asyncio.Future[LeaderResult]:
    future: asyncio.Future[LeaderResult] = asyncio.get_running_loop().create_future()
    future.set_result(result)
    return future


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


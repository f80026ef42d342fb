"""What the fuzz feeds: the wire decoder and every message a device receives, through the real code.

Each ``FuzzTarget`` names one receiving function, the valid messages its inputs are
mutated from (``seeds``), whether they are JSON (structured mutations apply), and the
exceptions that count as a documented refusal (``allowed``). Anything else escaping the
function, or a refusal that leaves no trace in the ``RejectionLog`` where the protocol
promises one, is a finding.

Messages inside envelopes are fuzzed twice over: the plaintext is mutated and sealed
again with the run key (what a rogue holding the key can send: it reaches the payload
parsers), and the sealed bytes are mutated (what anybody on the path can send: it
reaches the envelope checks). The receiving functions are the ones the services call,
with the network replaced by a scripted stream (``ScriptedConversation``):

| target | receiving code |
| --- | --- |
| codec-decode | ``Codec.decode`` / ``decode_sparse`` (any payload, any codec) |
| envelope | ``open_envelope`` on sealed messages of every kind |
| frame | ``Conversation.receive`` (length-prefixed frames on a stream) |
| contribution | ``LeaderService._open`` + ``_decode`` (what ``admit`` runs on a contribution) |
| aggregate | ``FleetExchange._outcome`` (every check a device applies to an aggregate) |
| reply | ``FleetExchange._open_reply`` (pong and ack from a leader) |
| roster-record | ``Roster._open`` (DHT roster entries) |
| run-config | ``open_run_config`` (the published run config) |
| state-request | ``StateServer.handle`` (a peer asking for state) |
| aggregate-request | ``ArchiveService.handle`` (a peer asking for an archived aggregate) |
| state-manifest / state-chunk | ``NetworkStateSource.manifest`` / ``.chunk`` (a downloader's answers) |
| state-bytes | ``decode_state`` (an assembled state) |
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import struct
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from globetrain.compression import Codec
from globetrain.compression.wire import PayloadWriter
from globetrain.errors import CorruptPayload, ExchangeFailed, GlobetrainError
from globetrain.fleet.aggregate import AggregateInfo, pack_aggregate
from globetrain.fleet.archive import AggregateArchive, ArchiveService
from globetrain.fleet.checks import RejectionLog
from globetrain.fleet.config import FleetConfig, FleetNetworkConfig
from globetrain.fleet.envelope import EnvelopeRejected, MessageKind, open_envelope, seal
from globetrain.fleet.exchange import FleetExchange, RoundTraffic
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.leader import LeaderService
from globetrain.fleet.roster import Roster, RosterRecord
from globetrain.fleet.run import RunConfig, open_run_config
from globetrain.fleet.state import (
    NetworkStateSource,
    StateServer,
    StateSnapshot,
    decode_state,
    encode_state,
    prepare_state,
    state_size_bound,
)
from globetrain.fleet.transport import ByteCounter, Conversation, TransportError
from globetrain.sync.exchange import Contribution

FUZZ_RUN_KEY = "00" * 31 + "2a"
RECEIVER = "12D3KooWFuzzReceiverPeerIdAAAAAAAAAAAAAAAAAAAAAAAAAAA"
SENDER = "12D3KooWFuzzSenderPeerIdBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
SHAPES: list[tuple[int, ...]] = [(8, 6), (8,), (3, 3, 2), (1,)]
ROUND = 40
_U32 = struct.Struct(">I")


REFUSED = "refused"


class Finding(Exception):
    """A target's contract was broken without an exception (e.g. a refusal nobody counted)."""


@dataclasses.dataclass
class FuzzTarget:
    name: str
    seeds: list[bytes]
    check: Callable[[bytes], str | None]
    """Feeds one input to the receiving code: ``REFUSED`` if it refused it without raising; raises on a finding."""
    allowed: tuple[type[BaseException], ...]
    json: bool = False
    sealed_fraction: float = 0.0
    """Share of inputs whose sealed form (not the plaintext) is mutated, for enveloped messages."""
    reseal: Callable[[bytes], bytes] | None = None
    """Plaintext -> sealed message; ``check`` takes sealed bytes when this is set."""


class ScriptedConversation:
    """A ``Conversation`` whose peer sends ``incoming`` frames and whose answers are kept."""

    def __init__(self, incoming: Sequence[bytes], remote_peer_id: str = SENDER) -> None:
        self.incoming = list(incoming)
        self.remote_peer_id = remote_peer_id
        self.sent: list[bytes] = []
        self.bytes_sent = 0
        self.bytes_received = 0

    async def receive(self, *, max_bytes: int, timeout: float) -> bytes:
        if not self.incoming:
            raise TransportError(f"{self.remote_peer_id} closed the stream")
        data = self.incoming.pop(0)
        if len(data) > max_bytes:
            raise TransportError(f"frame of {len(data)} bytes over the bound of {max_bytes}")
        return data

    async def send(self, data: bytes, *, timeout: float) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


def example_update(scale: float = 1.0, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) * scale for shape in SHAPES]


def nan_payload(shapes: Sequence[tuple[int, ...]]) -> bytes:
    """A well-formed dense float32 payload of NaN values (the codec refuses to encode one)."""
    writer = PayloadWriter(len(shapes))
    for shape in shapes:
        numel = int(torch.Size(shape).numel())
        writer.u8(0)
        writer.u8(len(shape))
        for dim in shape:
            writer.varint(dim)
        writer.u8(0)
        writer.u8(32)
        writer.varint(numel)
        writer.raw(torch.full((numel,), float("nan")).numpy().astype("<f4").tobytes())
    return writer.seal()


def codec_seeds() -> list[bytes]:
    seeds = []
    for index, (density, bits) in enumerate([(1.0, 32), (1.0, 16), (0.3, 8), (0.1, 4), (0.05, 2), (0.5, 8), (1.0, 8)]):
        seeds.append(Codec(density, bits).encode(example_update(seed=index), seed=index))
    seeds.append(Codec(0.2, 8).encode([torch.zeros(4096)], seed=1))
    seeds.append(nan_payload(SHAPES))
    return seeds


class FuzzWorld:
    """The receiving side of one fleet peer, built once and reused by every input."""

    def __init__(self) -> None:
        self.keys = RunKeys.from_text(FUZZ_RUN_KEY)
        self.fleet = FleetConfig()
        self.run_config = RunConfig(start_time=time.time() - ROUND * self.fleet.round_period_s - 1.0, fleet=self.fleet)
        self.clock = self.run_config.clock()
        self.rejections = RejectionLog("fuzz")
        self.loop = asyncio.new_event_loop()
        peer = SimpleNamespace(peer_id=RECEIVER, name="fuzz-receiver", addresses=[], book=SimpleNamespace(remember=lambda _: None))
        self.roster = Roster(peer, self.keys, self.clock, role="device", rejections=self.rejections)  # type: ignore[arg-type]
        self.archive = AggregateArchive(self.fleet.aggregates_kept)
        self.archive.put(ROUND - 1, self.sealed(MessageKind.AGGREGATE, b"archived", round_index=ROUND - 1))
        bound = Codec(1.0, 32).estimate_payload_bytes(SHAPES) * 5 // 4 + 4096
        self.leader = LeaderService(
            keys=self.keys, clock=self.clock, roster=self.roster, archive=self.archive, rejections=self.rejections,
            shapes=SHAPES, bits=8, me=RECEIVER, name="fuzz-receiver", digest_source=lambda: None,
            request_timeout=1.0, max_payload_bytes=bound,
        )
        self.exchange = FleetExchange(
            peer=peer, keys=self.keys, clock=self.clock, roster=self.roster, leader=self.leader,  # type: ignore[arg-type]
            archive=self.archive, rejections=self.rejections, shapes=SHAPES, network=FleetNetworkConfig(),
        )
        self.archive_service = ArchiveService(
            self.archive, self.keys, self.rejections, me=RECEIVER, name="fuzz-receiver", timeout=1.0
        )
        self.state_server = StateServer(
            self.keys, self.rejections, me=RECEIVER, name="fuzz-receiver", keep=2, chunk_bytes=256, timeout=1.0
        )
        self.snapshot = StateSnapshot(
            next_round=ROUND, global_params=example_update(seed=7), outer_lr=0.7, outer_momentum=0.9,
            outer_nesterov=True, outer_steps=ROUND, momentum_buffers=example_update(0.1, seed=8), global_samples=1234,
            config_digest=self.run_config.digest,
        )
        self.state_server.publish(self.snapshot)
        self.prepared = prepare_state(self.snapshot, 256)
        self.state_source = ScriptedStateSource(self)

    def sealed(self, kind: MessageKind, payload: bytes, *, round_index: int = ROUND, samples: int = 0,
               sender: str = SENDER) -> bytes:
        return seal(self.keys, kind, payload, sender=sender, name="fuzz-sender", round_index=round_index, samples=samples)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.close()


class ScriptedStateSource(NetworkStateSource):
    """``NetworkStateSource`` whose holder answers with the fuzz input instead of the network."""

    def __init__(self, world: FuzzWorld) -> None:
        super().__init__(None, world.keys, "/fuzz/state", connect_timeout=1.0, request_timeout=1.0,
                         max_total_bytes=state_size_bound(SHAPES))
        self.answer = b""

    async def _ask(self, holder: str, request: dict[str, Any], max_frame: int) -> bytes:
        if len(self.answer) > max_frame:
            raise TransportError(f"frame of {len(self.answer)} bytes over the bound of {max_frame}")
        return self.answer


def _counted(world: FuzzWorld, before: int, what: str) -> str:
    if world.rejections.total() <= before:
        raise Finding(f"{what} was refused without a counted rejection")
    return REFUSED


def build_targets(world: FuzzWorld) -> list[FuzzTarget]:
    """Every target, bound to ``world``."""
    keys = world.keys
    codec_payloads = codec_seeds()

    def codec_decode(data: bytes) -> None:
        # Alternate the paths receivers use: plain decode, decode against expected
        # shapes, and the sparse form under a leader-sized element bound.
        selector = len(data) % 3
        if selector == 0:
            Codec(1.0, 32).decode(data)
        elif selector == 1:
            Codec(0.1, 8).decode(data, expect=SHAPES)
        else:
            Codec(1.0, 32, max_elements=world.leader.numel).decode_sparse(data)

    def envelope(data: bytes) -> None:
        opened = open_envelope(keys, data, kinds=tuple(MessageKind), max_payload_bytes=1 << 20)
        if opened.sender == "" or len(opened.sender) > 64:
            raise Finding(f"an envelope opened with sender {opened.sender!r}")

    def frame(data: bytes) -> None:
        async def read() -> None:
            reader = asyncio.StreamReader()
            reader.feed_data(data)
            reader.feed_eof()
            conversation = Conversation(reader, SimpleNamespace(), SENDER, ByteCounter())  # type: ignore[arg-type]
            while True:
                await conversation.receive(max_bytes=4096, timeout=1.0)

        world.run(read())

    def contribution(sealed: bytes) -> str | None:
        before = world.rejections.total()
        conversation = ScriptedConversation([])
        opened = world.leader._open(conversation, sealed, MessageKind.CONTRIBUTION, world.leader.max_payload_bytes)  # type: ignore[arg-type]
        if opened is None:
            return _counted(world, before, "a contribution envelope")
        problem, received = world.leader._decode(opened)
        if problem is None and received is None:
            raise Finding("the leader's decode returned neither a problem nor an update")
        if received is not None and not all(torch.isfinite(part.values).all() for part in received.update):
            raise Finding("a contribution with non-finite values was admitted")
        return REFUSED if problem is not None else None

    own = Codec(0.3, 8).encode(example_update(seed=3), seed=ROUND)

    def aggregate(sealed: bytes) -> str | None:
        before = world.rejections.total()
        try:
            outcome = world.exchange._outcome(Contribution(ROUND, own, 16), sealed, RoundTraffic(), time.monotonic())
        except ExchangeFailed as error:
            if "reported:" in str(error):  # a leader's own "failed" status is not a rejection
                return REFUSED
            return _counted(world, before, "an aggregate")
        if not all(bool(torch.isfinite(t).all()) for t in outcome.update):
            raise Finding("an aggregate with non-finite values was accepted")
        return None

    def reply(sealed: bytes) -> None:
        content = FleetExchange._open_reply(world.exchange, sealed, SENDER)
        content.get("accepted", False)  # what the contributor does next with it

    def roster_record(sealed: bytes) -> str | None:
        before = world.rejections.total()
        if len(world.roster._bad_entries) > 10_000:
            world.roster._bad_entries.clear()  # the fuzz's own memory, not the protocol's
        # The roster counts a bad DHT entry once, not at every refresh that sees it again.
        seen = hashlib.sha256(repr((SENDER, sealed)).encode()).digest() in world.roster._bad_entries
        record = world.roster._open(SENDER, sealed)
        if record is None:
            return REFUSED if seen else _counted(world, before, "a roster entry")
        return None

    def run_config(sealed: bytes) -> None:
        open_run_config(keys, sealed)

    def state_request(sealed: bytes) -> str | None:
        before = world.rejections.total()
        conversation = ScriptedConversation([sealed])
        world.run(world.state_server.handle(conversation))  # type: ignore[arg-type]
        return None if conversation.sent else _counted(world, before, "a state request")

    def aggregate_request(sealed: bytes) -> str | None:
        before = world.rejections.total()
        conversation = ScriptedConversation([sealed])
        world.run(world.archive_service.handle(conversation))  # type: ignore[arg-type]
        return None if conversation.sent else _counted(world, before, "an aggregate request")

    def state_manifest(sealed: bytes) -> None:
        world.state_source.answer = sealed
        world.run(world.state_source.manifest(SENDER, None))

    def state_chunk(sealed: bytes) -> None:
        world.state_source.answer = sealed
        world.run(world.state_source.chunk(SENDER, ROUND, 1, world.prepared.manifest))

    def state_bytes(data: bytes) -> None:
        decode_state(data, shapes=SHAPES, config_digest=world.run_config.digest)

    def resealer(kind: MessageKind, *, samples: int = 0, round_index: int = ROUND) -> Callable[[bytes], bytes]:
        return lambda payload: world.sealed(kind, payload, samples=samples, round_index=round_index)

    now = time.time()
    roster_seed = RosterRecord(
        peer_id=SENDER, name="fuzz-sender", role="device", addresses=(f"/ip4/127.0.0.1/tcp/4001/p2p/{SENDER}",),
        joined_at=now - 100, heartbeat_at=now, alive_until=now + 60, active_round=ROUND, uplink_bucket=7,
        previous_uplink_bucket=6, bucket_from_round=ROUND - 2, state_round=ROUND, bytes_sent=1000, bytes_received=2000,
        inner_steps=50,
    ).to_json()
    info = AggregateInfo(status="ok", leader=SENDER, contributors=(RECEIVER, SENDER), listeners=1,
                         base_round=ROUND - 2, base_digest="ab" * 32, density=0.6, bits=8)
    aggregate_seeds = [
        pack_aggregate(info, Codec(0.6, 8).encode(example_update(0.01, seed=5), seed=ROUND)),
        pack_aggregate(dataclasses.replace(info, density=1.0, bits=32), Codec(1.0, 32).encode(example_update(0.01, seed=6))),
        pack_aggregate(AggregateInfo(status="failed", leader=SENDER, reason="nothing acceptable"), b""),
    ]
    manifest = world.prepared.manifest
    state_seed = encode_state(world.snapshot)
    every_kind = [world.sealed(kind, b'{"found": false}', samples=3) for kind in MessageKind]

    return [
        FuzzTarget("codec-decode", codec_payloads, codec_decode, (CorruptPayload,)),
        FuzzTarget("envelope", every_kind, envelope, (EnvelopeRejected,)),
        FuzzTarget("frame", [_U32.pack(len(m)) + m for m in every_kind[:3]] + [b"\x00\x00\x00\x04abcd" * 3], frame,
                   (TransportError,)),
        FuzzTarget("contribution", codec_payloads, contribution, (), sealed_fraction=0.25,
                   reseal=resealer(MessageKind.CONTRIBUTION, samples=16)),
        FuzzTarget("aggregate", aggregate_seeds, aggregate, (), sealed_fraction=0.25,
                   reseal=resealer(MessageKind.AGGREGATE, samples=48)),
        FuzzTarget("reply", [b'{"pong": true}', b'{"accepted": true, "reason": "", "listening": true}',
                             b'{"found": false}'], reply, (CorruptPayload,), json=True, sealed_fraction=0.25,
                   reseal=resealer(MessageKind.REPLY)),
        FuzzTarget("roster-record", [roster_seed], roster_record, (), json=True, sealed_fraction=0.25,
                   reseal=resealer(MessageKind.ROSTER)),
        FuzzTarget("run-config", [world.run_config.to_json()], run_config, (GlobetrainError,), json=True,
                   sealed_fraction=0.1, reseal=resealer(MessageKind.RUN_CONFIG)),
        FuzzTarget("state-request", [b'{"what": "manifest", "round": null}', b'{"what": "chunk", "round": 40, "index": 1}',
                                     b'{"what": "manifest", "round": 40}'], state_request, (TransportError,), json=True,
                   sealed_fraction=0.25, reseal=resealer(MessageKind.STATE_REQUEST)),
        FuzzTarget("aggregate-request", [b""], aggregate_request, (TransportError,), sealed_fraction=0.6,
                   reseal=resealer(MessageKind.AGGREGATE_REQUEST, round_index=ROUND - 1)),
        FuzzTarget("state-manifest", [manifest.to_json()], state_manifest, (GlobetrainError,), json=True,
                   sealed_fraction=0.2, reseal=resealer(MessageKind.STATE_MANIFEST)),
        FuzzTarget("state-chunk", [_U32.pack(1) + world.prepared.chunks[1], _U32.pack(1)], state_chunk,
                   (GlobetrainError,), sealed_fraction=0.2, reseal=resealer(MessageKind.STATE_CHUNK)),
        FuzzTarget("state-bytes", [state_seed], state_bytes, (CorruptPayload,)),
    ]


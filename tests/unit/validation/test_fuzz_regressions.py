"""What the fuzz and the hostile run found in the fleet's parsers, each fixed and pinned here.

- JSON nested deeper than the interpreter's recursion limit raised ``RecursionError`` out
  of every JSON parser (roster record, run config, state manifest and header, aggregate
  info, leader reply, state request);
- ``Infinity`` and integers beyond float range raised ``OverflowError`` (manifest, state
  header, roster numbers, aggregate density); a run config without ``start_time`` raised
  ``TypeError``;
- a state request whose round is not an integer was dropped without being counted;
- a peer serving bad state bytes was neither counted nor attributed, and a poisoned
  manifest it offered kept a joiner from the honest peers' state for the whole download.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from globetrain.errors import CorruptPayload
from globetrain.fleet.aggregate import AggregateInfo, unpack_aggregate
from globetrain.fleet.checks import RejectionLog
from globetrain.fleet.envelope import EnvelopeRejected, MessageKind
from globetrain.fleet.exchange import FleetExchange
from globetrain.fleet.roster import RosterRecord
from globetrain.fleet.run import RunConfig
from globetrain.fleet.state import (
    StateManifest,
    StateSnapshot,
    decode_state,
    download_state,
    prepare_state,
)
from globetrain.validation.fuzz_targets import SENDER, FuzzWorld, ScriptedConversation
from globetrain.validation.hostile_tampering import poisoned_state

DEEP = b"[" * 5000 + b"]" * 5000


@pytest.fixture(scope="module")
def world() -> FuzzWorld:
    return FuzzWorld()


def test_deeply_nested_json_is_refused_as_corrupt_everywhere(world: FuzzWorld) -> None:
    with pytest.raises(CorruptPayload):
        RosterRecord.from_json(DEEP)
    with pytest.raises(CorruptPayload):
        RunConfig.from_json(DEEP)
    with pytest.raises(CorruptPayload):
        StateManifest.from_json(DEEP, max_total_bytes=1 << 20)
    with pytest.raises(CorruptPayload):
        AggregateInfo.from_json(DEEP, max_contributors=8)
    with pytest.raises(CorruptPayload):
        FleetExchange._open_reply(world.exchange, world.sealed(MessageKind.REPLY, DEEP), SENDER)
    header = json.dumps({"x": "PLACEHOLDER"}).encode().replace(b'"PLACEHOLDER"', DEEP)
    with pytest.raises(CorruptPayload):
        decode_state(b"GTST\x01" + len(header).to_bytes(4, "big") + header, shapes=[(2,)], config_digest=None)


def test_numbers_beyond_float_range_and_missing_fields_are_refused_as_corrupt(world: FuzzWorld) -> None:
    manifest = json.loads(world.prepared.manifest.to_json())
    with pytest.raises(CorruptPayload):
        StateManifest.from_json(json.dumps({**manifest, "total_bytes": float("inf")}).encode(), max_total_bytes=1 << 20)
    record = json.loads(RosterRecord("p", "n", "device", (), 1.0, 2.0, 3.0).to_json())
    with pytest.raises(CorruptPayload):
        RosterRecord.from_json(json.dumps({**record, "joined_at": 10**400}).encode())
    info = json.loads(AggregateInfo(status="ok", leader="p").to_json())
    with pytest.raises(CorruptPayload):
        unpack_aggregate(_packed(json.dumps({**info, "density": 10**400}).encode()), max_contributors=8)
    config = json.loads(world.run_config.to_json())
    del config["start_time"]
    with pytest.raises(CorruptPayload):
        RunConfig.from_json(json.dumps(config).encode())
    header = {"next_round": float("inf"), "global_samples": 1, "config_digest": "c", "shapes": [[2]],
              "outer": {"lr": 1, "momentum": 0, "nesterov": False, "steps": 0, "has_momentum": False}}
    head = json.dumps(header).encode()
    with pytest.raises(CorruptPayload):
        decode_state(b"GTST\x01" + len(head).to_bytes(4, "big") + head + b"\x00" * 8, shapes=[(2,)], config_digest=None)


def _packed(meta: bytes) -> bytes:
    return len(meta).to_bytes(4, "big") + meta


def test_a_state_request_whose_round_is_not_an_integer_is_counted_with_its_sender(world: FuzzWorld) -> None:
    before = world.rejections.counts().get("state-request/malformed", 0)
    conversation = ScriptedConversation([world.sealed(MessageKind.STATE_REQUEST, b'{"what": "manifest", "round": "latest"}')])
    world.run(world.state_server.handle(conversation))  # type: ignore[arg-type]
    assert conversation.sent == []
    assert world.rejections.counts()["state-request/malformed"] == before + 1
    assert world.rejections.by_sender()[SENDER]["reasons"]["state-request/malformed"] >= 1


SHAPES = [(6, 4), (3,)]


class LyingAndHonestHolders:
    """``liar`` serves a NaN state whose chunks match its manifest; ``honest`` serves the real one."""

    def __init__(self) -> None:
        snapshot = StateSnapshot(5, [torch.ones(s) for s in SHAPES], 0.7, 0.9, True, 5, None, 10, "c0ffee")
        self.prepared = {"liar": poisoned_state(SHAPES, next_round=5, config_digest="c0ffee", chunk_bytes=32),
                         "honest": prepare_state(snapshot, 32)}
        self.asked: list[str] = []

    async def manifest(self, holder: str, round_index: int | None) -> StateManifest | None:
        self.asked.append(holder)
        return self.prepared[holder].manifest

    async def chunk(self, holder: str, round_index: int, index: int, manifest: StateManifest) -> bytes | None:
        return self.prepared[holder].chunks[index]


def test_a_holder_serving_a_poisoned_state_is_counted_and_not_asked_again() -> None:
    source = LyingAndHonestHolders()
    rejections = RejectionLog("joiner")
    snapshot = asyncio.run(download_state(source, ["liar", "honest"], shapes=SHAPES, config_digest="c0ffee",
                                          timeout=10, rejections=rejections))
    assert all(bool(torch.isfinite(t).all()) for t in snapshot.global_params)
    assert torch.equal(snapshot.global_params[0], torch.ones(SHAPES[0]))
    assert rejections.by_sender()["liar"]["reasons"] == {"state/corrupt": 1}
    assert source.asked.count("liar") == 1


def test_envelope_rejections_from_a_state_holder_keep_their_reason() -> None:
    class BadTag(LyingAndHonestHolders):
        async def manifest(self, holder: str, round_index: int | None) -> StateManifest | None:
            if holder == "liar":
                raise EnvelopeRejected("bad-tag", "changed on the way", sender="liar")
            return await super().manifest(holder, round_index)

    rejections = RejectionLog("joiner")
    asyncio.run(download_state(BadTag(), ["liar", "honest"], shapes=SHAPES, config_digest="c0ffee", timeout=10,
                               rejections=rejections))
    assert rejections.counts() == {"state/bad-tag": 1}

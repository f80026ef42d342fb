"""A leader's round without a network: checks, sample-weighted average, the aggregate message."""

from __future__ import annotations

import asyncio

import torch

from globetrain.compression import Codec
from globetrain.fleet.aggregate import (
    AggregateInfo,
    pack_aggregate,
    returned_values,
    unpack_aggregate,
    weighted_average,
)
from globetrain.fleet.archive import AggregateArchive
from globetrain.fleet.checks import RejectionLog
from globetrain.fleet.config import FleetConfig
from globetrain.fleet.envelope import MessageKind, open_envelope, seal
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.leader import LeaderService
from globetrain.fleet.run import RoundClock
from globetrain.fleet.testpeer import nan_payload

KEYS = RunKeys.from_run_key(bytes(32))
SHAPES = [(20,), (4, 5)]
CLOCK = RoundClock(start_time=1_000.0, fleet=FleetConfig(round_period_s=10.0))
ROUND = 3


class FixedRoster:
    def __init__(self, expected: set[str]) -> None:
        self.expected = expected

    def participants(self, round_index: int) -> set[str]:
        return self.expected


def update(seed: int, scale: float = 1.0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) * scale for shape in SHAPES]


def contribution(sender: str, payload: bytes, samples: int, round_index: int = ROUND) -> bytes:
    return seal(KEYS, MessageKind.CONTRIBUTION, payload, sender=sender, name=sender.lower(), round_index=round_index, samples=samples)


def make_leader(expected: set[str], rejections: RejectionLog) -> LeaderService:
    now = CLOCK.end_of(ROUND) + 0.01
    return LeaderService(
        keys=KEYS, clock=CLOCK, roster=FixedRoster(expected), archive=AggregateArchive(4), rejections=rejections,  # type: ignore[arg-type]
        shapes=SHAPES, bits=8, me="Leader", name="leader", digest_source=lambda: (ROUND - 1, "ab" * 32),
        request_timeout=5.0, max_payload_bytes=1 << 16, now=lambda: now,
    )


def test_leader_averages_honest_updates_and_refuses_each_bad_one() -> None:
    lossless = Codec(1.0, 32)
    honest = {"PeerA": (update(1), 32), "PeerB": (update(2), 64), "PeerC": (update(3), 16)}
    rejections = RejectionLog("leader")
    expected = set(honest) | {"Nan", "Huge", "Junk"}  # the stale one is for another round

    async def scenario():
        leader = make_leader(expected, rejections)
        submissions = [contribution(s, lossless.encode(u), n) for s, (u, n) in honest.items()]
        submissions += [
            contribution("Nan", nan_payload(SHAPES), 32),
            contribution("Huge", lossless.encode([t * 1000 for t in update(4)]), 32),
            contribution("Junk", b"\x00not a payload" * 4, 32),
            contribution("Stale", lossless.encode(update(5)), 32, round_index=ROUND - 2),
            contribution("PeerA", lossless.encode(update(6)), 32),  # a second one from A
        ]
        admissions = []
        for sealed in submissions:
            envelope = open_envelope(KEYS, sealed, kinds=(MessageKind.CONTRIBUTION,), max_payload_bytes=1 << 16)
            admissions.append(await leader.admit(envelope))
        results = await asyncio.wait_for(
            asyncio.gather(*(a.result for a in admissions if a.result is not None)), timeout=10
        )
        return leader, admissions, results

    leader, admissions, results = asyncio.run(scenario())
    # The outsized update passes admission; the norm bound refuses it when the round closes.
    assert [a.accepted for a in admissions] == [True, True, True, False, True, False, False, False]
    assert [admissions[i].reason for i in (3, 5, 6, 7)] == ["non-finite", "corrupt", "stale-round", "duplicate"]
    # Refused for content, the nan/junk senders still get the aggregate; the stale one and
    # the duplicate do not (their round is closed to them).
    assert admissions[-1].result is None and admissions[-2].result is None
    counts = rejections.counts()
    assert counts == {
        "contribution/non-finite": 1,
        "contribution/corrupt": 1,
        "contribution/norm-bound": 1,
        "contribution/stale-round": 1,
        "contribution/duplicate": 1,
    }
    assert rejections.by_sender()["Huge"]["reasons"] == {"contribution/norm-bound": 1}
    sealed = results[0].sealed
    assert all(r.sealed == sealed for r in results)
    envelope = open_envelope(KEYS, sealed, kinds=(MessageKind.AGGREGATE,), max_payload_bytes=1 << 20)
    info, payload = unpack_aggregate(envelope.payload, max_contributors=64)
    assert info.contributors == ("PeerA", "PeerB", "PeerC")
    assert (info.base_round, info.base_digest) == (ROUND - 1, "ab" * 32)
    assert envelope.samples == 112 and envelope.round == ROUND
    # Weighted by samples capped at the round's median (32): B's 64 count as 32.
    share = {"PeerA": 32 / 80, "PeerB": 32 / 80, "PeerC": 16 / 80}
    expected_average = [
        sum(u[i] * share[sender] for sender, (u, _) in honest.items()) for i in range(len(SHAPES))
    ]
    got = Codec(1.0, 32).decode(payload)
    for have, want in zip(got, expected_average):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6)
    assert leader.archive.get(ROUND) == sealed


def test_a_round_with_nothing_acceptable_fails_for_everyone() -> None:
    rejections = RejectionLog("leader")

    async def scenario():
        leader = make_leader({"Nan", "Listener"}, rejections)
        a = await leader.admit(open_envelope(KEYS, contribution("Nan", nan_payload(SHAPES), 1), kinds=(MessageKind.CONTRIBUTION,), max_payload_bytes=1 << 16))
        b = await leader.admit(open_envelope(KEYS, contribution("Listener", b"", 0), kinds=(MessageKind.CONTRIBUTION,), max_payload_bytes=1 << 16))
        return await asyncio.wait_for(asyncio.gather(a.result, b.result), timeout=10)

    first, second = asyncio.run(scenario())
    assert first.sealed == second.sealed
    assert first.info.status == "failed" and "no contribution accepted" in first.info.reason


def test_weighted_average() -> None:
    codec = Codec(1.0, 32)
    a, b = update(1), update(2)
    average = weighted_average([codec.decode_sparse(codec.encode(a)), codec.decode_sparse(codec.encode(b))], [0.25, 0.75], SHAPES)
    for got, x, y in zip(average, a, b):
        torch.testing.assert_close(got, 0.25 * x + 0.75 * y)


def test_returned_values_are_own_values_where_the_aggregate_is_silent() -> None:
    codec = Codec(0.2, 32)
    own = codec.decode_sparse(codec.encode(update(1)))
    aggregate = Codec(0.1, 32).decode_sparse(Codec(0.1, 32).encode(update(1)))
    returned = returned_values(own, aggregate)
    assert returned is not None
    for mine, theirs, back in zip(own, aggregate, returned):
        flat = back.view(-1)
        kept = set(theirs.indices.tolist())
        for index, value in zip(mine.indices.tolist(), mine.values.tolist()):
            assert flat[index].item() == (0.0 if index in kept else value)
        assert int((flat != 0).sum()) == len(set(mine.indices.tolist()) - kept)
    dense = Codec(1.0, 32).decode_sparse(Codec(1.0, 32).encode(update(1)))
    assert returned_values(own, dense) is None


def test_aggregate_message_round_trip_and_bounds() -> None:
    info = AggregateInfo(status="ok", leader="L", contributors=("A", "B"), listeners=2, base_round=4, base_digest="cd" * 32)
    packed = pack_aggregate(info, b"payload")
    assert unpack_aggregate(packed, max_contributors=64) == (info, b"payload")
    import pytest

    from globetrain.errors import CorruptPayload

    with pytest.raises(CorruptPayload):
        unpack_aggregate(packed, max_contributors=1)
    with pytest.raises(CorruptPayload):
        unpack_aggregate(b"\xff\xff\xff\xff{}", max_contributors=64)

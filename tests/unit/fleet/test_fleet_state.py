"""State snapshots: deterministic bytes, verified chunked download, resume from another peer."""

from __future__ import annotations

import asyncio

import pytest
import torch

from globetrain.errors import CorruptPayload
from globetrain.fleet.state import (
    StateDownloadFailed,
    StateManifest,
    StateSnapshot,
    decode_state,
    download_state,
    encode_state,
    prepare_state,
)
from globetrain.fleet.transport import TransportError

SHAPES = [(64, 32), (32,), (10, 32)]


def snapshot(seed: int = 0, next_round: int = 12) -> StateSnapshot:
    generator = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=generator) for s in SHAPES]
    buffers = [torch.randn(s, generator=generator) for s in SHAPES]
    return StateSnapshot(next_round, params, 0.7, 0.9, True, next_round, buffers, 4096, "c0ffee")


def assert_same(a: StateSnapshot, b: StateSnapshot) -> None:
    assert (a.next_round, a.global_samples, a.config_digest, a.outer_steps) == (b.next_round, b.global_samples, b.config_digest, b.outer_steps)
    for x, y in zip(a.global_params + (a.momentum_buffers or []), b.global_params + (b.momentum_buffers or [])):
        assert torch.equal(x, y)


def test_encoding_is_deterministic_and_round_trips() -> None:
    assert encode_state(snapshot()) == encode_state(snapshot())
    decoded = decode_state(encode_state(snapshot()), shapes=SHAPES, config_digest="c0ffee")
    assert_same(decoded, snapshot())
    state = decoded.loop_state()
    assert state["round"] == 12 and state["error_feedback"] is None
    assert len(state["outer"]["momentum_buffers"]) == len(SHAPES)


def test_decoding_refuses_other_models_runs_and_damage() -> None:
    data = encode_state(snapshot())
    with pytest.raises(CorruptPayload, match="shapes"):
        decode_state(data, shapes=[(3,)], config_digest=None)
    with pytest.raises(CorruptPayload, match="run config"):
        decode_state(data, shapes=SHAPES, config_digest="other")
    with pytest.raises(CorruptPayload):
        decode_state(data[:-4], shapes=SHAPES, config_digest=None)
    with pytest.raises(CorruptPayload):
        decode_state(b"GTSX" + data[4:], shapes=SHAPES, config_digest=None)


class FakeHolders:
    """Peers serving prepared states; a peer can die after serving some chunks."""

    def __init__(self, states: dict[str, StateSnapshot], chunk_bytes: int, dies_after: dict[str, int] | None = None) -> None:
        self.prepared = {holder: prepare_state(s, chunk_bytes) for holder, s in states.items()}
        self.dies_after = dies_after or {}
        self.served: dict[str, int] = {holder: 0 for holder in states}
        self.corrupt: set[tuple[str, int]] = set()

    def _alive(self, holder: str) -> None:
        if holder in self.dies_after and self.served[holder] >= self.dies_after[holder]:
            raise TransportError(f"{holder} closed the stream")

    async def manifest(self, holder: str, round_index: int | None) -> StateManifest | None:
        self._alive(holder)
        manifest = self.prepared[holder].manifest
        return manifest if round_index in (None, manifest.next_round) else None

    async def chunk(self, holder: str, round_index: int, index: int, manifest: StateManifest) -> bytes | None:
        self._alive(holder)
        self.served[holder] += 1
        data = self.prepared[holder].chunks[index]
        return data[::-1] if (holder, index) in self.corrupt else data


def download(source: FakeHolders, holders: list[str], **kwargs):
    from globetrain.fleet.state import DownloadReport

    report = DownloadReport()
    result = asyncio.run(
        download_state(source, holders, shapes=SHAPES, config_digest="c0ffee", timeout=10, report=report, **kwargs)
    )
    return result, report


def test_download_resumes_from_another_peer_after_one_dies() -> None:
    source = FakeHolders({"A": snapshot(), "B": snapshot()}, chunk_bytes=4096, dies_after={"A": 3})
    total_chunks = len(source.prepared["A"].chunks)
    assert total_chunks > 4
    result, report = download(source, ["A", "B"])
    assert_same(result, snapshot())
    assert report.chunks_by_holder == {"A": 3, "B": total_chunks - 3}  # nothing fetched twice
    assert report.resumes == 1 and report.chunks == total_chunks


def test_a_peer_with_another_state_of_that_round_is_not_resumed_from() -> None:
    # B holds a different model for the same round (it diverged): its chunks would not fit.
    source = FakeHolders({"A": snapshot(0), "B": snapshot(1), "C": snapshot(0)}, chunk_bytes=4096, dies_after={"A": 2})
    result, report = download(source, ["A", "B", "C"])
    assert_same(result, snapshot(0))
    assert "B" not in report.chunks_by_holder and report.chunks_by_holder["C"] > 0


def test_a_bad_chunk_is_refused_and_fetched_elsewhere() -> None:
    source = FakeHolders({"A": snapshot(), "B": snapshot()}, chunk_bytes=4096)
    source.corrupt.add(("A", 2))
    result, report = download(source, ["A", "B"])
    assert_same(result, snapshot())
    assert report.chunks_by_holder["A"] == 2


def test_download_without_holders_or_past_its_time_fails_clearly() -> None:
    with pytest.raises(StateDownloadFailed, match="no peer serves"):
        download(FakeHolders({}, 4096), [])
    dead = FakeHolders({"A": snapshot()}, chunk_bytes=4096, dies_after={"A": 0})
    with pytest.raises(StateDownloadFailed, match="timed out"):
        asyncio.run(download_state(dead, ["A"], shapes=SHAPES, config_digest="c0ffee", timeout=0.5))

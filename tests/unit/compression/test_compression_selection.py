"""Top-k selection against an independent numpy reference, counts, and rounding bias."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from globetrain.compression import Codec, selection


def reference_is_top(values: np.ndarray, chosen: np.ndarray) -> bool:
    """Every chosen magnitude >= every unchosen one (argsort-free, so ties are allowed)."""
    magnitudes = np.abs(values.astype(np.float64))
    mask = np.zeros(len(values), dtype=bool)
    mask[chosen] = True
    if mask.all() or not mask.any():
        return True
    return magnitudes[mask].min() >= magnitudes[~mask].max()


def argsort_top(values: np.ndarray, count: int) -> np.ndarray:
    """The reference top-k: a full stable sort by decreasing magnitude."""
    order = np.argsort(-np.abs(values.astype(np.float64)), kind="stable")
    return np.sort(order[:count])


@settings(max_examples=80)
@given(
    st.integers(1, 5000),
    st.floats(0.0005, 1.0),
    st.integers(0, 2**31 - 1),
    st.sampled_from(["normal", "heavy", "ties", "sparse"]),
)
def test_small_path_selects_exactly_the_top_k(size: int, density: float, seed: int, kind: str) -> None:
    values = _values(kind, size, seed)
    count = max(1, round(density * size))

    chosen = selection.top_magnitude_positions(values, count)

    nonzero = int(np.count_nonzero(values))
    assert len(chosen) == min(count, nonzero)
    assert np.all(np.diff(chosen) > 0)
    assert np.all(values[chosen] != 0)
    assert reference_is_top(values, chosen)
    if kind in ("normal", "heavy"):  # continuous values: no ties, the set is unique
        assert np.array_equal(chosen, argsort_top(values, min(count, nonzero)))


@pytest.mark.parametrize("kind", ["normal", "heavy", "ties", "sparse", "layered"])
@pytest.mark.parametrize("density", [0.0005, 0.01, 0.2])
def test_large_path_selects_exactly_the_top_k(kind: str, density: float) -> None:
    size = (1 << 18) + 12_345  # above LARGE_TENSOR, not a multiple of the scan chunk
    values = _values(kind, size, seed=7)
    count = round(density * size)

    chosen = selection.top_magnitude_positions(values, count)

    assert len(chosen) == min(count, int(np.count_nonzero(values)))
    assert np.all(np.diff(chosen) > 0)
    assert reference_is_top(values, chosen)
    if kind in ("normal", "heavy", "layered"):
        assert np.array_equal(chosen, argsort_top(values, count))


def test_threshold_refines_when_the_sample_aims_too_high(monkeypatch: pytest.MonkeyPatch) -> None:
    # A few hundred huge values sit exactly on sampled positions: the sample then takes
    # them for the top ~1.3 k of the tensor, and the first scan finds fewer than k.
    size = 300_000
    count = 3000
    sampled = selection._strided_magnitude_sample([np.arange(size, dtype=np.float32)], size, count).astype(np.int64)
    values = np.random.default_rng(3).standard_normal(size).astype(np.float32)
    values[sampled[:500]] = 1000.0 + np.arange(500, dtype=np.float32)
    scans = []
    original_scan = selection._scan_above
    monkeypatch.setattr(selection, "_scan_above", lambda v, t: scans.append(t) or original_scan(v, t))

    chosen = selection.top_magnitude_positions(values, count)

    assert len(scans) >= 2 and scans[1] < scans[0]
    assert len(chosen) == count
    assert np.array_equal(chosen, argsort_top(values, count))


@settings(max_examples=40)
@given(
    st.lists(st.integers(0, 3000), min_size=1, max_size=6),
    st.floats(0.001, 0.5),
    st.integers(0, 2**31 - 1),
    st.sampled_from([1, 1 << 17]),
)
def test_global_selection_over_several_tensors_matches_a_full_sort(
    sizes: list[int], density: float, seed: int, large_member: int
) -> None:
    # Members of very different scales; with large_member the total crosses LARGE_TENSOR.
    rng = np.random.default_rng(seed)
    members = [(rng.standard_normal(size) * 10.0 ** rng.integers(-3, 3)).astype(np.float32) for size in sizes]
    members.append(rng.standard_normal(large_member).astype(np.float32))
    everything = np.concatenate(members)
    count = max(1, round(density * len(everything)))

    picks = selection.global_top_positions(members, count)

    offsets = np.cumsum([0, *[len(member) for member in members[:-1]]])
    chosen = np.concatenate([offset + member_picks for offset, member_picks in zip(offsets, picks)])
    assert all(np.all(np.diff(member_picks) > 0) for member_picks in picks)
    assert np.array_equal(chosen, argsort_top(everything, count))


def test_threaded_scan_matches_single_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(0).standard_normal((1 << 21) + 99).astype(np.float32)
    single = selection.top_magnitude_positions(values, 2000)

    monkeypatch.setattr(selection, "_worker_count", lambda size, chunks: 2)
    threaded = selection.top_magnitude_positions(values, 2000)

    assert np.array_equal(single, threaded)


def test_threaded_scan_reports_non_finite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection, "_worker_count", lambda size, chunks: 2)
    values = np.ones(1 << 20, dtype=np.float32)
    values[-5] = np.nan
    with pytest.raises(selection.NonFiniteValues):
        selection.top_magnitude_positions(values, 100)


@pytest.mark.parametrize("density", [0.001, 0.01, 0.1])
@pytest.mark.parametrize("size", [20_000, 300_000])
def test_count_sent_is_within_a_quarter_of_density_times_size(density: float, size: int) -> None:
    codec = Codec(density, 8)
    tensor = torch.randn(size, generator=torch.Generator().manual_seed(size))

    encoded = codec.encode_with_sent([tensor], seed=0)

    target = density * size
    assert 0.75 * target <= encoded.sent[0].count <= 1.25 * target
    assert encoded.tensors[0].count == encoded.sent[0].count


def test_stochastic_rounding_is_unbiased() -> None:
    # 2 bits is the coarsest grid: each magnitude rounds to lo or hi of its chunk.
    # Over N seeds the mean must approach the input within a few standard errors
    # (step / (2 sqrt N) bounds the standard error); deterministic rounding to the
    # nearest level would be off by up to step / 2 and fail this bound.
    values = torch.randn(1024, generator=torch.Generator().manual_seed(1)) * 3
    codec = Codec(1.0, 2)
    rounds = 1500
    total = torch.zeros(1024, dtype=torch.float64)
    for seed in range(rounds):
        total += codec.encode_with_sent([values], seed=seed).sent[0].values.double()
    mean = total / rounds

    step = float(values.abs().max() - values.abs().min())  # one chunk, levels lo and hi
    standard_error_bound = step / (2 * rounds**0.5)
    assert float((mean - values.double()).abs().max()) < 5 * standard_error_bound
    # and it is not trivially exact: single draws do differ from the input
    single = codec.encode_with_sent([values], seed=0).sent[0].values
    assert float((single - values).abs().mean()) > 0.1 * step


def test_stochastic_rounding_is_unbiased_for_sparse_values() -> None:
    values = torch.randn(20_000, generator=torch.Generator().manual_seed(2))
    codec = Codec(0.05, 4)
    first = codec.encode_with_sent([values], seed=0).sent[0]
    chosen = values[first.indices].double()
    total = torch.zeros(first.count, dtype=torch.float64)
    rounds = 400
    for seed in range(rounds):
        sent = codec.encode_with_sent([values], seed=seed).sent[0]
        assert torch.equal(sent.indices, first.indices)  # selection does not depend on the seed
        total += sent.values.double()
    mean = total / rounds

    step = float(chosen.abs().max() - chosen.abs().min()) / 7
    assert float((mean - chosen).abs().max()) < 5 * step / (2 * rounds**0.5)


def _values(kind: str, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal(size).astype(np.float32)
    if kind == "heavy":
        return (rng.standard_cauchy(size) * 1e-3).astype(np.float32)
    if kind == "ties":
        return rng.integers(-3, 4, size).astype(np.float32)
    if kind == "layered":  # blocks of very different scale, as layers of a flattened model
        scales = np.repeat(10.0 ** rng.integers(-4, 2, size // 1000 + 1), 1000)[:size]
        return (rng.standard_normal(size) * scales).astype(np.float32)
    values = rng.standard_normal(size).astype(np.float32)
    values[rng.random(size) < 0.995] = 0.0  # fewer nonzeros than many targets
    return values

"""Round trips: exact at density 1 / 32 bits, self-describing payloads, sent == decoded."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from globetrain.compression import Codec, SparseTensorUpdate

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]

shapes = st.lists(st.integers(0, 7), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from(FLOAT_DTYPES)


@st.composite
def tensors(draw: st.DrawFn, max_tensors: int = 4) -> list[torch.Tensor]:
    """Lists of random tensors of any of the three dtypes, 0-d and empty ones included."""
    count = draw(st.integers(0, max_tensors))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        shape = draw(shapes)
        scale = draw(st.sampled_from([1e-6, 1.0, 300.0]))
        tensor = torch.randn(shape, generator=generator) * scale
        if draw(st.booleans()) and tensor.numel():
            tensor.view(-1)[0] = 0.0  # exact zeros must survive too
        out.append(tensor.to(draw(dtypes)))
    return out


@given(tensors())
def test_density_one_32_bits_round_trips_exactly(batch: list[torch.Tensor]) -> None:
    codec = Codec(1.0, 32)

    decoded = codec.decode(codec.encode(batch), expect=[tensor.shape for tensor in batch])

    assert len(decoded) == len(batch)
    for original, result in zip(batch, decoded):
        assert result.dtype == original.dtype
        assert result.shape == original.shape
        assert torch.equal(result, original)
        # bit-exact, signed zeros included
        assert torch.equal(result.view(-1).float().signbit(), original.view(-1).float().signbit())


@given(tensors())
def test_16_bit_tensors_round_trip_exactly_at_16_bits(batch: list[torch.Tensor]) -> None:
    batch = [tensor.to(torch.float16) if tensor.dtype == torch.float32 else tensor for tensor in batch]
    codec = Codec(1.0, 16)

    decoded = codec.decode(codec.encode(batch))

    for original, result in zip(batch, decoded):
        assert result.dtype == original.dtype and torch.equal(result, original)


def test_odd_shapes_round_trip() -> None:
    batch = [
        torch.randn(()),
        torch.randn(0),
        torch.randn(3, 0, 5),
        torch.randn(1, 1, 1, 1, 1, 1, 1, 1),
        torch.randn(7, 13).t(),  # non-contiguous
        torch.randn(2, 3, requires_grad=True),
        torch.randn(4, 4)[:, 1],  # strided view
    ]
    codec = Codec(1.0, 32)

    decoded = codec.decode(codec.encode(batch))

    for original, result in zip(batch, decoded):
        assert result.shape == original.shape
        assert torch.equal(result, original.detach())


@settings(max_examples=60)
@given(
    tensors(),
    st.sampled_from([0.001, 0.05, 0.3, 0.9, 1.0]),
    st.sampled_from([2, 4, 8, 16, 32]),
    st.integers(0, 2**32 - 1),
)
def test_sent_is_bit_identical_to_what_decode_yields(
    batch: list[torch.Tensor], density: float, bits: int, seed: int
) -> None:
    codec = Codec(density, bits)

    encoded = codec.encode_with_sent(batch, seed=seed)
    # a codec with other settings decodes it: payloads are self-describing
    other = Codec(0.5, 4)
    decoded = other.decode(encoded.payload)
    decoded_sparse = other.decode_sparse(encoded.payload)

    assert len(encoded.sent) == len(decoded) == len(decoded_sparse) == len(batch)
    for original, sent, dense, sparse in zip(batch, encoded.sent, decoded, decoded_sparse):
        assert dense.dtype == original.dtype and dense.shape == original.shape
        assert sent.shape == original.shape and sent.dtype == original.dtype
        assert sent.values.dtype == torch.float32 and sent.indices.dtype == torch.int64
        assert torch.equal(sent.indices, sparse.indices)
        assert torch.equal(sent.values, sparse.values)
        assert torch.equal(sent.to_dense().to(original.dtype), dense)
        indices = sent.indices
        assert bool((indices[1:] > indices[:-1]).all())
        if indices.numel():
            assert 0 <= int(indices[0]) and int(indices[-1]) < original.numel()


@given(tensors(max_tensors=2), st.sampled_from([0.01, 0.2]), st.sampled_from([2, 8]), st.integers(0, 1000))
def test_same_seed_gives_same_bytes(batch: list[torch.Tensor], density: float, bits: int, seed: int) -> None:
    codec = Codec(density, bits)
    assert codec.encode(batch, seed=seed) == codec.encode(batch, seed=seed)


def test_different_seeds_round_differently() -> None:
    values = [torch.randn(4096, generator=torch.Generator().manual_seed(0))]
    codec = Codec(1.0, 2)
    assert codec.encode(values, seed=1) != codec.encode(values, seed=2)


@settings(max_examples=40)
@given(tensors(max_tensors=3), st.sampled_from([0.01, 0.1, 1.0]), st.sampled_from([2, 4, 8]), st.integers(0, 99))
def test_quantization_error_stays_within_one_grid_step(
    batch: list[torch.Tensor], density: float, bits: int, seed: int
) -> None:
    codec = Codec(density, bits)

    encoded = codec.encode_with_sent(batch, seed=seed)

    for original, sent in zip(batch, encoded.sent):
        if not sent.count:
            continue
        chosen = original.detach().float().reshape(-1)[sent.indices]
        error = (sent.values - chosen).abs()
        # sign is never flipped; the error is at most one step of the chunk's grid, which
        # is at most the chunk's largest magnitude divided by 2**(bits-1) - 1, plus, for
        # 16-bit tensors, the rounding of the result to the tensor's dtype
        assert bool((torch.sign(sent.values) * torch.sign(chosen) >= 0).all())
        peak = float(chosen.abs().max())
        info = torch.finfo(original.dtype)
        rounding = 0.0 if original.dtype == torch.float32 else peak * info.eps + info.smallest_normal * info.eps
        bound = peak / ((1 << (bits - 1)) - 1) * (1 + 1e-5) + rounding
        assert float(error.max()) <= bound


def test_dense_update_builds_indices_only_when_asked() -> None:
    update = SparseTensorUpdate((2, 3), torch.float32, None, torch.arange(6, dtype=torch.float32))
    target = torch.ones(2, 3)

    update.add_into(target, alpha=2.0)

    assert update.is_dense
    assert torch.equal(target, 1 + 2 * torch.arange(6.0).view(2, 3))
    assert torch.equal(update.indices, torch.arange(6))
    assert torch.equal(update.to_dense(), torch.arange(6.0).view(2, 3))


def test_sparse_update_add_into_scatters() -> None:
    update = SparseTensorUpdate((5,), torch.float32, torch.tensor([1, 4]), torch.tensor([2.0, -3.0]))
    target = torch.zeros(5)

    update.add_into(target, alpha=0.5)

    assert target.tolist() == [0.0, 1.0, 0.0, 0.0, -1.5]
    with pytest.raises(ValueError, match="float32 tensor of shape"):
        update.add_into(torch.zeros(4))


def test_small_tensors_go_dense_and_large_ones_sparse() -> None:
    codec = Codec(0.01, 8)
    batch = [torch.randn(4), torch.randn(2), torch.randn(100_000)]

    encoded = codec.encode_with_sent(batch, seed=0)

    bias, pair, weight = encoded.tensors
    assert (bias.index_coding, bias.count, bias.value_format) == ("dense", 4, "q8")
    assert pair.value_format == "float32"  # two values are cheaper raw than with scales
    assert weight.index_coding == "rice" and weight.count == 1000 and weight.value_format == "q8"
    assert codec.stats.payloads_encoded == 1 and codec.stats.tensors_dense == 2


def test_float32_values_beyond_float16_range_go_bfloat16_at_16_bits() -> None:
    codec = Codec(1.0, 16)
    big = torch.tensor([1e6, -3.0e30, 2.5])

    encoded = codec.encode_with_sent([big])
    decoded = codec.decode(encoded.payload)[0]

    assert encoded.tensors[0].value_format == "bfloat16"
    assert torch.allclose(decoded, big, rtol=2**-8)
    assert math.isfinite(float(decoded.abs().max()))


def test_all_zero_tensor_sends_nothing_sparse() -> None:
    codec = Codec(0.01, 8)
    encoded = codec.encode_with_sent([torch.zeros(10_000)])
    assert encoded.sent[0].count == 0
    assert torch.equal(codec.decode(encoded.payload)[0], torch.zeros(10_000))


def test_decode_allocates_nothing_shared_with_the_input() -> None:
    codec = Codec(1.0, 32)
    original = torch.randn(100)
    encoded = codec.encode_with_sent([original])

    original.zero_()

    assert not torch.equal(encoded.sent[0].values, torch.zeros(100))
    assert np.shares_memory(encoded.sent[0].values.numpy(), original.numpy()) is False


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_large_sparse_decode_matches_sent_and_is_writable(dtype: torch.dtype) -> None:
    # 1.5M elements: large enough for the lazily zeroed (mmap) output buffer
    tensor = torch.randn(1_500_000, generator=torch.Generator().manual_seed(4)).to(dtype)
    codec = Codec(0.001, 4)
    encoded = codec.encode_with_sent([tensor], seed=0)

    decoded = codec.decode(encoded.payload)[0]

    assert decoded.dtype == dtype
    assert torch.equal(decoded, encoded.sent[0].to_dense().to(dtype))
    decoded.add_(1)  # the caller owns a normal, writable tensor
    assert float(decoded.float().sum()) == pytest.approx(1_500_000 + float(encoded.sent[0].values.sum()), rel=1e-3)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_subnormal_values_quantize_within_their_grid(bits: int) -> None:
    # steps below 1e-38 would overflow a reciprocal; the grid must still hold
    values = torch.tensor([1e-39, -2e-39, 3e-39, 1.5e-39, 0.0, -4e-40])
    sent = Codec(1.0, bits).encode_with_sent([values], seed=0).sent[0]

    error = (sent.values - values).abs()
    step = (values.abs().max() - values.abs().min()) / ((1 << (bits - 1)) - 1)
    assert bool(torch.isfinite(sent.values).all())
    assert float(error.max()) <= float(step) * 1.01 + 1e-44
    assert bool((torch.sign(sent.values) * torch.sign(values) >= 0).all())

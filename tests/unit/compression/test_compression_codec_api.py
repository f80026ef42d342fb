"""Codec construction, input refusal, the config section and payload size estimates."""

from __future__ import annotations

import zlib

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from globetrain.compression import Codec, CompressionConfig
from globetrain.compression.bitpacking import pack_fields, unpack_fields
from globetrain.compression.index_coding import choose_index_coding, decode_bitmap, decode_rice
from globetrain.compression.wire import IndexCoding
from globetrain.errors import ConfigError


@pytest.mark.parametrize("bits", [0, 1, 3, 5, 12, 64, 8.0, True, "8"])
def test_invalid_bits_fail_listing_the_allowed_values(bits: object) -> None:
    with pytest.raises(ConfigError, match=r"Codec\.bits = .* expected one of 2, 4, 8, 16, 32"):
        Codec(0.1, bits)  # type: ignore[arg-type]


@pytest.mark.parametrize("density", [0, -0.1, 1.5, float("nan"), float("inf"), None, True])
def test_invalid_density_fails(density: object) -> None:
    with pytest.raises(ValueError, match=r"Codec\.density .* expected a number in \(0, 1\]"):
        Codec(density, 8)  # type: ignore[arg-type]


def test_invalid_max_elements_fails() -> None:
    with pytest.raises(ConfigError, match="max_elements"):
        Codec(0.1, 8, max_elements=0)


def test_encode_refuses_other_dtypes_with_type_error() -> None:
    codec = Codec(0.1, 8)
    for bad in (torch.arange(5), torch.zeros(3, dtype=torch.float64), torch.zeros(2, dtype=torch.bool)):
        with pytest.raises(TypeError, match=r"tensor 1 has dtype"):
            codec.encode([torch.zeros(3), bad])
    with pytest.raises(TypeError, match="list of tensors"):
        codec.encode(torch.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a torch.Tensor"):
        codec.encode([np.zeros(3)])  # type: ignore[list-item]


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("size", [1, 5000, 300_000])
@pytest.mark.parametrize("density", [0.01, 1.0])
def test_encode_refuses_non_finite_naming_the_tensor(bad_value: float, size: int, density: float) -> None:
    tensors = [torch.randn(4), torch.randn(size)]
    tensors[1][size // 2] = bad_value
    with pytest.raises(ValueError, match=r"tensor 1 \(shape \(\d+,\)\) contains NaN or infinite values"):
        Codec(density, 8).encode(tensors)


def test_encode_refuses_more_than_max_elements() -> None:
    with pytest.raises(ValueError, match="more than max_elements=100"):
        Codec(0.1, 8, max_elements=100).encode([torch.zeros(60), torch.zeros(41)])


def test_config_section_builds_the_codec_and_validates() -> None:
    config = CompressionConfig.from_dict({"density": 0.001, "bits": 4})

    codec = config.build_codec()

    assert (codec.density, codec.bits) == (0.001, 4)
    assert CompressionConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="expected one of"):
        CompressionConfig.from_dict({"bits": 3})
    with pytest.raises(ConfigError, match=r"compression\.density"):
        CompressionConfig(density=2.0)


SHAPE_SETS = {
    "mlp": [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)],
    "cnn": [(32, 3, 3, 3), (32,), (32,), (64, 32, 3, 3), (64,), (64,), (128, 64, 3, 3), (128,), (10, 128), (10,)],
    "one big": [(1_000_000,)],
    "video-ish": [(64, 3, 7, 7), (64,), (64,), (128, 64, 3, 3), (128, 128, 3, 3), (256, 128, 3, 3), (256,),
                  (512, 256, 3, 3), (512,), (400, 512), (400,)],
}


@pytest.mark.parametrize("density", [0.001, 0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("bits", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("shapes", list(SHAPE_SETS), ids=list(SHAPE_SETS))
def test_estimate_is_within_ten_percent_of_real_size(shapes: str, bits: int, density: float) -> None:
    generator = torch.Generator().manual_seed(zlib.crc32(repr((shapes, bits, density)).encode()))
    tensors = [torch.randn(shape, generator=generator) for shape in SHAPE_SETS[shapes]]
    codec = Codec(density, bits)

    real = len(codec.encode(tensors, seed=0))
    estimate = codec.estimate_payload_bytes([tensor.shape for tensor in tensors])

    assert abs(estimate - real) <= 0.10 * real, (estimate, real)


@settings(max_examples=60)
@given(st.lists(st.integers(0, 5000), min_size=0, max_size=200, unique=True), st.integers(0, 3000))
def test_index_coding_round_trips(positions: list[int], extra: int) -> None:
    indices = np.array(sorted(positions), dtype=np.int64)
    numel = (int(indices[-1]) + 1 if len(indices) else 0) + extra

    coding, code = choose_index_coding(indices, numel)

    if coding is IndexCoding.BITMAP:
        decoded = decode_bitmap(memoryview(code), len(indices), numel, "test")
    else:
        decoded = decode_rice(code.parameter, memoryview(code.remainders), memoryview(code.quotients),
                              len(indices), numel, "test")
    assert np.array_equal(decoded, indices)


def test_index_coding_takes_the_bitmap_when_denser() -> None:
    dense = np.arange(0, 1000, 2)
    sparse = np.arange(0, 100_000, 997)
    assert choose_index_coding(dense, 1000)[0] is IndexCoding.BITMAP
    assert choose_index_coding(sparse, 100_000)[0] is IndexCoding.RICE


@given(st.integers(1, 64), st.lists(st.integers(0, 2**64 - 1), max_size=50))
def test_bit_fields_round_trip(width: int, raw: list[int]) -> None:
    values = np.array([value % (1 << width) for value in raw], dtype=np.uint64)

    packed = pack_fields(values, width)

    assert len(packed) == (len(values) * width + 7) // 8
    assert np.array_equal(unpack_fields(packed, len(values), width, "test").astype(np.uint64), values)


def test_rice_indices_cost_near_the_entropy_bound() -> None:
    # log2 C(N, k) ~ k (log2(N/k) + log2 e) bits is the least any index code can use
    numel, count = 1_000_000, 1000
    indices = np.sort(np.random.default_rng(0).choice(numel, count, replace=False))

    _, code = choose_index_coding(indices, numel)

    entropy_bytes = count * (np.log2(numel / count) + np.log2(np.e)) / 8
    assert code.total_bytes <= 1.05 * entropy_bytes

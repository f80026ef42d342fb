"""Low-bit quantization of the selected values: per-chunk scales, stochastic rounding.

The values a top-k step selects are the largest magnitudes of the tensor, so their
magnitudes fill a band [lo, hi] well away from zero. A code is therefore a sign bit plus
a (bits-1)-bit level on a uniform grid over [lo, hi] of its chunk, not a symmetric grid
around zero: at 2 bits that is ±lo or ±hi instead of {-hi, 0, +hi}, which would round
the smallest selected values to zero half of the time. Chunks of consecutive selected
values carry their own (lo, hi) in float32, so one large value does not coarsen the grid
of the whole tensor; the chunk length is chosen so the scales cost about 3% of the codes.

Rounding is stochastic: a magnitude between two levels goes up with probability equal
to its distance from the lower level, so E[decoded] equals the input (unbiased), which is
what lets error feedback and averaging over many devices cancel the rounding noise.
The uniform draws come from the caller's generator: the same seed gives the same codes.

Dequantization is one function used by both the encoder (for the values it reports as
sent) and the decoder, on the same float32 inputs, so both sides get identical bits.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from globetrain.compression.bitpacking import pack_fields, packed_size, unpack_fields
from globetrain.errors import CorruptPayload

MAX_CHUNK_LOG2 = 30
SCALE_BYTES = 8  # float32 lo, float32 hi


def chunk_log2_for(bits: int) -> int:
    """log2 of the chunk length: 2048 bits of codes per chunk (256 values at 8 bits)."""
    return {8: 8, 4: 9, 2: 10}[bits]


def levels_above_lo(bits: int) -> int:
    """L: the magnitude grid has L + 1 levels, lo + m * (hi - lo) / L for m in 0..L."""
    return (1 << (bits - 1)) - 1


def chunk_count(count: int, chunk_log2: int) -> int:
    return -(-count >> chunk_log2)


def quantized_bytes(count: int, bits: int, chunk_log2: int) -> int:
    """Bytes of scales and codes (the chunk_log2 header byte not included)."""
    return SCALE_BYTES * chunk_count(count, chunk_log2) + packed_size(count, bits)


@dataclasses.dataclass(frozen=True)
class QuantizedValues:
    bits: int
    chunk_log2: int
    scales: np.ndarray
    """float32, shape (chunks, 2): lo and hi of each chunk."""
    codes: bytes
    """Packed sign-and-level codes, ``bits`` bits each."""

    def scale_bytes(self) -> bytes:
        return self.scales.astype("<f4", copy=False).tobytes()


def quantize(values: np.ndarray, bits: int, rng: np.random.Generator) -> tuple[QuantizedValues, np.ndarray]:
    """Quantize float32 ``values``; return the codes and the values a decoder will get."""
    count = len(values)
    chunk_log2 = chunk_log2_for(bits)
    chunk = 1 << chunk_log2
    magnitudes = np.abs(values)
    if count == 0:
        empty = QuantizedValues(bits, chunk_log2, np.zeros((0, 2), np.float32), b"")
        return empty, np.zeros(0, np.float32)
    if count <= chunk:
        lo, hi = magnitudes.min(keepdims=True), magnitudes.max(keepdims=True)
    else:
        starts = np.arange(0, count, chunk)
        lo = np.minimum.reduceat(magnitudes, starts)
        hi = np.maximum.reduceat(magnitudes, starts)
    step = _per_value(_step(lo, hi, bits), chunk, count)
    # From here on the magnitudes buffer is reused, in place, for the scaled levels. A
    # division, not a product with 1/step: for subnormal steps 1/step overflows. Where the
    # step is 0 every magnitude of the chunk equals lo, and the level stays 0.
    scaled = magnitudes
    scaled -= _per_value(lo, chunk, count)
    np.divide(scaled, step, out=scaled, where=np.asarray(step > 0))
    scaled += rng.random(count, dtype=np.float32)
    np.floor(scaled, out=scaled)
    top_level = levels_above_lo(bits)
    # Float rounding can put the top value a hair above L; clipping costs no measurable bias.
    np.clip(scaled, 0, top_level, out=scaled)
    codes = scaled.astype(np.uint8)
    codes |= np.signbit(values).astype(np.uint8) << np.uint8(bits - 1)
    scales = np.stack([lo, hi], axis=1).astype(np.float32)
    quantized = QuantizedValues(bits, chunk_log2, scales, pack_fields(codes, bits))
    return quantized, _dequantize_codes(codes, scales, bits, chunk_log2)


def dequantize(
    scale_data: memoryview,
    code_data: memoryview,
    count: int,
    bits: int,
    chunk_log2: int,
    what: str,
) -> np.ndarray:
    """Decoded float32 values from wire scales and codes; checks the scales are sane."""
    scales = np.frombuffer(scale_data, dtype="<f4").astype(np.float32).reshape(-1, 2)
    if len(scales) != chunk_count(count, chunk_log2):
        raise CorruptPayload(f"{what}: {len(scales)} scale pairs for {count} values")
    lo, hi = scales[:, 0], scales[:, 1]
    if not (np.all(np.isfinite(scales)) and np.all(lo >= 0) and np.all(lo <= hi)):
        raise CorruptPayload(f"{what}: chunk scales must be finite with 0 <= lo <= hi")
    codes = unpack_fields(code_data, count, bits, f"{what} value codes")
    return _dequantize_codes(codes, scales, bits, chunk_log2)


def _step(lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    return ((hi - lo) / np.float32(levels_above_lo(bits))).astype(np.float32)


def _dequantize_codes(codes: np.ndarray, scales: np.ndarray, bits: int, chunk_log2: int) -> np.ndarray:
    count = len(codes)
    chunk = 1 << chunk_log2
    lo, hi = scales[:, 0], scales[:, 1]
    level_mask = np.uint8(levels_above_lo(bits))
    values = (codes & level_mask).astype(np.float32)
    values *= _per_value(_step(lo, hi, bits), chunk, count)
    values += _per_value(lo, chunk, count)
    negative = (codes >> np.uint8(bits - 1)).astype(bool)
    np.negative(values, out=values, where=negative)
    return values


def _per_value(per_chunk: np.ndarray, chunk: int, count: int) -> np.ndarray | np.float32:
    """A per-chunk quantity spread over the values (a scalar when there is one chunk)."""
    if len(per_chunk) == 1:
        return per_chunk[0]
    return np.repeat(per_chunk, chunk)[:count]

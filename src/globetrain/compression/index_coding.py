"""Coding of strictly increasing flat indices: Rice-coded gaps, or a bitmap where denser.

Top-k positions of a large tensor look like uniformly random positions, so the gaps
between them are close to geometric: a Rice code (quotient in unary, remainder in r bits)
comes within a few percent of the entropy of the index set, log2(C(N, k)) bits. The
parameter r is chosen per tensor by computing the exact size for the candidates around
log2(mean gap). The quotients and remainders go to two separate streams so both
directions are plain array operations: remainders are fixed-width fields, and quotients
are runs of zero bits each ended by a one bit, decoded with one ``flatnonzero``.

A bitmap takes N/8 bytes whatever the count; ``choose_index_coding`` takes it when it is
smaller than the Rice streams (above roughly 1 index in 6).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from globetrain.compression.bitpacking import check_zero_padding, pack_fields, packed_size, unpack_fields
from globetrain.compression.wire import IndexCoding, varint_size
from globetrain.errors import CorruptPayload

MAX_RICE_PARAMETER = 40


@dataclasses.dataclass(frozen=True)
class RiceCode:
    parameter: int
    remainders: bytes
    quotients: bytes

    @property
    def header_bytes(self) -> int:
        return 1 + varint_size(len(self.quotients))

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + len(self.remainders) + len(self.quotients)


def gaps_of(indices: np.ndarray) -> np.ndarray:
    """Zero-based gaps: gap[0] = index[0], gap[i] = index[i] - index[i-1] - 1."""
    gaps = np.empty(len(indices), dtype=np.int64)
    if len(indices):
        gaps[0] = indices[0]
        np.subtract(indices[1:], indices[:-1], out=gaps[1:])
        gaps[1:] -= 1
    return gaps


def rice_bits(gaps: np.ndarray, parameter: int) -> int:
    """Exact bits of both streams (before byte padding) for a given parameter."""
    return len(gaps) * (parameter + 1) + int((gaps >> parameter).sum())


def choose_rice_parameter(gaps: np.ndarray, numel: int) -> int:
    """The parameter with the fewest bits among those around log2(mean gap + 1).

    It never exceeds log2(numel): a larger one only adds bits, and the decoder relies on
    that bound to keep its sums far from overflow.
    """
    if len(gaps) == 0:
        return 0
    largest = min(MAX_RICE_PARAMETER, max(0, numel.bit_length() - 1))
    # For geometric gaps the best parameter is within one of log2(mean gap * ln 2 + 1).
    center = int(math.log2(float(gaps.sum()) / len(gaps) * math.log(2) + 1))
    candidates = range(max(0, min(center - 1, largest)), min(largest, center + 1) + 1)
    return min(candidates, key=lambda parameter: rice_bits(gaps, parameter))


def rice_bytes(gaps: np.ndarray, parameter: int) -> int:
    """Exact bytes of a Rice-coded record part: parameter, quotient length and both streams."""
    quotient_bytes = packed_size(int((gaps >> parameter).sum()) + len(gaps), 1)
    return 1 + varint_size(quotient_bytes) + packed_size(len(gaps), parameter) + quotient_bytes


def encode_rice(gaps: np.ndarray, parameter: int) -> RiceCode:
    remainders = pack_fields(gaps & ((1 << parameter) - 1), parameter) if parameter else b""
    quotients = gaps >> parameter
    # Each quotient q is q zero bits closed by a one bit: the ones sit at cumsum(q + 1) - 1.
    stop_bits = np.cumsum(quotients + 1) - 1
    total_bits = int(stop_bits[-1]) + 1 if len(stop_bits) else 0
    bits = np.zeros(total_bits, dtype=np.uint8)
    bits[stop_bits] = 1
    return RiceCode(parameter, remainders, np.packbits(bits).tobytes())


def decode_rice(
    parameter: int,
    remainders: memoryview,
    quotients: memoryview,
    count: int,
    numel: int,
    what: str,
) -> np.ndarray:
    """Indices (int64, strictly increasing, all < numel) from the two Rice streams."""
    quotient_bytes = np.frombuffer(quotients, dtype=np.uint8)
    if count == 0:
        if len(quotient_bytes):
            raise CorruptPayload(f"{what}: quotient stream has {len(quotient_bytes)} bytes for 0 indices")
        return np.zeros(0, dtype=np.int64)
    stop_bits = np.flatnonzero(np.unpackbits(quotient_bytes))
    if len(stop_bits) != count:
        raise CorruptPayload(f"{what}: quotient stream holds {len(stop_bits)} gaps, count says {count}")
    # Every one bit is a stop bit, so only zero bits can follow the last one: the stream
    # is canonical when it ends in the byte holding that bit.
    if len(quotient_bytes) != int(stop_bits[-1]) // 8 + 1:
        raise CorruptPayload(f"{what}: quotient stream has bytes after its last gap")
    if (1 << parameter) > max(numel, 1):
        raise CorruptPayload(f"{what}: Rice parameter {parameter} is too large for {numel} elements")
    quotient = gaps_of(stop_bits)
    # A quotient this large already puts its index past numel; checking it before the
    # shift keeps every gap below 2 * numel and so every later sum far from overflow.
    if int(quotient.max()) > (numel >> parameter):
        raise CorruptPayload(f"{what}: index out of range for a tensor of {numel} elements")
    gaps = quotient << parameter
    if parameter:
        gaps |= unpack_fields(remainders, count, parameter, f"{what} remainder stream").astype(np.int64)
    elif len(remainders):
        raise CorruptPayload(f"{what}: remainder stream must be empty for Rice parameter 0")
    gaps += 1
    indices = np.cumsum(gaps)
    indices -= 1
    # Every step is at most 2 * numel, so a sum that overflowed would first have passed
    # numel: checking every index (not only the last) catches that too.
    if int(indices.max()) >= numel:
        raise CorruptPayload(f"{what}: index out of range for a tensor of {numel} elements")
    return indices


def encode_bitmap(indices: np.ndarray, numel: int) -> bytes:
    bits = np.zeros(numel, dtype=np.uint8)
    bits[indices] = 1
    return np.packbits(bits).tobytes()


def decode_bitmap(data: memoryview, count: int, numel: int, what: str) -> np.ndarray:
    buffer = np.frombuffer(data, dtype=np.uint8)
    check_zero_padding(buffer, numel, f"{what} bitmap")
    indices = np.flatnonzero(np.unpackbits(buffer, count=numel))
    if len(indices) != count:
        raise CorruptPayload(f"{what}: bitmap marks {len(indices)} elements, count says {count}")
    return indices


def bitmap_bytes(numel: int) -> int:
    return packed_size(numel, 1)


def choose_index_coding(indices: np.ndarray, numel: int) -> tuple[IndexCoding, RiceCode | bytes]:
    """The smaller of the Rice streams and the bitmap, already encoded."""
    if len(indices) == 0:
        return IndexCoding.RICE, RiceCode(0, b"", b"")
    gaps = gaps_of(indices)
    parameter = choose_rice_parameter(gaps, numel)
    if bitmap_bytes(numel) < rice_bytes(gaps, parameter):
        return IndexCoding.BITMAP, encode_bitmap(indices, numel)
    return IndexCoding.RICE, encode_rice(gaps, parameter)


@functools.lru_cache(maxsize=4096)
def expected_rice_bytes(count: int, numel: int) -> int:
    """Expected size of the Rice streams (header included) for ``count`` random positions.

    Gaps between uniformly random positions are close to geometric with p = count/numel;
    then q = gap >> r is geometric too, with ratio theta = (1-p)**(2**r) and mean
    theta/(1-theta). The parameter is the one minimising that expectation, as the
    encoder's exact choice does on real gaps.
    """
    if count == 0:
        return 1 + 1
    spare = max(numel - count, 0)
    # Mean gap (numel - count)/count, expressed as the geometric success probability.
    p = count / (count + spare)
    best = math.inf
    largest = min(MAX_RICE_PARAMETER, max(0, numel.bit_length() - 1))
    for parameter in range(largest + 1):
        theta = math.exp((1 << parameter) * math.log1p(-p)) if p < 1 else 0.0
        mean_quotient = theta / (1 - theta) if theta < 1 else math.inf
        best = min(best, count * (parameter + 1 + mean_quotient))
    # Parameter byte, quotient length varint, both streams, about half a byte of
    # padding at the end of each stream.
    return int(round(1 + varint_size(int(best / 8)) + best / 8 + 1))

"""Vectorised packing of fixed-width unsigned fields into bytes (most significant bit first).

Both directions go through numpy's packbits/unpackbits on whole arrays: no Python loop
per value. Unpacking also checks that the bits padding the stream to a whole byte are
zero, so every valid stream has exactly one encoding.
"""

from __future__ import annotations

import numpy as np

from globetrain.errors import CorruptPayload

MAX_FIELD_BITS = 64


def packed_size(count: int, width: int) -> int:
    """Bytes taken by ``count`` fields of ``width`` bits."""
    return (count * width + 7) // 8


def pack_fields(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative integers (each below 2**width) into ``width``-bit fields."""
    count = len(values)
    if count == 0 or width == 0:
        return b""
    if width == 8:
        return values.astype(np.uint8).tobytes()
    if 8 % width == 0:
        # 1, 2 and 4 bits: several fields per byte, combined with shifts.
        per_byte = 8 // width
        grouped = _padded(values, per_byte, np.uint8).reshape(-1, per_byte)
        packed = np.zeros(len(grouped), dtype=np.uint8)
        for slot in range(per_byte):
            packed |= grouped[:, slot] << np.uint8(8 - width * (slot + 1))
        return packed.tobytes()
    if width < 8:
        # 3, 5, 6, 7 bits: eight fields make exactly `width` bytes; build each group as
        # one 64-bit big-endian integer and keep its low `width` bytes.
        grouped = _padded(values, 8, np.uint64).reshape(-1, 8)
        combined = np.zeros(len(grouped), dtype=np.uint64)
        for slot in range(8):
            combined |= grouped[:, slot] << np.uint64(width * (7 - slot))
        as_bytes = combined.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - width :]
        return as_bytes.tobytes()[: packed_size(count, width)]
    # Wider fields: spell each value in the smallest big-endian container, keep its low bits.
    container = _container_bits(width)
    as_bytes = values.astype(f">u{container // 8}").view(np.uint8).reshape(count, container // 8)
    bits = np.unpackbits(as_bytes, axis=1)[:, container - width :]
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_fields(data: memoryview | bytes, count: int, width: int, what: str) -> np.ndarray:
    """Inverse of ``pack_fields``: ``count`` fields (uint8 for widths <= 8, else uint64).

    ``data`` must be exactly ``packed_size(count, width)`` bytes with zero padding bits.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    if len(buffer) != packed_size(count, width):
        raise CorruptPayload(f"{what}: {len(buffer)} bytes, expected {packed_size(count, width)}")
    check_zero_padding(buffer, count * width, what)
    if count == 0 or width == 0:
        return np.zeros(count, dtype=np.uint8 if width <= 8 else np.uint64)
    if width == 8:
        return buffer.copy()
    if 8 % width == 0:
        per_byte = 8 // width
        shifts = np.array([8 - width * (slot + 1) for slot in range(per_byte)], dtype=np.uint8)
        fields = (buffer[:, None] >> shifts[None, :]) & np.uint8((1 << width) - 1)
        return fields.reshape(-1)[:count]
    if width < 8:
        groups = -(-count // 8)
        as_bytes = np.zeros((groups, 8), dtype=np.uint8)
        tail = _padded(buffer, groups * width, np.uint8).reshape(groups, width)
        as_bytes[:, 8 - width :] = tail
        combined = as_bytes.view(">u8").reshape(groups).astype(np.uint64)
        shifts = np.array([width * (7 - slot) for slot in range(8)], dtype=np.uint64)
        fields = (combined[:, None] >> shifts[None, :]) & np.uint64((1 << width) - 1)
        return fields.astype(np.uint8).reshape(-1)[:count]
    container = _container_bits(width)
    bits = np.unpackbits(buffer, count=count * width).reshape(count, width)
    padded = np.zeros((count, container), dtype=np.uint8)
    padded[:, container - width :] = bits
    return np.packbits(padded, axis=1).view(f">u{container // 8}").reshape(count).astype(np.uint64)


def check_zero_padding(buffer: np.ndarray, used_bits: int, what: str) -> None:
    """Raise unless the bits after ``used_bits`` in the last byte of ``buffer`` are zero."""
    spare = (-used_bits) % 8
    if spare and len(buffer) and int(buffer[-1]) & ((1 << spare) - 1):
        raise CorruptPayload(f"{what}: padding bits after the last field are not zero")


def _padded(values: np.ndarray, multiple: int, dtype: type) -> np.ndarray:
    """``values`` as ``dtype``, zero-padded to a multiple of ``multiple`` elements."""
    padded = np.zeros(-(-len(values) // multiple) * multiple, dtype=dtype)
    padded[: len(values)] = values
    return padded


def _container_bits(width: int) -> int:
    return 16 if width <= 16 else 32 if width <= 32 else MAX_FIELD_BITS

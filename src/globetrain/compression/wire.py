"""The codec's wire format: versioned, self-describing, checksummed.

A payload carries a list of tensors, each sent dense or sparse, with everything a
receiver needs to rebuild them: no setting of the sending ``Codec`` is needed to decode
(density and bits change every round). Integers are little-endian; ``varint`` is unsigned
LEB128 of at most 9 bytes (values below 2**63).

Payload::

    size    field
    4       magic b"GTCZ"
    1       version, 1
    varint  tensor count T
    ...     T tensor records, one after the other
    4       CRC-32 (zlib.crc32) of every byte before it

Tensor record::

    1       dtype: 0 float32, 1 float16, 2 bfloat16
    1       ndim D (0..16), then D varints: the shape
    1       index coding: 0 dense (every element in order, no index stream),
            1 Rice-coded gaps, 2 bitmap
    1       value format: 2, 4 or 8 = quantized to that many bits;
            16 float16, 17 bfloat16, 32 float32 (raw values)
    varint  count C: values carried (dense: C equals the number of elements N)
    [quantized]  1       chunk_log2: values are quantized in chunks of 2**chunk_log2
    [rice]       1       Rice parameter r (0..40)
                 varint  U: length of the quotient stream in bytes
    streams, in this order:
    [rice]       remainders: C fields of r bits                    ceil(C*r/8) bytes
                 quotients: per gap, q zero bits then a one bit     U bytes
    [bitmap]     bit i set iff element i is carried                 ceil(N/8) bytes
    [quantized]  scales: per chunk, float32 lo then float32 hi      8*ceil(C/chunk) bytes
                 codes: C fields of `bits` bits                     ceil(C*bits/8) bytes
    [raw]        C values of 2 or 4 bytes

Bit fields are packed most significant bit first; the bits that pad a stream to a whole
byte are zero. Gaps: ``gap[0] = index[0]`` and ``gap[i] = index[i] - index[i-1] - 1``, so
``q = gap >> r`` and ``remainder = gap & (2**r - 1)``; a gap code cannot express indices
that do not strictly increase. A quantized code is a sign bit followed by a
(bits-1)-bit level m; its value is ``±(lo + m * ((hi - lo) / L))`` with
``L = 2**(bits-1) - 1``, computed in float32 (see ``globetrain.compression.quantization``).

``PayloadWriter`` builds payloads, ``open_payload`` checks the envelope (length, magic,
version, checksum) and returns a ``PayloadReader`` whose every read is bounds-checked and
raises ``CorruptPayload`` naming the field.
"""

from __future__ import annotations

import enum
import struct
import zlib

from globetrain.errors import CorruptPayload

MAGIC = b"GTCZ"
VERSION = 1
CHECKSUM_BYTES = 4
MAX_NDIM = 16
MAX_VARINT_BYTES = 9
# magic + version + a one-byte tensor count + checksum
MIN_PAYLOAD_BYTES = len(MAGIC) + 1 + 1 + CHECKSUM_BYTES
# dtype, ndim, index coding, value format, count: the fewest bytes a record can take
MIN_RECORD_BYTES = 5


class DtypeCode(enum.IntEnum):
    FLOAT32 = 0
    FLOAT16 = 1
    BFLOAT16 = 2


class IndexCoding(enum.IntEnum):
    DENSE = 0
    RICE = 1
    BITMAP = 2


class ValueFormat(enum.IntEnum):
    QUANTIZED_2 = 2
    QUANTIZED_4 = 4
    QUANTIZED_8 = 8
    FLOAT16 = 16
    BFLOAT16 = 17
    FLOAT32 = 32

    @property
    def is_quantized(self) -> bool:
        return self.value <= 8

    @property
    def raw_value_bytes(self) -> int:
        """Bytes per value of a raw format (0 for quantized formats)."""
        return 0 if self.value <= 8 else 4 if self.value == 32 else 2


def varint_bytes(value: int) -> bytes:
    """Unsigned LEB128 encoding of ``value`` (0 <= value < 2**63)."""
    if value < 0 or value >= 1 << 63:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def checksum(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def seal(body: bytes | bytearray | memoryview) -> bytes:
    """Append the checksum to a payload body (magic .. last record)."""
    return bytes(body) + struct.pack("<I", checksum(body))


class PayloadWriter:
    """Accumulates the parts of a payload; ``seal`` joins them and appends the checksum."""

    def __init__(self, tensor_count: int) -> None:
        self._parts: list[bytes | memoryview] = []
        self.size = 0
        """Bytes written so far (the checksum not included)."""
        self.raw(MAGIC)
        self.u8(VERSION)
        self.varint(tensor_count)

    def u8(self, value: int) -> None:
        self.raw(bytes((value,)))

    def varint(self, value: int) -> None:
        self.raw(varint_bytes(value))

    def raw(self, data: bytes | memoryview) -> None:
        if len(data):
            self._parts.append(data)
            self.size += len(data)

    def seal(self) -> bytes:
        body = b"".join(self._parts)
        return body + struct.pack("<I", checksum(body))


class PayloadReader:
    """Bounds-checked reads over a payload body; every failure is a ``CorruptPayload``."""

    def __init__(self, view: memoryview, start: int, end: int) -> None:
        self._view = view
        self.position = start
        self.end = end

    @property
    def remaining(self) -> int:
        return self.end - self.position

    def u8(self, what: str) -> int:
        if self.position >= self.end:
            raise CorruptPayload(f"{what}: payload ends before this field")
        value = self._view[self.position]
        self.position += 1
        return value

    def varint(self, what: str) -> int:
        value = 0
        for shift in range(0, 7 * MAX_VARINT_BYTES, 7):
            byte = self.u8(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise CorruptPayload(f"{what}: varint longer than {MAX_VARINT_BYTES} bytes")

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or size > self.remaining:
            raise CorruptPayload(
                f"{what}: needs {size} bytes but only {self.remaining} remain in the payload"
            )
        part = self._view[self.position : self.position + size]
        self.position += size
        return part


def open_payload(payload: object) -> tuple[PayloadReader, int]:
    """Check the envelope of ``payload`` and return a reader positioned at the first record.

    Returns the reader and the declared tensor count (already checked against what a
    payload of this length can hold).
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CorruptPayload(f"payload must be bytes, got {type(payload).__name__}")
    view = memoryview(payload).cast("B") if isinstance(payload, memoryview) else memoryview(payload)
    size = len(view)
    if size == 0:
        raise CorruptPayload("payload is empty")
    if size < MIN_PAYLOAD_BYTES:
        raise CorruptPayload(
            f"payload is {size} bytes, shorter than the smallest valid payload ({MIN_PAYLOAD_BYTES} bytes)"
        )
    magic = bytes(view[: len(MAGIC)])
    if magic != MAGIC:
        raise CorruptPayload(f"not a globetrain codec payload: magic {magic!r}, expected {MAGIC!r}")
    version = view[len(MAGIC)]
    if version != VERSION:
        raise CorruptPayload(f"unsupported payload version {version}; this build reads version {VERSION}")
    body_end = size - CHECKSUM_BYTES
    stored = struct.unpack_from("<I", view, body_end)[0]
    computed = checksum(view[:body_end])
    if stored != computed:
        raise CorruptPayload(
            f"checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): "
            "the payload was damaged, truncated or extended"
        )
    reader = PayloadReader(view, len(MAGIC) + 1, body_end)
    tensor_count = reader.varint("tensor count")
    if tensor_count > reader.remaining // MIN_RECORD_BYTES:
        raise CorruptPayload(
            f"tensor count {tensor_count} is more than a payload of {size} bytes can hold"
        )
    return reader, tensor_count

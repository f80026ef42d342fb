"""Decoding hostile bytes: only ``CorruptPayload``, with a message that says what is wrong.

Two kinds of input: mutations of valid payloads (bit flips, truncation, extension, random
bytes), which the checksum mostly catches; and payloads crafted field by field with a
valid checksum whose fields lie, which only the field checks catch.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from globetrain.compression import Codec
from globetrain.compression.bitpacking import pack_fields
from globetrain.compression.wire import MAGIC, PayloadWriter, seal
from globetrain.errors import CorruptPayload

SAFETY_NET = "could not be decoded"  # the catch-all message: reaching it means a field check is missing

F32, F16, BF16 = 0, 1, 2
DENSE, RICE, BITMAP = 0, 1, 2
Q2, Q4, Q8, RAW16, RAWBF16, RAW32 = 2, 4, 8, 16, 17, 32


def record(
    writer: PayloadWriter,
    *,
    shape: Sequence[int] = (10,),
    dtype: int = F32,
    index_coding: int = DENSE,
    value_format: int = RAW32,
    count: int | None = None,
    fields: Sequence[tuple[str, int]] = (),
    streams: Sequence[bytes] = (),
) -> None:
    """Append one tensor record with whatever field values a test wants (lies included)."""
    writer.u8(dtype)
    writer.u8(len(shape))
    for dim in shape:
        writer.varint(dim)
    writer.u8(index_coding)
    writer.u8(value_format)
    writer.varint(int(np.prod(shape)) if count is None else count)
    for kind, value in fields:
        writer.u8(value) if kind == "u8" else writer.varint(value)
    for stream in streams:
        writer.raw(stream)


def crafted(*records: dict, tensor_count: int | None = None) -> bytes:
    writer = PayloadWriter(len(records) if tensor_count is None else tensor_count)
    for fields in records:
        record(writer, **fields)
    return writer.seal()


def f32(*values: float) -> bytes:
    return np.array(values, dtype="<f4").tobytes()


def rice_streams(gaps: Sequence[int], parameter: int) -> tuple[bytes, bytes]:
    """Hand-built Rice streams (independent of the codec's encoder) for given gaps."""
    remainders = pack_fields(np.array([g & ((1 << parameter) - 1) for g in gaps], dtype=np.uint64), parameter)
    bits = "".join("0" * (g >> parameter) + "1" for g in gaps)
    bits += "0" * (-len(bits) % 8)
    quotients = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    return remainders, quotients


def assert_corrupt(payload: object, match: str, codec: Codec | None = None, **kwargs: object) -> None:
    with pytest.raises(CorruptPayload, match=match) as caught:
        (codec or Codec(0.1, 8)).decode(payload, **kwargs)  # type: ignore[arg-type]
    assert SAFETY_NET not in str(caught.value)


def valid_payloads() -> list[bytes]:
    generator = torch.Generator().manual_seed(0)
    batch = [torch.randn(50, 40, generator=generator), torch.randn(7, generator=generator), torch.randn(())]
    return [
        Codec(0.05, 8).encode(batch, seed=1),
        Codec(0.3, 2).encode(batch, seed=1),
        Codec(1.0, 32).encode([t.half() for t in batch]),
        Codec(0.9, 16).encode([t.bfloat16() for t in batch]),
        Codec(0.001, 4).encode([torch.randn(3000, generator=generator)], seed=2),
    ]


PAYLOADS = valid_payloads()


def test_crafting_helpers_make_payloads_the_codec_accepts() -> None:
    remainders, quotients = rice_streams([2, 0, 5], parameter=1)
    payload = crafted(
        {"shape": (10,), "index_coding": RICE, "value_format": RAW32, "count": 3,
         "fields": [("u8", 1), ("varint", len(quotients))], "streams": [remainders, quotients, f32(1, 2, 3)]},
    )
    decoded = Codec(0.5, 8).decode(payload)[0]
    assert decoded.tolist() == [0, 0, 1, 2, 0, 0, 0, 0, 0, 3]


# ------------------------------------------------------------------------- mutated payloads


@settings(max_examples=300)
@given(st.sampled_from(range(len(PAYLOADS))), st.data())
def test_bit_flips_raise_only_corrupt_payload(which: int, data: st.DataObject) -> None:
    payload = bytearray(PAYLOADS[which])
    flips = data.draw(st.lists(st.integers(0, len(payload) * 8 - 1), min_size=1, max_size=4, unique=True))
    for bit in flips:
        payload[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptPayload) as caught:
        Codec(0.1, 8).decode(bytes(payload))
    assert SAFETY_NET not in str(caught.value)


@settings(max_examples=200)
@given(st.sampled_from(range(len(PAYLOADS))), st.data())
def test_truncation_and_extension_raise_only_corrupt_payload(which: int, data: st.DataObject) -> None:
    payload = PAYLOADS[which]
    if data.draw(st.booleans()):
        mutated = payload[: data.draw(st.integers(0, len(payload) - 1))]
    else:
        mutated = payload + data.draw(st.binary(min_size=1, max_size=64))
    with pytest.raises(CorruptPayload) as caught:
        Codec(0.1, 8).decode(mutated)
    assert SAFETY_NET not in str(caught.value)


@settings(max_examples=300)
@given(st.binary(max_size=512), st.booleans())
def test_random_bytes_raise_only_corrupt_payload(data: bytes, with_header: bool) -> None:
    payload = MAGIC + b"\x01" + data if with_header else data
    with pytest.raises(CorruptPayload) as caught:
        Codec(0.1, 8).decode(payload)
    assert SAFETY_NET not in str(caught.value)


@settings(max_examples=200)
@given(st.sampled_from(range(len(PAYLOADS))), st.data())
def test_resealed_mutations_raise_only_corrupt_payload_or_decode(which: int, data: st.DataObject) -> None:
    """Mutations past the checksum: any outcome but another exception (or a hang) is fine."""
    body = bytearray(PAYLOADS[which][:-4])
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(len(MAGIC) + 1, len(body) - 1))
        body[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        body = body[: data.draw(st.integers(len(MAGIC) + 1, len(body)))]
    codec = Codec(0.1, 8, max_elements=1 << 20)
    try:
        decoded = codec.decode(seal(body))
    except CorruptPayload as error:
        assert SAFETY_NET not in str(error)
    else:
        assert all(bool(torch.isfinite(tensor.float()).all()) for tensor in decoded)


# --------------------------------------------------------------------------- the envelope


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "payload is empty"),
        (b"GTCZ\x01", "shorter than the smallest valid payload"),
        (seal(b"XXXX\x01\x00"), "not a globetrain codec payload"),
        (seal(b"GTCZ\x09\x00"), "unsupported payload version 9"),
        (b"GTCZ\x01\x00" + b"\x00\x00\x00\x00", "checksum mismatch"),
        (PAYLOADS[0][:-1], "checksum mismatch"),
        (PAYLOADS[0] + b"\x00", "checksum mismatch"),
        ("not bytes", "payload must be bytes"),
        (None, "payload must be bytes"),
        (seal(b"GTCZ\x01\x05"), "tensor count 5 is more than"),
        (seal(b"GTCZ\x01" + b"\xff" * 10), "varint longer than 9 bytes"),
        (seal(b"GTCZ\x01\x00\x00"), "1 unexpected bytes after the last tensor record"),
    ],
)
def test_envelope_errors_name_the_problem(payload: object, match: str) -> None:
    assert_corrupt(payload, match)


def test_empty_payload_of_zero_tensors_is_valid() -> None:
    assert Codec(0.1, 8).decode(Codec(0.5, 4).encode([])) == []


# ----------------------------------------------------------------- checksum-valid field lies


def rice_record(gaps: Sequence[int], parameter: int, *, shape: Sequence[int] = (64,), count: int | None = None) -> dict:
    remainders, quotients = rice_streams(gaps, parameter)
    count = len(gaps) if count is None else count
    values = f32(*([1.0] * count))
    return {
        "shape": shape, "index_coding": RICE, "value_format": RAW32,
        "count": count,
        "fields": [("u8", parameter), ("varint", len(quotients))],
        "streams": [remainders, quotients, values],
    }


LIES = [
    ("unknown dtype", crafted({"dtype": 7, "streams": [f32(*range(10))]}), "unknown dtype code 7"),
    ("too many dims", crafted({"shape": (1,) * 17, "count": 1}), "17 dimensions, more than the 16"),
    ("unknown index coding", crafted({"index_coding": 5}), "unknown index coding 5"),
    ("unknown value format", crafted({"value_format": 3}), "unknown value format 3"),
    ("count above numel", crafted({"index_coding": RICE, "count": 11}), "count 11 exceeds its 10 elements"),
    ("dense count short", crafted({"count": 9, "streams": [f32(*range(9))]}), "dense record must carry all 10"),
    ("values missing", crafted({"streams": [f32(*range(9))]}), "values: needs 40 bytes but only 36 remain"),
    ("trailing record bytes", crafted({"streams": [f32(*range(10)), b"\x00"]}), "1 unexpected bytes"),
    ("tensor count lies", crafted({"streams": [f32(*range(10))]}, {"streams": [f32(*range(10))]}, tensor_count=1),
     "unexpected bytes after the last tensor record"),
    ("nan value", crafted({"shape": (2,), "streams": [f32(1.0, float("nan"))]}), "values include NaN or infinity"),
    ("inf value", crafted({"shape": (2,), "streams": [f32(float("inf"), 1.0)]}), "values include NaN or infinity"),
    ("float16 overflow", crafted({"shape": (1,), "dtype": F16, "streams": [f32(1e6)]}), "overflow a torch.float16"),
    ("scales inverted", crafted({"shape": (2,), "value_format": Q8, "fields": [("u8", 8)],
                                 "streams": [f32(2.0, 1.0), b"\x01\x02"]}), "0 <= lo <= hi"),
    ("scales negative", crafted({"shape": (2,), "value_format": Q8, "fields": [("u8", 8)],
                                 "streams": [f32(-1.0, 1.0), b"\x01\x02"]}), "0 <= lo <= hi"),
    ("scales nan", crafted({"shape": (2,), "value_format": Q4, "fields": [("u8", 8)],
                            "streams": [f32(0.0, float("nan")), b"\x12"]}), "0 <= lo <= hi"),
    ("quantized float16 overflow", crafted({"shape": (2,), "dtype": F16, "value_format": Q8, "fields": [("u8", 8)],
                                            "streams": [f32(0.0, 1e6), b"\x7f\x00"]}), "overflow a torch.float16"),
    ("chunk out of range", crafted({"shape": (2,), "value_format": Q8, "fields": [("u8", 31)]}),
     "chunk 2\\*\\*31 is out of range"),
    ("code padding", crafted({"shape": (3,), "value_format": Q2, "fields": [("u8", 10)],
                              "streams": [f32(0.0, 1.0), b"\x01"]}), "padding bits after the last field"),
    ("index out of range", crafted(rice_record([3, 70], parameter=2)), "index out of range for a tensor of 64"),
    ("last index just past the end", crafted(rice_record([63, 0], parameter=3)), "index out of range"),
    ("too few gaps", crafted(rice_record([1, 2], parameter=1, count=3)), "quotient stream holds 2 gaps, count says 3"),
    ("rice parameter too large", crafted(rice_record([1], parameter=7, shape=(64,))),
     "Rice parameter 7 is out of range for 64"),
    ("quotient stream extended", crafted({**rice_record([1, 2], parameter=1),
                                          "fields": [("u8", 1), ("varint", 2)],
                                          "streams": [b"\x80", b"\x50\x00", f32(1.0, 1.0)]}),
     "bytes after its last gap"),
    ("quotient stream short of gaps", crafted({**rice_record([1, 2], parameter=1),
                                               "fields": [("u8", 1), ("varint", 1)],
                                               "streams": [b"\x80", b"\x40", f32(1.0, 1.0)]}),
     "quotient stream holds 1 gaps, count says 2"),
    ("remainder padding", crafted({**rice_record([1, 2], parameter=1),
                                   "streams": [b"\x81", b"\xc0", f32(1.0, 1.0)]}), "padding bits"),
    ("bitmap count", crafted({"shape": (10,), "index_coding": BITMAP, "count": 2,
                              "streams": [b"\x80\x00", f32(1.0, 2.0)]}), "bitmap marks 1 elements, count says 2"),
    ("bitmap padding", crafted({"shape": (10,), "index_coding": BITMAP, "count": 1,
                                "streams": [b"\x00\x01", f32(1.0)]}), "padding bits"),
    ("numel over max_elements", crafted({"shape": (1 << 20, 1 << 20), "index_coding": RICE, "count": 0,
                                         "fields": [("u8", 0), ("varint", 0)]}), "more than max_elements"),
    ("huge dim of an empty tensor", crafted({"shape": (0, 1 << 60), "count": 0}), "more than max_elements"),
    ("total over max_elements", crafted(*[{"shape": (1 << 19,), "index_coding": RICE, "count": 0,
                                           "fields": [("u8", 0), ("varint", 0)]}] * 3), "in total"),
]


@pytest.mark.parametrize(("name", "payload", "match"), LIES, ids=[lie[0] for lie in LIES])
def test_lying_fields_are_refused_with_the_right_message(name: str, payload: bytes, match: str) -> None:
    assert_corrupt(payload, match, Codec(0.1, 8, max_elements=1 << 20))


def test_lying_payloads_pass_the_checksum() -> None:
    # the refusals above come from field checks, not from the envelope
    for _, payload, _ in LIES:
        body, stored = payload[:-4], struct.unpack("<I", payload[-4:])[0]
        assert seal(body)[-4:] == struct.pack("<I", stored)


def test_shapes_are_checked_against_expect() -> None:
    payload = Codec(0.1, 8).encode([torch.randn(3, 4), torch.randn(5)])

    assert_corrupt(payload, r"tensor 0: shape \(3, 4\) differs from the expected \(4, 3\)", expect=[(4, 3), (5,)])
    assert_corrupt(payload, "expected 3 tensors, the payload holds 2", expect=[(3, 4), (5,), (1,)])
    assert [t.shape for t in Codec(0.1, 8).decode(payload, expect=[torch.Size([3, 4]), [5]])] == [(3, 4), (5,)]


def test_oversized_declarations_are_refused_before_allocating() -> None:
    # a 20-byte payload declaring 2**40 elements would need 4 TiB if allocated first
    payload = crafted({"shape": (1 << 40,), "index_coding": RICE, "count": 0, "fields": [("u8", 0), ("varint", 0)]})
    assert len(payload) < 32
    assert_corrupt(payload, "declares 1099511627776 elements, more than max_elements=268435456", Codec(0.1, 8))


def test_rejections_are_counted() -> None:
    codec = Codec(0.1, 8)
    with pytest.raises(CorruptPayload):
        codec.decode(b"junk")
    codec.decode(PAYLOADS[0])
    assert (codec.stats.payloads_rejected, codec.stats.payloads_decoded) == (1, 1)

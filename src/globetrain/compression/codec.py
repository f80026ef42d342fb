"""``Codec``: top-k sparsification, low-bit quantization and index coding behind one object.

Per tensor the codec decides how to send it:

- dense (every element, no index stream) when that costs at most ``DENSE_ALLOWANCE_BYTES``
  more than the expected sparse encoding: at density 1, tiny tensors, high densities;
- otherwise sparse, positions Rice-coded or as a bitmap, whichever is smaller.

Top-k is global over the sparse tensors of an update: exactly ``round(density * n)``
values are sent, n being their total size, and they are the largest magnitudes of the
whole update wherever they are (``selection``). Measured on a CNN gradient
(``benchmarks/codec_benchmark.py``), a global top-k keeps 44% of the squared norm at
density 0.001 where a per-tensor top-k keeps 3%: update scales differ between layers far
more than within one. A layer that is not sent keeps its update in error feedback until
it is large enough to be.

Values are quantized to 2, 4 or 8 bits (``quantization``), or sent raw at 16 bits
(float16; bfloat16 for bfloat16 tensors or values beyond float16's range) and 32 bits
(float32; 16-bit tensors go in their own dtype, which is lossless and half the size).
The wire format is documented in ``globetrain.compression.wire``; any ``Codec`` decodes
any valid payload, whatever density and bits made it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import mmap
from collections.abc import Sequence

import numpy as np
import torch

from globetrain.compression.index_coding import (
    MAX_RICE_PARAMETER,
    RiceCode,
    bitmap_bytes,
    choose_index_coding,
    decode_bitmap,
    decode_rice,
    expected_rice_bytes,
)
from globetrain.compression.bitpacking import packed_size
from globetrain.compression.quantization import (
    MAX_CHUNK_LOG2,
    SCALE_BYTES,
    chunk_count,
    chunk_log2_for,
    dequantize,
    quantize,
    quantized_bytes,
)
from globetrain.compression.selection import NonFiniteValues, check_finite, global_top_positions
from globetrain.compression.updates import EncodedUpdate, SparseTensorUpdate, TensorEncoding
from globetrain.compression.wire import (
    CHECKSUM_BYTES,
    MAGIC,
    MAX_NDIM,
    DtypeCode,
    IndexCoding,
    PayloadReader,
    PayloadWriter,
    ValueFormat,
    open_payload,
    varint_size,
)
from globetrain.config import require
from globetrain.errors import CorruptPayload, NonFinitePayload

ALLOWED_BITS = (2, 4, 8, 16, 32)
DEFAULT_MAX_ELEMENTS = 1 << 28
# Far above any model this project trains; keeps every index sum inside int64.
MAX_ELEMENTS_LIMIT = 1 << 40
FLOAT16_MAX = float(torch.finfo(torch.float16).max)
BFLOAT16_MAX = float(torch.finfo(torch.bfloat16).max)

DTYPE_CODES = {
    torch.float32: DtypeCode.FLOAT32,
    torch.float16: DtypeCode.FLOAT16,
    torch.bfloat16: DtypeCode.BFLOAT16,
}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
# A tensor goes dense when that costs at most this much more than sparse: below it the
# index and scale overhead eats the saving, and small tensors (biases, norms) then keep
# all their information every round. Costs at most 16 bytes per such tensor.
DENSE_ALLOWANCE_BYTES = 16
LAZY_ZERO_MMAP_BYTES = 4 << 20
NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}
NATIVE_16_BIT_FORMATS = {torch.float16: ValueFormat.FLOAT16, torch.bfloat16: ValueFormat.BFLOAT16}


def validate_codec_settings(section: str, density: float, bits: int, max_elements: int) -> None:
    """Raise ``ConfigError`` (a ``ValueError``) naming the offending setting and its value."""
    require(
        isinstance(density, (int, float)) and not isinstance(density, bool)
        and math.isfinite(density) and 0 < density <= 1,
        section, "density", density, "a number in (0, 1] (fraction of each tensor's elements sent)",
    )
    require(
        isinstance(bits, int) and not isinstance(bits, bool) and bits in ALLOWED_BITS,
        section, "bits", bits, "one of 2, 4, 8, 16, 32",
    )
    require(
        isinstance(max_elements, int) and not isinstance(max_elements, bool)
        and 1 <= max_elements <= MAX_ELEMENTS_LIMIT,
        section, "max_elements", max_elements, f"an integer in [1, {MAX_ELEMENTS_LIMIT}]",
    )


@dataclasses.dataclass
class CodecStats:
    """Counters since the codec was made (cheap; read them for logs and metrics)."""

    payloads_encoded: int = 0
    bytes_encoded: int = 0
    tensors_dense: int = 0
    tensors_rice: int = 0
    tensors_bitmap: int = 0
    payloads_decoded: int = 0
    payloads_rejected: int = 0


@dataclasses.dataclass(frozen=True)
class _TensorPlan:
    dense: bool
    count: int
    """Values to send: numel when dense, else the target count."""
    value_format: ValueFormat
    """The cheapest format for ``count`` values (used by estimates)."""
    requested: ValueFormat
    """The format ``bits`` asks for; the encoder picks the cheapest for the actual count."""


@dataclasses.dataclass(frozen=True)
class _RecordLayout:
    """A tensor record's header fields and stream views, read before anything is allocated."""

    position: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    numel: int
    index_coding: IndexCoding
    value_format: ValueFormat
    count: int
    chunk_log2: int
    rice_parameter: int
    index_streams: tuple[memoryview, ...]
    value_streams: tuple[memoryview, ...]


class Codec:
    """Encoder and decoder of compressed updates (see the module docstring).

    ``density`` in (0, 1]: fraction of each tensor's elements sent. ``bits`` in
    {2, 4, 8, 16, 32}: bits per value. ``max_elements``: the most elements a payload may
    declare in total; decoding refuses more before allocating anything.
    """

    def __init__(self, density: float, bits: int, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> None:
        validate_codec_settings("Codec", density, bits, max_elements)
        self._density = float(density)
        self._bits = bits
        self._max_elements = max_elements
        self.stats = CodecStats()

    @property
    def density(self) -> float:
        return self._density

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def max_elements(self) -> int:
        return self._max_elements

    def __repr__(self) -> str:
        return f"Codec(density={self._density}, bits={self._bits}, max_elements={self._max_elements})"

    def target_count(self, numel: int) -> int:
        """Values sent for ``numel`` elements: density x numel rounded, at least 1.

        Applied to the total size of the tensors an update sends sparse, it is exactly the
        number of values the update carries for them (fewer only if fewer are nonzero).
        """
        if numel == 0:
            return 0
        if self._density >= 1:
            return numel
        return min(numel, max(1, int(self._density * numel + 0.5)))

    # ----------------------------------------------------------------------------- encode

    def encode(self, tensors: Sequence[torch.Tensor], *, seed: int | None = None) -> bytes:
        """Compress ``tensors`` (float32, float16 or bfloat16) into one payload."""
        return self.encode_with_sent(tensors, seed=seed).payload

    def encode_with_sent(self, tensors: Sequence[torch.Tensor], *, seed: int | None = None) -> EncodedUpdate:
        """Compress ``tensors``; also return exactly what a receiver will decode.

        ``seed`` fixes the stochastic rounding: the same seed and tensors give the same
        bytes. Raises ``TypeError`` for a tensor of another dtype (or a non-tensor) and
        ``ValueError`` naming the tensor for NaN or infinite values.
        """
        tensor_list = _as_list(tensors)
        flats = [_flat_float32(position, tensor) for position, tensor in enumerate(tensor_list)]
        total = sum(flat.numel() for flat in flats)
        if total > self._max_elements:
            raise ValueError(
                f"the update has {total} elements, more than max_elements={self._max_elements}: "
                "receivers would refuse it; construct the Codec with a larger max_elements"
            )
        plans = [
            _plan(flat.numel(), self.target_count(flat.numel()), self._bits, tensor.dtype)
            for tensor, flat in zip(tensor_list, flats)
        ]
        picks = self._select(tensor_list, flats, plans)
        writer = PayloadWriter(len(flats))
        generator: list[np.random.Generator] = []  # made on first use: raw sends need none
        sent: list[SparseTensorUpdate] = []
        encodings: list[TensorEncoding] = []
        for tensor, flat, plan, positions in zip(tensor_list, flats, plans, picks):
            update, encoding = self._encode_tensor(tensor, flat, plan, positions, writer, generator, seed)
            sent.append(update)
            encodings.append(encoding)
        payload = writer.seal()
        self._count_encoded(payload, encodings)
        return EncodedUpdate(payload, sent, tuple(encodings))

    def _select(
        self, tensors: list[torch.Tensor], flats: list[torch.Tensor], plans: list[_TensorPlan]
    ) -> list[np.ndarray | None]:
        """Positions to send per tensor (``None``: dense), one global top-k over the sparse ones."""
        members = [position for position, plan in enumerate(plans) if not plan.dense]
        for position, plan in enumerate(plans):
            if plan.dense:
                try:
                    check_finite(flats[position].numpy())
                except NonFiniteValues:
                    raise _non_finite(position, tensors[position]) from None
        member_picks: list[np.ndarray] = []
        if members:
            budget = self.target_count(sum(flats[position].numel() for position in members))
            try:
                member_picks = global_top_positions([flats[position].numpy() for position in members], budget)
            except NonFiniteValues as error:
                bad = members[error.member or 0]
                raise _non_finite(bad, tensors[bad]) from None
        picks: list[np.ndarray | None] = [None] * len(plans)
        for position, positions in zip(members, member_picks):
            picks[position] = positions.astype(np.int64, copy=False)
        return picks

    def _encode_tensor(
        self,
        tensor: torch.Tensor,
        flat: torch.Tensor,
        plan: _TensorPlan,
        positions: np.ndarray | None,
        writer: PayloadWriter,
        generator: list[np.random.Generator],
        seed: int | None,
    ) -> tuple[SparseTensorUpdate, TensorEncoding]:
        dtype = tensor.dtype
        numel = flat.numel()
        all_values = flat.numpy()
        values = all_values if positions is None else all_values[positions]
        start = writer.size
        writer.u8(DTYPE_CODES[dtype])
        writer.u8(tensor.dim())
        for dim in tensor.shape:
            writer.varint(dim)
        index_coding, index_code = IndexCoding.DENSE, None
        if positions is not None:
            index_coding, index_code = choose_index_coding(positions, numel)
        requested = _cheapest_value_format(len(values), plan.requested)
        value_format, value_parts, decoded = _encode_values(values, requested, dtype, generator, seed)
        writer.u8(index_coding)
        writer.u8(value_format)
        writer.varint(len(values))
        if value_format.is_quantized:
            writer.u8(chunk_log2_for(value_format.value))
        if isinstance(index_code, RiceCode):
            writer.u8(index_code.parameter)
            writer.varint(len(index_code.quotients))
            writer.raw(index_code.remainders)
            writer.raw(index_code.quotients)
        elif index_code is not None:
            writer.raw(index_code)
        for part in value_parts:
            writer.raw(part)
        indices = None if positions is None else torch.from_numpy(positions)
        update = SparseTensorUpdate(tensor.shape, dtype, indices, torch.from_numpy(decoded))
        encoding = TensorEncoding(
            numel=numel,
            target_count=self.target_count(numel),
            count=len(values),
            index_coding=index_coding.name.lower(),
            value_format=_format_name(value_format),
            record_bytes=writer.size - start,
        )
        return update, encoding

    def _count_encoded(self, payload: bytes, encodings: list[TensorEncoding]) -> None:
        self.stats.payloads_encoded += 1
        self.stats.bytes_encoded += len(payload)
        for encoding in encodings:
            if encoding.index_coding == "dense":
                self.stats.tensors_dense += 1
            elif encoding.index_coding == "rice":
                self.stats.tensors_rice += 1
            else:
                self.stats.tensors_bitmap += 1

    # ----------------------------------------------------------------------------- decode

    def decode(self, payload: bytes, *, expect: Sequence[Sequence[int]] | None = None) -> list[torch.Tensor]:
        """Dense tensors (shapes and dtypes as encoded) from ``payload``.

        ``expect``: the shapes the caller expects; a payload with other shapes is refused.
        Raises ``CorruptPayload`` (and nothing else) for any malformed payload.
        """
        return [_densify(update) for update in self.decode_sparse(payload, expect=expect)]

    def decode_sparse(
        self, payload: bytes, *, expect: Sequence[Sequence[int]] | None = None
    ) -> list[SparseTensorUpdate]:
        """Like ``decode`` but without densifying: positions and values per tensor."""
        expected_shapes = None if expect is None else [tuple(int(dim) for dim in shape) for shape in expect]
        try:
            updates = self._decode_checked(payload, expected_shapes)
        except CorruptPayload:
            self.stats.payloads_rejected += 1
            raise
        except (ValueError, TypeError, IndexError, OverflowError, RuntimeError, MemoryError) as error:
            # Every field is checked above; this net turns an unforeseen failure into the
            # one exception callers handle, and says it is one (tests look for this text).
            self.stats.payloads_rejected += 1
            raise CorruptPayload(f"payload could not be decoded ({type(error).__name__}: {error})") from error
        self.stats.payloads_decoded += 1
        return updates

    def _decode_checked(
        self, payload: bytes, expected_shapes: list[tuple[int, ...]] | None
    ) -> list[SparseTensorUpdate]:
        reader, tensor_count = open_payload(payload)
        if expected_shapes is not None and tensor_count != len(expected_shapes):
            raise CorruptPayload(f"expected {len(expected_shapes)} tensors, the payload holds {tensor_count}")
        layouts: list[_RecordLayout] = []
        total = 0
        for position in range(tensor_count):
            layout = self._read_record(reader, position, total)
            total += layout.numel
            if expected_shapes is not None and layout.shape != expected_shapes[position]:
                raise CorruptPayload(
                    f"tensor {position}: shape {layout.shape} differs from the expected {expected_shapes[position]}"
                )
            layouts.append(layout)
        if reader.remaining:
            raise CorruptPayload(f"{reader.remaining} unexpected bytes after the last tensor record")
        return [_decode_record(layout) for layout in layouts]

    def _read_record(self, reader: PayloadReader, position: int, total_before: int) -> _RecordLayout:
        what = f"tensor {position}"
        dtype_code = reader.u8(f"{what} dtype")
        if dtype_code not in CODE_DTYPES:
            raise CorruptPayload(f"{what}: unknown dtype code {dtype_code}")
        ndim = reader.u8(f"{what} ndim")
        if ndim > MAX_NDIM:
            raise CorruptPayload(f"{what}: {ndim} dimensions, more than the {MAX_NDIM} allowed")
        shape = tuple(reader.varint(f"{what} dimension {axis}") for axis in range(ndim))
        numel = math.prod(shape)
        if numel > self._max_elements or any(dim > self._max_elements for dim in shape):
            raise CorruptPayload(
                f"{what}: shape {shape} declares {numel} elements, more than max_elements="
                f"{self._max_elements} (if this is legitimate, construct the Codec with a larger max_elements)"
            )
        if total_before + numel > self._max_elements:
            raise CorruptPayload(
                f"the payload declares more than max_elements={self._max_elements} elements in total "
                f"(reached at {what}); construct the Codec with a larger max_elements if legitimate"
            )
        index_byte = reader.u8(f"{what} index coding")
        if index_byte not in IndexCoding._value2member_map_:
            raise CorruptPayload(f"{what}: unknown index coding {index_byte}")
        format_byte = reader.u8(f"{what} value format")
        if format_byte not in ValueFormat._value2member_map_:
            raise CorruptPayload(f"{what}: unknown value format {format_byte}")
        index_coding, value_format = IndexCoding(index_byte), ValueFormat(format_byte)
        count = reader.varint(f"{what} count")
        if count > numel:
            raise CorruptPayload(f"{what}: count {count} exceeds its {numel} elements")
        if index_coding is IndexCoding.DENSE and count != numel:
            raise CorruptPayload(f"{what}: a dense record must carry all {numel} elements, count is {count}")
        chunk_log2 = rice_parameter = 0
        if value_format.is_quantized:
            chunk_log2 = reader.u8(f"{what} chunk size")
            if chunk_log2 > MAX_CHUNK_LOG2:
                raise CorruptPayload(f"{what}: quantization chunk 2**{chunk_log2} is out of range")
        index_streams: tuple[memoryview, ...] = ()
        if index_coding is IndexCoding.RICE:
            rice_parameter = reader.u8(f"{what} Rice parameter")
            if rice_parameter > MAX_RICE_PARAMETER or (1 << rice_parameter) > max(numel, 1):
                raise CorruptPayload(f"{what}: Rice parameter {rice_parameter} is out of range for {numel} elements")
            quotient_bytes = reader.varint(f"{what} quotient stream length")
            index_streams = (
                reader.take(packed_size(count, rice_parameter), f"{what} remainder stream"),
                reader.take(quotient_bytes, f"{what} quotient stream"),
            )
        elif index_coding is IndexCoding.BITMAP:
            index_streams = (reader.take(bitmap_bytes(numel), f"{what} bitmap"),)
        if value_format.is_quantized:
            value_streams = (
                reader.take(SCALE_BYTES * chunk_count(count, chunk_log2), f"{what} scales"),
                reader.take(packed_size(count, value_format.value), f"{what} value codes"),
            )
        else:
            value_streams = (reader.take(count * value_format.raw_value_bytes, f"{what} values"),)
        return _RecordLayout(
            position, CODE_DTYPES[dtype_code], shape, numel, index_coding, value_format, count,
            chunk_log2, rice_parameter, index_streams, value_streams,
        )

    # --------------------------------------------------------------------------- estimate

    def estimate_payload_bytes(self, shapes: Sequence[Sequence[int]]) -> int:
        """Predicted payload size for float32 tensors of these shapes, without encoding.

        Assumes each sparse tensor carries its share (density x its size) of the update's
        values and that positions are spread like random ones, as they are for top-k of
        noisy updates; the total number of values, headers and scales are exact, and the
        Rice streams are their expected size. Cached per shape: cheap to call often.
        """
        total = len(MAGIC) + 1 + varint_size(len(shapes)) + CHECKSUM_BYTES
        for shape in shapes:
            dims = [int(dim) for dim in shape]
            numel = math.prod(dims)
            plan = _plan(numel, self.target_count(numel), self._bits, torch.float32)
            # dtype, ndim, index coding and value format bytes; shape and count varints
            total += 4 + sum(varint_size(dim) for dim in dims) + varint_size(plan.count)
            total += _value_bytes(plan.count, plan.value_format)
            if not plan.dense:
                total += _index_bytes(plan.count, numel)
        return total


# ----------------------------------------------------------------------------------- helpers


def _non_finite(position: int, tensor: torch.Tensor) -> ValueError:
    return ValueError(
        f"tensor {position} (shape {tuple(tensor.shape)}) contains NaN or infinite values; "
        "refusing to send it (check the loss and learning rate of the step that produced it)"
    )


def _as_list(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"encode takes a list of tensors, got {type(tensors).__name__}")
    return list(tensors)


def _flat_float32(position: int, tensor: torch.Tensor) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor {position} is a {type(tensor).__name__}, not a torch.Tensor")
    if tensor.dtype not in DTYPE_CODES:
        raise TypeError(
            f"tensor {position} has dtype {tensor.dtype}; the codec sends float32, float16 and "
            "bfloat16 tensors (convert it, e.g. tensor.float())"
        )
    if tensor.dim() > MAX_NDIM:
        raise ValueError(f"tensor {position} has {tensor.dim()} dimensions; the wire format allows {MAX_NDIM}")
    return tensor.detach().to(device="cpu", dtype=torch.float32).reshape(-1).contiguous()


@functools.lru_cache(maxsize=4096)
def _plan(numel: int, target: int, bits: int, dtype: torch.dtype) -> _TensorPlan:
    requested = _requested_value_format(bits, dtype)
    dense_format = _cheapest_value_format(numel, requested)
    if target >= numel:
        return _TensorPlan(True, numel, dense_format, requested)
    sparse_format = _cheapest_value_format(target, requested)
    dense_bytes = _value_bytes(numel, dense_format)
    sparse_bytes = _value_bytes(target, sparse_format) + _index_bytes(target, numel)
    if dense_bytes <= sparse_bytes + DENSE_ALLOWANCE_BYTES:
        return _TensorPlan(True, numel, dense_format, requested)
    return _TensorPlan(False, target, sparse_format, requested)


def _cheapest_value_format(count: int, requested: ValueFormat) -> ValueFormat:
    """A handful of values is cheaper raw (and exact) than quantized with its scales."""
    if requested.is_quantized and _value_bytes(count, ValueFormat.FLOAT32) <= _value_bytes(count, requested):
        return ValueFormat.FLOAT32
    return requested


def _requested_value_format(bits: int, dtype: torch.dtype) -> ValueFormat:
    if bits <= 8:
        return ValueFormat(bits)
    if dtype in NATIVE_16_BIT_FORMATS:
        # 16-bit tensors go in their own dtype: lossless, and never larger than asked.
        return NATIVE_16_BIT_FORMATS[dtype]
    return ValueFormat.FLOAT16 if bits == 16 else ValueFormat.FLOAT32


def _value_bytes(count: int, value_format: ValueFormat) -> int:
    if value_format.is_quantized:
        return 1 + quantized_bytes(count, value_format.value, chunk_log2_for(value_format.value))
    return count * value_format.raw_value_bytes


def _index_bytes(count: int, numel: int) -> int:
    return min(expected_rice_bytes(count, numel), bitmap_bytes(numel))


def _encode_values(
    values: np.ndarray,
    requested: ValueFormat,
    dtype: torch.dtype,
    generator: list[np.random.Generator],
    seed: int | None,
) -> tuple[ValueFormat, list[bytes], np.ndarray]:
    """(format used, wire parts, float32 values as the receiver will decode them)."""
    if requested.is_quantized:
        if not generator:
            generator.append(np.random.default_rng(seed))
        quantized, decoded = quantize(values, requested.value, generator[0])
        decoded = _as_received(decoded, dtype)
        if _all_finite(decoded):
            return requested, [quantized.scale_bytes(), quantized.codes], decoded
        # Only values within a hair of float32's largest can round past it: send raw.
        requested = ValueFormat.FLOAT32
    if requested is ValueFormat.FLOAT16:
        peak = float(np.abs(values).max()) if len(values) else 0.0
        if peak > FLOAT16_MAX:
            requested = ValueFormat.BFLOAT16 if peak <= BFLOAT16_MAX else ValueFormat.FLOAT32
    if requested is ValueFormat.FLOAT32:
        return requested, [values.astype("<f4").tobytes()], _as_received(values.astype(np.float32), dtype)
    if requested is ValueFormat.FLOAT16:
        half = values.astype(np.float16)
        return requested, [half.astype("<f2", copy=False).tobytes()], _as_received(half.astype(np.float32), dtype)
    brain = torch.from_numpy(np.ascontiguousarray(values)).to(torch.bfloat16)
    wire = brain.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()
    return requested, [wire], _as_received(brain.float().numpy(), dtype)


def _as_received(values: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """Round float32 values through a 16-bit tensor dtype, as the receiver's tensor holds them."""
    if dtype is torch.float32:
        return values
    return torch.from_numpy(values).to(dtype).float().numpy()


def _all_finite(values: np.ndarray) -> bool:
    try:
        check_finite(values)
    except NonFiniteValues:
        return False
    return True


def _format_name(value_format: ValueFormat) -> str:
    return f"q{value_format.value}" if value_format.is_quantized else value_format.name.lower()


def _decode_record(layout: _RecordLayout) -> SparseTensorUpdate:
    what = f"tensor {layout.position}"
    indices = None
    if layout.index_coding is IndexCoding.RICE:
        remainders, quotients = layout.index_streams
        indices = decode_rice(layout.rice_parameter, remainders, quotients, layout.count, layout.numel, what)
    elif layout.index_coding is IndexCoding.BITMAP:
        indices = decode_bitmap(layout.index_streams[0], layout.count, layout.numel, what)
    if layout.value_format.is_quantized:
        scales, codes = layout.value_streams
        values = dequantize(scales, codes, layout.count, layout.value_format.value, layout.chunk_log2, what)
    else:
        values = _raw_values(layout.value_streams[0], layout.value_format)
    values = _as_received(values, layout.dtype)
    if not _all_finite(values):
        raise NonFinitePayload(f"{what}: values include NaN or infinity (or overflow a {layout.dtype} tensor)")
    index_tensor = None if indices is None else torch.from_numpy(indices.astype(np.int64, copy=False))
    return SparseTensorUpdate(layout.shape, layout.dtype, index_tensor, torch.from_numpy(values))


def _raw_values(data: memoryview, value_format: ValueFormat) -> np.ndarray:
    if value_format is ValueFormat.FLOAT32:
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    if value_format is ValueFormat.FLOAT16:
        return np.frombuffer(data, dtype="<f2").astype(np.float32)
    bits = np.frombuffer(data, dtype="<i2").astype(np.int16)
    return torch.from_numpy(bits).view(torch.bfloat16).float().numpy()


def _densify(update: SparseTensorUpdate) -> torch.Tensor:
    if update.is_dense:
        return update.values.to(update.dtype).reshape(update.shape)
    numpy_dtype = NUMPY_DTYPES.get(update.dtype)
    if numpy_dtype is None:
        dense = torch.zeros(update.shape.numel(), dtype=update.dtype)
        if update.count:
            dense[update.indices] = update.values.to(update.dtype)
        return dense.view(update.shape)
    array = _lazily_zeroed(update.shape.numel(), numpy_dtype)
    array[update.indices.numpy()] = update.values.numpy()
    return torch.from_numpy(array).view(update.shape)


def _lazily_zeroed(numel: int, dtype: type) -> np.ndarray:
    """A zero array whose pages the kernel zeroes on first touch, not all up front.

    A sparse update touches few pages of its output, so writing every page first (as
    torch.zeros does) doubles the cost of decoding. Large arrays come from an anonymous
    mmap rather than np.zeros: numpy asks for transparent huge pages above 4 MiB, and on a
    busy machine the kernel can then stall a decode for hundreds of milliseconds while it
    compacts memory into huge pages (measured: median 397 ms against 60 ms for the mmap,
    a 100 MB output under load). The array keeps the mapping alive; freeing it unmaps.
    """
    nbytes = numel * np.dtype(dtype).itemsize
    if nbytes < LAZY_ZERO_MMAP_BYTES:
        return np.zeros(numel, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype)

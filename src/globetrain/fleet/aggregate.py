"""A round's aggregate: the sample-weighted average, its re-encoding, and its message.

The leader averages the accepted contributions weighted by their samples (capped at the
round's median: ``globetrain.sync.weighting``), then encodes
the average with our codec again: density ``aggregate_density_factor`` x the densest
contribution's (capped at 1), bits of the run (32 when the group sent dense, as in a
warm-up round, so those rounds stay lossless). Every device, the leader included, applies
the decoded aggregate payload, so devices that apply the same aggregates hold
bit-identical global models.

What the re-encoding drops is not lost: each contributor adds its own sent values at the
positions the aggregate does not carry back into its error feedback
(``returned_values`` -> ``ExchangeOutcome.returned``) and sends them again later.

Aggregate message payload: a 4-byte big-endian length, the JSON ``AggregateInfo``, then
the codec payload (empty when the round failed).
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import torch

from globetrain.compression import Codec, SparseTensorUpdate
from globetrain.errors import CorruptPayload

MAX_INFO_BYTES = 64 << 10
_LENGTH = struct.Struct(">I")


@dataclasses.dataclass(frozen=True)
class AggregateInfo:
    """The clear facts of an aggregate (inside the encrypted envelope)."""

    status: str
    """``ok``, or ``failed`` when the leader had nothing to average (``reason`` says why)."""
    leader: str
    contributors: tuple[str, ...] = ()
    """Peer ids whose updates are in the average, sorted."""
    listeners: int = 0
    reason: str = ""
    base_round: int | None = None
    base_digest: str | None = None
    """The leader's global model digest after ``base_round`` (``SyncLoop.last_digest``)."""
    density: float = 1.0
    bits: int = 32

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, *, max_contributors: int) -> AggregateInfo:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as error:
            # RecursionError: arrays nested deeper than the interpreter's limit (found by the fuzz).
            raise CorruptPayload(f"aggregate info is not JSON: {str(error)[:200]}") from None
        if not isinstance(raw, dict) or set(raw) != {f.name for f in dataclasses.fields(cls)}:
            raise CorruptPayload("aggregate info does not have the expected fields")
        contributors = raw["contributors"]
        if (
            raw["status"] not in ("ok", "failed")
            or not isinstance(raw["leader"], str)
            or not isinstance(contributors, list)
            or len(contributors) > max_contributors
            or not all(isinstance(c, str) and len(c) <= 64 for c in contributors)
            or not isinstance(raw["listeners"], int)
            or not isinstance(raw["reason"], str)
            or not (raw["base_round"] is None or isinstance(raw["base_round"], int))
            or not (raw["base_digest"] is None or isinstance(raw["base_digest"], str))
            or not isinstance(raw["density"], (int, float))
            or not isinstance(raw["bits"], int)
        ):
            raise CorruptPayload("aggregate info has a field of the wrong type or size")
        return cls(
            status=raw["status"],
            leader=raw["leader"],
            contributors=tuple(contributors),
            listeners=raw["listeners"],
            reason=raw["reason"][:500],
            base_round=raw["base_round"],
            base_digest=raw["base_digest"],
            density=_float_in_range(raw["density"]),
            bits=raw["bits"],
        )


def _float_in_range(value: int | float) -> float:
    # float() of a JSON integer beyond 1e308 raises OverflowError (found by the fuzz).
    try:
        return float(value)
    except OverflowError:
        raise CorruptPayload(f"aggregate density {str(value)[:40]}... is out of range") from None


def pack_aggregate(info: AggregateInfo, codec_payload: bytes) -> bytes:
    meta = info.to_json()
    return _LENGTH.pack(len(meta)) + meta + codec_payload


def unpack_aggregate(data: bytes, *, max_contributors: int) -> tuple[AggregateInfo, bytes]:
    if len(data) < _LENGTH.size:
        raise CorruptPayload("aggregate message is shorter than its length field")
    (size,) = _LENGTH.unpack_from(data, 0)
    if size > MAX_INFO_BYTES or _LENGTH.size + size > len(data):
        raise CorruptPayload(f"aggregate info length {size} does not fit a message of {len(data)} bytes")
    info = AggregateInfo.from_json(data[_LENGTH.size : _LENGTH.size + size], max_contributors=max_contributors)
    return info, data[_LENGTH.size + size :]


def weighted_average(
    updates: Sequence[Sequence[SparseTensorUpdate]], weights: Sequence[float], shapes: Sequence[tuple[int, ...]]
) -> list[torch.Tensor]:
    """``sum_i weights[i] * updates[i]`` as dense float32 tensors of ``shapes``."""
    average = [torch.zeros(shape, dtype=torch.float32) for shape in shapes]
    for update, weight in zip(updates, weights):
        for target, part in zip(average, update):
            part.add_into(target, alpha=weight)
    return average


def update_density(update: Sequence[SparseTensorUpdate]) -> float:
    total = sum(part.shape.numel() for part in update)
    return sum(part.count for part in update) / total if total else 1.0


def aggregate_codec(
    updates: Sequence[Sequence[SparseTensorUpdate]], *, density_factor: float, bits: int, max_elements: int
) -> Codec:
    """The codec the leader re-encodes the average with (see the module docstring)."""
    densest = max((update_density(update) for update in updates), default=1.0)
    density = min(1.0, max(densest * density_factor, 1e-6))
    return Codec(density, 32 if density >= 1.0 else bits, max_elements=max_elements)


def aggregate_seed(run_id: bytes, round_index: int) -> int:
    """Stochastic rounding of a round's aggregate: reproducible, different per run and round."""
    return zlib.crc32(run_id + round_index.to_bytes(8, "big"))


def returned_values(
    own: Sequence[SparseTensorUpdate], aggregate: Sequence[SparseTensorUpdate]
) -> list[torch.Tensor] | None:
    """Own sent values at positions the aggregate does not carry (dense), or None if none."""
    returned: list[torch.Tensor] = []
    anything = False
    for mine, theirs in zip(own, aggregate):
        dense = torch.zeros(mine.shape.numel(), dtype=torch.float32)
        if mine.count and not theirs.is_dense:
            dropped = ~torch.isin(mine.indices, theirs.indices)
            if bool(dropped.any()):
                dense[mine.indices[dropped]] = mine.values[dropped]
                anything = True
        returned.append(dense.view(mine.shape))
    return returned if anything else None


def everything(own: Sequence[SparseTensorUpdate]) -> list[torch.Tensor]:
    """A contribution that is not in the aggregate at all comes back whole."""
    return [part.to_dense() for part in own]


def info_dict(info: AggregateInfo) -> dict[str, Any]:
    return dataclasses.asdict(info)

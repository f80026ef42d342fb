"""What an encoded update carries, in the form receivers and error feedback use it.

``SparseTensorUpdate`` is one tensor of an update as the receiver decodes it: flat
positions and the dequantized float32 values there. Aggregators can sum many of them
without densifying each (``add_into``); error feedback subtracts exactly these values
from its residual, so what it keeps is exactly what receivers did not get.
"""

from __future__ import annotations

import dataclasses

import torch


class SparseTensorUpdate:
    """Values at flat positions of a tensor of ``shape``; every other element is zero.

    ``indices`` is int64, flat (row-major), strictly increasing; ``values`` is float32,
    the values a receiver decodes (already rounded through ``dtype`` for 16-bit tensors,
    so they are the same numbers ``Codec.decode`` returns). A tensor sent dense carries
    every element: ``is_dense`` is then true and ``indices`` (0..numel-1) is only built
    if someone asks for it.
    """

    __slots__ = ("shape", "dtype", "values", "_indices")

    def __init__(
        self,
        shape: torch.Size | tuple[int, ...],
        dtype: torch.dtype,
        indices: torch.Tensor | None,
        values: torch.Tensor,
    ) -> None:
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.values = values
        self._indices = indices
        if indices is None and values.numel() != self.shape.numel():
            raise ValueError(
                f"a dense update of shape {tuple(self.shape)} needs {self.shape.numel()} values, "
                f"got {values.numel()}"
            )
        if indices is not None and indices.numel() != values.numel():
            raise ValueError(f"{indices.numel()} indices but {values.numel()} values")

    @property
    def indices(self) -> torch.Tensor:
        if self._indices is None:
            self._indices = torch.arange(self.shape.numel(), dtype=torch.int64)
        return self._indices

    @property
    def is_dense(self) -> bool:
        return self._indices is None or self.values.numel() == self.shape.numel()

    @property
    def count(self) -> int:
        """Number of values carried."""
        return self.values.numel()

    def to_dense(self) -> torch.Tensor:
        """A new float32 tensor of ``shape``: the values at their positions, zeros elsewhere."""
        if self.is_dense:
            return self.values.reshape(self.shape).clone()
        dense = torch.zeros(self.shape.numel(), dtype=torch.float32)
        dense[self.indices] = self.values
        return dense.view(self.shape)

    def add_into(self, dense: torch.Tensor, alpha: float = 1.0) -> None:
        """``dense += alpha * self``, in place, touching only the carried positions."""
        if dense.shape != self.shape or dense.dtype != torch.float32:
            raise ValueError(
                f"add_into needs a float32 tensor of shape {tuple(self.shape)}, "
                f"got {dense.dtype} {tuple(dense.shape)}"
            )
        if not dense.is_contiguous():
            raise ValueError("add_into needs a contiguous tensor (it adds through a flat view)")
        flat = dense.view(-1)
        if self.is_dense:
            flat.add_(self.values, alpha=alpha)
        elif self.count:
            flat.index_add_(0, self.indices, self.values, alpha=alpha)

    def __repr__(self) -> str:
        kind = "dense" if self.is_dense else f"{self.count} of {self.shape.numel()}"
        return f"SparseTensorUpdate(shape={tuple(self.shape)}, dtype={self.dtype}, {kind})"


@dataclasses.dataclass(frozen=True)
class TensorEncoding:
    """How one tensor was encoded (counted stats for logs and the QoS scheduler)."""

    numel: int
    target_count: int
    """This tensor's share, density x numel rounded (at least 1 for a non-empty tensor)."""
    count: int
    """Values actually sent. Top-k is global over the update, so a sparse tensor may carry
    more or fewer than its share; the update's total is exactly density x its sparse size."""
    index_coding: str
    """'dense', 'rice' or 'bitmap'."""
    value_format: str
    """'q2', 'q4', 'q8', 'float16', 'bfloat16' or 'float32'."""
    record_bytes: int


@dataclasses.dataclass(frozen=True)
class EncodedUpdate:
    """A payload and exactly what its decoding yields, without decoding it again."""

    payload: bytes
    sent: list[SparseTensorUpdate]
    tensors: tuple[TensorEncoding, ...] = ()

    @property
    def payload_bytes(self) -> int:
        return len(self.payload)

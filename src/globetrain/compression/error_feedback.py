"""Error feedback: what a round does not send is kept and added to the next round.

The residual is explicit, checkpointable state (``state_dict`` / ``load_state_dict``),
one float32 tensor per parameter tensor. ``compress`` adds the new update, encodes the
residual and subtracts exactly what receivers will decode (``EncodedUpdate.sent``), in
place and touching only the sent positions, so

    residual_after + sent == residual_before + update

up to float32 rounding of the subtraction at the sent positions; unsent positions are
carried over exactly, and the quantization error of sent values stays in the residual
too. When a round fails, ``restore(sent)`` puts its contribution back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from globetrain.compression.codec import Codec
from globetrain.compression.updates import EncodedUpdate, SparseTensorUpdate
from globetrain.errors import GlobetrainError

STATE_VERSION = 1


class ErrorFeedbackStateMismatch(GlobetrainError, ValueError):
    """A saved residual does not fit the model (other tensor count or shapes)."""


class ErrorFeedback:
    """Residual of what was not sent, for a model whose tensors look like ``like``."""

    def __init__(self, like: Sequence[torch.Tensor]) -> None:
        self.residual: list[torch.Tensor] = [torch.zeros(tensor.shape, dtype=torch.float32) for tensor in like]

    @property
    def shapes(self) -> list[torch.Size]:
        return [tensor.shape for tensor in self.residual]

    def compress(
        self, update: Sequence[torch.Tensor], codec: Codec, *, seed: int | None = None
    ) -> EncodedUpdate:
        """residual += update; encode the residual; residual -= what was sent.

        Raises ``ValueError`` (residual untouched) if the update has other shapes or holds
        NaN or infinite values.
        """
        self._check_shapes([tensor.shape for tensor in update], "update")
        total = sum(tensor.numel() for tensor in self.residual)
        if total > codec.max_elements:
            raise ValueError(
                f"the model has {total} elements, more than the codec's max_elements={codec.max_elements}"
            )
        for position, tensor in enumerate(update):
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(
                    f"update tensor {position} (shape {tuple(tensor.shape)}) contains NaN or infinite "
                    "values; the residual was left unchanged"
                )
        for residual, tensor in zip(self.residual, update):
            residual.add_(tensor.detach().to(device="cpu", dtype=torch.float32))
        encoded = codec.encode_with_sent(self.residual, seed=seed)
        for residual, sent in zip(self.residual, encoded.sent):
            sent.add_into(residual, alpha=-1.0)
        return encoded

    def restore(self, sent: Sequence[SparseTensorUpdate] | Sequence[torch.Tensor]) -> None:
        """Add back a contribution that was not applied (a failed or partly failed round)."""
        if len(sent) != len(self.residual):
            raise ValueError(f"restore got {len(sent)} tensors for a residual of {len(self.residual)}")
        for position, (residual, part) in enumerate(zip(self.residual, sent)):
            if isinstance(part, SparseTensorUpdate):
                part.add_into(residual)
            else:
                if part.shape != residual.shape:
                    raise ValueError(
                        f"restore: tensor {position} has shape {tuple(part.shape)}, "
                        f"the residual has {tuple(residual.shape)}"
                    )
                residual.add_(part.detach().to(device="cpu", dtype=torch.float32))

    def norm(self) -> float:
        """L2 norm of the whole residual (accumulated in float64)."""
        return math.sqrt(sum(float(tensor.double().square().sum()) for tensor in self.residual))

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "residual": [tensor.clone() for tensor in self.residual]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a saved residual; refuses one saved for a model of other shapes."""
        if not isinstance(state, Mapping) or "residual" not in state:
            raise ErrorFeedbackStateMismatch("error feedback state must be a mapping with a 'residual' list")
        if state.get("version", STATE_VERSION) != STATE_VERSION:
            raise ErrorFeedbackStateMismatch(
                f"error feedback state version {state.get('version')!r} is not {STATE_VERSION}"
            )
        saved = list(state["residual"])
        if any(not isinstance(tensor, torch.Tensor) for tensor in saved):
            raise ErrorFeedbackStateMismatch("error feedback state: 'residual' must hold tensors")
        self._check_shapes([tensor.shape for tensor in saved], "saved residual", ErrorFeedbackStateMismatch)
        self.residual = [tensor.detach().to(device="cpu", dtype=torch.float32).clone() for tensor in saved]

    def _check_shapes(
        self, shapes: list[torch.Size], what: str, error: type[ValueError] = ValueError
    ) -> None:
        if len(shapes) != len(self.residual):
            raise error(
                f"{what} has {len(shapes)} tensors but the error feedback holds {len(self.residual)} "
                "(was it made for another model?)"
            )
        for position, (shape, residual) in enumerate(zip(shapes, self.residual)):
            if tuple(shape) != tuple(residual.shape):
                raise error(
                    f"{what}: tensor {position} has shape {tuple(shape)}, expected {tuple(residual.shape)} "
                    "(was it made for another model?)"
                )

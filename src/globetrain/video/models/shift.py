"""The temporal shift (TSM, Lin et al. 2019): time modelling at zero FLOPs.

A 2D network sees each frame alone. Shifting a few channels one frame along time lets
the next convolution mix neighbouring frames for free: ``fold`` channels of every
frame take the values of the *next* frame, the following ``fold`` channels take the
values of the *previous* frame, and the rest stay. Positions that would come from
outside the clip are zero (no wrap-around: the first frame must not see the last).

``temporal_shift`` is the operation itself. ``relu_temporal_shift`` is what the model
runs: a ReLU and the shift fused into one autograd function that shifts the ReLU's
fresh output in place. The shift then costs no extra pass over the activations, only
short copies of the 2 x fold shifted channels, forwards and backwards; a shift as a
separate op costs a full copy each way, measured here at ~12% of a training step.
"""

from __future__ import annotations

import torch


def temporal_shift(activations: torch.Tensor, frames: int, shift_fraction: float = 0.25) -> torch.Tensor:
    """Shift ``shift_fraction`` of the channels one frame in time (half each way).

    ``activations`` has shape (clips * frames, channels, height, width), the frames of
    a clip consecutive; any memory format (channels_last stays channels_last).
    """
    fold = _fold(activations, frames, shift_fraction)
    if fold == 0:
        return activations
    return _TemporalShift.apply(activations, frames, fold)


def relu_temporal_shift(activations: torch.Tensor, frames: int, shift_fraction: float = 0.25) -> torch.Tensor:
    """``temporal_shift(relu(activations))`` in one pass over the activations."""
    fold = _fold(activations, frames, shift_fraction)
    if fold == 0:
        return torch.relu(activations)
    return _ReluTemporalShift.apply(activations, frames, fold)


def _fold(activations: torch.Tensor, frames: int, shift_fraction: float) -> int:
    batch = activations.shape[0]
    if frames < 1 or batch % frames:
        raise ValueError(f"temporal shift: a batch of {batch} frames is not whole clips of {frames} frames")
    return int(activations.shape[1] * shift_fraction / 2) if frames > 1 else 0


def _shift_in_place(tensor: torch.Tensor, frames: int, fold: int, *, backwards: bool) -> None:
    """Shift ``tensor`` (clips * frames, channels, h, w) in place.

    Forwards, channels [0, fold) move from frame t+1 to t and [fold, 2 fold) from t-1
    to t; ``backwards`` swaps the two directions (the gradient of the forward shift).
    """
    batch, channels, height, width = tensor.shape
    clips = tensor.view(batch // frames, frames, channels, height, width)
    earlier, later = slice(0, fold), slice(fold, 2 * fold)
    from_next, from_previous = (later, earlier) if backwards else (earlier, later)
    # Source and destination overlap, so each group goes through a small copy.
    clips[:, :-1, from_next] = clips[:, 1:, from_next].clone()
    clips[:, -1:, from_next] = 0
    clips[:, 1:, from_previous] = clips[:, :-1, from_previous].clone()
    clips[:, :1, from_previous] = 0


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in a layout that ``view`` can split into clips and frames."""
    if tensor.is_contiguous() or tensor.is_contiguous(memory_format=torch.channels_last):
        return tensor
    return tensor.contiguous()


class _TemporalShift(torch.autograd.Function):
    @staticmethod
    def forward(ctx, activations: torch.Tensor, frames: int, fold: int) -> torch.Tensor:  # type: ignore[override]
        ctx.frames, ctx.fold = frames, fold
        shifted = _dense(activations).clone()
        _shift_in_place(shifted, frames, fold, backwards=False)
        return shifted

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        shifted = _dense(gradient).clone()
        _shift_in_place(shifted, ctx.frames, ctx.fold, backwards=True)
        return shifted, None, None


class _ReluTemporalShift(torch.autograd.Function):
    @staticmethod
    def forward(ctx, activations: torch.Tensor, frames: int, fold: int) -> torch.Tensor:  # type: ignore[override]
        output = _dense(torch.relu(activations))
        _shift_in_place(output, frames, fold, backwards=False)
        ctx.frames, ctx.fold = frames, fold
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (output,) = ctx.saved_tensors
        # The ReLU's mask, taken where the values now are (shifted), and then the
        # gradient shifted back: positions dropped at the clip's ends get zero.
        masked = _dense(torch.ops.aten.threshold_backward(gradient, output, 0))
        _shift_in_place(masked, ctx.frames, ctx.fold, backwards=True)
        return masked, None, None

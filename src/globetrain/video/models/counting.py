"""Static costs of a model: trainable parameters and forward FLOPs per clip."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def count_flops_per_clip(model: nn.Module) -> int:
    """Forward FLOPs of one clip, as PyTorch's FLOP counter sees them (convolutions and
    matrix products, a multiply-add counting 2; the temporal shift is copies: 0)."""
    was_training = model.training
    model.eval()
    try:
        clip = torch.zeros(1, *model.input_shape)  # type: ignore[misc]
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(clip)
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)

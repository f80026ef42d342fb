"""The outer optimizer: SGD with (Nesterov) momentum on averaged pseudo-gradients.

DiLoCo treats the averaged drift of the workers' parameters over H inner steps as a
gradient of the global model and applies it with SGD, lr 0.7, Nesterov momentum 0.9.
Written out (instead of wrapping ``torch.optim.SGD``) because the global model is a
list of plain tensors, not ``nn.Parameter``s of a module, and its state must be saved
with the rest of the sync state.
"""

from __future__ import annotations

from typing import Any

import torch


class OuterOptimizer:
    """``global -= lr * (g + m * buf)`` with ``buf = m * buf + g`` (Nesterov), or plain momentum."""

    def __init__(self, lr: float, momentum: float = 0.9, nesterov: bool = True) -> None:
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.momentum_buffers: list[torch.Tensor] | None = None
        self.steps = 0

    @torch.no_grad()
    def step(self, global_params: list[torch.Tensor], update: list[torch.Tensor], *, lr_scale: float = 1.0) -> None:
        """Apply one averaged pseudo-gradient ``update`` to ``global_params`` in place, at ``lr * lr_scale``."""
        if self.momentum > 0:
            if self.momentum_buffers is None:
                self.momentum_buffers = [torch.zeros_like(p) for p in global_params]
            buffers = self.momentum_buffers
            torch._foreach_mul_(buffers, self.momentum)
            torch._foreach_add_(buffers, update)
            if self.nesterov:
                direction = torch._foreach_add(update, buffers, alpha=self.momentum)
            else:
                direction = buffers
        else:
            direction = update
        torch._foreach_add_(global_params, direction, alpha=-self.lr * lr_scale)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "steps": self.steps,
            "momentum_buffers": None
            if self.momentum_buffers is None
            else [b.clone() for b in self.momentum_buffers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.momentum = float(state["momentum"])
        self.nesterov = bool(state["nesterov"])
        self.steps = int(state["steps"])
        buffers = state["momentum_buffers"]
        self.momentum_buffers = None if buffers is None else [b.clone().float() for b in buffers]

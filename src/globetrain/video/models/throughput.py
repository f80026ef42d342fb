"""Measured training speed of a registered model on this machine's CPU, in clips/s.

The simulator's device profiles and ``globetrain video models --measure`` use it. It
times whole training steps (forward, loss, backward, optimizer step) on random clips
of the model's input shape, after warm-up steps that absorb one-off allocation and
kernel selection; data loading is not included (see the loader benchmark for that).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from globetrain.video.models.registry import build_model


def measure_training_throughput(
    name: str,
    *,
    num_classes: int = 8,
    batch_size: int = 16,
    threads: int | None = None,
    seconds: float = 2.0,
    warmup_steps: int = 2,
    seed: int = 0,
    **options: Any,
) -> float:
    """Training clips per second of model ``name`` (options as for ``build_model``)."""
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = build_model(name, num_classes, **options)
        return TrainingStepTimer(model, num_classes=num_classes, batch_size=batch_size).clips_per_second(
            seconds=seconds, warmup_steps=warmup_steps
        )
    finally:
        torch.set_num_threads(previous_threads)


class TrainingStepTimer:
    """Times training steps of one model; reusable so benchmarks can interleave models."""

    def __init__(self, model: nn.Module, *, num_classes: int, batch_size: int) -> None:
        self.model = model.train()
        self.batch_size = batch_size
        self.clips = torch.randn(batch_size, *model.input_shape)  # type: ignore[misc]
        self.labels = torch.randint(0, num_classes, (batch_size,))
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.clips), self.labels)
        loss.backward()
        self.optimizer.step()

    def clips_per_second(self, *, seconds: float, warmup_steps: int = 2, min_steps: int = 3) -> float:
        for _ in range(warmup_steps):
            self.step()
        steps = 0
        started = time.perf_counter()
        while steps < min_steps or time.perf_counter() - started < seconds:
            self.step()
            steps += 1
        return steps * self.batch_size / (time.perf_counter() - started)

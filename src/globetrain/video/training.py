"""Pieces of a training run that are not the loop itself: optimizer, learning-rate
schedule, the metrics log, and the run's checkpoint. ``globetrain train`` (the
single-device reference) and the fleet's devices build their runs from these."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from globetrain.checkpoint import Checkpoint, save_checkpoint
from globetrain.video.config import TrainConfig, VideoConfig


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    # Norm weights and biases are not decayed: decay would only shrink the scale of
    # features that the norms exist to set.
    decayed = [parameter for parameter in model.parameters() if parameter.ndim > 1]
    undecayed = [parameter for parameter in model.parameters() if parameter.ndim <= 1]
    groups = [
        {"params": decayed, "weight_decay": train.weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=train.learning_rate)
    return torch.optim.SGD(groups, lr=train.learning_rate, momentum=train.momentum, nesterov=train.momentum > 0)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak learning rate, then cosine decay to zero at the end."""
    total_steps = max(1, total_steps)
    warmup_steps = max(0, min(warmup_steps, total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class MetricsLog:
    """Metrics as JSON lines, appended as they happen (a report is drawn from the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")
        self.started = time.monotonic()

    def write(self, event: str, **values: Any) -> None:
        record = {"event": event, "time": time.time(), "elapsed_s": round(time.monotonic() - self.started, 3), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def save_training_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    class_names: tuple[str, ...],
    config: VideoConfig,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    metrics: dict[str, Any],
) -> None:
    """The run's checkpoint after ``epoch`` (0-based): enough to classify or to resume."""
    save_checkpoint(
        path,
        Checkpoint(
            model_name=config.model.name,
            class_names=class_names,
            model_state=model.state_dict(),
            config=config.to_dict(),
            extra={
                "epoch": epoch,
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "metrics": metrics,
            },
        ),
    )

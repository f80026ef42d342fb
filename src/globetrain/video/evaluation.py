"""Accuracy and loss of a model over a loader (validation, test, the fleet's checks)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import nn

from globetrain.video.loader import Batch


@dataclasses.dataclass(frozen=True)
class Evaluation:
    accuracy: float
    """Fraction of clips classified correctly, in [0, 1]."""
    loss: float
    """Mean cross-entropy per clip."""
    clips: int

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def evaluate(model: nn.Module, loader: Iterable[Batch]) -> Evaluation:
    """Evaluate ``model`` in eval mode without gradients; its mode is restored after."""
    was_training = model.training
    model.eval()
    correct = 0
    clips = 0
    loss_sum = 0.0
    try:
        with torch.inference_mode():
            for batch in loader:
                logits = model(batch.clips)
                loss_sum += nn.functional.cross_entropy(logits, batch.labels, reduction="sum").item()
                correct += int((logits.argmax(dim=1) == batch.labels).sum())
                clips += len(batch.labels)
    finally:
        model.train(was_training)
    if clips == 0:
        return Evaluation(accuracy=0.0, loss=float("nan"), clips=0)
    return Evaluation(accuracy=correct / clips, loss=loss_sum / clips, clips=clips)

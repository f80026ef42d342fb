"""A device's inner step on its own video clips, and what it counts.

``LocalTrainer.step`` is the ``train_step`` of ``RoundDriver``: one batch from the
device's clip loader (cache and background prefetch), forward, backward, an inner
optimizer step with the run's warm-up, and the count of samples. It also measures the
seconds spent in steps and the loss, which the per-round metrics report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

from torch import nn

from globetrain.fleet.app.spec import LocalTrainingConfig
from globetrain.video.loader import Batch
from globetrain.video.training import make_optimizer


class LocalTrainer:
    """Inner steps of one device; counters are read (and reset per round) by the recorder."""

    def __init__(
        self,
        model: nn.Module,
        batches: Iterator[Batch],
        training: LocalTrainingConfig,
        *,
        global_samples: Callable[[], int] = lambda: 0,
    ) -> None:
        self.model = model
        self.global_samples = global_samples
        """The fleet's sample count (the learning-rate schedule's clock, the same on every device)."""
        self.batches = batches
        self.training = training
        self.optimizer = make_optimizer(model, training.train_config())
        self.base_learning_rates = [group["lr"] for group in self.optimizer.param_groups]
        self.local_steps = 0
        """Inner steps this device has done in the run (drives its warm-up; checkpointed)."""
        self.compute_seconds = 0.0
        self.steps = 0
        self.samples = 0
        self.loss_sum = 0.0
        model.train()

    def learning_rate_factor(self) -> float:
        """Warm-up over the device's own first steps, times the fleet-wide cosine decay."""
        # Also after a late join or a resume the device's own optimizer restarts gently:
        # its Adam moments are fresh while the model it starts from is not.
        training = self.training
        warmup = 1.0 if training.warmup_steps == 0 else min(1.0, (self.local_steps + 1) / training.warmup_steps)
        decay = 1.0
        if training.decay_samples > 0:
            progress = min(1.0, self.global_samples() / training.decay_samples)
            floor = training.min_lr_fraction
            decay = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return warmup * decay

    def _set_learning_rate(self) -> None:
        factor = self.learning_rate_factor()
        for group, base in zip(self.optimizer.param_groups, self.base_learning_rates):
            group["lr"] = base * factor

    def step(self) -> int:
        """One inner step; returns the clips it trained on."""
        started = time.perf_counter()
        batch = next(self.batches)
        self._set_learning_rate()
        loss = nn.functional.cross_entropy(self.model(batch.clips), batch.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        count = len(batch.labels)
        self.local_steps += 1
        self.steps += 1
        self.samples += count
        self.loss_sum += float(loss.detach()) * count
        self.compute_seconds += time.perf_counter() - started
        return count

    def take_counters(self) -> tuple[int, int, float, float | None]:
        """(steps, samples, compute seconds, mean loss) since the previous call; resets them."""
        steps, samples, seconds = self.steps, self.samples, self.compute_seconds
        loss = self.loss_sum / samples if samples else None
        self.steps, self.samples, self.compute_seconds, self.loss_sum = 0, 0, 0.0, 0.0
        return steps, samples, seconds, loss

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "local_steps": self.local_steps}

    def load_state_dict(self, state: dict) -> None:
        # The learning rates come from the run config; the next step's warm-up sets them.
        self.optimizer.load_state_dict(state["optimizer"])
        self.local_steps = int(state.get("local_steps", 0))


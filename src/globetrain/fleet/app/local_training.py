"""A device's inner step on its own video clips, and what it counts.

``LocalTrainer.step`` is the ``train_step`` of ``RoundDriver``: one batch from the
device's clip loader (cache and background prefetch), forward, backward, an inner
optimizer step with the run's warm-up, and the count of samples. It also measures the
seconds spent in steps and the loss, which the per-round metrics report.

With ``training.restricted_softmax`` the local loss is a softmax over the classes the
device's own data has (the restricted softmax of FedRS, Li and Zhan, KDD 2021, with the
missing classes left out). Plain cross-entropy on a label-skewed shard drives every class
the device never sees down; the fleet's average cancels those pushes only while every
device takes part, so a device that misses rounds (a slow link whose contributions come
after the leader closed, a device that died) tilts the global model toward the others'
classes. Measured in the lab: 0.62 -> 0.33 validation accuracy within two rounds of one
device's absence, 0.69 when it returned; in one process with a device that contributes
every 4th round, falls of 0.15 and 0.24 between two rounds, 0.02 and 0.04 restricted
(``benchmarks/outer_lr_scaling.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator

import torch
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
        local_classes: Collection[int] | None = None,
    ) -> None:
        """``local_classes``: the labels of the device's own data (the restricted softmax's
        classes; ``None`` or an empty set: every class counts as present)."""
        self.model = model
        self.local_classes = set(local_classes or ())
        self._absent: torch.Tensor | None = None
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
        loss = nn.functional.cross_entropy(self._restricted(self.model(batch.clips), batch.labels), batch.labels)
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

    def _restricted(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.training.restricted_softmax or not self.local_classes:
            return logits
        labelled = {int(label) for label in labels.tolist()}
        if not labelled <= self.local_classes:
            # A label the caller did not declare is the device's own data all the same.
            self.local_classes |= labelled
            self._absent = None
        if self._absent is None or self._absent.numel() != logits.shape[1]:
            absent = torch.ones(logits.shape[1], dtype=torch.bool)
            absent[[c for c in self.local_classes if 0 <= c < logits.shape[1]]] = False
            self._absent = absent
        # Left out of the softmax: the bias gradient sums to zero over the device's own
        # classes, so no group of classes moves up or down as a whole.
        return logits.masked_fill(self._absent, float("-inf"))

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


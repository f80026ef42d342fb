"""A small, fast, generated classification task for the sync harness and the simulator.

Classes are mixtures of Gaussian clusters in a moderate-dimensional space, so the
decision boundaries are non-linear and a small MLP needs many samples to learn them:
one worker alone, seeing only its own shard, does clearly worse in the same number of
its own steps than K workers averaging. Shards are IID or by class (non-IID: each
worker sees only some classes, every class seen by some worker).

Everything is generated from a seed; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from globetrain.config import ConfigSection, field, require


@dataclasses.dataclass(frozen=True)
class ProxyTaskConfig(ConfigSection):
    """Shape and difficulty of the generated task."""

    classes: int = field(10, help="number of classes")
    features: int = field(32, help="input dimension")
    clusters_per_class: int = field(8, help="Gaussian clusters making up each class")
    cluster_spread: float = field(1.0, help="std of each cluster relative to the spread of cluster centres")
    train_samples: int = field(16_000, help="training samples in total (split among workers)")
    test_samples: int = field(4_000, help="held-out samples for accuracy")
    hidden: int = field(256, help="width of the MLP's two hidden layers")
    seed: int = field(0, help="seed of the data and of the initial model")

    def __post_init__(self) -> None:
        for name in ("classes", "features", "clusters_per_class", "train_samples", "test_samples", "hidden"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, "proxy_task", name, value, "an integer >= 1")
        require(self.classes >= 2, "proxy_task", "classes", self.classes, "at least 2")
        require(self.cluster_spread > 0, "proxy_task", "cluster_spread", self.cluster_spread, "a number > 0")


class ProxyTask:
    """Generated data, shards and an MLP for it."""

    def __init__(self, config: ProxyTaskConfig | None = None) -> None:
        self.config = config or ProxyTaskConfig()
        c = self.config
        generator = torch.Generator().manual_seed(c.seed)
        centres = torch.randn(c.classes, c.clusters_per_class, c.features, generator=generator) * 2.0
        self.train_x, self.train_y = self._sample(centres, c.train_samples, generator)
        self.test_x, self.test_y = self._sample(centres, c.test_samples, generator)

    def _sample(
        self, centres: torch.Tensor, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        labels = torch.randint(0, c.classes, (count,), generator=generator)
        cluster = torch.randint(0, c.clusters_per_class, (count,), generator=generator)
        noise = torch.randn(count, c.features, generator=generator) * (2.0 * c.cluster_spread)
        return centres[labels, cluster] + noise, labels

    def build_model(self) -> nn.Module:
        """The MLP every worker starts from (same seed, same initial weights)."""
        c = self.config
        torch.manual_seed(c.seed + 1)
        return nn.Sequential(
            nn.Linear(c.features, c.hidden),
            nn.ReLU(),
            nn.Linear(c.hidden, c.hidden),
            nn.ReLU(),
            nn.Linear(c.hidden, c.classes),
        )

    def shards(
        self, workers: int, *, partition: Literal["iid", "by-class"] = "iid", classes_per_worker: int = 3, seed: int = 0
    ) -> list[torch.Tensor]:
        """Index tensors into the training set, one per worker."""
        generator = torch.Generator().manual_seed(self.config.seed * 7919 + seed)
        if partition == "iid":
            order = torch.randperm(len(self.train_y), generator=generator)
            return list(order.chunk(workers))
        if partition != "by-class":
            raise ValueError(f"unknown partition {partition!r}; use 'iid' or 'by-class'")
        classes = self.config.classes
        per_worker = min(max(classes_per_worker, 1), classes)
        # Worker w sees classes w, w+1, ... (mod classes): every class is covered as long as
        # workers * per_worker >= classes; each class's samples are split among its owners.
        owners: dict[int, list[int]] = {k: [] for k in range(classes)}
        for w in range(workers):
            for j in range(per_worker):
                owners[(w * per_worker + j) % classes].append(w)
        assignment: list[list[torch.Tensor]] = [[] for _ in range(workers)]
        for label, label_owners in owners.items():
            if not label_owners:
                continue
            indices = torch.nonzero(self.train_y == label).flatten()
            indices = indices[torch.randperm(len(indices), generator=generator)]
            for owner, part in zip(label_owners, indices.chunk(len(label_owners))):
                assignment[owner].append(part)
        return [torch.cat(parts) if parts else torch.empty(0, dtype=torch.long) for parts in assignment]

    def batches(self, shard: torch.Tensor, batch_size: int, seed: int):
        """Endless shuffled batches ``(inputs, labels)`` from one shard."""
        if len(shard) == 0:
            raise ValueError("a worker's shard is empty; use fewer workers or more training samples")
        generator = torch.Generator().manual_seed(seed)
        while True:
            order = shard[torch.randperm(len(shard), generator=generator)]
            for start in range(0, len(order) - batch_size + 1, batch_size):
                index = order[start : start + batch_size]
                yield self.train_x[index], self.train_y[index]

    @torch.no_grad()
    def accuracy(self, model: nn.Module) -> float:
        model.eval()
        predictions = model(self.test_x).argmax(dim=1)
        model.train()
        return float((predictions == self.test_y).float().mean())

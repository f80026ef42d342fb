"""Run K workers of one sync method in one process, in lockstep, on the proxy task.

This is the algorithm without a network: each worker owns a model, an inner optimizer
and a ``SyncLoop`` whose exchange is a member of one ``InProcessGroup``. Per round every
worker runs its inner steps, then every worker submits, then every worker applies what
is due; the group resolves a round as soon as the last member submitted it, so nothing
blocks. Used by the tests, the convergence benchmark and the in-process demo.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from globetrain.sync.config import SyncConfig
from globetrain.sync.inprocess import InProcessGroup
from globetrain.sync.loop import SyncLoop
from globetrain.sync.methods import get_method
from globetrain.sync.proxy_task import ProxyTask


@dataclasses.dataclass
class HarnessResult:
    method: str
    workers: int
    steps_per_worker: int
    rounds: int
    accuracy: float
    """Accuracy of the global model on the held-out test set (fraction)."""
    bytes_sent_per_worker: float
    """Mean payload bytes each worker sent over the run."""
    identical_global_models: bool
    """Whether every worker holds bit-identical global models at the end."""
    history: list[dict[str, float]]
    settings: dict[str, object]


def run_in_process(
    task: ProxyTask,
    method: str,
    workers: int,
    steps: int,
    *,
    base: SyncConfig | None = None,
    inner_lr: float = 0.05,
    inner_momentum: float = 0.9,
    batch_size: int = 32,
    partition: Literal["iid", "by-class"] = "iid",
    classes_per_worker: int = 3,
    seed: int = 0,
    eval_every_rounds: int = 0,
    on_round: Callable[[int, int], None] | None = None,
    config: SyncConfig | None = None,
) -> HarnessResult:
    """Train ``workers`` workers for ``steps`` inner steps each with sync method ``method``.

    ``config`` bypasses the method's preset (ablations); ``method`` is then only a label.
    """
    config = config or get_method(method).sync_config(base or SyncConfig())
    group = InProcessGroup(workers)
    shards = task.shards(workers, partition=partition, classes_per_worker=classes_per_worker, seed=seed)
    models: list[nn.Module] = []
    loops: list[SyncLoop] = []
    streams = []
    for index in range(workers):
        model = task.build_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=inner_lr, momentum=inner_momentum)
        models.append(model)
        loops.append(SyncLoop(model, optimizer, group.exchange(index), config, device_index=index))
        streams.append(task.batches(shards[index], batch_size, seed=seed * 1000 + index))
    loss_fn = nn.CrossEntropyLoss()
    evaluation_model = task.build_model()
    history: list[dict[str, float]] = []
    done = 0
    rounds = 0
    while done < steps:
        round_steps = min(loops[0].settings.inner_steps, steps - done)
        for model, loop, stream in zip(models, loops, streams):
            for _ in range(round_steps):
                inputs, labels = next(stream)
                loss = loss_fn(model(inputs), labels)
                loop.inner_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                loop.inner_optimizer.step()
                loop.count_step(len(labels))
        done += round_steps
        for loop in loops:
            loop.submit_round()
        for loop in loops:
            loop.apply_due(wait=True)
        rounds += 1
        if on_round is not None:
            on_round(rounds, done)
        if eval_every_rounds and rounds % eval_every_rounds == 0:
            loops[0].load_global_into(evaluation_model)
            history.append({"round": rounds, "step": done, "accuracy": task.accuracy(evaluation_model)})
    for loop in loops:
        loop.drain(wait=True)
    loops[0].load_global_into(evaluation_model)
    accuracy = task.accuracy(evaluation_model)
    history.append({"round": rounds, "step": done, "accuracy": accuracy})
    reference = loops[0].global_params
    identical = all(
        all(torch.equal(a, b) for a, b in zip(reference, loop.global_params)) for loop in loops[1:]
    )
    return HarnessResult(
        method=method,
        workers=workers,
        steps_per_worker=done,
        rounds=rounds,
        accuracy=accuracy,
        bytes_sent_per_worker=sum(loop.stats["bytes_payload"] for loop in loops) / workers,
        identical_global_models=identical,
        history=history,
        settings=config.to_dict(),
    )


def run_single_worker(
    task: ProxyTask,
    steps: int,
    *,
    workers_in_partition: int,
    inner_lr: float = 0.05,
    inner_momentum: float = 0.9,
    batch_size: int = 32,
    partition: Literal["iid", "by-class"] = "iid",
    classes_per_worker: int = 3,
    seed: int = 0,
) -> float:
    """Accuracy of worker 0 training alone on its own shard for the same number of steps."""
    shard = task.shards(workers_in_partition, partition=partition, classes_per_worker=classes_per_worker, seed=seed)[0]
    model = task.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=inner_lr, momentum=inner_momentum)
    stream = task.batches(shard, batch_size, seed=seed * 1000)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        inputs, labels = next(stream)
        loss = loss_fn(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return task.accuracy(model)

"""The in-process harness: K workers converge together and hold one global model."""

from __future__ import annotations

from globetrain.sync import SyncConfig
from globetrain.sync.harness import run_in_process, run_single_worker
from globetrain.sync.proxy_task import ProxyTask, ProxyTaskConfig

TINY = ProxyTaskConfig(classes=4, features=8, clusters_per_class=2, cluster_spread=0.6, train_samples=3000, test_samples=1000, hidden=32, seed=3)


def test_two_step_workers_converge_and_hold_identical_global_models() -> None:
    task = ProxyTask(TINY)
    config = SyncConfig(inner_steps=4, density=0.1, bits=8)
    result = run_in_process(task, "two-step", 3, 160, base=config, partition="by-class", classes_per_worker=2)
    alone = run_single_worker(task, 160, workers_in_partition=3, partition="by-class", classes_per_worker=2)
    dense = run_in_process(task, "dense", 3, 160, partition="by-class", classes_per_worker=2)
    assert result.identical_global_models
    assert result.rounds == 40
    # Each worker sees only 2 of 4 classes: alone it cannot beat ~50%, together they can.
    assert alone < 0.7
    assert result.accuracy > 0.85
    assert result.accuracy > dense.accuracy - 0.1
    assert result.bytes_sent_per_worker * 20 < dense.bytes_sent_per_worker

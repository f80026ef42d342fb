"""Convergence of the two steps in the in-process harness (K workers, no network).

Runs K=8 workers on the generated proxy task (globetrain.sync.proxy_task) for the same
number of inner steps each, with every-step dense averaging, each step of the
compression alone, both together, the published baselines, and one worker alone, on
IID and by-class (non-IID) shards. Prints final accuracy and bytes per worker, and
the ratios against dense every-step averaging measured in this same run; writes
benchmarks/results/convergence.json and convergence.png.

    .venv/bin/python benchmarks/convergence.py [--steps 768] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from globetrain.sync import SyncConfig  # noqa: E402
from globetrain.sync.harness import run_in_process, run_single_worker  # noqa: E402
from globetrain.sync.proxy_task import ProxyTask, ProxyTaskConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def variants(inner_steps: int, density: float, bits: int) -> dict[str, tuple[str, SyncConfig | None]]:
    """Label -> (method preset, explicit config or None for the preset itself)."""
    plain = SyncConfig(outer_lr=1.0, outer_momentum=0.0, nesterov=False)
    return {
        "dense every step": ("dense", None),
        "top-k only": (
            "two-step",
            plain.replace(inner_steps=1, apply_delay=0, density=density, bits=bits, error_feedback=True),
        ),
        "local steps only": (
            "two-step",
            plain.replace(inner_steps=inner_steps, apply_delay=0, density=1.0, bits=32, error_feedback=False),
        ),
        "two-step (both)": ("two-step", plain.replace(inner_steps=inner_steps, density=density, bits=bits)),
        "dgc preset": ("dgc", None),
        "diloco preset": ("diloco", None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=768)
    parser.add_argument("--inner-steps", type=int, default=16)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task_config = ProxyTaskConfig(seed=args.seed)
    task = ProxyTask(task_config)
    results: dict[str, dict] = {}
    for partition in ("iid", "by-class"):
        rows: dict[str, dict] = {}
        alone = run_single_worker(
            task, args.steps, workers_in_partition=args.workers, partition=partition, seed=args.seed
        )
        rows["one worker alone"] = {"accuracy": alone, "bytes_sent_per_worker": 0}
        print(f"[{partition}] one worker alone: accuracy {alone:.4f}", flush=True)
        for label, (method, config) in variants(args.inner_steps, args.density, args.bits).items():
            started = time.perf_counter()
            result = run_in_process(
                task, method, args.workers, args.steps, partition=partition, seed=args.seed,
                base=SyncConfig(seed=args.seed), config=config, eval_every_rounds=1 if config is None or config.inner_steps > 1 else 16,
            )
            rows[label] = {
                "accuracy": result.accuracy,
                "bytes_sent_per_worker": result.bytes_sent_per_worker,
                "rounds": result.rounds,
                "identical_global_models": result.identical_global_models,
                "settings": result.settings,
                "history": result.history,
                "wall_seconds": time.perf_counter() - started,
            }
            print(
                f"[{partition}] {label}: accuracy {result.accuracy:.4f}, "
                f"{result.bytes_sent_per_worker:,.0f} bytes/worker, {result.rounds} rounds",
                flush=True,
            )
        dense = rows["dense every step"]
        for label, row in rows.items():
            if row["bytes_sent_per_worker"]:
                row["bytes_reduction_vs_dense"] = dense["bytes_sent_per_worker"] / row["bytes_sent_per_worker"]
            row["accuracy_minus_dense_points"] = 100 * (row["accuracy"] - dense["accuracy"])
        results[partition] = rows
    summary = {
        "command": "python benchmarks/convergence.py "
        f"--workers {args.workers} --steps {args.steps} --inner-steps {args.inner_steps} "
        f"--density {args.density} --bits {args.bits} --seed {args.seed}",
        "task": task_config.to_dict(),
        "workers": args.workers,
        "steps_per_worker": args.steps,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "convergence.json").write_text(json.dumps(summary, indent=2))
    print()
    for partition, rows in results.items():
        print(f"== {partition}: ratios against dense every-step averaging (same run)")
        for label, row in rows.items():
            reduction = row.get("bytes_reduction_vs_dense")
            print(
                f"  {label:<18} accuracy {row['accuracy']:.4f} ({row['accuracy_minus_dense_points']:+.2f} points)"
                + (f", {reduction:,.0f}x fewer bytes" if reduction else "")
            )
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, (partition, rows) in zip(axes, results.items()):
        for label, row in rows.items():
            if "history" in row:
                steps = [h["step"] for h in row["history"]]
                axis.plot(steps, [h["accuracy"] for h in row["history"]], label=f"{label} ({row['bytes_sent_per_worker'] / 1e6:.2f} MB/worker)")
        axis.axhline(rows["one worker alone"]["accuracy"], color="grey", linestyle=":", label="one worker alone (final)")
        axis.set_title(f"{args.workers} workers, {partition} shards")
        axis.set_xlabel("inner steps per worker")
        axis.set_ylabel("test accuracy of the global model")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.out / "convergence.png", dpi=120)
    print(f"wrote {args.out / 'convergence.json'} and {args.out / 'convergence.png'}")


if __name__ == "__main__":
    main()

"""``globetrain harness``: the two-step algorithm with K in-process workers, no network.

Trains the generated proxy task with several sync methods side by side and prints
accuracy and bytes per worker, so the effect of each step of the compression can be
seen in a minute on a laptop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from globetrain.sync import SyncConfig, method_names
from globetrain.sync.harness import HarnessResult, run_in_process, run_single_worker
from globetrain.sync.proxy_task import ProxyTask, ProxyTaskConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "harness",
        help="run the sync algorithm with K in-process workers (no network) and compare methods",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=8, help="in-process workers (default 8)")
    parser.add_argument("--steps", type=int, default=768, help="inner steps per worker (default 768)")
    parser.add_argument(
        "--methods",
        default="dense,dgc,diloco,two-step",
        help=f"comma-separated sync methods among {', '.join(method_names())} (default: dense,dgc,diloco,two-step)",
    )
    parser.add_argument("--inner-steps", type=int, default=16, help="H for methods with local steps (default 16)")
    parser.add_argument("--density", type=float, default=0.01, help="top-k density for two-step (default 0.01)")
    parser.add_argument("--bits", type=int, default=8, help="bits per value for two-step (default 8)")
    parser.add_argument("--partition", choices=["iid", "by-class"], default="iid", help="how data is split (default iid)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write summary.json here")


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    task = ProxyTask(ProxyTaskConfig(seed=args.seed))
    base = SyncConfig(inner_steps=args.inner_steps, density=args.density, bits=args.bits, seed=args.seed)
    results: list[HarnessResult] = []
    with Progress(
        TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        for method in methods:
            bar = progress.add_task(method, total=args.steps)
            results.append(
                run_in_process(
                    task, method, args.workers, args.steps, base=base, partition=args.partition, seed=args.seed,
                    on_round=lambda _round, done, bar=bar: progress.update(bar, completed=done),
                )
            )
        alone = run_single_worker(task, args.steps, workers_in_partition=args.workers, partition=args.partition, seed=args.seed)
    dense_bytes = next((r.bytes_sent_per_worker for r in results if r.method == "dense"), None)
    table = Table(title=f"{args.workers} in-process workers, {args.steps} inner steps each ({args.partition} data)")
    for column in ("method", "test accuracy", "bytes sent / worker", "vs dense", "rounds", "globals identical"):
        table.add_column(column)
    for result in results:
        ratio = f"{dense_bytes / result.bytes_sent_per_worker:,.0f}x fewer" if dense_bytes else "-"
        table.add_row(
            result.method, f"{result.accuracy:.3f}", f"{result.bytes_sent_per_worker:,.0f}", ratio,
            str(result.rounds), str(result.identical_global_models),
        )
    table.add_row("one worker alone", f"{alone:.3f}", "0", "-", "-", "-")
    Console().print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        summary = {
            "workers": args.workers,
            "steps_per_worker": args.steps,
            "partition": args.partition,
            "single_worker_accuracy": alone,
            "methods": {r.method: {k: v for k, v in vars(r).items() if k != "method"} for r in results},
        }
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0

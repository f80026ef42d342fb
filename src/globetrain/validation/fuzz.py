"""The long fuzz: a million hostile inputs into the wire decoder and every message a device receives.

    python -m globetrain.validation.fuzz --inputs 1000000 --out benchmarks/results/validation

Why a structured mutation fuzzer and not atheris: atheris 3.1.0 has no wheel in this
machine's package index (3.0.0 has a cp311 wheel), and its coverage-guided loop takes
over the process (``atheris.Fuzz`` never returns), which fits badly with per-target
counts, a hang bound and a report. The inputs here are mutations of valid messages
(``fuzz_mutations``: byte operations and JSON-aware ones), sealed again with the run key
where the message travels in an envelope, so most inputs pass the cheap outer checks and
reach the parsers behind them. The same recipes drive the suite's short hypothesis fuzz
(tests/unit/validation/test_fuzz_targets.py).

Inputs are split evenly over the targets (``fuzz_targets``) and cut into chunks, each
chunk reproducible from (``--seed``, target, chunk index); ``--workers`` processes run
the chunks. A crash is any exception outside a target's documented refusals, a refusal
that no ``RejectionLog`` counted where the protocol promises it, or an input taking
longer than ``--hang-seconds``. The report (``fuzz.json`` + ``fuzz.png``) holds inputs,
verdicts and crashes per target, the crashing inputs (hex) and the wall time.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import multiprocessing
import os
import random
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

DEFAULT_OUT = "benchmarks/results/validation"
CHUNK_INPUTS = 2000
MAX_CRASH_RECORDS = 20
"""Crashing inputs kept per target (the counts include every one)."""

_WORKER: dict[str, Any] = {}


def _worker_start() -> None:
    # Rejections are logged by design; a million warnings would only measure the terminal.
    logging.disable(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from globetrain.validation.fuzz_targets import FuzzWorld, build_targets

    world = FuzzWorld()
    _WORKER["targets"] = {target.name: target for target in build_targets(world)}


def _run_chunk(task: tuple[str, int, int, int, float]) -> dict[str, Any]:
    from globetrain.validation.fuzz_engine import FuzzCrash, build_input, draw_case, feed

    name, chunk, count, seed, hang_s = task
    target = _WORKER["targets"][name]
    rng = random.Random(zlib.crc32(f"{seed}/{name}/{chunk}".encode()))
    verdicts: collections.Counter[str] = collections.Counter()
    crashes: list[dict[str, Any]] = []
    slowest = 0.0
    started = time.perf_counter()
    for index in range(count):
        case = draw_case(target, rng)
        data = build_input(target, case)
        began = time.perf_counter()
        try:
            verdicts[feed(target, data, case=case, hang_s=hang_s)] += 1
        except FuzzCrash as crash:
            verdicts["crash"] += 1
            crash.record["chunk"], crash.record["index"] = chunk, index
            crashes.append(crash.record)
        slowest = max(slowest, time.perf_counter() - began)
    return {"target": name, "inputs": count, "verdicts": dict(verdicts), "crashes": crashes,
            "seconds": time.perf_counter() - started, "slowest_input_s": slowest}


def plan(targets: list[str], inputs: int, seed: int, hang_s: float) -> list[tuple[str, int, int, int, float]]:
    """Chunks of work: ``inputs`` split evenly over ``targets`` (the remainder to the first ones)."""
    tasks = []
    for position, name in enumerate(targets):
        share = inputs // len(targets) + (1 if position < inputs % len(targets) else 0)
        for chunk, start in enumerate(range(0, share, CHUNK_INPUTS)):
            tasks.append((name, chunk, min(CHUNK_INPUTS, share - start), seed, hang_s))
    # Interleave targets so that every target's progress shows from the start.
    tasks.sort(key=lambda task: (task[1], task[0]))
    return tasks


def summarise(results: list[dict[str, Any]], *, targets: list[str], wall_s: float, args: argparse.Namespace) -> dict[str, Any]:
    per_target: dict[str, dict[str, Any]] = {
        name: {"inputs": 0, "verdicts": collections.Counter(), "crashes": 0, "crash_kinds": collections.Counter(),
               "crash_examples": [], "cpu_seconds": 0.0, "slowest_input_s": 0.0}
        for name in targets
    }
    for result in results:
        entry = per_target[result["target"]]
        entry["inputs"] += result["inputs"]
        entry["verdicts"].update(result["verdicts"])
        entry["cpu_seconds"] += result["seconds"]
        entry["slowest_input_s"] = max(entry["slowest_input_s"], result["slowest_input_s"])
        for crash in result["crashes"]:
            entry["crashes"] += 1
            entry["crash_kinds"][f"{crash['error'][:120]} @ {crash['location']}"] += 1
            if len(entry["crash_examples"]) < MAX_CRASH_RECORDS:
                entry["crash_examples"].append(crash)
    for entry in per_target.values():
        entry["verdicts"] = dict(entry["verdicts"])
        entry["crash_kinds"] = dict(entry["crash_kinds"])
        entry["inputs_per_cpu_second"] = round(entry["inputs"] / entry["cpu_seconds"], 1) if entry["cpu_seconds"] else None
        entry["cpu_seconds"] = round(entry["cpu_seconds"], 2)
        entry["slowest_input_s"] = round(entry["slowest_input_s"], 4)
    total = sum(entry["inputs"] for entry in per_target.values())
    crashes = sum(entry["crashes"] for entry in per_target.values())
    return {
        "command": " ".join(["python -m globetrain.validation.fuzz", *sys.argv[1:]]),
        "inputs": total,
        "crashes": crashes,
        "wall_seconds": round(wall_s, 2),
        "inputs_per_second": round(total / wall_s, 1) if wall_s else None,
        "workers": args.workers,
        "seed": args.seed,
        "hang_seconds": args.hang_seconds,
        "engine": "structured mutation of valid messages (globetrain.validation.fuzz_mutations), seeded random",
        "crash_definition": "an exception outside the target's documented refusals, an uncounted refusal, or a hang",
        "targets": per_target,
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["targets"])
    entries = [summary["targets"][name] for name in names]
    accepted = [e["verdicts"].get("accepted", 0) for e in entries]
    refused = [e["verdicts"].get("refused", 0) for e in entries]
    crashed = [e["crashes"] for e in entries]
    figure, axis = plt.subplots(figsize=(10, 5))
    axis.barh(names, refused, label="refused (documented error, counted)", color="#4c72b0")
    axis.barh(names, accepted, left=refused, label="accepted (valid after mutation)", color="#55a868")
    axis.barh(names, crashed, left=[r + a for r, a in zip(refused, accepted)], label="crash / hang / uncounted", color="#c44e52")
    axis.set_xlabel("inputs")
    axis.invert_yaxis()
    axis.set_title(f"fuzz: {summary['inputs']:,} inputs, {summary['crashes']} crashes, {summary['wall_seconds']:.0f} s wall")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m globetrain.validation.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs in total, split evenly over targets (default %(default)s)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for fuzz.json and fuzz.png (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the input generator (default %(default)s)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default %(default)s)")
    parser.add_argument("--hang-seconds", type=float, default=5.0, help="an input without a verdict after this is a hang (default %(default)s)")
    parser.add_argument("--targets", nargs="*", default=None, help="only these targets (default: all)")
    args = parser.parse_args(argv)
    if args.inputs < 1 or args.workers < 1 or args.hang_seconds <= 0:
        parser.error("--inputs and --workers must be >= 1 and --hang-seconds > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    console = Console()
    from globetrain.validation.fuzz_targets import FuzzWorld, build_targets

    world = FuzzWorld()
    known = [target.name for target in build_targets(world)]
    world.close()
    targets = args.targets or known
    unknown = sorted(set(targets) - set(known))
    if unknown:
        console.print(f"unknown targets {unknown}; known: {known}")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = plan(targets, args.inputs, args.seed, args.hang_seconds)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("crashes {task.fields[crashes]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        overall = progress.add_task("all targets", total=args.inputs, crashes=0)
        bars = {name: progress.add_task(name, total=args.inputs // len(targets), crashes=0) for name in targets}
        crashes: collections.Counter[str] = collections.Counter()
        with context.Pool(args.workers, initializer=_worker_start) as pool:
            for result in pool.imap_unordered(_run_chunk, tasks):
                results.append(result)
                crashes[result["target"]] += len(result["crashes"])
                progress.update(bars[result["target"]], advance=result["inputs"], crashes=crashes[result["target"]])
                progress.update(overall, advance=result["inputs"], crashes=sum(crashes.values()))
            pool.close()
            pool.join()
    summary = summarise(results, targets=targets, wall_s=time.monotonic() - started, args=args)
    (out / "fuzz.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, out / "fuzz.png")
    console.print(
        f"{summary['inputs']:,} inputs over {len(targets)} targets in {summary['wall_seconds']:.0f} s "
        f"({summary['inputs_per_second']:,.0f}/s, {args.workers} workers): {summary['crashes']} crashes; "
        f"report {out / 'fuzz.json'}"
    )
    return 0 if summary["crashes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

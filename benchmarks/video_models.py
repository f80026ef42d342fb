"""Video models benchmark: TSM against its 2D backbone and the 3D baseline.

For each registered model (default settings, 8 classes): parameters, forward FLOPs per
clip, and measured training clips per second on this CPU (whole steps: forward,
cross-entropy, backward, SGD step; batches of 16 random clips of the model's input
shape), with 1 thread and with one per core. Short rounds of steps alternate between
the models (this machine is shared; absolute times drift); the results are ratios, each
the median over rounds of the ratio within a round: TSM over the frame-averaging
backbone (the shift's real cost; target >= 0.9) and TSM over the 3D baseline (target
> 1). Writes ``benchmarks/results/video_models.json`` and ``video_models.png``.

    .venv/bin/python benchmarks/video_models.py [--rounds 15] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from globetrain.video.models import build_model, model_spec
from globetrain.video.models.throughput import TrainingStepTimer
from globetrain.video.plots import plot_bars

MODELS = ("tsm-small", "frame-average-small", "conv3d-small")
NUM_CLASSES = 8
BATCH_SIZE = 16
SHIFT_COST_TARGET = 0.9


def measure(threads: int, rounds: int, steps: int) -> dict[str, list[float]]:
    """Clips/s of every model per round; one round times ``steps`` steps of each in turn."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    timers = {name: TrainingStepTimer(build_model(name, NUM_CLASSES), num_classes=NUM_CLASSES, batch_size=BATCH_SIZE) for name in MODELS}
    for timer in timers.values():  # warm-up: allocation, kernel choice
        for _ in range(2):
            timer.step()
    rates: dict[str, list[float]] = {name: [] for name in MODELS}
    for _ in range(rounds):
        for name, timer in timers.items():
            started = time.perf_counter()
            for _ in range(steps):
                timer.step()
            rates[name].append(steps * BATCH_SIZE / (time.perf_counter() - started))
    return rates


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    return statistics.median(top / bottom for top, bottom in zip(numerators, denominators))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds per thread setting")
    parser.add_argument("--steps", type=int, default=2, help="training steps per model per round")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON and PNG")
    args = parser.parse_args()
    console = Console()

    specs = {name: model_spec(name, NUM_CLASSES) for name in MODELS}
    thread_settings = sorted({1, os.cpu_count() or 1})
    measured: dict[str, dict] = {}
    for threads in thread_settings:
        rates = measure(threads, args.rounds, args.steps)
        medians = {name: statistics.median(values) for name, values in rates.items()}
        measured[str(threads)] = {
            "clips_per_second": {name: round(rate, 1) for name, rate in medians.items()},
            "rounds": {name: [round(rate, 1) for rate in values] for name, values in rates.items()},
            # Ratios within a round compare runs seconds apart, under the same load: their
            # median is steadier on a busy machine than a ratio of medians.
            "tsm_over_backbone": round(paired_ratio(rates["tsm-small"], rates["frame-average-small"]), 3),
            "tsm_over_conv3d": round(paired_ratio(rates["tsm-small"], rates["conv3d-small"]), 3),
        }

    table = Table(title="video models: training on this CPU (batches of 16 clips)")
    for column in ["model", "parameters", "MFLOPs/clip", *(f"clips/s, {t} thread(s)" for t in thread_settings)]:
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in MODELS:
        table.add_row(
            name,
            f"{specs[name].parameters:,}",
            f"{specs[name].flops_per_clip / 1e6:.1f}",
            *(f"{measured[str(t)]['clips_per_second'][name]:.0f}" for t in thread_settings),
        )
    console.print(table)
    for threads in thread_settings:
        row = measured[str(threads)]
        console.print(
            f"{threads} thread(s): TSM / backbone = {row['tsm_over_backbone']:.3f} (target >= {SHIFT_COST_TARGET}), "
            f"TSM / 3D = {row['tsm_over_conv3d']:.2f} (target > 1)"
        )

    result = {
        "benchmark": "video_models",
        "what": "training clips/s (forward + backward + SGD step), batch 16, random clips of the input shape",
        "models": {name: specs[name].to_dict() for name in MODELS},
        "threads": measured,
        "targets": {"tsm_over_backbone": SHIFT_COST_TARGET, "tsm_over_conv3d": 1.0},
        "meets_targets": all(
            row["tsm_over_backbone"] >= SHIFT_COST_TARGET and row["tsm_over_conv3d"] > 1.0 for row in measured.values()
        ),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            # Other work on the machine distorts multi-thread timings most (OpenMP threads
            # wait for each other): read the 2-thread numbers together with the load.
            "load_average_after": os.getloadavg(),
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "video_models.json").write_text(json.dumps(result, indent=2) + "\n")
    bars = {
        "parameters (thousands)": {name: specs[name].parameters / 1e3 for name in MODELS},
        "forward MFLOPs per clip": {name: specs[name].flops_per_clip / 1e6 for name in MODELS},
    }
    for threads in thread_settings:
        bars[f"training clips/s, {threads} thread(s)"] = measured[str(threads)]["clips_per_second"]
    plot_bars(bars, out / "video_models.png", title="TSM vs its 2D backbone vs a 3D CNN", value_format="{:.0f}")
    console.print(f"wrote {out / 'video_models.json'}")


if __name__ == "__main__":
    main()

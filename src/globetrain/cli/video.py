"""``globetrain video``: the video case study's tools.

- ``globetrain video synth --out DIR``: write the synthetic action dataset (H.264 MP4).
- ``globetrain video models``: the registered models with parameters, FLOPs per clip
  and (with --measure) training clips per second on this machine.
"""

from __future__ import annotations

import argparse
import json

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from globetrain.video.actions import CLASS_NAMES
from globetrain.video.config import SynthConfig
from globetrain.video.models import list_models, measure_training_throughput, model_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("video", help="video case study: synthetic dataset, model table")
    commands = parser.add_subparsers(dest="video_command", metavar="COMMAND")
    parser.set_defaults(handler=lambda args: _print_help(parser))

    synth = commands.add_parser(
        "synth",
        help="write the synthetic action dataset as real video files",
        description=(
            "Write eight motion classes (move left/right/up/down, rotate cw/ccw, zoom in/out) as H.264 MP4 "
            "files, one folder per class, with train/val/test split files. Mirror classes differ only in "
            "the order of frames. Deterministic for a seed."
        ),
    )
    defaults = SynthConfig()
    synth.add_argument("--out", required=True, help="output folder (new or empty; see --overwrite)")
    synth.add_argument("--clips-per-class", type=int, default=defaults.clips_per_class, help=f"clips per class (default {defaults.clips_per_class})")
    synth.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default 0)")
    synth.add_argument("--frames", type=int, default=defaults.frames, help=f"frames per clip (default {defaults.frames})")
    synth.add_argument("--size", type=int, default=defaults.size, help=f"frame width and height in pixels (default {defaults.size})")
    synth.add_argument("--fps", type=int, default=defaults.fps, help=f"frame rate (default {defaults.fps})")
    synth.add_argument("--classes", help=f"comma-separated subset of {','.join(CLASS_NAMES)}")
    synth.add_argument("--workers", type=int, help="processes rendering in parallel (default: one per core)")
    synth.add_argument("--overwrite", action="store_true", help="replace a synthetic dataset already in --out")
    synth.set_defaults(handler=run_synth)

    models = commands.add_parser(
        "models",
        help="list the registered models with their parameters, FLOPs and speed",
        description="Parameters and forward FLOPs per clip of each model; --measure adds training clips/s here.",
    )
    models.add_argument("--classes", type=int, default=len(CLASS_NAMES), help="number of classes (default 8)")
    models.add_argument("--measure", action="store_true", help="also measure training clips per second")
    models.add_argument("--seconds", type=float, default=3.0, help="measuring time per model (default 3)")
    models.add_argument("--threads", type=int, default=0, help="torch threads for --measure (default: one per core)")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(handler=run_models)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_synth(args: argparse.Namespace) -> int:
    from globetrain.video.synth import generate

    classes = [name.strip() for name in args.classes.split(",")] if args.classes else None
    console = Console(stderr=True, soft_wrap=True)
    total = args.clips_per_class * (len(classes) if classes else len(CLASS_NAMES))
    with Progress(
        TextColumn("writing clips"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as progress:
        task = progress.add_task("synth", total=total)
        info = generate(
            args.out,
            clips_per_class=args.clips_per_class,
            seed=args.seed,
            frames=args.frames,
            size=args.size,
            fps=args.fps,
            classes=classes,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=lambda done: progress.advance(task, done),
        )
    sizes = ", ".join(f"{count} {split}" for split, count in info.split_sizes.items())
    console.print(f"wrote {info.clips} clips of {len(info.class_names)} classes ({sizes}) to {info.root} in {info.seconds:.1f} s")
    return 0


def run_models(args: argparse.Namespace) -> int:
    rows = []
    for name in list_models():
        spec = model_spec(name, args.classes)
        row = spec.to_dict()
        if args.measure:
            row["train_clips_per_second"] = measure_training_throughput(
                name, num_classes=args.classes, threads=args.threads or None, seconds=args.seconds
            )
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"video models ({args.classes} classes, {torch.get_num_threads()} threads)")
    for column in ("model", "input (T, C, H, W)", "parameters", "MFLOPs / clip") + (("train clips/s",) if args.measure else ()):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        cells = [row["name"], str(tuple(row["input_shape"])), f"{row['parameters']:,}", f"{row['flops_per_clip'] / 1e6:.1f}"]
        if args.measure:
            cells.append(f"{row['train_clips_per_second']:.0f}")
        table.add_row(*cells)
    Console().print(table)
    for row in rows:
        print(f"  {row['name']}: {row['description']}")
    return 0

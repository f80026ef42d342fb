"""``globetrain demo``: the main job, a local fleet training the default video model
(see ``globetrain.fleet.app.demo``)."""

from __future__ import annotations

import argparse

from rich.console import Console

from globetrain.fleet.app.demo import DemoConfig, DemoRun
from globetrain.fleet.app.demo_presets import PRESETS
from globetrain.fleet.app.signals import StopSignals
from globetrain.sync.methods import method_names

DEFAULTS = DemoConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    default = PRESETS[DEFAULTS.preset]
    parser = subparsers.add_parser(
        "demo",
        help="the main job: a local fleet of N device processes + a bootstrap trains a video model",
        description=(
            "On this machine: generate the synthetic video set if missing (cached), shard it non-IID (each device "
            "sees only some classes), start a bootstrap peer and N device processes over loopback, show fleet "
            "progress, stop at the target accuracy or the time budget, evaluate the global model and write "
            "metrics.jsonl, summary.json, plots, a checkpoint and report.md to --out. Ctrl+C ends every process "
            "and still writes a partial report."
        ),
    )
    parser.add_argument("--devices", type=int, default=DEFAULTS.devices, help="device processes (default %(default)s)")
    parser.add_argument("--out", default=DEFAULTS.out, help="output folder (default %(default)s)")
    parser.add_argument("--method", default=DEFAULTS.method, help="sync method: " + ", ".join(method_names()))
    parser.add_argument("--target-accuracy", type=float, default=None,
                        help=f"stop once the global model's validation accuracy reaches this (default {default.target_accuracy})")
    parser.add_argument("--time-budget", type=float, default=None,
                        help=f"at most this many seconds of training after round 0 (default {default.time_budget_s:g})")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of the dataset and initial weights")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULTS.preset,
                        help="default: the main job; debug: a tiny fleet that finishes in well under a minute")
    parser.add_argument("--data", default="", help="use this dataset folder instead of the generated synthetic set")
    parser.add_argument("--cache-dir", default="", help="clip cache folder for every process (default ~/.cache/globetrain/clips)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="a run setting passed to the bootstrap (sections fleet, sync, training, model, data)")
    parser.add_argument("--round-models", action="store_true",
                        help="the bootstrap keeps every round's global model (OUT/bootstrap/round_models); "
                             "python -m globetrain.validation.round_curve OUT evaluates them")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = DemoConfig(
        devices=args.devices, out=args.out, method=args.method, preset=args.preset,
        target_accuracy=-1.0 if args.target_accuracy is None else args.target_accuracy,
        time_budget_s=-1.0 if args.time_budget is None else args.time_budget,
        seed=args.seed, data=args.data, cache_dir=args.cache_dir, round_models=args.round_models,
    )
    with StopSignals() as signals:
        return DemoRun(config, signals, Console(stderr=True), args.set).run()

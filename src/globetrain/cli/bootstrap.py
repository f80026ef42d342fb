"""``globetrain bootstrap``: start a run and its first peer (see ``globetrain.fleet.app.bootstrap``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rich.console import Console

from globetrain.fleet.app.bootstrap import BootstrapConfig, BootstrapRuntime
from globetrain.fleet.app.network_options import add_network_arguments, network_config
from globetrain.fleet.app.overrides import parse_overrides
from globetrain.fleet.app.run_keys import bootstrap_run_keys
from globetrain.fleet.app.run_setup import RUN_SECTIONS, build_run
from globetrain.fleet.app.signals import StopSignals
from globetrain.sync.methods import method_names
from globetrain.video.actions import CLASS_NAMES

DEFAULTS = BootstrapConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bootstrap",
        help="start a fleet run: publish its config, print the join addresses, follow the global model",
        description=(
            "Start the first peer of a fleet run. It publishes the run's config (model, method, hyperparameters, "
            "data layout, software version) for devices, prints the addresses they join with, creates a run key "
            "if none is given (GLOBETRAIN_RUN_KEY or --run-key-file; written to a file readable by you only), and "
            "shows the fleet: devices online, global samples, round, bytes, compression, validation accuracy. "
            "It is not a master: if it stops, the devices go on."
        ),
    )
    parser.add_argument("--method", default="two-step", help="sync method: " + ", ".join(method_names()))
    parser.add_argument("--run-key-file", default=None,
                        help="file holding the run key (created with mode 0600 if it does not exist); "
                             "default: $GLOBETRAIN_RUN_KEY, else a new key in RUN_DIR/run.key")
    parser.add_argument("--run-dir", default=DEFAULTS.run_dir, help=f"folder for key, metrics, checkpoint (default {DEFAULTS.run_dir})")
    parser.add_argument("--run-name", default="", help="a name for logs and reports")
    parser.add_argument("--round-period", type=float, default=None, help="seconds per round (same as --set fleet.round_period_s=S)")
    parser.add_argument("--start-delay", type=float, default=DEFAULTS.start_delay_s,
                        help=f"seconds until round 0 starts (default {DEFAULTS.start_delay_s:g}); later joiners download the state")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names in label order (default: --eval-data's classes, else the synthetic set's)")
    parser.add_argument("--eval-data", default="", help="dataset folder whose validation split the global model is evaluated on")
    parser.add_argument("--eval-every", type=float, default=DEFAULTS.eval_every_s, help="seconds between evaluations (default %(default)s)")
    parser.add_argument("--eval-clips", type=int, default=0, help="evaluate on at most this many validation clips (default: all)")
    parser.add_argument("--cache-dir", default="", help="clip cache folder for --eval-data (default ~/.cache/globetrain/clips)")
    parser.add_argument("--address-file", default="", help="write the join addresses here too (default RUN_DIR/addresses)")
    parser.add_argument("--no-live", action="store_true", help="print one line per round instead of a live table")
    parser.add_argument("--round-models", action="store_true",
                        help="keep the global model after every round in RUN_DIR/round_models (a diagnostic: "
                             "python -m globetrain.validation.round_curve evaluates them)")
    parser.add_argument("--quiet", action="store_true", help="no per-round log lines")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help=f"any run or network setting, sections {', '.join(RUN_SECTIONS)}, network "
                             "(e.g. --set sync.density=0.005 --set training.learning_rate=0.002)")
    add_network_arguments(parser)
    parser.set_defaults(handler=run)


def _class_names(args: argparse.Namespace) -> tuple[str, ...]:
    if args.classes:
        return tuple(name.strip() for name in args.classes.split(",") if name.strip())
    if args.eval_data:
        from globetrain.video.dataset import load_dataset

        return load_dataset(args.eval_data).class_names
    return CLASS_NAMES


def run(args: argparse.Namespace) -> int:
    if not args.quiet:
        logging.getLogger("globetrain.fleet.app").setLevel(logging.INFO)
    overrides = parse_overrides(args.set, (*RUN_SECTIONS, "network"))
    if args.round_period is not None:
        overrides["fleet"]["round_period_s"] = args.round_period
    network_overrides = overrides.pop("network")
    config = BootstrapConfig(
        run_dir=args.run_dir, start_delay_s=args.start_delay, eval_data=args.eval_data, eval_every_s=args.eval_every,
        eval_clips=args.eval_clips, address_file=args.address_file, live=not args.no_live, cache_dir=args.cache_dir,
        round_models=args.round_models,
    )
    spec, run_config = build_run(
        method=args.method, class_names=_class_names(args), overrides=overrides,
        start_delay_s=config.start_delay_s, run_name=args.run_name,
    )
    network = network_config(args, run_dir=Path(config.run_dir), overrides=network_overrides)
    keys, created = bootstrap_run_keys(args.run_key_file, Path(config.run_dir) / "run.key")
    with StopSignals() as signals:
        runtime = BootstrapRuntime(
            config, spec, run_config, network, keys, signals, console=Console(stderr=True), created_key_file=created,
        )
        return runtime.run()

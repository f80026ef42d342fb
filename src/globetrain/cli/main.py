"""Entry point of the ``globetrain`` command.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` (a function taking
the parsed namespace and returning an exit code). Adding a subcommand is adding a
module name to ``SUBCOMMAND_MODULES``; nothing else here changes.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from globetrain import __version__
from globetrain.errors import GlobetrainError

# Imported lazily when the command line is parsed, so `globetrain --help` stays fast
# and a heavy dependency of one subcommand (hivemind, PyAV) is not loaded by the others.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "globetrain.cli.harness",
    "globetrain.cli.simulate",
    "globetrain.cli.video",
    "globetrain.cli.train",
    "globetrain.cli.classify",
    "globetrain.cli.bootstrap",
    "globetrain.cli.device",
    "globetrain.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="globetrain",
        description=(
            "Train one deep learning model on many weak, far-apart devices with "
            "two-step deep compression (rare, overlapped syncs; tiny compressed updates)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"globetrain {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="verbosity of log lines on stderr (default: WARNING)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except GlobetrainError as error:
        # Our own errors are written for users: print the message, not a traceback.
        print(f"globetrain: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("globetrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``globetrain classify``: label video files with a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from globetrain.video.classify import classify_files
from globetrain.video.trained_model import load_trained_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="label video files with a trained model",
        description=(
            "Print the label and confidence of each video file. A file that is not a readable video "
            "is reported and skipped; the exit status is 1 if any file failed."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="video files (.mp4 .avi .mkv .webm ...)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by `globetrain train` or a fleet run")
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line and file: file, label, confidence, error (null when fine)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    trained = load_trained_model(args.checkpoint)
    failures = 0
    for prediction in classify_files(trained, args.files):
        failures += prediction.error is not None
        if args.json:
            print(json.dumps(prediction.to_dict()), flush=True)
        elif prediction.error is None:
            print(f"{prediction.file}\t{prediction.label}\t{prediction.confidence:.3f}", flush=True)
        else:
            print(f"{prediction.file}: {prediction.error}", file=sys.stderr, flush=True)
    return 1 if failures else 0

"""Video accuracy benchmark: TSM against the frame-averaging baseline on the synthetic set.

Writes the default synthetic dataset (``globetrain video synth`` defaults: 8 classes x
300 clips, of which 1680 train / 360 val / 360 test), then trains ``tsm-small`` and
``frame-average-small`` on it with ``globetrain train``'s defaults (the same backbone,
the same recipe; the baseline lacks only the temporal shift). Half the classes differ
from their mirror class only in the order of frames, so the baseline cannot rise far
above chance while TSM should reach >= 95% validation accuracy (targets: TSM >= 0.95,
baseline at least 30 points below). Also records the wall time of the synthesis and of
each training run. Writes ``benchmarks/results/video_accuracy.json`` and
``video_accuracy.png``.

    .venv/bin/python benchmarks/video_accuracy.py [--threads N] [--data DIR] [--epochs E]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402

from globetrain.cli.main import main as globetrain  # noqa: E402
from globetrain.video.synth import generate  # noqa: E402

MODELS = ("tsm-small", "frame-average-small")
TSM_TARGET = 0.95
GAP_TARGET = 0.30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="an existing synthetic dataset (default: write a fresh one, timed)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for training (default: one per core)")
    parser.add_argument("--epochs", type=int, help="epochs (default: globetrain train's default)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON and PNG")
    args = parser.parse_args()
    console = Console()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="globetrain-video-accuracy-") as scratch:
        synth_seconds = None
        data = Path(args.data) if args.data else Path(scratch) / "data"
        if not args.data:
            info = generate(data, seed=0)
            synth_seconds = info.seconds
            console.print(f"synthetic set: {info.clips} clips in {info.seconds:.1f} s")
        description_file = data / "dataset.json"
        data_description = description_file.read_text() if description_file.exists() else None
        runs = {}
        for name in MODELS:
            out = Path(scratch) / name
            argv = ["train", "--data", str(data), "--model", name, "--out", str(out), "--cache-dir", str(Path(scratch) / "cache")]
            argv += ["--threads", str(args.threads)] if args.threads else []
            argv += ["--epochs", str(args.epochs)] if args.epochs else []
            started = time.monotonic()
            if globetrain(argv) != 0:
                raise SystemExit(f"training {name} failed")
            summary = json.loads((out / "summary.json").read_text())
            summary["process_seconds"] = round(time.monotonic() - started, 1)
            runs[name] = summary

    tsm, baseline = runs["tsm-small"], runs["frame-average-small"]
    gap = tsm["val_accuracy"] - baseline["val_accuracy"]
    result = {
        "benchmark": "video_accuracy",
        "dataset": str(args.data) if args.data else "a fresh `globetrain video synth` with its defaults",
        "dataset_settings": json.loads(data_description).get("settings") if data_description else None,
        "synth_seconds": round(synth_seconds, 1) if synth_seconds is not None else None,
        "runs": {
            name: {key: run[key] for key in ("val_accuracy", "test_accuracy", "epochs", "wall_seconds", "process_seconds", "threads", "clips_trained")}
            | {"val_accuracy_per_epoch": [record["val_accuracy"] for record in run["history"]],
               "train_clips_per_second_per_epoch": [record["train_clips_per_second"] for record in run["history"]]}
            for name, run in runs.items()
        },
        "val_gap_points": round(100 * gap, 1),
        "targets": {"tsm_val_accuracy": TSM_TARGET, "gap_points": 100 * GAP_TARGET},
        "meets_targets": tsm["val_accuracy"] >= TSM_TARGET and gap >= GAP_TARGET,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "video_accuracy.json").write_text(json.dumps(result, indent=2) + "\n")

    figure, axis = plt.subplots(figsize=(6, 3.8))
    for name, run in runs.items():
        epochs = [record["epoch"] for record in run["history"]]
        axis.plot(epochs, [record["val_accuracy"] for record in run["history"]], marker="o", label=name)
    axis.axhline(TSM_TARGET, color="grey", linestyle="--", linewidth=0.8, label=f"target {TSM_TARGET:.0%}")
    axis.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1.02),
             title=f"synthetic motion set: TSM {tsm['val_accuracy']:.1%} vs frame average {baseline['val_accuracy']:.1%}")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "video_accuracy.png", dpi=110)
    plt.close(figure)
    console.print(
        f"TSM val {tsm['val_accuracy']:.1%} / test {tsm['test_accuracy']:.1%} in {tsm['wall_seconds']:.0f} s; "
        f"frame average val {baseline['val_accuracy']:.1%} / test {baseline['test_accuracy']:.1%}; gap {100 * gap:.1f} points; "
        f"wrote {out / 'video_accuracy.json'}"
    )


if __name__ == "__main__":
    main()

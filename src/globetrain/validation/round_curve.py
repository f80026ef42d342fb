"""``python -m globetrain.validation.round_curve RUN``: the global model's accuracy after every round.

A fleet run whose bootstrap kept its round models (``globetrain demo``'s and the shaped
validation's ``--round-models``, or ``globetrain bootstrap --round-models``) is evaluated
afterwards, round by round, on the validation split, and each round is put beside who
took part in the aggregates that model has just applied: the bootstrap's own evaluations
come every ~2 rounds, so a fall and its recovery within 3 rounds, and its cause, show
only here. Writes ``RUN/round_curve.json`` and ``RUN/round_curve.png``.

``RUN`` is a demo's output folder (``bootstrap/``, ``devices/``, ``metrics.jsonl``,
``summary.json``; the data folder is the one ``summary.json`` names unless ``--data`` says
otherwise) or a bootstrap's run folder (``--run-dir`` of ``globetrain bootstrap``; ``--data``
names a dataset with the run's classes, and who was missing is known only for the devices
whose round lines were merged into its ``metrics.jsonl``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from globetrain.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from globetrain.errors import GlobetrainError  # noqa: E402
from globetrain.fleet.app.checkpoints import CHECKPOINT_NAME  # noqa: E402
from globetrain.fleet.app.round_models import ROUND_MODELS_DIR, load_round_model, round_model_files  # noqa: E402
from globetrain.report.metrics import read_metrics  # noqa: E402
from globetrain.video.config import DataConfig  # noqa: E402
from globetrain.video.dataset import load_dataset  # noqa: E402
from globetrain.video.evaluation import evaluate  # noqa: E402
from globetrain.video.frame_source import open_frame_source  # noqa: E402
from globetrain.video.loader import ClipLoader  # noqa: E402
from globetrain.video.trained_model import model_from_checkpoint  # noqa: E402


class RoundCurveError(GlobetrainError):
    """The run folder lacks what the curve needs; the message says what to do."""


def participation(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per aggregate round: the devices that contributed to it and those that only listened."""
    rounds: dict[int, dict[str, list[str]]] = collections.defaultdict(lambda: {"contributed": [], "listened": []})
    for row in rows:
        if row.get("event") != "round" or "device" not in row or not isinstance(row.get("round"), int):
            continue
        rounds[row["round"]]["contributed" if row.get("contributed", True) else "listened"].append(str(row["device"]))
    return {index: {key: sorted(names) for key, names in entry.items()} for index, entry in rounds.items()}


def applied_at(rows: list[dict[str, Any]]) -> dict[int, list[int]]:
    """Per round of the bootstrap: the aggregate rounds it applied at that round's end."""
    found: dict[int, list[int]] = {}
    for row in rows:
        if row.get("event") == "fleet" and isinstance(row.get("round"), int):
            found[row["round"]] = [int(a["round"]) for a in row.get("applied", []) if a.get("status") == "applied"]
    return found


def contributors_of(rows: list[dict[str, Any]]) -> dict[int, int]:
    """Per aggregate round the bootstrap applied: how many contributions its aggregate holds."""
    found: dict[int, int] = {}
    for row in rows:
        if row.get("event") == "fleet":
            for applied in row.get("applied", []):
                if applied.get("status") == "applied" and isinstance(applied.get("contributors"), int):
                    found[int(applied["round"])] = applied["contributors"]
    return found


def left_out(aggregates: list[int], taking_part: dict[int, dict[str, Any]], contributors: dict[int, int]) -> int:
    """Contributions sent to ``aggregates`` that are not in them (arrived after the leader closed, or refused)."""
    missing = 0
    for aggregate in aggregates:
        if aggregate in contributors and aggregate in taking_part:
            missing += max(len(taking_part[aggregate]["contributed"]) - contributors[aggregate], 0)
    return missing


def largest_fall(points: list[dict[str, Any]], *, span: int = 1) -> dict[str, Any] | None:
    """The largest drop of accuracy from a round to one at most ``span`` rounds later."""
    best: dict[str, Any] | None = None
    for index, point in enumerate(points):
        for later in points[index + 1: index + 1 + span]:
            drop = point["val_accuracy"] - later["val_accuracy"]
            if best is None or drop > best["drop"]:
                best = {"drop": round(drop, 4), "from_round": point["round"], "to_round": later["round"]}
    return best


def bootstrap_folder(run: Path) -> Path:
    """The folder holding ``round_models``: the run itself (a bootstrap's) or its ``bootstrap`` (a demo's)."""
    return run if (run / ROUND_MODELS_DIR).is_dir() else run / "bootstrap"


def checked_round_model(path: Path, parameters: list[torch.Tensor]) -> list[torch.Tensor]:
    """The values kept in ``path``, if they fit ``parameters``; else a ``RoundCurveError`` naming the file."""
    try:
        values = load_round_model(path)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
        raise RoundCurveError(f"round model {path} is unreadable: {error}") from error
    if len(values) != len(parameters) or any(v.shape != p.shape for v, p in zip(values, parameters)):
        raise RoundCurveError(f"{path} does not match the run's model: a file of another run?")
    return values


def evaluate_rounds(run: Path, data: Path | None, console: Console) -> dict[str, Any]:
    boot = bootstrap_folder(run)
    checkpoint_path = boot / CHECKPOINT_NAME
    files = list(round_model_files(boot / ROUND_MODELS_DIR))
    if not files:
        raise RoundCurveError(f"{boot / ROUND_MODELS_DIR} holds no round models: run the fleet with --round-models")
    try:
        trained = model_from_checkpoint(load_checkpoint(checkpoint_path), path=checkpoint_path)
    except (CheckpointError, OSError) as error:
        raise RoundCurveError(f"the bootstrap's checkpoint (the model's architecture) is unreadable: {error}") from error
    parameters = [p for p in trained.model.parameters() if p.requires_grad]
    for _, path in files:  # every file, before the slow part starts
        checked_round_model(path, parameters)
    if data is None:
        if not (run / "summary.json").exists():
            raise RoundCurveError(f"{run} has no summary.json (not a demo's folder): pass --data DIR")
        summary = json.loads((run / "summary.json").read_text())
        if not summary.get("data"):
            raise RoundCurveError(f"{run / 'summary.json'} names no data folder: pass --data DIR")
        data = Path(summary["data"])
    dataset = load_dataset(data)
    if tuple(dataset.class_names) != tuple(trained.class_names):
        raise RoundCurveError(f"{data} has classes {list(dataset.class_names)}, the run trains {list(trained.class_names)}: "
                              "pass --data with the run's classes")
    source = open_frame_source(DataConfig(root=str(data), max_cached_frames=trained.config.data.max_cached_frames),
                               trained.config.model)
    loader = ClipLoader(dataset.split("val"), source, frames=trained.config.model.frames, batch_size=32,
                        training=False, prefetch_batches=1)
    rows = read_metrics(run / "metrics.jsonl") or read_metrics(boot / "metrics.jsonl")
    taking_part = participation(rows)
    applied = applied_at(rows)
    contributors = contributors_of(rows)
    points = []
    with Progress(TextColumn("[bold]round models"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("evaluate", total=len(files))
        for round_index, path in files:
            values = checked_round_model(path, parameters)
            with torch.no_grad():
                for target, value in zip(parameters, values):
                    target.copy_(value)
            result = evaluate(trained.model, loader)
            aggregates = applied.get(round_index, [])
            listened = sorted({name for a in aggregates for name in taking_part.get(a, {}).get("listened", [])})
            points.append({"round": round_index, "val_accuracy": round(result.accuracy, 4), "val_loss": round(result.loss, 4),
                           "aggregates_applied": aggregates, "listened_in_those": listened,
                           "contributions_left_out": left_out(aggregates, taking_part, contributors)})
            progress.advance(task)
    return {
        "run": str(run),
        "data": str(data),
        "clips": len(dataset.split("val")),
        "rounds": points,
        "largest_fall_in_one_round": largest_fall(points, span=1),
        "largest_fall_within_two_rounds": largest_fall(points, span=2),
    }


def plot_round_curve(report: dict[str, Any], path: Path) -> None:
    points = report["rounds"]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.plot([p["round"] for p in points], [p["val_accuracy"] for p in points], marker=".", color="tab:blue",
              label="global model after the round")
    absent = [p for p in points if p["listened_in_those"]]
    if absent:
        axis.scatter([p["round"] for p in absent], [p["val_accuracy"] for p in absent], color="tab:red", zorder=3,
                     label="its latest aggregate lacked a device (it only listened)")
    for point in absent:
        names = ",".join(name.rsplit("-", 1)[-1] for name in point["listened_in_those"])
        axis.annotate(names, (point["round"], point["val_accuracy"]), textcoords="offset points", xytext=(0, -12),
                      ha="center", fontsize=7, color="tab:red")
    late = [p for p in points if p.get("contributions_left_out")]
    if late:
        axis.scatter([p["round"] for p in late], [p["val_accuracy"] for p in late], color="tab:orange", marker="s",
                     zorder=3, label="its latest aggregate left a contribution out (after the leader closed)")
    for point in late:
        axis.annotate(str(point["contributions_left_out"]), (point["round"], point["val_accuracy"]),
                      textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7, color="tab:orange")
    axis.set_xlabel("round")
    axis.set_ylabel(f"validation accuracy ({report['clips']} clips)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title("the global model, round by round (red: device indices that only listened; orange: contributions "
                   "left out)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_round_curve(run: Path, report: dict[str, Any]) -> Path:
    """``RUN/round_curve.json`` and ``RUN/round_curve.png``; returns the JSON's path."""
    out = run / "round_curve.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot_round_curve(report, run / "round_curve.png")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m globetrain.validation.round_curve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a demo's output folder, or a bootstrap's run folder (holding round_models)")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: the one summary.json names)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    torch.set_num_threads(max(args.threads, 1))
    try:
        report = evaluate_rounds(args.run, args.data, console)
    except GlobetrainError as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    out = write_round_curve(args.run, report)
    fall = report["largest_fall_within_two_rounds"]
    console.print(f"{len(report['rounds'])} rounds; largest fall within two rounds: {fall}")
    console.print(f"wrote {out} and {args.run / 'round_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

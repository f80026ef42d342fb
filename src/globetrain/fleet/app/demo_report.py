"""The demo's results: the final global model evaluated, and every output file written.

``pick_checkpoint`` takes the newest global model any peer saved (devices in step hold
bit-identical ones; the bootstrap keeps one too) and copies it to ``OUT/checkpoint.pt``.
``evaluate_checkpoint`` measures it on the whole validation and test splits.
``write_outputs`` writes ``summary.json`` (the contract of design.md), the plots and the
report, all drawn from ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from globetrain.checkpoint import CheckpointError, load_checkpoint
from globetrain.report.metrics import read_metrics
from globetrain.report.plots import plot_device_time, plot_progress
from globetrain.report.run_report import write_report
from globetrain.report.summary import summarize_fleet
from globetrain.video.config import DataConfig
from globetrain.video.dataset import load_dataset
from globetrain.video.evaluation import evaluate
from globetrain.video.frame_source import open_frame_source
from globetrain.video.loader import ClipLoader
from globetrain.video.trained_model import model_from_checkpoint

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
METRICS_NAME = "metrics.jsonl"
CHECKPOINT_NAME = "checkpoint.pt"
PROGRESS_PLOT = "progress.png"
DEVICE_TIME_PLOT = "device_time.png"
REPORT_NAME = "report.md"


def pick_checkpoint(candidates: Sequence[Path], destination: Path) -> dict[str, Any] | None:
    """Copy the readable checkpoint with the newest global model to ``destination``.

    Returns ``{"path", "round", "source"}`` or None when no peer left a readable one.
    """
    best: tuple[int, Path] | None = None
    for path in candidates:
        if not path.is_file():
            continue
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            log.warning("skipping checkpoint %s: %s", path, error)
            continue
        round_index = int(checkpoint.extra.get("fleet", {}).get("round", -1))
        if best is None or round_index > best[0]:
            best = (round_index, path)
    if best is None:
        return None
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    shutil.copyfile(best[1], temporary)
    os.replace(temporary, destination)
    return {"path": str(destination), "round": best[0], "source": str(best[1])}


def evaluate_checkpoint(path: Path, data_root: Path, *, cache_dir: str = "", threads: int | None = None) -> dict[str, Any]:
    """Accuracy and loss of the checkpoint's model on the dataset's validation and test splits."""
    if threads:
        torch.set_num_threads(threads)
    checkpoint = load_checkpoint(path)
    trained = model_from_checkpoint(checkpoint, path=path)
    dataset = load_dataset(data_root)
    if tuple(dataset.class_names) != tuple(trained.class_names):
        raise CheckpointError(f"{path} was trained on classes {trained.class_names}, {data_root} has {dataset.class_names}")
    data = DataConfig(root=str(data_root), cache_dir=cache_dir, max_cached_frames=trained.config.data.max_cached_frames)
    source = open_frame_source(data, trained.config.model)
    results: dict[str, Any] = {}
    for split in ("val", "test"):
        samples = dataset.split(split)
        if not samples:
            results[split] = None
            continue
        loader = ClipLoader(samples, source, frames=trained.config.model.frames, batch_size=32, training=False,
                            prefetch_batches=1)
        results[split] = evaluate(trained.model, loader).to_dict()
    return results


def write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def write_outputs(out: Path, summary: dict[str, Any], *, target_accuracy: float | None) -> dict[str, Any]:
    """Fleet numbers from ``metrics.jsonl`` into ``summary``; then summary.json, plots, report."""
    rows = read_metrics(out / METRICS_NAME)
    fleet_size = int(summary["devices"])
    parameters = int(summary.get("parameters") or 0)
    totals = summarize_fleet(rows, fleet_size=fleet_size, parameters=parameters)
    summary.update(totals.to_dict())
    summary["per_device"] = [device.to_dict() for device in totals.devices]
    evaluations = [row for row in rows if row.get("event") == "evaluation"]
    start = summary.get("round0_time") or min((float(row["t"]) for row in rows if "t" in row), default=0.0)
    files = [SUMMARY_NAME, METRICS_NAME]
    try:
        plot_progress(rows, evaluations, out / PROGRESS_PLOT, start_time=start, fleet_size=fleet_size,
                      parameters=parameters, target_accuracy=target_accuracy,
                      title=f"{summary.get('devices')} devices, {summary.get('method')}")
        plot_device_time(totals.devices, out / DEVICE_TIME_PLOT)
        files += [PROGRESS_PLOT, DEVICE_TIME_PLOT]
    except Exception as error:  # noqa: BLE001 - a plot must not cost the run its summary
        summary.setdefault("notes", []).append(f"plots failed: {type(error).__name__}: {error}")
    if (out / CHECKPOINT_NAME).exists():
        files.append(CHECKPOINT_NAME)
    files.append(REPORT_NAME)
    summary["files"] = files
    write_json(out / SUMMARY_NAME, summary)
    write_report(out / REPORT_NAME, summary, summary["per_device"], files)
    return summary


def required_summary_fields() -> tuple[str, ...]:
    """The fields design.md promises in a demo's ``summary.json``."""
    return (
        "val_accuracy", "test_accuracy", "devices", "wall_seconds", "method", "bytes_sent_per_device",
        "bytes_received_per_device", "dense_bytes_per_device", "exchanges_succeeded", "exchanges_failed",
        "compute_fraction",
    )


def missing_fields(summary: Mapping[str, Any]) -> list[str]:
    return [name for name in required_summary_fields() if name not in summary]

"""``globetrain train``: train a video model on one machine.

This is the single-device reference the fleet is compared with, and the place to read
how a globetrain model is trained: ``run`` below goes top to bottom through resolving
the config, loading the data, building the model, the training loop with validation
each epoch, the test at the end, and the checkpoint, which fleet runs write in the
same format (``globetrain.checkpoint``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from globetrain.checkpoint import check_compatible, load_checkpoint
from globetrain.errors import ConfigError
from globetrain.video.config import VideoConfig
from globetrain.video.dataset import VideoSample, load_dataset
from globetrain.video.evaluation import evaluate
from globetrain.video.frame_source import open_frame_source
from globetrain.video.loader import ClipLoader
from globetrain.video.models import build_model, list_models
from globetrain.video.plots import plot_training_curves
from globetrain.video.sharding import shard
from globetrain.video.training import MetricsLog, make_optimizer, save_training_checkpoint, warmup_cosine_schedule


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a video model on this machine (the single-device reference)",
        description=(
            "Train a registered video model on a folder of videos (folder-per-class or split files), "
            "validating each epoch and testing at the end. Writes OUT/model.pt (checkpoint), "
            "OUT/metrics.jsonl, OUT/summary.json and OUT/training.png."
        ),
    )
    parser.add_argument("--data", help="dataset folder (default: data/synth; make one with `globetrain video synth`)")
    parser.add_argument("--model", help=f"registered model (default: tsm-small; one of {', '.join(list_models())})")
    defaults = VideoConfig()
    parser.add_argument("--epochs", type=int, help=f"passes over the training split (default: {defaults.train.epochs})")
    parser.add_argument("--seed", type=int, help="seed of initialisation, shuffling and frame sampling (default: 0)")
    parser.add_argument("--threads", type=int, help="torch threads (default: one per core)")
    parser.add_argument("--batch-size", type=int, help=f"clips per batch (default: {defaults.data.batch_size})")
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default: {defaults.train.learning_rate})")
    parser.add_argument("--no-cache", action="store_true", help="decode every clip every time (no clip cache)")
    parser.add_argument("--cache-dir", help="clip cache folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="any other setting of the model, data or train sections (see globetrain.video.config), "
        "e.g. --set model.width=48 --set train.optimizer=sgd (repeatable)",
    )
    parser.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    parser.add_argument("--resume", help="continue the run saved in this checkpoint (its config, more --epochs allowed)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    out = Path(args.out)
    resumed = load_checkpoint(args.resume) if args.resume else None
    config = resolve_config(args, resumed_config=resumed.config if resumed else None)

    torch.set_num_threads(config.train.resolved_threads())
    torch.manual_seed(config.train.seed)

    # Data: the splits, one frame source (clip cache or decode) shared by all loaders.
    dataset = load_dataset(config.data.root, val_fraction=config.data.val_fraction, test_fraction=config.data.test_fraction)
    source = open_frame_source(config.data, config.model)

    train_samples = dataset.split("train")
    if config.data.num_shards > 1:  # one device's part, as a fleet device would see it
        train_samples = shard(
            train_samples,
            config.data.shard_index,
            config.data.num_shards,
            config.data.shard_mode,
            classes_per_device=config.data.classes_per_shard or None,
            num_classes=dataset.num_classes,
            seed=config.train.seed,
        )

    def loader(samples: Sequence[VideoSample], training: bool) -> ClipLoader:
        return ClipLoader(
            samples,
            source,
            frames=config.model.frames,
            batch_size=config.data.batch_size,
            training=training,
            seed=config.train.seed,
            prefetch_batches=config.data.prefetch_batches,
        )

    train_loader = loader(train_samples, training=True)
    val_loader = loader(dataset.split("val"), training=False) if dataset.split("val") else None
    test_loader = loader(dataset.split("test"), training=False) if dataset.split("test") else None

    # Model, optimizer and learning-rate schedule.
    model = build_model(config.model.name, dataset.num_classes, **config.model.build_options())
    optimizer = make_optimizer(model, config.train)
    steps_per_epoch = len(train_loader)
    schedule = warmup_cosine_schedule(
        optimizer,
        total_steps=config.train.epochs * steps_per_epoch,
        warmup_steps=round(config.train.warmup_epochs * steps_per_epoch),
    )
    first_epoch = 0
    if resumed is not None:
        # Refuses a checkpoint of another model or trained on other classes.
        check_compatible(resumed, path=args.resume, expect_model=config.model.name, expect_classes=dataset.class_names)
        model.load_state_dict(resumed.model_state)
        optimizer.load_state_dict(resumed.extra["optimizer"])
        schedule.load_state_dict(resumed.extra["schedule"])
        first_epoch = int(resumed.extra["epoch"]) + 1
    console.print(
        f"train: {config.model.name} on {dataset.root} ({dataset.num_classes} classes, "
        f"{len(train_samples)} train / {len(dataset.split('val'))} val / {len(dataset.split('test'))} test clips), "
        f"{config.train.epochs} epochs, {torch.get_num_threads()} threads"
    )

    history: list[dict[str, Any]] = []
    started = time.monotonic()
    clips_trained = 0
    with MetricsLog(out / "metrics.jsonl") as metrics, _progress(console) as progress:
        metrics.write("start", config=config.to_dict(), classes=list(dataset.class_names))
        for epoch in range(first_epoch, config.train.epochs):
            task = progress.add_task(f"epoch {epoch + 1}/{config.train.epochs}", total=steps_per_epoch, loss=float("nan"))
            train_loader.set_epoch(epoch)
            model.train()
            epoch_started = time.monotonic()
            loss_sum, epoch_clips = 0.0, 0
            for batch in train_loader:
                loss = torch.nn.functional.cross_entropy(model(batch.clips), batch.labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss_sum += loss.item() * len(batch.labels)
                epoch_clips += len(batch.labels)
                progress.update(task, advance=1, loss=loss_sum / epoch_clips)
            clips_trained += epoch_clips
            epoch_seconds = time.monotonic() - epoch_started

            validation = evaluate(model, val_loader) if val_loader is not None else None
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(1, epoch_clips),
                "val_accuracy": validation.accuracy if validation else None,
                "val_loss": validation.loss if validation else None,
                "epoch_seconds": round(epoch_seconds, 3),
                "train_clips_per_second": round(epoch_clips / max(epoch_seconds, 1e-9), 2),
                "learning_rate": schedule.get_last_lr()[0],
            }
            history.append(record)
            metrics.write("epoch", **record)
            progress.remove_task(task)
            console.print(
                f"epoch {epoch + 1}/{config.train.epochs}: train loss {record['train_loss']:.3f}"
                + (f", val accuracy {validation.accuracy:.1%} (loss {validation.loss:.3f})" if validation else "")
                + f", {record['train_clips_per_second']:.0f} clips/s"
            )
            save_training_checkpoint(
                out / "model.pt",
                model=model,
                class_names=dataset.class_names,
                config=config,
                optimizer=optimizer,
                schedule=schedule,
                epoch=epoch,
                metrics=record,
            )

        test = evaluate(model, test_loader) if test_loader is not None else None
        summary = {
            "model": config.model.name,
            "val_accuracy": history[-1]["val_accuracy"] if history else None,
            "test_accuracy": test.accuracy if test else None,
            "test_loss": test.loss if test else None,
            "epochs": config.train.epochs,
            "wall_seconds": round(time.monotonic() - started, 2),
            "clips_trained": clips_trained,
            "threads": torch.get_num_threads(),
            "loading": source.stats.to_dict(),
            "cache": vars(source.cache.stats) if source.cache else None,
            "checkpoint": str(out / "model.pt"),
        }
        metrics.write("end", **summary)
    (out / "summary.json").write_text(json.dumps({**summary, "history": history}, indent=2) + "\n")
    plot_training_curves(history, out / "training.png", title=f"{config.model.name} on {dataset.root.name}")

    if source.stats.skipped:
        console.print(f"[yellow]{len(source.stats.skipped)} unreadable video(s) skipped[/] (listed in {out / 'summary.json'})")
    console.print(
        f"done in {summary['wall_seconds']:.0f} s: "
        + (f"val accuracy {summary['val_accuracy']:.1%}, " if summary["val_accuracy"] is not None else "")
        + (f"test accuracy {test.accuracy:.1%}; " if test else "")
        + f"checkpoint {out / 'model.pt'}"
    )
    return 0


def resolve_config(args: argparse.Namespace, *, resumed_config: dict[str, Any] | None = None) -> VideoConfig:
    """Defaults (or the resumed run's config), then the flags, then --set overrides."""
    settings = resumed_config if resumed_config is not None else VideoConfig().to_dict()
    settings = {section: dict(values) for section, values in settings.items()}
    flags = {
        ("data", "root"): args.data,
        ("model", "name"): args.model,
        ("train", "epochs"): args.epochs,
        ("train", "seed"): args.seed,
        ("train", "threads"): args.threads,
        ("data", "batch_size"): args.batch_size,
        ("train", "learning_rate"): args.lr,
        ("data", "cache_dir"): args.cache_dir,
        ("data", "cache"): False if args.no_cache else None,
    }
    for (section, name), value in flags.items():
        if value is not None:
            settings[section][name] = value
    for assignment in args.set:
        key, separator, text = assignment.partition("=")
        section, dot, name = key.strip().partition(".")
        if not separator or not dot or section not in settings:
            raise ConfigError(
                f"--set {assignment!r} is invalid: expected SECTION.FIELD=VALUE with SECTION one of {sorted(settings)}"
            )
        settings[section][name] = _parse_value(text)
    return VideoConfig.from_dict(settings)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: a string setting


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )

"""Plots people look at: training curves of a run, and the video benchmarks' charts.
Each is a PNG written next to the JSON it is drawn from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on devices or CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(history: Sequence[dict[str, Any]], path: Path, *, title: str) -> None:
    """Train loss and validation accuracy per epoch."""
    epochs = [record["epoch"] for record in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axis.plot(epochs, [record["train_loss"] for record in history], marker="o", label="train")
    if any(record.get("val_loss") is not None for record in history):
        loss_axis.plot(epochs, [record.get("val_loss") for record in history], marker="o", label="validation")
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    loss_axis.legend()
    accuracy_axis.plot(epochs, [record.get("val_accuracy") for record in history], marker="o", color="tab:green")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy", ylim=(0, 1.02))
    accuracy_axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_bars(
    groups: dict[str, dict[str, float]], path: Path, *, title: str, log_scale: bool = False, value_format: str = "{:.3g}"
) -> None:
    """One panel per metric (outer key), one bar per item (inner key), values printed."""
    figure, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    for axis, (metric, values) in zip(axes[0], groups.items()):
        names = list(values)
        bars = axis.bar(names, [values[name] for name in names], color=plt.cm.tab10.colors[: len(names)])
        axis.set_title(metric)
        if log_scale:
            axis.set_yscale("log")
        axis.tick_params(axis="x", labelrotation=20)
        for bar, name in zip(bars, names):
            axis.annotate(
                value_format.format(values[name]),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)

"""Settings of the video case study, one frozen section per concern.

``VideoConfig`` (model + data + train) is what ``globetrain train`` resolves from its
defaults and flags and saves whole into every checkpoint; ``classify`` and the fleet
rebuild the model and its input pipeline from it. ``SynthConfig`` describes how a
synthetic dataset was generated (it is saved into the dataset's ``dataset.json``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from globetrain.config import ConfigSection, field, require, require_finite_positive
from globetrain.video.actions import CLASS_NAMES

SUPPORTED_NORMS = ("batch", "group")


@dataclasses.dataclass(frozen=True)
class SynthConfig(ConfigSection):
    """How ``globetrain video synth`` draws and encodes the synthetic action dataset."""

    clips_per_class: int = field(300, help="clips written per class (split into train/val/test)")
    seed: int = field(0, help="random seed: the same seed writes the same files")
    frames: int = field(16, help="frames per clip")
    size: int = field(64, help="width and height of the frames in pixels (even, for H.264)")
    fps: int = field(8, help="frame rate stored in the files")
    val_fraction: float = field(0.15, help="fraction of each class's clips listed in val.txt")
    test_fraction: float = field(0.15, help="fraction of each class's clips listed in test.txt")
    classes: tuple[str, ...] = field(CLASS_NAMES, help="class names to write (default: all eight)")

    def __post_init__(self) -> None:
        name = "synth"
        require(isinstance(self.clips_per_class, int) and self.clips_per_class >= 1, name, "clips_per_class", self.clips_per_class, "an integer >= 1")
        require(isinstance(self.seed, int) and self.seed >= 0, name, "seed", self.seed, "an integer >= 0")
        require(isinstance(self.frames, int) and self.frames >= 2, name, "frames", self.frames, "an integer >= 2")
        require(isinstance(self.size, int) and self.size >= 16 and self.size % 2 == 0, name, "size", self.size, "an even integer >= 16")
        require(isinstance(self.fps, int) and 1 <= self.fps <= 120, name, "fps", self.fps, "an integer in [1, 120]")
        require(0.0 <= self.val_fraction < 1.0, name, "val_fraction", self.val_fraction, "a number in [0, 1)")
        require(0.0 <= self.test_fraction < 1.0, name, "test_fraction", self.test_fraction, "a number in [0, 1)")
        require(self.val_fraction + self.test_fraction < 1.0, name, "val_fraction + test_fraction", self.val_fraction + self.test_fraction, "a sum below 1, leaving clips to train on")
        unknown = sorted(set(self.classes) - set(CLASS_NAMES))
        require(not unknown, name, "classes", list(self.classes), f"names among {list(CLASS_NAMES)}")
        require(len(self.classes) >= 2 and len(set(self.classes)) == len(self.classes), name, "classes", list(self.classes), "at least two names, none repeated")


@dataclasses.dataclass(frozen=True)
class ModelConfig(ConfigSection):
    """Which registered model, and the clip shape it sees."""

    name: str = field("tsm-small", help="registered model (see `globetrain video models`)")
    frames: int = field(8, help="T: frames sampled per clip, one from each of T equal segments")
    frame_size: int = field(32, help="height and width in pixels of the frames the model sees")
    width: int = field(32, help="channels of the backbone's first stage (later stages double it)")
    norm: Literal["batch", "group"] = field(
        "group",
        help="normalisation layers: group (per clip: learns motion quickly despite each clip's "
        "background colours; no running statistics, so non-IID devices agree) or batch",
    )
    dropout: float = field(0.0, help="dropout before the classifier")

    def __post_init__(self) -> None:
        name = "model"
        require(isinstance(self.name, str) and bool(self.name), name, "name", self.name, "a registered model name")
        require(isinstance(self.frames, int) and 1 <= self.frames <= 64, name, "frames", self.frames, "an integer in [1, 64]")
        require(isinstance(self.frame_size, int) and 8 <= self.frame_size <= 512, name, "frame_size", self.frame_size, "an integer in [8, 512]")
        require(isinstance(self.width, int) and 4 <= self.width <= 512, name, "width", self.width, "an integer in [4, 512]")
        require(self.norm in SUPPORTED_NORMS, name, "norm", self.norm, f"one of {list(SUPPORTED_NORMS)}")
        require(0.0 <= self.dropout < 1.0, name, "dropout", self.dropout, "a number in [0, 1)")

    def build_options(self) -> dict[str, object]:
        """Keyword options for ``globetrain.video.models.build_model``."""
        return {
            "frames": self.frames,
            "frame_size": self.frame_size,
            "width": self.width,
            "norm": self.norm,
            "dropout": self.dropout,
        }


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "globetrain", "clips")


@dataclasses.dataclass(frozen=True)
class DataConfig(ConfigSection):
    """Where the videos are and how clips reach the model."""

    root: str = field("data/synth", help="dataset folder: folder-per-class, optionally with train/val/test.txt split files")
    batch_size: int = field(16, help="clips per training batch")
    cache: bool = field(True, help="keep decoded frames in the on-disk clip cache (decode each video once)")
    cache_dir: str = field("", help="clip cache folder (empty: $XDG_CACHE_HOME/globetrain/clips or ~/.cache/globetrain/clips)")
    cache_max_mb: float = field(1024.0, help="size cap of the clip cache in MiB; least recently used shards are evicted")
    max_cached_frames: int = field(32, help="frames kept per video (evenly spaced); segment sampling picks from them")
    prefetch_batches: int = field(2, help="batches prepared ahead by one background thread (0: load in the training loop)")
    decode_threads: int = field(1, help="FFmpeg threads per decode (1 suits small clips and shared cores)")
    val_fraction: float = field(0.1, help="without split files: fraction of each class used for validation")
    test_fraction: float = field(0.1, help="without split files: fraction of each class used for testing")
    num_shards: int = field(1, help="split the training clips into this many device shards (1: no sharding)")
    shard_index: int = field(0, help="which shard this run trains on, in [0, num_shards)")
    shard_mode: Literal["iid", "by-class"] = field(
        "iid", help="iid: an even share of every class; by-class: only some classes per shard (non-IID)"
    )
    classes_per_shard: int = field(0, help="by-class: classes each shard sees (0: the fewest that cover every class)")

    def __post_init__(self) -> None:
        name = "data"
        require(isinstance(self.root, str) and bool(self.root), name, "root", self.root, "a dataset folder")
        require(isinstance(self.batch_size, int) and self.batch_size >= 1, name, "batch_size", self.batch_size, "an integer >= 1")
        require_finite_positive(name, "cache_max_mb", self.cache_max_mb)
        require(isinstance(self.max_cached_frames, int) and self.max_cached_frames >= 1, name, "max_cached_frames", self.max_cached_frames, "an integer >= 1")
        require(isinstance(self.prefetch_batches, int) and self.prefetch_batches >= 0, name, "prefetch_batches", self.prefetch_batches, "an integer >= 0")
        require(isinstance(self.decode_threads, int) and self.decode_threads >= 1, name, "decode_threads", self.decode_threads, "an integer >= 1")
        require(0.0 <= self.val_fraction < 1.0, name, "val_fraction", self.val_fraction, "a number in [0, 1)")
        require(0.0 <= self.test_fraction < 1.0, name, "test_fraction", self.test_fraction, "a number in [0, 1)")
        require(self.val_fraction + self.test_fraction < 1.0, name, "val_fraction + test_fraction", self.val_fraction + self.test_fraction, "a sum below 1")
        require(isinstance(self.num_shards, int) and self.num_shards >= 1, name, "num_shards", self.num_shards, "an integer >= 1")
        require(isinstance(self.shard_index, int) and 0 <= self.shard_index < self.num_shards, name, "shard_index", self.shard_index, f"an integer in [0, num_shards={self.num_shards})")
        require(self.shard_mode in ("iid", "by-class"), name, "shard_mode", self.shard_mode, "'iid' or 'by-class'")
        require(isinstance(self.classes_per_shard, int) and self.classes_per_shard >= 0, name, "classes_per_shard", self.classes_per_shard, "an integer >= 0")

    def resolved_cache_dir(self) -> str:
        return self.cache_dir or default_cache_dir()


@dataclasses.dataclass(frozen=True)
class TrainConfig(ConfigSection):
    """The single-machine training run."""

    epochs: int = field(10, help="passes over the training split")
    optimizer: Literal["adamw", "sgd"] = field("adamw", help="inner optimizer")
    learning_rate: float = field(3e-3, help="peak learning rate (linear warm-up, then cosine decay to 0)")
    warmup_epochs: float = field(0.5, help="epochs of linear learning-rate warm-up")
    weight_decay: float = field(1e-4, help="decoupled weight decay (AdamW) or L2 (SGD)")
    momentum: float = field(0.9, help="SGD momentum (ignored by AdamW)")
    seed: int = field(0, help="seed of weight initialisation, shuffling and frame sampling")
    threads: int = field(0, help="torch intra-op threads (0: one per CPU core)")

    def __post_init__(self) -> None:
        name = "train"
        require(isinstance(self.epochs, int) and self.epochs >= 1, name, "epochs", self.epochs, "an integer >= 1")
        require(self.optimizer in ("adamw", "sgd"), name, "optimizer", self.optimizer, "'adamw' or 'sgd'")
        require_finite_positive(name, "learning_rate", self.learning_rate)
        require(0.0 <= self.warmup_epochs <= self.epochs, name, "warmup_epochs", self.warmup_epochs, f"a number in [0, epochs={self.epochs}]")
        require(self.weight_decay >= 0.0, name, "weight_decay", self.weight_decay, "a number >= 0")
        require(0.0 <= self.momentum < 1.0, name, "momentum", self.momentum, "a number in [0, 1)")
        require(isinstance(self.seed, int) and self.seed >= 0, name, "seed", self.seed, "an integer >= 0")
        require(isinstance(self.threads, int) and self.threads >= 0, name, "threads", self.threads, "an integer >= 0")

    def resolved_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class VideoConfig(ConfigSection):
    """Everything a training run is: saved whole into its checkpoints."""

    model: ModelConfig = field(ModelConfig(), help="the model")
    data: DataConfig = field(DataConfig(), help="the dataset and its loading")
    train: TrainConfig = field(TrainConfig(), help="the optimisation")

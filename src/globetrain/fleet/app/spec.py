"""What a video fleet run publishes for its devices, and how a device reads it back.

The bootstrap fills the run config's free-form parts (``RunConfig.model``, ``.data``,
``.training``) from three typed sections, and every device rebuilds the same sections
from them:

- ``model``: the registered model and its options (``globetrain.video.config.ModelConfig``)
  plus a fingerprint of the built model (parameter count and a digest of the parameter
  shapes), so a device whose globetrain builds a different network refuses to join;
- ``data``: ``DataLayoutConfig``: the class list (label order), how devices that are
  given ``--shard i/N`` split a shared dataset (non-IID ``by-class`` or ``iid``);
- ``training``: ``LocalTrainingConfig``: the inner optimizer, its learning rate and
  warm-up, the batch size, and the seed of the initial weights, identical everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from globetrain import __version__
from globetrain.config import ConfigSection, field, require, require_finite_positive
from globetrain.errors import ConfigError, GlobetrainError
from globetrain.fleet.config import FleetConfig
from globetrain.fleet.run import RunConfig
from globetrain.sync.config import SyncConfig
from globetrain.video.actions import CLASS_NAMES
from globetrain.video.config import DataConfig, ModelConfig, TrainConfig, VideoConfig
from globetrain.video.models import build_model


class IncompatibleRun(GlobetrainError):
    """This device cannot take part in the run it found; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class LocalTrainingConfig(ConfigSection):
    """How every device trains between two syncs (published with the run)."""

    optimizer: Literal["adamw", "sgd"] = field("adamw", help="inner optimizer of every device")
    learning_rate: float = field(3e-3, help="inner learning rate after the warm-up")
    warmup_steps: int = field(
        30, help="a device's first inner steps ramp the learning rate up linearly (its own steps, also after a late join)"
    )
    decay_samples: int = field(
        0,
        help=(
            "cosine decay of the learning rate over this many samples of the whole fleet (global samples, "
            "the same clock on every device), down to min_lr_fraction; 0 keeps it constant"
        ),
    )
    min_lr_fraction: float = field(0.05, help="the learning rate at the end of the decay, as a fraction of learning_rate")
    weight_decay: float = field(1e-4, help="decoupled weight decay (AdamW) or L2 (SGD)")
    momentum: float = field(0.9, help="SGD momentum (ignored by AdamW)")
    batch_size: int = field(16, help="clips per inner step")
    seed: int = field(0, help="seed of the initial weights: every device starts from the same model")
    restricted_softmax: bool = field(
        False,
        help=(
            "a device's local loss is a softmax over the classes its own data has (the others' logits are left "
            "out), so it never pushes the classes it lacks down and the global model does not tilt when a device "
            "skips rounds; for label-skewed devices (a device needs 2 or more classes to learn anything)"
        ),
    )

    def __post_init__(self) -> None:
        name = "training"
        require(self.optimizer in ("adamw", "sgd"), name, "optimizer", self.optimizer, "'adamw' or 'sgd'")
        require_finite_positive(name, "learning_rate", self.learning_rate)
        require(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, name, "warmup_steps", self.warmup_steps, "an integer >= 0")
        require(isinstance(self.decay_samples, int) and self.decay_samples >= 0, name, "decay_samples", self.decay_samples, "an integer >= 0")
        require(0 <= self.min_lr_fraction <= 1, name, "min_lr_fraction", self.min_lr_fraction, "a fraction in [0, 1]")
        require(self.weight_decay >= 0, name, "weight_decay", self.weight_decay, "a number >= 0")
        require(0 <= self.momentum < 1, name, "momentum", self.momentum, "a number in [0, 1)")
        require(isinstance(self.batch_size, int) and self.batch_size >= 1, name, "batch_size", self.batch_size, "an integer >= 1")
        require(isinstance(self.seed, int) and self.seed >= 0, name, "seed", self.seed, "an integer >= 0")
        require(isinstance(self.restricted_softmax, bool), name, "restricted_softmax", self.restricted_softmax, "true or false")

    def train_config(self) -> TrainConfig:
        """The single-machine section with the same optimizer settings (for ``make_optimizer``)."""
        return TrainConfig(
            optimizer=self.optimizer, learning_rate=self.learning_rate, weight_decay=self.weight_decay,
            momentum=self.momentum, seed=self.seed, warmup_epochs=0.0, threads=1,
        )


@dataclasses.dataclass(frozen=True)
class DataLayoutConfig(ConfigSection):
    """The run's classes, and how devices given ``--shard i/N`` split one shared dataset."""

    class_names: tuple[str, ...] = field(CLASS_NAMES, help="class names in label order: output i of the model is class i")
    sharding: Literal["by-class", "iid"] = field(
        "by-class",
        help=(
            "how --shard i/N splits a dataset: by-class (non-IID: each device sees only some classes, "
            "as cameras in different places see different actions) or iid (an even share of every class)"
        ),
    )
    classes_per_device: int = field(
        0, help="by-class: classes each shard holds (0: the fewest with which every class is still seen)"
    )
    shard_seed: int = field(0, help="seed of the assignment of clips to shards (every device computes the same)")
    max_cached_frames: int = field(32, help="frames kept per decoded video (segment sampling picks from them)")

    def __post_init__(self) -> None:
        name = "data"
        require(
            len(self.class_names) >= 2 and len(set(self.class_names)) == len(self.class_names),
            name, "class_names", list(self.class_names), "at least two names, none repeated",
        )
        require(self.sharding in ("by-class", "iid"), name, "sharding", self.sharding, "'by-class' or 'iid'")
        require(
            isinstance(self.classes_per_device, int) and 0 <= self.classes_per_device <= len(self.class_names),
            name, "classes_per_device", self.classes_per_device, f"an integer in [0, {len(self.class_names)}]",
        )
        require(isinstance(self.max_cached_frames, int) and self.max_cached_frames >= 1, name, "max_cached_frames",
                self.max_cached_frames, "an integer >= 1")


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Parameter count and a digest of the trainable parameters' names and shapes."""
    digest = hashlib.sha256()
    count = 0
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            digest.update(f"{name}:{tuple(parameter.shape)};".encode())
            count += parameter.numel()
    return {"parameters": count, "shapes_sha256": digest.hexdigest()}


@dataclasses.dataclass(frozen=True)
class VideoRunSpec:
    """The video-specific half of a run: model, data layout, local training."""

    model: ModelConfig
    layout: DataLayoutConfig
    training: LocalTrainingConfig

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.layout.class_names

    def build_model(self) -> nn.Module:
        """The run's initial model: the same weights on every device (seeded, own RNG stream)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.training.seed)
            return build_model(self.model.name, len(self.class_names), **self.model.build_options())

    def run_config(
        self, *, start_time: float, fleet: FleetConfig, sync: SyncConfig, method: str, run_name: str = ""
    ) -> RunConfig:
        """The config the bootstrap publishes (with the built model's fingerprint)."""
        fingerprint = model_fingerprint(self.build_model())
        return RunConfig(
            start_time=start_time,
            fleet=fleet,
            sync=sync,
            method=method,
            model={"config": self.model.to_dict(), **fingerprint, "torch_version": str(torch.__version__)},
            data=self.layout.to_dict(),
            training=self.training.to_dict(),
            software_version=__version__,
            run_name=run_name,
        )

    @classmethod
    def from_run_config(cls, run_config: RunConfig) -> VideoRunSpec:
        """Read the sections back; a run of another kind or version is ``IncompatibleRun``."""
        model = run_config.model
        if not isinstance(model.get("config"), Mapping):
            raise IncompatibleRun(
                f"the run {run_config.run_name or ''} is not a video run this globetrain understands "
                f"(its model description is {sorted(model)}); was it started by `globetrain bootstrap`?"
            )
        try:
            return cls(
                model=ModelConfig.from_dict(model["config"]),
                layout=DataLayoutConfig.from_dict(run_config.data),
                training=LocalTrainingConfig.from_dict(run_config.training),
            )
        except ConfigError as error:
            raise IncompatibleRun(
                f"the run's settings do not fit this globetrain {__version__} ({error}); "
                f"install the run's version {run_config.software_version} on this device"
            ) from None

    def video_config(self, data_root: str) -> VideoConfig:
        """The single-machine config equivalent, saved into checkpoints (``classify`` rebuilds from it)."""
        return VideoConfig(
            model=self.model,
            data=DataConfig(root=data_root, batch_size=self.training.batch_size, max_cached_frames=self.layout.max_cached_frames),
            train=self.training.train_config(),
        )


def check_software(run_config: RunConfig) -> None:
    """Refuse a run created by another globetrain version: the models would not stay identical."""
    if run_config.software_version != __version__:
        raise IncompatibleRun(
            f"the run was created by globetrain {run_config.software_version} but this device runs "
            f"globetrain {__version__}: devices of one run must run the same version (their models must stay "
            f"bit-identical); install globetrain {run_config.software_version} here, or restart the run with {__version__}"
        )


def check_model(spec: VideoRunSpec, run_config: RunConfig, model: nn.Module) -> None:
    """Refuse when this device's build of the run's model differs from the bootstrap's."""
    published = {key: run_config.model.get(key) for key in ("parameters", "shapes_sha256")}
    mine = model_fingerprint(model)
    if published != mine:
        raise IncompatibleRun(
            f"the run trains model {spec.model.name!r} with {published['parameters']} parameters, but this device "
            f"builds it with {mine['parameters']} (shapes digest {mine['shapes_sha256'][:12]} vs "
            f"{str(published['shapes_sha256'])[:12]}): install the run's globetrain {run_config.software_version} here"
        )


def label_map(local_classes: tuple[str, ...], run_classes: tuple[str, ...], *, data_root: str) -> list[int]:
    """The run's label for each of this device's labels (a device may hold only some classes).

    Raises ``IncompatibleRun`` naming the classes the run does not know.
    """
    unknown = [name for name in local_classes if name not in run_classes]
    if unknown:
        raise IncompatibleRun(
            f"the data in {data_root} has class(es) {unknown} that the run does not train "
            f"(the run's classes: {list(run_classes)}); remove or rename them, or join a run of these classes"
        )
    return [run_classes.index(name) for name in local_classes]

"""A trained video model back from its checkpoint: the network, ready for inference,
with its class names and the config that says how its input is prepared."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from globetrain.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from globetrain.errors import ConfigError
from globetrain.video.config import VideoConfig
from globetrain.video.models import build_model


@dataclasses.dataclass
class TrainedModel:
    model: nn.Module
    class_names: tuple[str, ...]
    config: VideoConfig
    checkpoint: Checkpoint


def model_from_checkpoint(checkpoint: Checkpoint, *, path: Path | str = "checkpoint") -> TrainedModel:
    """Rebuild the registered model a checkpoint names and load its weights (eval mode)."""
    try:
        config = VideoConfig.from_dict(checkpoint.config)
    except ConfigError as error:
        raise CheckpointError(f"{path}: its saved config is not a video training config: {error}") from error
    if config.model.name != checkpoint.model_name:
        raise CheckpointError(
            f"{path}: damaged checkpoint: it names model {checkpoint.model_name!r} but its config says {config.model.name!r}"
        )
    model = build_model(checkpoint.model_name, len(checkpoint.class_names), **config.model.build_options())
    try:
        model.load_state_dict(checkpoint.model_state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: its weights do not fit model {checkpoint.model_name!r} as configured "
            f"({str(error).splitlines()[0]})"
        ) from error
    return TrainedModel(model=model.eval(), class_names=checkpoint.class_names, config=config, checkpoint=checkpoint)


def load_trained_model(
    path: Path | str, *, expect_model: str | None = None, expect_classes: Sequence[str] | None = None
) -> TrainedModel:
    """``load_checkpoint`` (with its refusals) then ``model_from_checkpoint``."""
    checkpoint = load_checkpoint(path, expect_model=expect_model, expect_classes=expect_classes)
    return model_from_checkpoint(checkpoint, path=path)

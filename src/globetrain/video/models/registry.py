"""The model registry: a model is a file that registers a builder under a name.

``build_model(name, num_classes, **options)`` builds one; ``list_models()`` names them;
``model_spec(name, ...)`` describes one (input shape, parameters, FLOPs per clip) for
tables, the simulator's device profiles and checkpoints. A new model is a new module
with one ``@register_model`` builder, added to ``BUILTIN_MODEL_MODULES``.

A registered name stands for one fixed architecture: checkpoints store the name and
rebuild the model from it, so a changed architecture needs a new name.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from globetrain.errors import ConfigError

BUILTIN_MODEL_MODULES: tuple[str, ...] = (
    "globetrain.video.models.tsm",
    "globetrain.video.models.frame_average",
    "globetrain.video.models.conv3d",
)

ModelBuilder = Callable[..., nn.Module]


@dataclasses.dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str
    builder: ModelBuilder

    def option_names(self) -> list[str]:
        parameters = inspect.signature(self.builder).parameters
        return [name for name, parameter in parameters.items() if parameter.kind is parameter.KEYWORD_ONLY]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a model is and costs, for one number of classes and set of options."""

    name: str
    description: str
    input_shape: tuple[int, int, int, int]
    """One clip: (frames, channels, height, width)."""
    parameters: int
    flops_per_clip: int
    """Forward FLOPs for one clip (a multiply-add counts 2; convolutions and linear layers)."""
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "input_shape": list(self.input_shape)}


_MODELS: dict[str, RegisteredModel] = {}
_builtins_loaded = False


def register_model(name: str, description: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register ``builder(num_classes, *, option=default, ...)`` under ``name``."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _MODELS and _MODELS[name].builder is not builder:
            raise ValueError(f"model name {name!r} is registered twice")
        _MODELS[name] = RegisteredModel(name, description, builder)
        return builder

    return decorate


def _registry() -> dict[str, RegisteredModel]:
    global _builtins_loaded
    if not _builtins_loaded:
        # Imported here, not at the top: the model modules import this one to register.
        for module in BUILTIN_MODEL_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True
    return _MODELS


def list_models() -> list[str]:
    return sorted(_registry())


def registered_model(name: str) -> RegisteredModel:
    models = _registry()
    if name not in models:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(models))}")
    return models[name]


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """A freshly initialised model, its weights in the memory format it computes in.

    Raises ``ConfigError`` for an unknown name or an option the model does not take.
    """
    entry = registered_model(name)
    known = entry.option_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"model {name!r} has no option(s) {unknown}; its options are {known}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes = {num_classes!r} is invalid: expected an integer >= 2")
    model = entry.builder(num_classes, **options)
    memory_format = getattr(model, "memory_format", torch.contiguous_format)
    return model.to(memory_format=memory_format)


def model_spec(name: str, num_classes: int = 8, **options: Any) -> ModelSpec:
    """Build the model once and describe it (parameters, FLOPs per clip, input shape)."""
    from globetrain.video.models.counting import count_flops_per_clip, count_parameters

    entry = registered_model(name)
    model = build_model(name, num_classes, **options)
    return ModelSpec(
        name=name,
        description=entry.description,
        input_shape=tuple(model.input_shape),  # type: ignore[arg-type]
        parameters=count_parameters(model),
        flops_per_clip=count_flops_per_clip(model),
        options=dict(options),
    )

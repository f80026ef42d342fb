"""Video models in a registry: TSM-small (the default), its frame-averaging 2D baseline,
and a small 3D-convolution baseline. See ``registry`` for how to add one."""

from globetrain.video.models.counting import count_flops_per_clip, count_parameters
from globetrain.video.models.registry import (
    ModelSpec,
    build_model,
    list_models,
    model_spec,
    register_model,
    registered_model,
)
from globetrain.video.models.throughput import measure_training_throughput

DEFAULT_MODEL = "tsm-small"

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "build_model",
    "count_flops_per_clip",
    "count_parameters",
    "list_models",
    "measure_training_throughput",
    "model_spec",
    "register_model",
    "registered_model",
]

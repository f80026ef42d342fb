"""The model registry and what each model must do with time."""

from __future__ import annotations

import pytest
import torch

from globetrain.errors import ConfigError
from globetrain.video.models import build_model, list_models, measure_training_throughput, model_spec

SMALL = {"frames": 4, "frame_size": 16, "width": 8}


def test_registry_lists_the_three_models():
    assert {"tsm-small", "frame-average-small", "conv3d-small"} <= set(list_models())


@pytest.mark.parametrize("name", ["tsm-small", "frame-average-small", "conv3d-small"])
def test_every_model_maps_clips_to_class_logits_and_trains(name):
    torch.manual_seed(0)
    model = build_model(name, 5, **SMALL)
    clips = torch.randn(3, 4, 3, 16, 16)
    logits = model(clips)
    assert logits.shape == (3, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_tsm_sees_the_order_of_frames_and_the_frame_average_does_not():
    torch.manual_seed(0)
    clips = torch.randn(2, 4, 3, 16, 16)
    reversed_clips = clips.flip(1)
    tsm = build_model("tsm-small", 4, **SMALL).eval()
    average = build_model("frame-average-small", 4, **SMALL).eval()
    with torch.no_grad():
        assert not torch.allclose(tsm(clips), tsm(reversed_clips), atol=1e-6)
        assert torch.allclose(average(clips), average(reversed_clips), atol=1e-5)


def test_tsm_costs_the_backbones_flops_and_parameters_and_conv3d_costs_more():
    tsm, average, conv3d = (model_spec(name, 8) for name in ("tsm-small", "frame-average-small", "conv3d-small"))
    assert tsm.flops_per_clip == average.flops_per_clip > 0
    assert tsm.parameters == average.parameters
    assert conv3d.flops_per_clip > 2 * tsm.flops_per_clip
    assert conv3d.parameters > 2 * tsm.parameters


def test_default_tsm_is_sized_for_iot_devices():
    spec = model_spec("tsm-small", 8)
    assert spec.parameters < 2_000_000
    assert spec.input_shape == (8, 3, 32, 32)


def test_unknown_model_or_option_is_refused_with_the_known_ones_named():
    with pytest.raises(ConfigError, match="known models: .*tsm-small"):
        build_model("resnet-9000", 8)
    with pytest.raises(ConfigError, match="has no option.*shift_fraction"):
        build_model("frame-average-small", 8, shift_fraction=0.25)


def test_weights_are_channels_last():
    model = build_model("tsm-small", 8, **SMALL)
    assert model.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_training_throughput_is_measured_in_clips_per_second():
    rate = measure_training_throughput("tsm-small", num_classes=4, batch_size=2, seconds=0.05, warmup_steps=1, **SMALL)
    assert rate > 0

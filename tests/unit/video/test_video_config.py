"""The video config sections: round trip, and errors that name the bad value."""

from __future__ import annotations

import pytest

from globetrain.errors import ConfigError
from globetrain.video.config import DataConfig, ModelConfig, SynthConfig, TrainConfig, VideoConfig


def test_the_whole_config_round_trips_through_a_plain_dict():
    config = VideoConfig(model=ModelConfig(width=48), train=TrainConfig(epochs=3, optimizer="sgd"))
    assert VideoConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelConfig(frames=0), r"model.frames = 0 is invalid"),
        (lambda: ModelConfig(norm="layer"), r"model.norm = 'layer' is invalid"),
        (lambda: DataConfig(batch_size=0), r"data.batch_size = 0 is invalid"),
        (lambda: DataConfig(val_fraction=0.6, test_fraction=0.5), r"val_fraction \+ test_fraction = 1.1 is invalid"),
        (lambda: TrainConfig(learning_rate=-1.0), r"train.learning_rate = -1.0 is invalid"),
        (lambda: TrainConfig(epochs=2, warmup_epochs=3.0), r"train.warmup_epochs = 3.0 is invalid"),
        (lambda: SynthConfig(size=33), r"synth.size = 33 is invalid: expected an even integer"),
        (lambda: SynthConfig(classes=("move_left", "jump")), r"synth.classes = .* expected names among"),
    ],
)
def test_invalid_values_are_refused_naming_field_and_value(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_unknown_settings_in_a_saved_config_are_refused():
    with pytest.raises(ConfigError, match="unknown setting"):
        VideoConfig.from_dict({"model": {"name": "tsm-small", "depth": 50}})

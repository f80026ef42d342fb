"""Config sections: typed, validated, round-trip through plain dicts, errors name the field."""

from __future__ import annotations

import json

import pytest

from globetrain.errors import ConfigError
from globetrain.sync import QoSConfig, SyncConfig


def test_round_trip_through_json() -> None:
    config = SyncConfig(inner_steps=7, density=0.05, bits=4)
    assert SyncConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    qos = QoSConfig(bits_choices=(8, 2))
    assert QoSConfig.from_dict(json.loads(json.dumps(qos.to_dict()))) == qos


def test_unknown_key_is_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(ConfigError, match="inner_step.*known settings"):
        SyncConfig.from_dict({"inner_step": 3})


@pytest.mark.parametrize(
    "data,fragment",
    [
        ({"bits": 3}, "bits = 3"),
        ({"density": 0.0}, "density = 0.0"),
        ({"inner_steps": "8"}, "inner_steps = '8'"),
        ({"apply_delay": 2}, "apply_delay = 2"),
        ({"nesterov": "yes"}, "nesterov = 'yes'"),
        ({"outer_lr_scaling": "linear"}, "outer_lr_scaling = 'linear'"),
        ({"outer_lr_max_scale": 0.5}, "outer_lr_max_scale = 0.5"),
    ],
)
def test_bad_values_name_field_and_value(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SyncConfig.from_dict(data)
    assert fragment in str(raised.value)


def test_describe_lists_every_field_with_help() -> None:
    rows = SyncConfig.describe()
    assert {name for name, _, _ in rows} == set(SyncConfig().to_dict())
    assert all(help_text for _, _, help_text in rows)

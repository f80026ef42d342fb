"""What a video run publishes, read back by a device, and the refusals of a device that cannot join."""

from __future__ import annotations

import dataclasses

import pytest

from globetrain import __version__
from globetrain.errors import ConfigError
from globetrain.fleet.app.device import parse_shard
from globetrain.fleet.app.overrides import parse_overrides
from globetrain.fleet.app.run_setup import build_run
from globetrain.fleet.app.spec import IncompatibleRun, VideoRunSpec, check_model, check_software, label_map, model_fingerprint
from globetrain.fleet.run import RunConfig
from globetrain.video.actions import CLASS_NAMES

TINY = {"model": {"width": 8, "frames": 4}, "training": {"learning_rate": 0.002}, "sync": {"density": 0.05}}


def test_a_device_reads_back_exactly_what_the_bootstrap_published():
    spec, run_config = build_run(method="two-step", class_names=CLASS_NAMES, overrides=TINY)
    received = RunConfig.from_json(run_config.to_json())  # as it travels, sealed, through the DHT

    again = VideoRunSpec.from_run_config(received)

    assert again == spec
    assert again.training.learning_rate == 0.002 and again.model.width == 8
    assert received.sync.density == 0.05 and received.sync.apply_delay == 1  # the method's own settings hold
    check_software(received)
    check_model(again, received, again.build_model())


def test_every_device_builds_the_same_initial_model():
    spec, _ = build_run(method="two-step", class_names=CLASS_NAMES, overrides=TINY)
    first, second = spec.build_model(), spec.build_model()
    for a, b in zip(first.parameters(), second.parameters()):
        assert a.equal(b)


def test_another_globetrain_version_is_refused_with_what_to_install():
    _, run_config = build_run(method="two-step", class_names=CLASS_NAMES, overrides=TINY)
    other = dataclasses.replace(run_config, software_version="9.9.9")
    with pytest.raises(IncompatibleRun, match=rf"created by globetrain 9\.9\.9 but this device runs globetrain {__version__}"):
        check_software(other)


def test_a_model_built_differently_is_refused():
    spec, run_config = build_run(method="two-step", class_names=CLASS_NAMES, overrides=TINY)
    model = spec.build_model()
    published = dict(run_config.model, **model_fingerprint(model))
    published["parameters"] += 1
    with pytest.raises(IncompatibleRun, match="this device builds it with"):
        check_model(spec, dataclasses.replace(run_config, model=published), model)


def test_a_run_that_is_not_a_video_run_is_refused():
    _, run_config = build_run(method="two-step", class_names=CLASS_NAMES, overrides=TINY)
    with pytest.raises(IncompatibleRun, match="not a video run"):
        VideoRunSpec.from_run_config(dataclasses.replace(run_config, model={"task": "proxy"}))


def test_a_device_may_hold_some_of_the_classes_but_none_unknown():
    assert label_map(("zoom_in", "move_up"), CLASS_NAMES, data_root="d") == [CLASS_NAMES.index("zoom_in"), CLASS_NAMES.index("move_up")]
    with pytest.raises(IncompatibleRun, match=r"class\(es\) \['juggle'\] that the run does not train"):
        label_map(("juggle", "zoom_in"), CLASS_NAMES, data_root="d")


def test_shards_and_overrides_are_checked_with_messages():
    assert parse_shard("") is None and parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x/2", "3", "-1/2"):
        with pytest.raises(ConfigError, match="expected i/N"):
            parse_shard(bad)
    assert parse_overrides(["fleet.round_period_s=2.5", "data.sharding=iid"], ("fleet", "data")) == {
        "fleet": {"round_period_s": 2.5}, "data": {"sharding": "iid"}}
    with pytest.raises(ConfigError, match="SECTION one of"):
        parse_overrides(["nosuch.x=1"], ("fleet",))
    with pytest.raises(ConfigError, match="sync.density"):
        build_run(method="two-step", class_names=CLASS_NAMES, overrides={"sync": {"density": 2.0}})

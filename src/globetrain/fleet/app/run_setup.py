"""The settings of a new video fleet run, from defaults, the method and ``--set`` overrides.

``RUN_DEFAULTS`` is the recipe ``globetrain bootstrap`` (and so ``globetrain demo``)
starts from; every value can be changed with ``--set SECTION.FIELD=VALUE`` on the
bootstrap's command line (sections: fleet, sync, training, model, data). The method
(``--method``) then fixes what it defines (``globetrain.sync.methods``), so a baseline
is always the baseline, whatever the recipe says.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from globetrain.errors import ConfigError
from globetrain.fleet.app.spec import DataLayoutConfig, LocalTrainingConfig, VideoRunSpec
from globetrain.fleet.config import FleetConfig
from globetrain.fleet.run import RunConfig
from globetrain.sync.config import SyncConfig
from globetrain.sync.methods import get_method
from globetrain.video.config import ModelConfig

RUN_SECTIONS = ("fleet", "sync", "training", "model", "data")

RUN_DEFAULTS: dict[str, dict[str, Any]] = {
    # Rounds of a few seconds: long enough that an exchange (tens of KB) hides behind a
    # round of compute and that H steps dwarf the dense all-reduce's bytes, short enough
    # that non-IID devices do not drift apart between syncs.
    "fleet": {"round_period_s": 5.0},
    "sync": {"density": 0.01, "bits": 8, "dense_warmup_rounds": 0},
    "training": {"optimizer": "adamw", "learning_rate": 3e-3, "batch_size": 16, "warmup_steps": 30},
    "model": {},
    "data": {"sharding": "by-class"},
}


def _merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**defaults, **(overrides or {})}


def build_run(
    *,
    method: str,
    class_names: tuple[str, ...],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    start_delay_s: float = 20.0,
    run_name: str = "",
) -> tuple[VideoRunSpec, RunConfig]:
    """The run's video sections and the ``RunConfig`` to publish (round 0 in ``start_delay_s``)."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(RUN_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown settings section(s) {unknown}; sections are {list(RUN_SECTIONS)}")
    if start_delay_s < 0:
        raise ConfigError(f"the start delay {start_delay_s!r} is invalid: expected seconds >= 0")
    fleet = FleetConfig.from_dict(_merge(RUN_DEFAULTS["fleet"], overrides.get("fleet")))
    sync_settings = _merge(RUN_DEFAULTS["sync"], overrides.get("sync"))
    # A due exchange may take a round plus the aggregate deadline; wait a little longer.
    sync_settings.setdefault("exchange_timeout_s", round(fleet.round_period_s * (fleet.aggregate_deadline + 1.5), 3))
    sync = get_method(method).sync_config(SyncConfig.from_dict(sync_settings))
    layout_settings = _merge({**RUN_DEFAULTS["data"], "class_names": list(class_names)}, overrides.get("data"))
    spec = VideoRunSpec(
        model=ModelConfig.from_dict(_merge(RUN_DEFAULTS["model"], overrides.get("model"))),
        layout=DataLayoutConfig.from_dict(layout_settings),
        training=LocalTrainingConfig.from_dict(_merge(RUN_DEFAULTS["training"], overrides.get("training"))),
    )
    run_config = spec.run_config(
        start_time=time.time() + start_delay_s, fleet=fleet, sync=sync, method=method, run_name=run_name,
    )
    return spec, run_config

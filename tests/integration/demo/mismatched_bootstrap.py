"""Test helper: a bootstrap whose run another globetrain could have created.

    python mismatched_bootstrap.py version RUN_DIR    # the run claims another software version
    python mismatched_bootstrap.py model RUN_DIR      # the run's model fingerprint differs from ours

Otherwise it is the real ``BootstrapRuntime`` with tiny settings; the run key comes from
``GLOBETRAIN_RUN_KEY``. It runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from rich.console import Console

from globetrain.fleet.app.bootstrap import BootstrapConfig, BootstrapRuntime
from globetrain.fleet.app.run_keys import device_run_keys
from globetrain.fleet.app.run_setup import build_run
from globetrain.fleet.app.signals import StopSignals
from globetrain.fleet.config import FleetNetworkConfig
from globetrain.video.actions import CLASS_NAMES

TINY = {"fleet": {"round_period_s": 2.0}, "model": {"width": 8, "frames": 4}, "training": {"batch_size": 4}}


def main(kind: str, run_dir: str) -> int:
    spec, run_config = build_run(method="two-step", class_names=CLASS_NAMES, overrides=TINY, start_delay_s=3.0)
    if kind == "version":
        run_config = dataclasses.replace(run_config, software_version="0.0.0-elsewhere")
    elif kind == "model":
        run_config = dataclasses.replace(run_config, model={**run_config.model, "parameters": run_config.model["parameters"] + 1})
    else:
        raise SystemExit(f"unknown mismatch {kind!r}")
    network = FleetNetworkConfig(peers_file=str(Path(run_dir) / "peers.json"))
    with StopSignals() as signals:
        runtime = BootstrapRuntime(
            BootstrapConfig(run_dir=run_dir, live=False, start_delay_s=3.0), spec, run_config, network,
            device_run_keys(None), signals, console=Console(stderr=True), created_key_file=None,
        )
        return runtime.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

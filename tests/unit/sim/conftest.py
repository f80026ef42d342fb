"""Fixtures of the simulator's tests: tiny fleets whose every number is known.

A tiny fleet has identical devices at one spot (no propagation delay), fixed rates, no
jitter, no evening dip, no churn and no compute spread, so transfer and step times can be
computed by hand. The machine reference is fixed (no measurement), with a small "real"
model, so runs are fast and reproducible.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from globetrain.sim.config import SimulationConfig
from globetrain.sim.fleets import AccessLink, Availability, DeviceShare, FleetProfile, Region
from globetrain.sim.reference import MachineReference, ModelReference
from globetrain.sync.proxy_task import ProxyTaskConfig

REAL_SHAPES = ((256, 64), (256,), (10, 256), (10,))
TINY_PROXY = ProxyTaskConfig(
    classes=4, features=8, clusters_per_class=2, cluster_spread=1.0, train_samples=2000, test_samples=400, hidden=16,
    seed=0,
)


def tiny_profile(*, uplink_mbps: float = 8.0, downlink_mbps: float = 8.0, access_rtt_ms: float = 10.0,
                 mean_online_s: float = 1e9, mean_offline_s: float = 0.0) -> FleetProfile:
    return FleetProfile(
        name="tiny",
        description="identical devices at one spot, fixed links (tests)",
        devices=(DeviceShare("x86-mini-pc", 1.0),),
        access=(AccessLink("fixed", 1.0, uplink_mbps, downlink_mbps, spread=0.0, access_rtt_ms=access_rtt_ms,
                           jitter_ms=0.0, evening_dip=0.0, source="test"),),
        regions=(Region("here", 1.0, 0.0, 0.0, 0.0),),
        availability=(Availability("*", mean_online_s=mean_online_s, mean_offline_s=mean_offline_s),),
        rtt_inflation=1.0,
        compute_spread=0.0,
        step_jitter=0.0,
    )


@pytest.fixture
def reference() -> MachineReference:
    parameters = sum(a * (b if b else 1) for a, b in ((256, 64), (256, 0), (10, 256), (10, 0)))
    model = ModelReference(
        name="tsm-small", parameters=parameters, shapes=REAL_SHAPES, flops_per_clip=1_000_000, clips_per_s=50.0,
        gemm_gflops=25.0, clips_per_gemm_gflop=2.0, batch_size=16, activation_bytes_per_clip=10_000,
    )
    return MachineReference(machine="test", measured_at="fixed", torch_version="any", models={"tsm-small": model})


@pytest.fixture
def tiny_fleet(tmp_path: Path):
    """Write a tiny fleet profile (keyword overrides as ``tiny_profile``) and return its path."""

    def write(**overrides: float) -> str:
        path = tmp_path / f"tiny-{len(list(tmp_path.glob('tiny-*.json')))}.json"
        path.write_text(tiny_profile(**overrides).to_json())
        return str(path)

    return write


def tiny_config(fleet: str, **overrides: object) -> SimulationConfig:
    """Devices at 16 clips/s with batches of 16: one inner step takes exactly one second."""
    values = dict(
        devices=2, fleet=fleet, method="two-step", seed=0, batch_size=16, round_period_s=10.0,
        device_clips_per_s=16.0, proxy=TINY_PROXY, samples_per_device=100, max_sim_seconds=60.0,
        stop_at_target=False, max_wall_seconds=120.0, target_accuracy=0.99,
    )
    values.update(overrides)
    return SimulationConfig(**values)  # type: ignore[arg-type]

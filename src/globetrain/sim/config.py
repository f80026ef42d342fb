"""Settings of one simulation run (``globetrain simulate``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from globetrain.config import ConfigSection, field, require, require_finite_positive
from globetrain.sync.proxy_task import ProxyTaskConfig

# The simulator's proxy task, explicit so that tuning ProxyTask's defaults for the sync
# harness does not move the simulator's results: a 10-class Gaussian mixture of 8 clusters
# per class, wide enough that one device needs ~10^5 samples to approach 0.7 accuracy.
SIM_PROXY_TASK = ProxyTaskConfig(
    classes=10, features=32, clusters_per_class=8, cluster_spread=1.5,
    train_samples=200_000, test_samples=4_000, hidden=64, seed=0,
)


@dataclasses.dataclass(frozen=True)
class SimulationConfig(ConfigSection):
    """One simulated run: a fleet, a method, the training and the limits."""

    devices: int = field(64, help="N: devices in the simulated fleet")
    fleet: str = field("global-iot", help="a named fleet (global-iot, campus-lan, cellular-edge) or a JSON/TOML file")
    method: str = field("two-step", help="dense-sync, fp16-average, dgc, diloco or two-step")
    seed: int = field(0, help="seed of the fleet, the churn, the data order and the codec's rounding")
    model: str = field(
        "tsm-small", help="real video model: its parameter count sets every transfer size, its speed every step time"
    )
    batch_size: int = field(16, help="clips per inner step on every device (and proxy samples per step)")
    round_period_s: float = field(30.0, help="T of two-step's time-based rounds (the fleet's round_period_s)")
    inner_steps: int = field(32, help="H of diloco; the base H of two-step's QoS scheduler")
    group_size: int = field(64, help="most devices one two-step leader averages; larger fleets add levels of leaders")
    target_accuracy: float = field(0.7, help="validation accuracy (fraction) at which time_to_target_s is taken")
    max_sim_seconds: float = field(4 * 3600.0, help="simulated-time cap: the run stops here if the target is not reached")
    max_wall_seconds: float = field(1800.0, help="wall-time guard: stop simulating after this long (reported)")
    stop_at_target: bool = field(True, help="stop once the target accuracy is reached")
    memory_budget_gb: float = field(8.0, help="refuse fleets whose estimated simulator memory exceeds this")
    collective_timeout_s: float = field(
        60.0, help="a collective whose member vanished fails after this long (hivemind's averaging_timeout default)"
    )
    matchmaking_s: float = field(
        15.0, help="hivemind matchmaking time before each fp16-average all-reduce (its docs: 10-15 s over the internet)"
    )
    proxy: ProxyTaskConfig = field(SIM_PROXY_TASK, help="the proxy task whose math every device runs")
    samples_per_device: int = field(
        1000, help="training samples of each device's own shard at least (raises proxy.train_samples)"
    )
    partition: Literal["iid", "by-class"] = field("iid", help="how the proxy's training data is split among devices")
    qos_max_density: float = field(
        0.05,
        help=(
            "two-step: richest top-k fraction the QoS scheduler may choose (the sync default is 0.01; "
            "the small proxy model needs a little more to converge like the dense methods)"
        ),
    )
    device_clips_per_s: float = field(
        0.0, help="calibrated speed of every device, clips/s (from `simulate calibrate`); 0: the device classes' speeds"
    )
    threads: int = field(
        1,
        help=(
            "torch threads of the simulator: its batched products of small matrices gain little from more, "
            "and a second thread on a busy 2-core machine made them 7x slower (measured)"
        ),
    )
    inner_lr: float = field(0.1, help="inner SGD learning rate of the proxy model")
    inner_momentum: float = field(0.0, help="inner SGD momentum of the proxy model")

    def __post_init__(self) -> None:
        name = "simulate"
        require(isinstance(self.devices, int) and self.devices >= 1, name, "devices", self.devices, "an integer >= 1")
        require(self.batch_size >= 1, name, "batch_size", self.batch_size, "an integer >= 1")
        require_finite_positive(name, "round_period_s", self.round_period_s)
        require(self.inner_steps >= 1, name, "inner_steps", self.inner_steps, "an integer >= 1")
        require(self.group_size >= 2, name, "group_size", self.group_size, "an integer >= 2")
        require(0 < self.target_accuracy <= 1, name, "target_accuracy", self.target_accuracy, "a fraction in (0, 1]")
        require_finite_positive(name, "max_sim_seconds", self.max_sim_seconds)
        require_finite_positive(name, "max_wall_seconds", self.max_wall_seconds)
        require_finite_positive(name, "memory_budget_gb", self.memory_budget_gb)
        require_finite_positive(name, "collective_timeout_s", self.collective_timeout_s)
        require(self.matchmaking_s >= 0, name, "matchmaking_s", self.matchmaking_s, "seconds >= 0")
        require(self.samples_per_device >= 1, name, "samples_per_device", self.samples_per_device, "an integer >= 1")
        require(0 < self.qos_max_density <= 1, name, "qos_max_density", self.qos_max_density, "a fraction in (0, 1]")
        require(self.device_clips_per_s >= 0, name, "device_clips_per_s", self.device_clips_per_s, "clips/s >= 0")
        require(self.threads >= 1, name, "threads", self.threads, "an integer >= 1")
        require_finite_positive(name, "inner_lr", self.inner_lr)
        require(0 <= self.inner_momentum < 1, name, "inner_momentum", self.inner_momentum, "a number in [0, 1)")

    def proxy_task(self) -> ProxyTaskConfig:
        """The proxy task with enough training samples for every device."""
        needed = self.devices * self.samples_per_device
        if self.proxy.train_samples >= needed:
            return self.proxy
        return self.proxy.replace(train_samples=needed)

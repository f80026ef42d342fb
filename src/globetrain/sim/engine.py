"""``Simulation``: one method on one fleet, from the config to the summary.

Set-up: the fleet is drawn from its profile (``population``), device speeds come from
this machine's reference measurement of the real model (``reference``, ``devices``), the
proxy task gives every device its model and data (``proxy``), and the real model's
parameter shapes size every payload through the real codec's estimate (checked against
one real encode). The method's protocol (``rounds`` for two-step, ``synchronous`` for the
baselines) then drives every device's ``SyncLoop`` through ``SimExchange`` over simulated
time until the target accuracy, the simulated-time cap or the wall-time guard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from globetrain.compression import Codec
from globetrain.errors import ConfigError
from globetrain.sim.config import SimulationConfig
from globetrain.sim.context import SimContext
from globetrain.sim.devices import device_class
from globetrain.sim.events import EventQueue
from globetrain.sim.fleets import FleetProfile, load_fleet
from globetrain.sim.ledger import Ledger
from globetrain.sim.links import Links
from globetrain.sim.memory import MemoryEstimate, estimate_memory, refuse_if_over
from globetrain.sim.methods import SimMethod, sim_method
from globetrain.sim.population import FleetSample, sample_fleet
from globetrain.sim.proxy import ProxyBank
from globetrain.sim.reference import MachineReference, ModelReference, load_or_measure
from globetrain.sim.rounds import LeaderRounds
from globetrain.sim.synchronous import SynchronousCollective
from globetrain.sim.wire import measure_wire_sizes
from globetrain.sync.config import SyncConfig
from globetrain.sync.methods import get_method
from globetrain.sync.schedule import make_payload_estimator

# A device needs the real model's training state and activations, plus its runtime.
DEVICE_RUNTIME_BYTES = 300 << 20
TRAINING_STATE_COPIES = 8

WALL_FIELDS = ("wall_seconds", "wall_guard_hit", "events_per_wall_second")


@dataclasses.dataclass
class SimulationResult:
    summary: dict[str, Any]
    curve: list[dict[str, float]]
    fleet: FleetSample
    profile: FleetProfile
    reference: MachineReference
    per_device: dict[str, np.ndarray]
    """``bytes_sent``, ``bytes_received``, ``compute_seconds``, ``inner_steps`` per device."""


class Simulation:
    def __init__(
        self,
        config: SimulationConfig,
        *,
        reference: MachineReference | None = None,
        reference_path: Path | None = None,
    ) -> None:
        self.config = config
        self.method: SimMethod = sim_method(config.method)
        self.profile = load_fleet(config.fleet)
        self.reference = reference or load_or_measure(config.model, batch_size=config.batch_size, path=reference_path)
        self.model: ModelReference = self.reference.model(config.model)
        self.sync_config = get_method(self.method.sync_method).sync_config(
            # The simulator never blocks on a future: the protocols resolve every one in time.
            SyncConfig(inner_steps=config.inner_steps, seed=config.seed, exchange_timeout_s=10 * config.max_sim_seconds)
        )
        proxy = config.proxy_task()
        proxy_parameters = _mlp_parameters(proxy.features, proxy.hidden, proxy.classes)
        self.memory: MemoryEstimate = estimate_memory(
            devices=config.devices, proxy_parameters=proxy_parameters, sync=self.sync_config,
            inner_momentum=config.inner_momentum, train_samples=proxy.train_samples, features=proxy.features,
            samples_per_device=max(config.samples_per_device, proxy.train_samples // max(config.devices, 1)),
        )
        refuse_if_over(self.memory, config.memory_budget_gb)
        self._check_devices_hold_the_model()

    def _check_devices_hold_the_model(self) -> None:
        model = self.model
        needed = (
            TRAINING_STATE_COPIES * 4 * model.parameters
            + 2 * model.activation_bytes_per_clip * self.config.batch_size
            + DEVICE_RUNTIME_BYTES
        )
        for share in self.profile.devices:
            spec = device_class(share.device)
            if needed > spec.memory_gb * 1e9:
                raise ConfigError(
                    f"model {model.name} with batch {self.config.batch_size} needs about {needed / 1e9:.2f} GB on a device "
                    f"but {spec.name} has {spec.memory_gb:g} GB; lower --batch-size or remove {spec.name} from the fleet"
                )

    def run(
        self, *, on_progress: Callable[[float, float, float], None] | None = None, quiet_loops: bool = True
    ) -> SimulationResult:
        """Simulate; ``on_progress(simulated_s, accuracy, cap_s)`` is called at each new global model.

        ``quiet_loops``: thousands of simulated loops would each log every failed round
        (they are counted in the summary's ``events`` instead).
        """
        loop_log = logging.getLogger("globetrain.sync.loop")
        previous, threads = loop_log.level, torch.get_num_threads()
        if quiet_loops:
            loop_log.setLevel(logging.ERROR)
        torch.set_num_threads(self.config.threads)
        try:
            return self._run(on_progress)
        finally:
            loop_log.setLevel(previous)
            torch.set_num_threads(threads)

    def _run(self, on_progress: Callable[[float, float, float], None] | None) -> SimulationResult:
        config = self.config
        wall_started = time.monotonic()
        torch.manual_seed(config.seed)
        clips_per_hpl_gflop = self.model.clips_per_gemm_gflop
        fleet = sample_fleet(
            self.profile, config.devices, seed=config.seed, clips_per_hpl_gflop=clips_per_hpl_gflop,
            batch_size=config.batch_size, horizon_s=config.max_sim_seconds, clips_per_s_override=config.device_clips_per_s,
        )
        queue = EventQueue()
        bank = ProxyBank(
            config.proxy_task(), config.devices, partition=config.partition, inner_lr=config.inner_lr,
            inner_momentum=config.inner_momentum, seed=config.seed,
        )
        payload_bytes = make_payload_estimator(self.model.shapes)
        ledger = Ledger(fleet)
        ctx = SimContext(
            config=config, method=self.method, queue=queue, fleet=fleet, links=Links(fleet, seed=config.seed),
            bank=bank, ledger=ledger, real_shapes=list(self.model.shapes), payload_bytes=payload_bytes,
            wire=measure_wire_sizes(), sync_config=self.sync_config,
            run_id=hashlib.sha256(f"globetrain-sim/{config.seed}".encode()).digest()[:16],
        )
        protocol = LeaderRounds(ctx) if self.method.protocol == "rounds" else SynchronousCollective(ctx)
        # Kept for inspection (tests, notebooks): the last run's pieces.
        self.context, self.protocol = ctx, protocol
        cap = config.max_sim_seconds
        for moment, device, comes_online in fleet.transitions():
            if moment > cap:
                break
            action = protocol.device_online if comes_online else protocol.device_offline
            queue.schedule(moment, action, device, label="churn")
        ledger.record(0.0, ctx.last_accuracy, sum(1 for i in range(fleet.count) if fleet.online(i, 0.0)))
        if on_progress is not None:
            ctx.on_progress = lambda now, accuracy: on_progress(now, accuracy, cap)
        protocol.start()
        guard = {"hit": False}

        def stop() -> bool:
            if ctx.stop_requested:
                return True
            if queue.events_run % 64 == 0 and time.monotonic() - wall_started > config.max_wall_seconds:
                guard["hit"] = True
                return True
            return False

        queue.run_until(cap, stop=stop)
        end = min(queue.now, cap) if (ctx.stop_requested or guard["hit"]) else cap
        ledger.close(end)
        wall = time.monotonic() - wall_started
        summary = self._summary(ctx, fleet, protocol, end, wall, guard["hit"], queue.events_run)
        curve = [dataclasses.asdict(point) for point in ledger.curve]
        per_device = {
            "bytes_sent": ledger.bytes_sent, "bytes_received": ledger.bytes_received,
            "compute_seconds": ledger.compute_seconds, "inner_steps": ledger.inner_steps,
        }
        return SimulationResult(summary, curve, fleet, self.profile, self.reference, per_device)

    # -- the summary ----------------------------------------------------------------------------------

    def _summary(
        self, ctx: SimContext, fleet: FleetSample, protocol: LeaderRounds | SynchronousCollective, end: float,
        wall: float, guard_hit: bool, events: int,
    ) -> dict[str, Any]:
        config, ledger = self.config, ctx.ledger
        stopped_by = "target" if ctx.stop_requested else ("wall guard" if guard_hit else "simulated-time cap")
        estimate_ratio = codec_estimate_ratio(self.model, self.sync_config)
        speeds = {
            name: round(config.device_clips_per_s or float(device_class(name).hpl_gflops * self.model.clips_per_gemm_gflop), 3)
            for name in fleet.class_names
        }
        # What fp32 ring all-reduce of every inner step would have sent (design.md's demo formula).
        count = config.devices
        dense_bytes = float(ledger.inner_steps.mean()) * 2 * (count - 1) / count * 4 * self.model.parameters
        summary: dict[str, Any] = {
            "method": self.method.name,
            "method_description": self.method.description,
            "devices": config.devices,
            "fleet": self.profile.name,
            "seed": config.seed,
            "val_accuracy": round(ctx.last_accuracy, 6),
            "target_accuracy": config.target_accuracy,
            "time_to_target_s": None if ctx.target_reached_at is None else round(ctx.target_reached_at, 3),
            "steps": ledger.global_steps,
            "simulated_seconds": round(end, 3),
            "stopped_by": stopped_by,
            "model": config.model,
            "model_parameters": self.model.parameters,
            "proxy_model": ctx.bank.description(),
            "math": "every device's update is computed for real on the proxy model; transfer sizes are the real model's",
            "bytes_sent_per_device": round(float(ledger.bytes_sent.mean()), 1),
            "bytes_received_per_device": round(float(ledger.bytes_received.mean()), 1),
            "inner_steps_per_device": round(float(ledger.inner_steps.mean()), 3),
            "bytes_sent_per_inner_step": round(float(ledger.bytes_sent.sum() / max(ledger.inner_steps.sum(), 1)), 3),
            "dense_bytes_per_device": round(dense_bytes, 1),
            "median_uplink_mbps": round(float(np.median(fleet.uplink_bytes_per_s)) * 8 / 1e6, 3),
            "median_downlink_mbps": round(float(np.median(fleet.downlink_bytes_per_s)) * 8 / 1e6, 3),
            "compute_utilization": round(ledger.compute_utilization(end), 6),
            "scaling_efficiency": round(ledger.scaling_efficiency(end), 6),
            "global_samples": ledger.global_samples,
            "fleet_samples_per_s": round(ledger.global_samples / end, 3) if end > 0 else 0.0,
            "standalone_samples_per_s_online_mean": round(
                float((ledger.online_seconds(end) * fleet.samples_per_s).sum() / end), 3) if end > 0 else 0.0,
            "events": dict(sorted(ledger.events.items())),
            "codec_estimate_ratio": round(estimate_ratio, 4),
            "device_clips_per_s": speeds,
            "fleet_composition": _composition(fleet),
            "memory_estimate_bytes": self.memory.total_bytes,
            "machine_reference": {
                "machine": self.reference.machine,
                "measured_at": self.reference.measured_at,
                "clips_per_s_one_thread": round(self.model.clips_per_s, 3),
                "gemm_gflops_one_thread": round(self.model.gemm_gflops, 3),
            },
            "config": config.to_dict(),
            "sync_config": self.sync_config.to_dict(),
            "wall_seconds": round(wall, 3),
            "wall_guard_hit": guard_hit,
            "events_per_wall_second": round(events / wall, 1) if wall > 0 else 0.0,
        }
        if isinstance(protocol, SynchronousCollective) and protocol.last_timing is not None:
            summary["last_collective_seconds"] = round(protocol.last_timing.seconds, 6)
        return summary


def codec_estimate_ratio(model: ModelReference, sync: SyncConfig, *, seed: int = 0) -> float:
    """Real encoded bytes of the real model's shapes over the codec's estimate (start-up check)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(shape, generator=generator) for shape in model.shapes]
    codec = Codec(sync.density, sync.bits)
    return len(codec.encode(tensors, seed=seed)) / codec.estimate_payload_bytes(model.shapes)


def _composition(fleet: FleetSample) -> dict[str, Any]:
    def counts(names: list[str], values: np.ndarray) -> dict[str, int]:
        return {name: int((values == index).sum()) for index, name in enumerate(names)}

    online = sum(1 for i in range(fleet.count) if fleet.online(i, 0.0))
    return {
        "classes": counts(fleet.class_names, fleet.device_class),
        "regions": counts(fleet.region_names, fleet.region),
        "access": counts(fleet.access_names, fleet.access),
        "online_at_start": online,
    }


def _mlp_parameters(features: int, hidden: int, classes: int) -> int:
    return features * hidden + hidden + hidden * hidden + hidden + hidden * classes + classes


def without_wall_clock_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without its wall-clock fields (what a same-seed rerun reproduces)."""
    return {key: value for key, value in summary.items() if key not in WALL_FIELDS}

"""What both exchange protocols share: the run's pieces and each simulated device's runtime.

A ``SimNode`` is one device as the protocols see it: whether it is online and in step
with the global model, its ``SyncLoop`` (a new one each time the device comes back: a
restarted process has no memory), and the inner steps it owes before its next boundary.

``SimContext`` bundles the run (config, fleet, links, the stacked proxy models, the
ledger, the real model's payload sizes) and does what every protocol needs: build a
device's loop, time a state download, load a joining device's state from an in-step
peer with the fleet's own snapshot code, train owed inner steps in one batch, and record
each new global model's accuracy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from globetrain.fleet.state import snapshot_from_loop, state_size_bound
from globetrain.sim.config import SimulationConfig
from globetrain.sim.events import EventHandle, EventQueue
from globetrain.sim.exchange import ExchangeProtocol, SimExchange
from globetrain.sim.ledger import Ledger
from globetrain.sim.links import Links
from globetrain.sim.methods import SimMethod
from globetrain.sim.population import FleetSample
from globetrain.sim.proxy import ProxyBank
from globetrain.sim.wire import WireSizes
from globetrain.sync.config import SyncConfig
from globetrain.sync.loop import SyncLoop
from globetrain.sync.schedule import RoundSchedule

PayloadEstimator = Callable[[float, int], int]


@dataclasses.dataclass(eq=False)
class SimNode:
    index: int
    loop: SyncLoop | None = None
    exchange: SimExchange | None = None
    online: bool = False
    in_step: bool = False
    """Holds the global model everyone in step holds (false while joining or resyncing)."""
    generation: int = 0
    """Bumped whenever the device leaves or restarts, so its stale events do nothing."""
    boundary: EventHandle | None = None
    owed_steps: int = 0
    """Inner steps of the current round not yet run on the proxy bank."""
    round_started_at: float = math.nan
    joined_at: float = math.nan


class SimContext:
    def __init__(
        self,
        *,
        config: SimulationConfig,
        method: SimMethod,
        queue: EventQueue,
        fleet: FleetSample,
        links: Links,
        bank: ProxyBank,
        ledger: Ledger,
        real_shapes: list[tuple[int, ...]],
        payload_bytes: PayloadEstimator,
        wire: WireSizes,
        sync_config: SyncConfig,
        run_id: bytes,
    ) -> None:
        self.config = config
        self.method = method
        self.queue = queue
        self.fleet = fleet
        self.links = links
        self.bank = bank
        self.ledger = ledger
        self.real_shapes = real_shapes
        self.payload_bytes = payload_bytes
        self.wire = wire
        self.sync_config = sync_config
        self.run_id = run_id
        self.nodes = [SimNode(index) for index in range(fleet.count)]
        self.state_bytes = state_size_bound(real_shapes)
        self.stop_requested = False
        self.target_reached_at: float | None = None
        self.last_accuracy = bank.accuracy(bank.initial)
        self.evaluated_versions: set[int] = set()
        self.on_progress: Callable[[float, float], None] | None = None

    # -- devices --------------------------------------------------------------------------------

    def new_loop(self, node: SimNode, protocol: ExchangeProtocol, config: SyncConfig, schedule: RoundSchedule | None) -> SyncLoop:
        """A fresh process on the device: new loop, new exchange port, no inner-optimizer state."""
        if node.exchange is not None:
            node.exchange.close()
        node.exchange = SimExchange(protocol, node.index)
        node.loop = SyncLoop(
            self.bank.model(node.index), None, node.exchange, config, schedule=schedule,
            clock=self.queue.clock, device_index=node.index, name=self.fleet.name(node.index),
        )
        self.bank.reset_optimizer(node.index)
        return node.loop

    def drop_loop(self, node: SimNode) -> None:
        if node.exchange is not None:
            node.exchange.close()
        node.exchange = None
        node.loop = None
        node.in_step = False
        node.owed_steps = 0

    def donor(self, exclude: int) -> SimNode | None:
        """An online, in-step device to download state from (the lowest index: deterministic)."""
        for node in self.nodes:
            if node.index != exclude and node.online and node.in_step and node.loop is not None:
                return node
        return None

    def download_seconds(self, device: int, donor: int) -> float:
        """Manifest round trip, then the state (two float32 copies of the real model) at the slower end."""
        now = self.queue.now
        rate = self.links.rate(donor, device, now)
        return 2.0 * self.links.rtt(device, donor) + self.state_bytes / rate

    @torch.no_grad()
    def load_state_from(self, node: SimNode, donor: SimNode) -> None:
        """The fleet's state download, minus the network: snapshot the donor, load it."""
        assert node.loop is not None and donor.loop is not None
        snapshot = snapshot_from_loop(donor.loop, global_samples=self.ledger.global_samples, config_digest="simulated")
        node.loop.load_state_dict(snapshot.loop_state())
        self.ledger.transfer(donor.index, node.index, self.state_bytes)

    def train_owed(self, nodes: list[SimNode]) -> None:
        """Run every owed inner step of these devices in one batch, counting them in their loops."""
        owing = [node for node in nodes if node.owed_steps > 0 and node.loop is not None]
        if not owing:
            return
        devices = np.array([node.index for node in owing])
        steps = np.array([node.owed_steps for node in owing])
        self.bank.train(devices, steps, self.config.batch_size)
        batch = self.config.batch_size
        for node in owing:
            loop = node.loop
            for _ in range(node.owed_steps):
                loop.count_step(batch)
            self.ledger.inner_steps[node.index] += node.owed_steps
            node.owed_steps = 0

    def step_seconds(self, device: int) -> float:
        return self.config.batch_size / float(self.fleet.samples_per_s[device])

    # -- the global model -----------------------------------------------------------------------

    def global_model_changed(self, version: int, node: SimNode, samples: int) -> None:
        """Count a new global model (``version``: round or step) once, and evaluate it."""
        if version in self.evaluated_versions or node.loop is None:
            return
        self.evaluated_versions.add(version)
        self.ledger.global_update(samples)
        accuracy = self.bank.accuracy(node.loop.global_params)
        self.last_accuracy = accuracy
        now = self.queue.now
        self.ledger.record(now, accuracy, sum(1 for n in self.nodes if n.online))
        if self.target_reached_at is None and accuracy >= self.config.target_accuracy:
            self.target_reached_at = now
            if self.config.stop_at_target:
                self.stop_requested = True
        if self.on_progress is not None:
            self.on_progress(now, accuracy)

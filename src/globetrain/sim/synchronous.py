"""The baselines over simulated time: synchronous steps, each ended by one collective.

A step: every online, in-step device runs its H inner steps (H = 1, or diloco's H), the
collective starts when the slowest has finished (after hivemind's matchmaking for
fp16-average) and lasts what ``collectives`` says on the members' links; then every
device's ``SyncLoop`` applies the average (``apply_delay`` 0: the method waits for it).

A member that leaves during the step breaks the collective: the others notice after
``collective_timeout_s`` and the step fails for all (the bytes moved until it left still
count); their loops give their update back, or drop it for the methods without error
feedback, and rebase on the unchanged global model. Devices that come online download
the state and join at the next step.

The math is the real loop's: every member's payload is encoded by its own ``SyncLoop``,
decoded and averaged with the fleet's sample-weighted average (what every member of an
all-reduce or all-gather ends up holding), and applied by every loop.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future

import numpy as np

from globetrain.compression import Codec
from globetrain.fleet.aggregate import weighted_average
from globetrain.sim.collectives import (
    CollectiveTiming,
    butterfly_allreduce,
    ring_allgather,
    ring_allreduce,
    ring_order,
)
from globetrain.sim.context import SimContext, SimNode
from globetrain.sim.exchange import resolve
from globetrain.sync.exchange import Contribution, ExchangeOutcome
from globetrain.sync.weighting import sample_weights


@dataclasses.dataclass(eq=False)
class StepPlan:
    index: int
    started_at: float
    members: list[SimNode]
    generations: list[int]
    inner_steps: int
    compute_ends: np.ndarray
    collective_start: float
    timing: CollectiveTiming
    ends_at: float
    failure: str = ""
    left_at: float = 0.0
    """When the member that broke the collective left (bytes moved until then count)."""


class SynchronousCollective:
    def __init__(self, ctx: SimContext) -> None:
        self.ctx = ctx
        self.method = ctx.method
        self.decoder = Codec(1.0, 32)
        self.proxy_shapes = [tuple(shape) for shape in ctx.bank.shapes]
        config = ctx.sync_config
        self.transfer_bytes = ctx.payload_bytes(config.density, config.bits)
        self.steps_started = 0
        self.running: StepPlan | None = None
        self.waiting_to_join: list[SimNode] = []
        self._submitted: dict[int, tuple[Contribution, Future[ExchangeOutcome]]] = {}
        self.last_timing: CollectiveTiming | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        ctx = self.ctx
        for node in ctx.nodes:
            if ctx.fleet.online(node.index, 0.0):
                node.online = True
                node.joined_at = 0.0
                ctx.new_loop(node, self, ctx.sync_config, None)
                node.in_step = True
        self._start_step()

    def device_online(self, device: int) -> None:
        ctx = self.ctx
        node = ctx.nodes[device]
        node.online = True
        node.generation += 1
        node.joined_at = ctx.queue.now
        donor = ctx.donor(exclude=device)
        seconds = ctx.download_seconds(device, donor.index) if donor is not None else 0.0
        ctx.queue.after(seconds, self._downloaded, node, node.generation, label="downloaded")

    def _downloaded(self, node: SimNode, generation: int) -> None:
        if generation != node.generation or not node.online:
            return
        self.waiting_to_join.append(node)
        if self.running is None:
            self._start_step()

    def device_offline(self, device: int) -> None:
        node = self.ctx.nodes[device]
        node.online = False
        node.generation += 1
        self.ctx.ledger.stop_compute(device, self.ctx.queue.now)
        self.ctx.drop_loop(node)

    def device_closed(self, device: int) -> None:
        """Nothing to release: a step in flight notices its member left."""

    def accept(self, device: int, contribution: Contribution, future: Future[ExchangeOutcome]) -> None:
        self._submitted[device] = (contribution, future)

    # -- steps ------------------------------------------------------------------------------------------

    def _admit_joiners(self) -> None:
        ctx = self.ctx
        joiners, self.waiting_to_join = self.waiting_to_join, []
        for node in joiners:
            if not node.online:
                continue
            donor = ctx.donor(exclude=node.index)
            ctx.new_loop(node, self, ctx.sync_config, None)
            if donor is not None:
                ctx.load_state_from(node, donor)
            node.in_step = True

    def _jitter(self, device: int, step: int) -> float:
        sigma = self.ctx.fleet.profile.step_jitter
        if sigma <= 0:
            return 1.0
        return float(np.random.default_rng([self.ctx.config.seed, device, step, 7]).lognormal(0.0, sigma))

    def _start_step(self) -> None:
        ctx = self.ctx
        now = ctx.queue.now
        self._admit_joiners()
        members = [node for node in ctx.nodes if node.online and node.in_step and node.loop is not None]
        if not members:
            self.running = None
            return
        index = self.steps_started
        self.steps_started += 1
        inner_steps = members[0].loop.settings.inner_steps  # type: ignore[union-attr]
        step_seconds = np.array([ctx.step_seconds(n.index) * self._jitter(n.index, index) for n in members])
        compute_ends = now + inner_steps * step_seconds
        barrier = float(compute_ends.max())
        start = max(barrier, now + ctx.config.matchmaking_s) if self.method.matchmaking else barrier
        devices = np.array([n.index for n in members])
        timing = self._timing(devices, start)
        ends_at = start + timing.seconds
        plan = StepPlan(index, now, members, [n.generation for n in members], inner_steps, compute_ends, start, timing, ends_at)
        leaves = np.array([ctx.fleet.online_until(int(d), now) for d in devices])
        first = int(np.argmin(leaves))
        if leaves[first] < ends_at:
            plan.left_at = float(leaves[first])
            fail_at = max(plan.left_at, barrier) + ctx.config.collective_timeout_s
            plan.failure = f"{ctx.fleet.name(int(devices[first]))} left during step {index}; the collective timed out"
            plan.ends_at = fail_at
        for node, end in zip(members, compute_ends):
            ctx.ledger.start_compute(node.index, now, until_s=float(end))
        self.running = plan
        self.last_timing = timing
        ctx.queue.schedule(plan.ends_at, self._finish, plan, label=f"step {index}")

    def _timing(self, devices: np.ndarray, start: float) -> CollectiveTiming:
        fleet = self.ctx.fleet
        kind = self.method.collective
        if kind == "ring-allreduce":
            return ring_allreduce(fleet, ring_order(fleet, devices), self.transfer_bytes, start)
        if kind == "butterfly-allreduce":
            return butterfly_allreduce(fleet, devices, self.transfer_bytes, start)
        if kind == "ring-allgather":
            return ring_allgather(fleet, ring_order(fleet, devices), self.transfer_bytes, start)
        raise ValueError(f"method {self.method.name} has no collective")

    def _finish(self, plan: StepPlan) -> None:
        ctx = self.ctx
        now = ctx.queue.now
        present = [
            (node, end) for node, generation, end in zip(plan.members, plan.generations, plan.compute_ends)
            if node.generation == generation and node.online and node.loop is not None
        ]
        for node, _ in present:
            ctx.ledger.stop_compute(node.index, now)
        for node, _ in present:
            node.owed_steps = plan.inner_steps
        ctx.train_owed([node for node, _ in present])
        members = []
        for node, _ in present:
            node.loop.submit_round()  # type: ignore[union-attr]
            contribution, future = self._submitted.pop(node.index)
            members.append((node, contribution, future))
        if plan.failure or not members:
            # The collective moved bytes until the member left; the rest never went out.
            timing = plan.timing
            done = (plan.left_at - plan.collective_start) / timing.seconds if timing.seconds > 0 else 0.0
            done = min(max(done, 0.0), 1.0)
            for node, _ in present:
                ctx.ledger.transfer(node.index, None, done * timing.bytes_sent_per_member)
                ctx.ledger.transfer(None, node.index, done * timing.bytes_received_per_member)
            for _, _, future in members:
                resolve(future, None, plan.failure or "no member left")
            ctx.ledger.count("failed_steps")
        else:
            self._average(plan, members, now)
        samples = sum(contribution.samples for _, contribution, _ in members)
        for node, _, _ in members:
            for result in node.loop.apply_due(wait=False):  # type: ignore[union-attr]
                if result.status == "applied":
                    ctx.global_model_changed(plan.index, node, samples)
        self.running = None
        if not ctx.stop_requested:
            self._start_step()

    def _average(self, plan: StepPlan, members: list, now: float) -> None:
        ctx = self.ctx
        updates = [self.decoder.decode_sparse(c.payload, expect=self.proxy_shapes) for _, c, _ in members]
        samples = [c.samples for _, c, _ in members]
        update = weighted_average(updates, sample_weights(samples), self.proxy_shapes)
        timing = plan.timing
        for node, contribution, future in members:
            ctx.ledger.transfer(node.index, None, timing.bytes_sent_per_member)
            ctx.ledger.transfer(None, node.index, timing.bytes_received_per_member)
            resolve(
                future,
                ExchangeOutcome(
                    round=contribution.round, update=update, contributors=len(members), samples=int(sum(samples)),
                    bytes_sent=int(timing.bytes_sent_per_member), bytes_received=int(timing.bytes_received_per_member),
                    seconds=now - plan.collective_start,
                ),
            )

"""Two-step over simulated time: time-based rounds and leader aggregation, as the fleet runs them.

Round r is the compute window [rT, (r+1)T). Each online device runs inner steps until the
first step that ends at or after (r+1)T (so H differs per device and per round), then its
``SyncLoop`` submits the round and applies what is due (the round before: the delayed
update), and the device computes on. Its loop contributes when it has done at least the
H its QoS schedule asks for, and only listens otherwise (a link too slow for every
payload makes the schedule ask for 2H, 4H...: the device then contributes every k-th
round). Each device's base H is the number of steps it does in 80% of a round, so the
schedule's budget ("the exchange fits inside the next round's compute") is the round.

The exchange of round r (``globetrain.fleet``'s protocol, on the devices' own links):

1. at (r+1)T the roster is fixed: the devices computing round r are expected; each group
   (up to ``group_size`` devices, neighbours by region) gets the online member with the
   best uplink as its leader. Groups' leaders form groups of their own, level by level,
   up to one root leader;
2. a member pings its leader (one RTT), then uploads its contribution envelope (half an
   RTT plus the bytes at the smaller of its uplink and its share of the leader's downlink);
3. a leader closes when every expected member has arrived or its collection window ends
   (``collection_window`` x T after the round, longer at higher levels), averages what
   arrived weighted by samples, re-encodes it (``aggregation``) and sends it up; the root's
   aggregate goes back down the tree, each leader sending one copy per recipient on its
   uplink;
4. a member holds the aggregate when it arrives, or fails the round at the aggregate
   deadline (``aggregate_deadline`` x T after the round). A contribution that arrived late
   is not in the average; its sender gets the aggregate and takes its values back into
   error feedback.

Leaders can vanish (churn): a group whose leader dies before sending up is missing from
the average (its members get the aggregate from a peer's archive, if in time); if the root
dies before averaging, the round fails for everyone. A device that fails a round the
others applied is out of step: it downloads the state again, as a joining device does,
and listens to the rounds in flight before it computes again.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import Future

import numpy as np
import torch

from globetrain.compression import Codec, SparseTensorUpdate
from globetrain.fleet.aggregate import everything
from globetrain.fleet.config import FleetConfig
from globetrain.sim.aggregation import aggregate, carried_positions, values_not_carried
from globetrain.sim.context import SimContext, SimNode
from globetrain.sim.exchange import resolve
from globetrain.sync.config import QoSConfig, SyncConfig
from globetrain.sync.exchange import Contribution, ExchangeOutcome
from globetrain.sync.loop import AppliedExchange, RoundReport
from globetrain.sync.schedule import AdaptiveSchedule

ROUNDS_KEPT = 6
# The roster of round r is fixed at (r+1)T before any device's boundary at that instant.
PLAN_PRIORITY = -1
# Each level above the groups may collect for this much longer (fraction of T).
LEVEL_COLLECTION_STEP = 0.15
LATEST_COLLECTION = 0.7


@dataclasses.dataclass(eq=False)
class Member:
    device: int
    generation: int
    contribution: Contribution
    future: Future[ExchangeOutcome]
    submitted_at: float
    real_bytes: int
    """Real-model payload bytes of the contribution (0 when only listening)."""
    density: float
    group: int
    deadline: float
    aggregator: Aggregator | None = None
    included: bool = False
    own: list[SparseTensorUpdate] | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    uplink_bytes_per_s: float | None = None
    rtt_s: float | None = None
    served: bool = False
    fetching: bool = False


@dataclasses.dataclass(eq=False)
class Aggregator:
    level: int
    leader: int
    group: int
    """Index of the level-1 group (level 1) or of this aggregator within its level."""
    deadline: float
    children: list[Aggregator] = dataclasses.field(default_factory=list)
    expected: set[int] = dataclasses.field(default_factory=set)
    """Devices (level 1) or ids of child aggregators (higher levels) the leader waits for."""
    arrived: set[int] = dataclasses.field(default_factory=set)
    parent: Aggregator | None = None
    closed: bool = False
    sent_up: bool = False
    lost: bool = False
    """Its update never reached the level above (leader died, or it arrived too late)."""
    dead_at: float = math.inf
    final_at: float = math.inf
    samples: int = 0
    contributors: int = 0
    sparse: list[SparseTensorUpdate] | None = None
    carried: list[torch.Tensor | None] | None = None
    real_density: float = 0.0
    real_bytes: int = 0
    members: list[Member] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(eq=False)
class RoundExchange:
    round: int
    deadline: float
    planned: bool = False
    members: dict[int, Member] = dataclasses.field(default_factory=dict)
    groups: dict[int, Aggregator] = dataclasses.field(default_factory=dict)
    aggregators: list[Aggregator] = dataclasses.field(default_factory=list)
    root: Aggregator | None = None
    failed: str = ""
    final_dense: list[torch.Tensor] | None = None
    final_at: float = math.inf
    final_samples: int = 0
    final_contributors: int = 0
    final_bytes: int = 0
    waiting: list[Member] = dataclasses.field(default_factory=list)
    served: dict[int, int] = dataclasses.field(default_factory=dict)
    """Devices that got the aggregate, with their generation at that moment."""

    @property
    def produced(self) -> bool:
        return self.final_dense is not None


class LeaderRounds:
    """The two-step protocol: drives every device's loop and resolves its futures."""

    def __init__(self, ctx: SimContext, *, qos: QoSConfig | None = None, fleet_config: FleetConfig | None = None) -> None:
        self.ctx = ctx
        self.period = ctx.config.round_period_s
        self.fleet_config = fleet_config or FleetConfig(round_period_s=self.period)
        # Non-leaders upload one payload per round; ping, contribution/ack and the aggregate
        # are three round trips.
        self.qos = qos or QoSConfig(
            upload_factor=1.0, round_trips=3.0, max_density=ctx.config.qos_max_density,
            min_density=min(QoSConfig().min_density, ctx.config.qos_max_density),
        )
        self.bits = ctx.sync_config.bits
        self.rounds: dict[int, RoundExchange] = {}
        self.decoder = Codec(1.0, 32)
        self.proxy_shapes = [tuple(shape) for shape in ctx.bank.shapes]
        self.group_of, self.group_count = self._groups()
        self._submitted: dict[int, tuple[Contribution, Future[ExchangeOutcome]]] = {}
        self.jitter_rng_seed = ctx.config.seed

    # -- set-up ------------------------------------------------------------------------------------

    def _groups(self) -> tuple[np.ndarray, int]:
        """Static groups of neighbours: devices ordered by region, then longitude, in chunks."""
        fleet = self.ctx.fleet
        order = np.lexsort((np.arange(fleet.count), fleet.longitude, fleet.region))
        size = self.ctx.config.group_size
        group_of = np.empty(fleet.count, dtype=np.int64)
        group_of[order] = np.arange(fleet.count) // size
        return group_of, int(math.ceil(fleet.count / size))

    def device_config(self, device: int) -> SyncConfig:
        steps = int(0.8 * self.period / self.ctx.step_seconds(device))
        steps = min(max(steps, self.qos.min_inner_steps), self.qos.max_inner_steps)
        return self.ctx.sync_config.replace(inner_steps=steps)

    def _start_loop(self, node: SimNode) -> None:
        config = self.device_config(node.index)
        self.ctx.new_loop(node, self, config, AdaptiveSchedule(config, self.qos, self.ctx.payload_bytes))

    def start(self) -> None:
        ctx = self.ctx
        for node in ctx.nodes:
            if ctx.fleet.online(node.index, 0.0):
                node.online = True
                node.joined_at = 0.0
                self._start_loop(node)
                node.in_step = True
                self._begin_round(node, 0.0)
        ctx.queue.schedule(self.period, self._plan, 0, label="plan round 0", priority=PLAN_PRIORITY)

    # -- churn -------------------------------------------------------------------------------------

    def device_online(self, device: int) -> None:
        node = self.ctx.nodes[device]
        node.online = True
        node.generation += 1
        node.joined_at = self.ctx.queue.now
        self._download(node)

    def device_offline(self, device: int) -> None:
        ctx = self.ctx
        node = ctx.nodes[device]
        now = ctx.queue.now
        node.online = False
        node.generation += 1
        if node.boundary is not None:
            node.boundary.cancel()
            node.boundary = None
        ctx.ledger.stop_compute(device, now)
        ctx.drop_loop(node)
        for exchange in list(self.rounds.values()):
            for agg in exchange.aggregators:
                if agg.leader != device or agg.dead_at != math.inf:
                    continue
                if agg.final_at == math.inf:
                    self._leader_died(exchange, agg)
                else:
                    # It holds the aggregate: copies still on their way from it are cut, and
                    # their recipients look in the archives (``_deliver_from``).
                    agg.dead_at = now

    def device_closed(self, device: int) -> None:
        """The device's loop is gone: its futures are never looked at again."""

    # -- compute and boundaries ---------------------------------------------------------------------

    def _step_jitter(self, device: int, round_index: int) -> float:
        sigma = self.ctx.fleet.profile.step_jitter
        if sigma <= 0:
            return 1.0
        rng = np.random.default_rng([self.jitter_rng_seed, device, round_index, 7])
        return float(rng.lognormal(0.0, sigma))

    def _begin_round(self, node: SimNode, start: float) -> None:
        loop = node.loop
        assert loop is not None
        end = (loop.round + 1) * self.period
        step = self.ctx.step_seconds(node.index) * self._step_jitter(node.index, loop.round)
        steps = max(1, math.ceil((end - start) / step - 1e-9))
        node.owed_steps = steps
        node.round_started_at = start
        self.ctx.ledger.start_compute(node.index, start)
        node.boundary = self.ctx.queue.schedule(start + steps * step, self._boundary, node, node.generation,
                                                label="boundary")

    def _boundary(self, node: SimNode, generation: int) -> None:
        ctx = self.ctx
        if generation != node.generation or not node.online or node.loop is None:
            return
        node.boundary = None
        now = ctx.queue.now
        ctx.ledger.stop_compute(node.index, now)
        if node.owed_steps:
            ctx.train_owed([n for n in ctx.nodes if n.owed_steps > 0 and n.online and n.loop is not None])
        loop = node.loop
        contribute = loop.steps_in_round >= loop.settings.inner_steps
        report = loop.submit_round(contribute=contribute)
        self._after_submit(node, report)
        applied = loop.apply_due(wait=False, report=report)
        if self._after_apply(node, applied):
            self._begin_round(node, now)

    def _after_apply(self, node: SimNode, applied: list[AppliedExchange]) -> bool:
        """Count new global models; a device that missed a round the others applied resyncs."""
        for result in applied:
            if result.status == "applied":
                self.ctx.global_model_changed(result.round, node, result.samples)
                continue
            exchange = self.rounds.get(result.round)
            if exchange is not None and self._others_moved_on(exchange, node):
                self.ctx.ledger.count("resyncs")
                node.in_step = False
                self._download(node)
                return False
        return True

    def _others_moved_on(self, exchange: RoundExchange, node: SimNode) -> bool:
        """Whether a device still online and in step got the round this one missed.

        Then this device's global model differs from the fleet's (the fleet detects it by
        the next aggregate's model digest). If nobody alive got it, the round failed for
        all alike and everyone stays in step.
        """
        nodes = self.ctx.nodes
        return any(
            device != node.index and nodes[device].online and nodes[device].in_step
            and nodes[device].generation == generation
            for device, generation in exchange.served.items()
        )

    # -- joining and resyncing ----------------------------------------------------------------------

    def _download(self, node: SimNode) -> None:
        ctx = self.ctx
        if node.boundary is not None:
            node.boundary.cancel()
            node.boundary = None
        ctx.ledger.stop_compute(node.index, ctx.queue.now)
        node.owed_steps = 0
        node.in_step = False
        donor = ctx.donor(exclude=node.index)
        if donor is None:
            # Nobody to download from yet: try again next round.
            ctx.queue.after(self.period, self._retry_download, node, node.generation, label="retry download")
            return
        seconds = ctx.download_seconds(node.index, donor.index)
        ctx.queue.after(seconds, self._downloaded, node, node.generation, label="downloaded")

    def _retry_download(self, node: SimNode, generation: int) -> None:
        if generation == node.generation and node.online and not node.in_step:
            self._download(node)

    def _downloaded(self, node: SimNode, generation: int) -> None:
        ctx = self.ctx
        if generation != node.generation or not node.online:
            return
        donor = ctx.donor(exclude=node.index)
        if donor is None:
            self._download(node)
            return
        self._start_loop(node)
        ctx.load_state_from(node, donor)
        node.in_step = True
        loop = node.loop
        assert loop is not None
        now = ctx.queue.now
        # Listen to every round whose compute window has passed: their aggregates are
        # still to be applied to the state just loaded.
        current = int(now // self.period)
        while loop.round < current:
            report = loop.submit_round(contribute=False)
            self._after_submit(node, report)
            loop.apply_due(wait=False, report=report)
        self._begin_round(node, now)

    # -- the exchange: submissions ------------------------------------------------------------------

    def accept(self, device: int, contribution: Contribution, future: Future[ExchangeOutcome]) -> None:
        self._submitted[device] = (contribution, future)

    def _exchange(self, round_index: int) -> RoundExchange:
        exchange = self.rounds.get(round_index)
        if exchange is None:
            deadline = (round_index + 1) * self.period + self.fleet_config.aggregate_deadline * self.period
            exchange = RoundExchange(round_index, deadline)
            self.rounds[round_index] = exchange
            self.ctx.queue.schedule(max(deadline, self.ctx.queue.now), self._deadline, exchange, label="deadline")
        return exchange

    def _after_submit(self, node: SimNode, report: RoundReport) -> None:
        ctx = self.ctx
        contribution, future = self._submitted.pop(node.index)
        now = ctx.queue.now
        exchange = self._exchange(report.round)
        settings = report.settings
        real = ctx.payload_bytes(settings.density, settings.bits) if report.contributed else 0
        member = Member(
            device=node.index, generation=node.generation, contribution=contribution, future=future,
            submitted_at=now, real_bytes=real, density=settings.density, group=int(self.group_of[node.index]),
            deadline=exchange.deadline,
        )
        exchange.members[node.index] = member
        aggregator = exchange.groups.get(member.group)
        if exchange.produced or exchange.failed:
            self._late(exchange, member)
            return
        if aggregator is None or node.index not in aggregator.expected or aggregator.closed or aggregator.dead_at <= now:
            self._late(exchange, member)
            return
        member.aggregator = aggregator
        aggregator.members.append(member)
        if node.index == aggregator.leader:
            self._arrive(exchange, aggregator, member)
            return
        leader = aggregator.leader
        rtt = ctx.links.rtt(node.index, leader)
        rate = ctx.links.rate(node.index, leader, now, receiver_share=max(len(aggregator.expected) - 1, 1))
        size = ctx.wire.contribution(real)
        upload = size / rate
        member.rtt_s = rtt
        member.uplink_bytes_per_s = rate
        member.bytes_sent += size + ctx.wire.ping_round_trip // 2
        member.bytes_received += ctx.wire.ack + ctx.wire.ping_round_trip // 2
        ctx.ledger.transfer(node.index, leader, size + ctx.wire.ping_round_trip // 2)
        ctx.ledger.transfer(leader, node.index, ctx.wire.ack + ctx.wire.ping_round_trip // 2)
        ctx.queue.schedule(now + 1.5 * rtt + upload, self._arrive, exchange, aggregator, member, label="arrive")

    def _arrive(self, exchange: RoundExchange, aggregator: Aggregator, member: Member) -> None:
        now = self.ctx.queue.now
        if aggregator.dead_at <= now:
            aggregator.members.remove(member)
            member.aggregator = None
            self._late(exchange, member)
            return
        if aggregator.closed:
            # Too late for the average; the leader still answers on the same stream.
            self.ctx.ledger.count("late_submissions")
            if aggregator.final_at <= now:
                self._from_archive(exchange, member)
            return
        aggregator.arrived.add(member.device)
        if aggregator.expected <= aggregator.arrived:
            self._close(exchange, aggregator)

    def _late(self, exchange: RoundExchange, member: Member) -> None:
        """Not in the average: gets the aggregate from an archive once there is one."""
        self.ctx.ledger.count("late_submissions")
        member.deadline = max(member.deadline, member.submitted_at + 0.5 * self.period)
        self.ctx.queue.schedule(max(member.deadline, self.ctx.queue.now), self._member_deadline, exchange, member,
                                label="late deadline")
        if exchange.produced:
            self._from_archive(exchange, member)
        elif not exchange.failed:
            exchange.waiting.append(member)

    # -- the exchange: the tree of leaders ----------------------------------------------------------

    def _plan(self, round_index: int) -> None:
        """At the end of round r's compute window: fix the roster, groups and leaders."""
        ctx = self.ctx
        now = ctx.queue.now
        ctx.queue.schedule(now + self.period, self._plan, round_index + 1, label=f"plan round {round_index + 1}",
                           priority=PLAN_PRIORITY)
        exchange = self._exchange(round_index)
        exchange.planned = True
        expected = [n.index for n in ctx.nodes if n.online and n.in_step and n.loop is not None and n.loop.round == round_index]
        if not expected:
            return
        window = self.fleet_config.collection_window
        by_group: dict[int, list[int]] = {}
        for device in expected:
            by_group.setdefault(int(self.group_of[device]), []).append(device)
        level: list[Aggregator] = []
        for group in sorted(by_group):
            devices = by_group[group]
            aggregator = Aggregator(
                level=1, leader=self._best_uplink(devices, now), group=group,
                deadline=now + window * self.period, expected=set(devices),
            )
            exchange.groups[group] = aggregator
            level.append(aggregator)
        exchange.aggregators.extend(level)
        depth = 1
        while len(level) > 1:
            depth += 1
            collection = min(window + LEVEL_COLLECTION_STEP * (depth - 1), LATEST_COLLECTION)
            parents = []
            size = self.ctx.config.group_size
            for position in range(0, len(level), size):
                chunk = level[position : position + size]
                parent = Aggregator(
                    level=depth, leader=self._best_uplink([a.leader for a in chunk], now), group=position // size,
                    deadline=now + collection * self.period, children=chunk, expected=set(range(len(chunk))),
                )
                for child in chunk:
                    child.parent = parent
                parents.append(parent)
            exchange.aggregators.extend(parents)
            level = parents
        exchange.root = level[0]
        for aggregator in exchange.aggregators:
            ctx.queue.schedule(aggregator.deadline, self._collection_over, exchange, aggregator, label="collection")
        # Members that submitted before the plan (none in practice: boundaries end at or after it).
        for member in list(exchange.members.values()):
            if member.aggregator is None and not member.served:
                self._late(exchange, member)

    def _best_uplink(self, devices: list[int], now: float) -> int:
        fleet = self.ctx.fleet
        return max(devices, key=lambda device: (fleet.uplink(device, now), -device))

    def _collection_over(self, exchange: RoundExchange, aggregator: Aggregator) -> None:
        if not aggregator.closed and aggregator.dead_at == math.inf:
            self._close(exchange, aggregator)

    def _close(self, exchange: RoundExchange, aggregator: Aggregator) -> None:
        ctx = self.ctx
        if aggregator.closed:
            return
        aggregator.closed = True
        now = ctx.queue.now
        if aggregator.level == 1:
            included = [m for m in aggregator.members if m.device in aggregator.arrived and m.contribution.samples > 0]
            for member in included:
                member.own = self.decoder.decode_sparse(member.contribution.payload, expect=self.proxy_shapes)
                member.included = True
            updates = [m.own for m in included]
            samples = [m.contribution.samples for m in included]
            densest = max((m.density for m in included), default=0.0)
            contributors = len(included)
            listed = contributors
        else:
            included_children = [
                child for index, child in enumerate(aggregator.children)
                if index in aggregator.arrived and child.samples > 0 and not child.lost
            ]
            updates = [child.sparse for child in included_children]
            samples = [child.samples for child in included_children]
            densest = max((child.real_density for child in included_children), default=0.0)
            contributors = sum(child.contributors for child in included_children)
            listed = len(included_children)
            for index, child in enumerate(aggregator.children):
                if index not in aggregator.arrived:
                    child.lost = True
        if updates:
            _, aggregator.sparse = aggregate(
                updates, samples, self.proxy_shapes, density_factor=self.fleet_config.aggregate_density_factor,
                bits=self.bits, run_id=ctx.run_id, round_index=exchange.round, decoder=self.decoder,
                of_groups=aggregator.level > 1,
            )
            aggregator.real_density = min(1.0, densest * self.fleet_config.aggregate_density_factor)
            bits = 32 if aggregator.real_density >= 1.0 else self.bits
            aggregator.real_bytes = ctx.wire.aggregate(ctx.payload_bytes(aggregator.real_density, bits), listed)
        else:
            aggregator.real_bytes = ctx.wire.aggregate(0, 0)
        aggregator.samples = int(sum(samples))
        aggregator.contributors = contributors
        parent = aggregator.parent
        if parent is None:
            self._finalize(exchange, aggregator)
            return
        index = parent.children.index(aggregator)
        if parent.leader == aggregator.leader:
            arrival = now
        else:
            rtt = ctx.links.rtt(aggregator.leader, parent.leader)
            rate = ctx.links.rate(aggregator.leader, parent.leader, now, receiver_share=max(len(parent.expected) - 1, 1))
            arrival = now + 1.5 * rtt + aggregator.real_bytes / rate
            ctx.ledger.transfer(aggregator.leader, parent.leader, aggregator.real_bytes + ctx.wire.ping_round_trip // 2)
        ctx.queue.schedule(arrival, self._arrive_up, exchange, parent, index, aggregator, label="arrive up")

    def _arrive_up(self, exchange: RoundExchange, parent: Aggregator, index: int, child: Aggregator) -> None:
        now = self.ctx.queue.now
        if child.dead_at <= now:
            return
        child.sent_up = True
        if parent.closed or parent.dead_at <= now:
            child.lost = True
            return
        parent.arrived.add(index)
        if parent.expected <= parent.arrived:
            self._close(exchange, parent)

    def _finalize(self, exchange: RoundExchange, root: Aggregator) -> None:
        ctx = self.ctx
        now = ctx.queue.now
        if root.sparse is None:
            exchange.failed = "no contribution reached the root leader"
            self._fail_all(exchange, exchange.failed)
            return
        exchange.final_dense = [part.to_dense() for part in root.sparse]
        exchange.final_at = now
        exchange.final_samples = root.samples
        exchange.final_contributors = root.contributors
        exchange.final_bytes = root.real_bytes
        self._fan_out(exchange, root)
        for member in exchange.waiting:
            self._from_archive(exchange, member)
        exchange.waiting.clear()

    def _fan_out(self, exchange: RoundExchange, aggregator: Aggregator) -> None:
        """``aggregator``'s leader holds the final aggregate now: one copy to each recipient."""
        ctx = self.ctx
        now = ctx.queue.now
        if aggregator.dead_at <= now:
            self._members_to_archive(exchange, aggregator)
            return
        aggregator.final_at = now
        leader = aggregator.leader
        size = exchange.final_bytes
        remote_children = [c for c in aggregator.children if c.leader != leader]
        remote_members = [m for m in aggregator.members if m.device != leader]
        share = max(len(remote_children) + len(remote_members), 1)
        for child in aggregator.children:
            if child.leader == leader:
                self._fan_out(exchange, child)
            else:
                arrival = now + ctx.links.one_way(leader, child.leader) + size / ctx.links.rate(leader, child.leader, now, sender_share=share)
                ctx.ledger.transfer(leader, child.leader, size)
                ctx.queue.schedule(arrival, self._fan_out_from, exchange, child, aggregator, label="aggregate down")
        for member in aggregator.members:
            if member.device == leader:
                self._deliver(exchange, member, leader)
            else:
                arrival = now + ctx.links.one_way(leader, member.device) + size / ctx.links.rate(leader, member.device, now, sender_share=share)
                member.bytes_received += size
                ctx.ledger.transfer(leader, member.device, size)
                ctx.queue.schedule(arrival, self._deliver_from, exchange, member, aggregator, label="deliver")

    def _fan_out_from(self, exchange: RoundExchange, child: Aggregator, source: Aggregator) -> None:
        if source.dead_at <= self.ctx.queue.now:
            # The sender died mid-transfer: the child's members look in the archives.
            self._members_to_archive(exchange, child)
            return
        self._fan_out(exchange, child)

    def _deliver_from(self, exchange: RoundExchange, member: Member, source: Aggregator) -> None:
        if source.dead_at <= self.ctx.queue.now:
            self._from_archive(exchange, member)
            return
        self._deliver(exchange, member, source.leader)

    def _members_to_archive(self, exchange: RoundExchange, aggregator: Aggregator) -> None:
        for member in aggregator.members:
            self._from_archive(exchange, member)
        for child in aggregator.children:
            self._members_to_archive(exchange, child)

    def _from_archive(self, exchange: RoundExchange, member: Member) -> None:
        """Fetch the round's aggregate from a live peer that holds it (the fleet's archives)."""
        ctx = self.ctx
        now = ctx.queue.now
        if member.served or member.fetching or member.future.done():
            return
        holders = [a.leader for a in exchange.aggregators if a.final_at <= now and a.dead_at > now]
        holders = [device for device in holders if ctx.nodes[device].online]
        if not holders:
            # Nobody has it yet (the fan-out is still on its way): ask again shortly.
            retry = now + max(0.05 * self.period, 0.1)
            if retry < member.deadline:
                ctx.queue.schedule(retry, self._from_archive, exchange, member, label="archive retry")
            return
        member.fetching = True
        source = min(holders, key=lambda device: (ctx.links.base_rtt(device, member.device), device))
        size = exchange.final_bytes
        rtt = ctx.links.rtt(source, member.device)
        arrival = now + 1.5 * rtt + size / ctx.links.rate(source, member.device, now)
        member.bytes_received += size
        ctx.ledger.transfer(source, member.device, size)
        ctx.ledger.count("archive_fetches")
        ctx.queue.schedule(arrival, self._deliver, exchange, member, source, label="archive deliver")

    def _deliver(self, exchange: RoundExchange, member: Member, source: int) -> None:
        ctx = self.ctx
        now = ctx.queue.now
        node = ctx.nodes[member.device]
        if member.served or node.generation != member.generation or now > member.deadline:
            return
        member.served = True
        exchange.served[member.device] = member.generation
        outcome = ExchangeOutcome(
            round=exchange.round,
            update=exchange.final_dense,
            contributors=exchange.final_contributors,
            samples=exchange.final_samples,
            returned=self._returned(member),
            bytes_sent=member.bytes_sent,
            bytes_received=member.bytes_received,
            seconds=now - member.submitted_at,
            uplink_bytes_per_s=member.uplink_bytes_per_s,
            rtt_s=member.rtt_s,
        )
        resolve(member.future, outcome)

    def _returned(self, member: Member) -> list[torch.Tensor] | None:
        if member.contribution.samples <= 0:
            return None
        if member.own is None:
            member.own = self.decoder.decode_sparse(member.contribution.payload, expect=self.proxy_shapes)
        if not member.included:
            return everything(member.own)
        chain = []
        aggregator = member.aggregator
        while aggregator is not None:
            if aggregator.lost:
                return everything(member.own)
            if aggregator.carried is None:
                aggregator.carried = carried_positions(aggregator.sparse)
            chain.append(aggregator.carried)
            aggregator = aggregator.parent
        return values_not_carried(member.own, chain)

    # -- failures ----------------------------------------------------------------------------------

    def _leader_died(self, exchange: RoundExchange, aggregator: Aggregator) -> None:
        ctx = self.ctx
        now = ctx.queue.now
        aggregator.dead_at = now
        ctx.ledger.count("leader_deaths")
        if not aggregator.sent_up:
            aggregator.lost = True
            for member in aggregator.members:
                member.included = False
            parent = aggregator.parent
            if parent is not None and not parent.closed:
                parent.expected.discard(parent.children.index(aggregator))
                if parent.expected <= parent.arrived:
                    self._close(exchange, parent)
        if aggregator.parent is None and not exchange.produced:
            exchange.failed = f"root leader {ctx.fleet.name(aggregator.leader)} left before averaging"
            self._fail_all(exchange, exchange.failed)
            return
        if exchange.produced:
            self._members_to_archive(exchange, aggregator)
        else:
            # Its members will find the aggregate in an archive once the root produced it.
            def waiting(agg: Aggregator) -> None:
                exchange.waiting.extend(agg.members)
                for child in agg.children:
                    waiting(child)

            waiting(aggregator)

    def _fail_all(self, exchange: RoundExchange, reason: str) -> None:
        for member in exchange.members.values():
            if not member.served:
                member.served = True
                resolve(member.future, None, f"round {exchange.round}: {reason}")
        for member in exchange.waiting:
            if not member.served:
                member.served = True
                resolve(member.future, None, f"round {exchange.round}: {reason}")
        exchange.waiting.clear()

    def _member_deadline(self, exchange: RoundExchange, member: Member) -> None:
        if not member.served:
            member.served = True
            resolve(member.future, None, f"round {exchange.round}: no aggregate by the deadline")
            self.ctx.ledger.count("deadline_misses")

    def _deadline(self, exchange: RoundExchange) -> None:
        now = self.ctx.queue.now
        for member in exchange.members.values():
            if not member.served and member.deadline <= now:
                self._member_deadline(exchange, member)
        # Keep a few rounds (the fleet's archives); older ones are never asked for again.
        for old in [r for r in self.rounds if r < exchange.round - ROUNDS_KEPT]:
            del self.rounds[old]

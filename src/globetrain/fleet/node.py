"""``FleetNode``: one peer of a run, with every service the protocol needs, in one object.

This is what the process layer drives::

    keys = RunKeys.from_text(run_key)
    node = FleetNode.create_run(keys, run_config, network, name="bootstrap")    # the bootstrap
    node = FleetNode.join(keys, network, name="pi-kitchen")                      # a device
    model = build_model(node.run_config.model)                                   # same on every device
    shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
    loop = SyncLoop(model, optimizer, node.make_exchange(shapes), node.run_config.sync)
    node.attach(loop)            # serve rounds, aggregates and state; heartbeat into the roster
    ...                          # drive rounds: see ``globetrain.fleet.driver.RoundDriver``
    node.close()

``make_exchange`` needs only the model's shapes, so the exchange exists before the loop;
``attach`` binds the loop (for model digests), registers the stream handlers and starts
the roster heartbeat. ``status()`` is the fleet view of this peer: bytes per message
kind, rejections by reason and sender, exchange stats, roster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from globetrain import __version__
from globetrain.compression import Codec
from globetrain.fleet.archive import AggregateArchive, ArchiveService
from globetrain.fleet.checks import RejectionLog
from globetrain.fleet.config import FleetNetworkConfig
from globetrain.fleet.exchange import FleetExchange
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.leader import LeaderService
from globetrain.fleet.peer import FleetPeer
from globetrain.fleet.roster import Role, Roster
from globetrain.fleet.run import (
    RunConfig,
    config_expiration,
    fetch_run_config,
    protocol_name,
    publish_run_config,
    seal_run_config,
)
from globetrain.fleet.state import (
    DownloadReport,
    NetworkStateSource,
    StateServer,
    StateSnapshot,
    download_state,
    snapshot_from_loop,
    state_size_bound,
)

log = logging.getLogger(__name__)


class FleetNode:
    """A started peer that belongs to a run (config known); services start with ``make_exchange``."""

    def __init__(self, keys: RunKeys, peer: FleetPeer, run_config: RunConfig, sealed_config: bytes, *, role: Role) -> None:
        self.keys = keys
        self.peer = peer
        self.run_config = run_config
        self.sealed_config = sealed_config
        self.role: Role = role
        self.clock = run_config.clock()
        self.fleet = run_config.fleet
        self.network = peer.network
        self.name = peer.name
        self.rejections = RejectionLog(peer.name)
        self.roster = Roster(peer, keys, self.clock, role=role, rejections=self.rejections)
        self.archive = AggregateArchive(self.fleet.aggregates_kept)
        self.state_server = StateServer(
            keys, self.rejections, me=peer.peer_id, name=peer.name, keep=self.fleet.states_kept,
            chunk_bytes=self.fleet.state_chunk_bytes, timeout=self.network.request_timeout_s,
        )
        self.exchange: FleetExchange | None = None
        self.leader: LeaderService | None = None
        self.loop: Any = None
        self.shapes: list[tuple[int, ...]] = []
        self._closed = False

    # -- creating and joining -----------------------------------------------------------------

    @classmethod
    def create_run(
        cls, keys: RunKeys, run_config: RunConfig, network: FleetNetworkConfig | None = None, *, name: str = "bootstrap"
    ) -> FleetNode:
        """Start the bootstrap peer and publish ``run_config`` (encrypted) in the DHT."""
        peer = FleetPeer(network, name=name).start()
        try:
            sealed = seal_run_config(keys, run_config, sender=peer.peer_id, name=name)
            if not peer.call(publish_run_config(peer, keys, sealed, run_config), timeout=peer.network.request_timeout_s):
                log.warning("[%s] the run config was stored locally only (no other DHT peer yet)", name)
            return cls(keys, peer, run_config, sealed, role="bootstrap")
        except BaseException:
            peer.stop()
            raise

    @classmethod
    def join(
        cls,
        keys: RunKeys,
        network: FleetNetworkConfig | None = None,
        *,
        name: str,
        role: Role = "device",
        timeout: float = 30.0,
    ) -> FleetNode:
        """Start a peer, join through the network's initial peers and read the run config.

        Raises ``RunNotFound`` ("no run found for this run key at ...") when the run key is
        not the bootstrap's, and ``PeerStartError`` when no initial peer answers.
        """
        peer = FleetPeer(network, name=name).start()
        try:
            run_config, sealed = peer.call(fetch_run_config(peer, keys, timeout=timeout), timeout=timeout + 5)
            if run_config.software_version != __version__:
                log.warning(
                    "[%s] the run was created by globetrain %s, this is %s: models stay bit-identical only "
                    "with the same software (and torch) on every device",
                    name, run_config.software_version, __version__,
                )
            return cls(keys, peer, run_config, sealed, role=role)
        except BaseException:
            peer.stop()
            raise

    # -- services -----------------------------------------------------------------------------

    def make_exchange(self, shapes: Sequence[Sequence[int]]) -> FleetExchange:
        """The ``Exchange`` for a model of ``shapes`` (also builds the leader for that model)."""
        if self.exchange is not None:
            return self.exchange
        self.shapes = [tuple(int(d) for d in shape) for shape in shapes]
        bound = Codec(1.0, 32).estimate_payload_bytes(self.shapes) * 5 // 4 + 4096
        self.leader = LeaderService(
            keys=self.keys, clock=self.clock, roster=self.roster, archive=self.archive, rejections=self.rejections,
            shapes=self.shapes, bits=self.run_config.sync.bits, me=self.peer.peer_id, name=self.name,
            digest_source=self._digest, request_timeout=self.network.request_timeout_s, max_payload_bytes=bound,
        )
        self.exchange = FleetExchange(
            peer=self.peer, keys=self.keys, clock=self.clock, roster=self.roster, leader=self.leader,
            archive=self.archive, rejections=self.rejections, shapes=self.shapes, network=self.network,
        )
        return self.exchange

    def attach(self, loop: Any) -> None:
        """Bind a ``SyncLoop`` (digests, state), serve the run's protocols, start heartbeats."""
        if self.exchange is None:
            self.make_exchange(loop.shapes)
        if [tuple(s) for s in loop.shapes] != self.shapes:
            raise ValueError("the loop's model does not have the shapes the exchange was made for")
        self.loop = loop
        loop.track_digests = True
        if loop.last_digest is None:
            loop.record_digest(loop.round - 1)
        self.peer.call(self._serve(), timeout=self.network.request_timeout_s + 5)

    async def _serve(self) -> None:
        assert self.leader is not None
        archive_service = ArchiveService(
            self.archive, self.keys, self.rejections, me=self.peer.peer_id, name=self.name,
            timeout=self.network.request_timeout_s,
        )
        await self.peer.serve(protocol_name(self.keys, "contribute"), self.leader.handle)
        await self.peer.serve(protocol_name(self.keys, "aggregate"), archive_service.handle)
        await self.peer.serve(protocol_name(self.keys, "state"), self.state_server.handle)
        await self.roster.heartbeat_once()
        self.peer.background(self.roster.run(), "roster heartbeat")
        self.peer.background(self._keep_config(), "run config keeper")

    async def _keep_config(self) -> None:
        # Every peer stores the run config too, once it has joined and then now and then, so
        # that the run outlives its bootstrap and the other peers that held it: a device
        # restarted after they died must still find the run (found values are not cached).
        interval = config_expiration(self.run_config) / 4
        while True:
            await publish_run_config(self.peer, self.keys, self.sealed_config, self.run_config)
            await asyncio.sleep(interval)

    def _digest(self) -> tuple[int, str] | None:
        loop = self.loop
        return None if loop is None else loop.last_digest

    # -- state ----------------------------------------------------------------------------------

    def publish_state(self, global_samples: int) -> None:
        """Offer the attached loop's current shared state to late joiners (call at a boundary)."""
        snapshot = snapshot_from_loop(self.loop, global_samples=global_samples, config_digest=self.run_config.digest)
        self.state_server.publish(snapshot)
        self.roster.update_me(state_round=snapshot.next_round)

    def download_state(
        self, *, timeout: float | None = None, prefer: str | None = None
    ) -> tuple[StateSnapshot, DownloadReport]:
        """The newest state other peers serve, verified; resumes across peers on failure.

        ``prefer``: a peer to ask first (after a divergence, the leader whose model is the
        reference), otherwise peers serving the newest state come first.
        """
        budget = timeout if timeout is not None else self.network.state_download_timeout_s
        report = DownloadReport()
        source = NetworkStateSource(
            self.peer, self.keys, protocol_name(self.keys, "state"),
            connect_timeout=self.network.connect_timeout_s, request_timeout=self.network.request_timeout_s,
            max_total_bytes=state_size_bound(self.shapes),
        )

        async def run() -> StateSnapshot:
            deadline = time.monotonic() + budget
            while not self.roster.state_holders() and time.monotonic() < deadline:
                await self.roster.refresh()
                await asyncio.sleep(0.2)
            records = sorted(self.roster.state_holders(), key=lambda record: record.peer_id != prefer)
            source.addresses = {record.peer_id: record.addresses for record in records}
            holders = [record.peer_id for record in records]
            return await download_state(
                source, holders, shapes=self.shapes, config_digest=self.run_config.digest,
                timeout=max(deadline - time.monotonic(), 0.1), report=report, rejections=self.rejections,
            )

        snapshot = self.peer.call(run(), timeout=budget + 10)
        return snapshot, report

    # -- the fleet view -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        exchange = self.exchange
        return {
            "peer_id": self.peer.peer_id,
            "name": self.name,
            "role": self.role,
            "addresses": list(self.peer.addresses),
            "daemon_pid": self.peer.daemon_pid,
            "bytes": self.peer.counter.snapshot(),
            "rejections": self.rejections.counts(),
            "rejections_by_sender": self.rejections.by_sender(),
            "exchange": dict(exchange.stats) if exchange else {},
            "rounds_led": self.leader.rounds_led if self.leader else 0,
            "roster": sorted(f"{r.name}:{r.role}" for r in self.roster.snapshot()),
        }

    def close(self, *, drain_timeout: float | None = None) -> None:
        """Leave the run: finish the rounds this peer is collecting as leader, then stop.

        Draining (at most ``drain_timeout``, default min(T, 3 s)) lets the contributors of
        a round this peer leads get their aggregate instead of losing the round.
        """
        if self._closed:
            return
        self._closed = True
        budget = min(self.clock.period, 3.0) if drain_timeout is None else drain_timeout
        if self.leader is not None and budget > 0 and self.peer.loop is not None:
            try:
                self.peer.call(self._drain(budget), timeout=budget + 1)
            except Exception as error:  # noqa: BLE001 - leaving goes on regardless
                log.debug("[%s] drain before leaving incomplete: %s", self.name, error)
        if self.exchange is not None:
            self.exchange.close()
        self.peer.stop()

    async def _drain(self, budget: float) -> None:
        assert self.leader is not None
        pending = [c.result for c in self.leader.collections.values() if not c.result.done()]
        if pending:
            log.info("[%s] finishing %d round(s) this peer leads before leaving", self.name, len(pending))
            await asyncio.wait(pending, timeout=budget)
            # Give the handlers a moment to write the aggregate to their streams.
            await asyncio.sleep(0.05)

    def __enter__(self) -> FleetNode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

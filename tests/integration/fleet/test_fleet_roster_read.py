"""Roster reads on loopback peers: complete views (late joiners, a peer whose routing table
lacks the key's nearest nodes, a node without the delta read, a dead replica), few nodes asked,
about one copy of the roster per read."""

from __future__ import annotations

import time

import pytest
from fleet_processes import process_alive
from hivemind.dht.routing import DHTID

from globetrain.fleet.checks import RejectionLog
from globetrain.fleet.config import FleetConfig, FleetNetworkConfig
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.peer import ROSTER_REPLICAS, FleetPeer
from globetrain.fleet.roster import Roster
from globetrain.fleet.roster_delta import ROSTER_DELTA_PROTOCOL, ROSTER_READ_NODES
from globetrain.fleet.run import RoundClock, roster_key

pytestmark = pytest.mark.integration

KEYS = RunKeys.from_run_key(bytes(range(32)))
KEY = roster_key(KEYS)
KEY_ID = DHTID.generate(source=KEY)
MAX_TICKS = 3
"""Heartbeats of every peer within which every view must hold every record."""


class LoopbackFleet:
    """In-process FleetPeers with rosters; every peer heartbeats once per ``tick``."""

    def __init__(self) -> None:
        # A long period: records stay alive through the test, whatever the machine's load.
        self.clock = RoundClock(start_time=time.time(), fleet=FleetConfig(round_period_s=60.0))
        self.peers: list[FleetPeer] = []
        self.rosters: list[Roster] = []
        self.stopped: set[str] = set()

    def add(self, name: str, through: FleetPeer | None = None) -> FleetPeer:
        network = FleetNetworkConfig(initial_peers=(through.addresses[0],) if through else (), connect_timeout_s=5.0)
        peer = FleetPeer(network, name=name)
        self.peers.append(peer)
        peer.start()
        self.rosters.append(Roster(peer, KEYS, self.clock, role="device", rejections=RejectionLog(name)))
        return peer

    def alive(self) -> list[tuple[FleetPeer, Roster]]:
        return [(p, r) for p, r in zip(self.peers, self.rosters) if p.peer_id not in self.stopped]

    def tick(self) -> None:
        futures = [peer.spawn(roster.heartbeat_once()) for peer, roster in self.alive()]
        for future in futures:
            future.result(timeout=60)

    def read_one_by_one(self) -> None:
        for peer, roster in self.alive():
            peer.call(roster.refresh(), timeout=30)

    def incomplete(self) -> dict[str, set[str]]:
        """Peer name -> alive peers missing from its view."""
        alive = {peer.peer_id for peer, _ in self.alive()}
        missing = {peer.name: alive - {r.peer_id for r in roster.snapshot()} for peer, roster in self.alive()}
        return {name: ids for name, ids in missing.items() if ids}

    def ticks_until_complete(self, limit: int = MAX_TICKS) -> int:
        for tick in range(1, limit + 1):
            self.tick()
            if not self.incomplete():
                return tick
        raise AssertionError(f"views still incomplete after {limit} heartbeats: {self.incomplete()}")

    def by_distance(self) -> list[FleetPeer]:
        """Alive peers, nearest to the roster key first."""
        return sorted((p for p, _ in self.alive()), key=lambda p: KEY_ID.xor_distance(p._dht.node_id))

    def stop(self, peer: FleetPeer) -> None:
        self.stopped.add(peer.peer_id)
        peer.stop()


@pytest.fixture
def fleet():
    loopback = LoopbackFleet()
    try:
        yield loopback
    finally:
        for peer in loopback.peers:
            peer.stop()
        deadline = time.monotonic() + 10
        daemons = [peer.daemon_pid for peer in loopback.peers if peer.daemon_pid]
        while any(process_alive(pid) for pid in daemons) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in daemons if process_alive(pid)], "libp2p daemons outlived the test"


def start(fleet: LoopbackFleet, count: int) -> None:
    first = fleet.add("p0")
    for index in range(1, count):
        fleet.add(f"p{index}", first)


def test_late_joiners_complete_views_at_once_and_reads_ask_the_five_nearest(fleet: LoopbackFleet) -> None:
    start(fleet, 6)
    fleet.ticks_until_complete()
    fleet.add("late0", fleet.peers[2])
    fleet.add("late1", fleet.peers[4])
    fleet.ticks_until_complete()

    for peer, _ in fleet.alive():
        peer.roster_reads.most_nodes_asked = 0
        peer.roster_read_bytes = type(peer.roster_read_bytes)()
    fleet.read_one_by_one()
    nearest = {p.peer_id for p in fleet.by_distance()[:ROSTER_READ_NODES]}
    copy_bytes = sum(len(r.to_json()) for r in fleet.rosters[0].snapshot())
    for peer, _ in fleet.alive():
        asked = set(peer.roster_reads.last_asked)
        assert peer.roster_reads.most_nodes_asked <= ROSTER_READ_NODES
        assert asked <= nearest - {peer.peer_id}, (peer.name, asked, nearest)
        # About one copy of the roster, not one per node that holds it (3 with a walk).
        assert peer.roster_read_bytes.total("received") < 1.6 * copy_bytes + 1000, peer.name
    assert not fleet.incomplete()


def test_a_peer_whose_table_lacks_the_keys_nearest_nodes_still_reads_and_is_read(fleet: LoopbackFleet) -> None:
    start(fleet, 8)
    fleet.ticks_until_complete()
    ranked = fleet.by_distance()
    hidden = {p._dht.node_id for p in ranked[:4]}
    ignorant = ranked[-1]
    # As with a full bucket: its routing table neither has nor takes the 4 nearest nodes.
    table = ignorant._dht.protocol.routing_table
    add = table.add_or_update_node
    table.add_or_update_node = lambda node_id, peer_id: None if node_id in hidden else add(node_id, peer_id)
    for node_id in hidden:
        if node_id in table:
            del table[node_id]
    ignorant._learned.clear()
    assert not {node for node, _ in ignorant._nearest(KEY, ROSTER_REPLICAS)[1]} & hidden

    fleet.ticks_until_complete()
    stores = {node for node, _ in ignorant._nearest(KEY, ROSTER_REPLICAS)[1]}
    assert stores == {p._dht.node_id for p in ranked[:ROSTER_REPLICAS]}, "it stores where the others read"
    fleet.read_one_by_one()
    assert not fleet.incomplete()
    assert len(ignorant.roster_reads.last_asked) <= ROSTER_READ_NODES


def test_a_node_without_the_delta_read_is_read_with_hivemind_find(fleet: LoopbackFleet) -> None:
    start(fleet, 6)
    fleet.ticks_until_complete()
    old = fleet.by_distance()[0]
    old.call(old._p2p.remove_binary_stream_handler(ROSTER_DELTA_PROTOCOL), timeout=10)
    fleet.ticks_until_complete()
    fleet.read_one_by_one()
    assert not fleet.incomplete()
    assert sum(peer.roster_reads.fallbacks for peer, _ in fleet.alive()) >= len(fleet.peers) - 1


def test_views_stay_complete_when_a_replica_dies(fleet: LoopbackFleet) -> None:
    start(fleet, 7)
    fleet.ticks_until_complete()
    fleet.stop(fleet.by_distance()[1])
    fleet.ticks_until_complete()
    fleet.read_one_by_one()
    assert not fleet.incomplete()


def test_junk_under_the_roster_key_is_counted_once_and_hides_no_one(fleet: LoopbackFleet) -> None:
    start(fleet, 6)
    fleet.ticks_until_complete()
    stranger = FleetPeer(FleetNetworkConfig(initial_peers=(fleet.peers[0].addresses[0],)), name="stranger")
    fleet.peers.append(stranger)  # stopped by the fixture
    stranger.start()
    fleet.rosters.append(Roster(stranger, KEYS, fleet.clock, role="device", rejections=RejectionLog("stranger")))
    fleet.stopped.add(stranger.peer_id)  # not a member: no heartbeats, not in anyone's view

    async def store_junk() -> None:
        from globetrain.fleet.peer import dht_time

        protocol = stranger._dht.protocol
        key_id, nodes = stranger._nearest(KEY, ROSTER_READ_NODES)
        # A sealed-looking value that is no envelope, and bytes that are not even msgpack.
        junk = [("Stranger", protocol.serializer.dumps(b"junk")), ("Garbage", b"\xc1")]
        for subkey, value in junk:
            for _, peer_id in nodes:
                expiration = dht_time() + 600
                if peer_id is None:
                    protocol.storage.store_subkey(key_id, subkey, value, expiration)
                else:
                    await protocol.call_store(peer_id, keys=[key_id], values=[value],
                                              expiration_time=[expiration], subkeys=[subkey])

    stranger.call(store_junk(), timeout=30)
    for _ in range(3):
        fleet.read_one_by_one()
    assert not fleet.incomplete()
    for peer, roster in fleet.alive():
        assert roster.rejections.total() == 2, (peer.name, roster.rejections.counts())

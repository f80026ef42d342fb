"""FleetPeer on loopback: safe daemon flags, bounded joins, rejoin through remembered peers, clean stop."""

from __future__ import annotations

import json
import time

import pytest
from fleet_processes import inet_sockets, is_loopback_socket_address, process_alive

from globetrain.fleet.config import FleetNetworkConfig
from globetrain.fleet.peer import FleetPeer, PeerStartError
from globetrain.fleet.transport import TransportError

pytestmark = pytest.mark.integration

DEAD = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWKaXrx3MCqCHYVE8oj48EMN6UMmrJz5kyPdv8gvzZqgkQ"


@pytest.fixture
def peers():
    started: list[FleetPeer] = []

    def start(network: FleetNetworkConfig | None = None, name: str = "peer") -> FleetPeer:
        peer = FleetPeer(network or FleetNetworkConfig(connect_timeout_s=2.0), name=name)
        started.append(peer)
        return peer.start()

    try:
        yield start
    finally:
        for peer in started:
            peer.stop()


def daemon_arguments(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as stream:
        return stream.read().decode().split("\0")


def test_daemon_runs_with_safe_defaults_and_stops_cleanly(peers) -> None:
    peer = peers(name="a")
    assert peer.daemon_pid is not None and process_alive(peer.daemon_pid)
    arguments = daemon_arguments(peer.daemon_pid)
    for flag in ("-natPortMap=0", "-autonat=0", "-relay=0", "-autoRelay=0", "-hostAddrs=/ip4/127.0.0.1/tcp/0"):
        assert flag in arguments, arguments
    assert all(address.startswith("/ip4/127.0.0.1/") for address in peer.addresses)
    sockets = inet_sockets([peer.daemon_pid])
    assert sockets and all(is_loopback_socket_address(local) for _, local, _ in sockets), sockets

    started = time.monotonic()
    peer.stop()
    assert time.monotonic() - started < peer.network.shutdown_timeout_s + 1
    deadline = time.monotonic() + 5
    while process_alive(peer.daemon_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(peer.daemon_pid)


def test_unreachable_initial_peers_fail_fast_with_the_addresses_tried(peers) -> None:
    started = time.monotonic()
    with pytest.raises(PeerStartError, match="could not reach any peer of the run at /ip4/127.0.0.1/tcp/1/"):
        peers(FleetNetworkConfig(initial_peers=(DEAD,), connect_timeout_s=2.0), name="lonely")
    assert time.monotonic() - started < 15


def test_rejoin_through_a_remembered_peer_and_talk_over_bounded_streams(peers, tmp_path) -> None:
    first = peers(name="first")
    book = tmp_path / "peers.json"
    book.write_text(json.dumps({"addresses": [DEAD, first.addresses[0]]}))
    second = peers(FleetNetworkConfig(peers_file=str(book), connect_timeout_s=2.0), name="second")
    assert second.joined_through == [first.addresses[0]]

    async def echo(conversation) -> None:
        data = await conversation.receive(max_bytes=64, timeout=2)
        await conversation.send(data[::-1], timeout=2)

    first.call(first.serve("/test/echo/1", echo), timeout=5)

    async def ask(payload: bytes) -> bytes:
        conversation = await second.converse(first.peer_id, "/test/echo/1", timeout=3)
        try:
            await conversation.send(payload, timeout=2)
            return await conversation.receive(max_bytes=64, timeout=2)
        finally:
            conversation.close()

    assert second.call(ask(b"hello"), timeout=10) == b"olleh"
    # A frame beyond the receiver's bound is refused before it is read; the server survives.
    with pytest.raises(TransportError):
        second.call(ask(b"x" * 1000), timeout=10)
    assert second.call(ask(b"again"), timeout=10) == b"niaga"
    assert second.counter.snapshot()["sent"]["other"] > 0

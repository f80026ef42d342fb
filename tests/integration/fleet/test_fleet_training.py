"""Real peers on loopback train in step; a late joiner downloads state and joins them.

One fleet (a bootstrap and three devices of the proxy task, T = 2 s) serves several
checks: bit-identical global models after every round, a late joiner that downloads the
model and outer optimizer and then holds the same model, loopback-only sockets, and a
Ctrl+C to the bootstrap that ends it cleanly with its libp2p daemon.
"""

from __future__ import annotations

import signal

import pytest
from fleet_processes import (
    Fleet,
    inet_sockets,
    is_loopback_socket_address,
    is_unbound_remote,
    process_alive,
    wait_exit,
    wait_for,
)

pytestmark = pytest.mark.integration

ROUNDS = 11


@pytest.fixture
def fleet(tmp_path):
    fleet = Fleet(tmp_path, period=2.0)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def assert_loopback_only(peer) -> None:
    sockets = inet_sockets(peer.group_pids())
    assert sockets, f"{peer.name} holds no TCP/UDP socket at all?"
    for protocol, local, remote in sockets:
        assert is_loopback_socket_address(local), f"{peer.name}: {protocol} socket bound to {local}"
        assert is_loopback_socket_address(remote) or is_unbound_remote(remote), f"{peer.name}: {protocol} to {remote}"
    assert all(address.startswith("/ip4/127.0.0.1/") for address in peer.event("started")["addresses"])


def test_devices_train_in_step_and_a_late_joiner_catches_up(fleet: Fleet) -> None:
    bootstrap = fleet.start_bootstrap(start_delay=8.0, extra=["--state-chunk-bytes", "8192"])
    devices = [fleet.start_device(f"dev{i}", i, rounds=ROUNDS) for i in range(3)]

    wait_for(
        lambda: any(a["status"] == "applied" and a["contributors"] == 3 for a in devices[0].applied().values()),
        60, "a round averaged over all three devices",
    )
    for peer in [bootstrap, *devices]:
        assert_loopback_only(peer)

    late = fleet.start_device("late", 3, rounds=ROUNDS)
    for peer in [*devices, late]:
        wait_for(lambda: peer.event("finished") is not None or not peer.alive(), 90, f"{peer.name} to finish")
        assert wait_exit(peer, 20) == 0, peer.stderr()[-3000:]

    # Every peer that processed round r holds the same global model after it.
    everyone = [bootstrap, *devices, late]
    by_round: dict[int, dict[str, str]] = {}
    for peer in everyone:
        for round_index, digest in peer.digests().items():
            by_round.setdefault(round_index, {})[peer.name] = digest
    for round_index, digests in sorted(by_round.items()):
        assert len(set(digests.values())) == 1, f"round {round_index}: models differ: {digests}"
    full_rounds = [r for r, a in devices[0].applied().items() if a["status"] == "applied" and a["contributors"] >= 3]
    assert len(full_rounds) >= 4, devices[0].applied()
    assert len([r for r in by_round if len(by_round[r]) >= 4]) >= 4

    # The late joiner downloaded model + outer optimizer state, then followed and contributed.
    joined = late.event("joined")
    assert joined is not None and joined["downloaded"] is not None
    assert joined["downloaded"]["chunks"] >= 2 and joined["downloaded"]["next_round"] > 0
    assert len(set(late.digests()) & set(devices[0].digests())) >= 3
    assert any(e["contributed"] for e in late.events() if e["event"] == "round")
    assert any(a["status"] == "applied" and a["contributors"] == 4 for a in late.applied().values())

    # The bootstrap follows the global model: it learns.
    accuracies = [e["accuracy"] for e in bootstrap.events() if e["event"] == "round" and "accuracy" in e]
    assert accuracies[-1] > accuracies[0] + 0.1, accuracies
    assert all(e["finite"] for peer in everyone for e in peer.events() if e["event"] == "round")

    # Ctrl+C (SIGINT to the process group, as a terminal sends it): a clean, quick exit.
    daemon = bootstrap.event("started")["daemon_pid"]
    bootstrap.signal_group(signal.SIGINT)
    assert wait_exit(bootstrap, 15) in (0, 130)
    assert "Traceback" not in bootstrap.stderr(), bootstrap.stderr()[-3000:]
    wait_for(lambda: not process_alive(daemon), 5, "the bootstrap's p2pd to exit")
    assert bootstrap.group_pids() == []

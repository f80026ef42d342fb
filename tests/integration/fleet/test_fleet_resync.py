"""A device whose global model falls out of step is told by the digests, resyncs, and is back in step."""

from __future__ import annotations

import pytest
from fleet_processes import Fleet, wait_exit, wait_for

pytestmark = pytest.mark.integration

ROUNDS = 10


@pytest.fixture
def fleet(tmp_path):
    fleet = Fleet(tmp_path, period=2.0)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def test_diverged_device_downloads_state_and_rejoins_the_fleets_model(fleet: Fleet, tmp_path) -> None:
    bootstrap = fleet.start_bootstrap(start_delay=8.0)
    perturb = tmp_path / "perturb"
    steady = fleet.start_device("dev0", 0, rounds=ROUNDS)
    nudged = fleet.start_device("dev1", 1, rounds=ROUNDS, extra=["--perturb-file", str(perturb)])
    wait_for(
        lambda: any(a["status"] == "applied" and a["contributors"] == 2 for a in nudged.applied().values()),
        60, "a round averaged over both devices",
    )
    # As if dev1 had missed an aggregate the others applied: its global model differs.
    perturbed_round = max(nudged.rounds()) + 1
    perturb.write_text(str(perturbed_round))
    for device in (steady, nudged):
        wait_for(lambda: device.event("finished") is not None or not device.alive(), 90, f"{device.name} to finish")
        assert wait_exit(device, 20) == 0, device.stderr()[-3000:]

    peers = [bootstrap, steady, nudged]
    assert any(e.get("perturbed") for e in nudged.events() if e["event"] == "round")
    diverged = [
        (peer.name, a["round"]) for peer in peers for a in peer.applied().values() if a["status"] == "diverged"
    ]
    assert diverged, "nobody noticed the divergence"
    resynced = [peer.name for peer in peers if max(peer.rounds().values(), key=lambda r: r["round"])["resyncs"] > 0]
    assert resynced, "a diverged peer did not download state"
    # Two rounds later at most, everyone holds the same model again.
    noticed = min(round_index for _, round_index in diverged)
    for round_index in range(noticed + 2, ROUNDS):
        digests = {peer.name: peer.digests().get(round_index) for peer in peers}
        assert len(set(digests.values())) == 1, f"round {round_index}: {digests}"

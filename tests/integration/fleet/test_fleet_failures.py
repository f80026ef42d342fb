"""Leaders that fail: one SIGKILLed in the middle of its round's exchange costs the others
at most that round; one nobody can reach does not split itself off the fleet."""

from __future__ import annotations

import signal

import pytest
from fleet_processes import Fleet, process_alive, wait_exit, wait_for

pytestmark = pytest.mark.integration

ROUNDS = 12


@pytest.fixture
def fleet(tmp_path):
    fleet = Fleet(tmp_path, period=2.0)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def test_killed_leader_stalls_nobody_beyond_its_round(fleet: Fleet, tmp_path) -> None:
    bootstrap = fleet.start_bootstrap(start_delay=8.0)
    crash_files = {f"dev{i}": tmp_path / f"crash-dev{i}" for i in range(3)}
    devices = {
        name: fleet.start_device(name, i, rounds=ROUNDS, extra=["--crash-file", str(crash_files[name])])
        for i, name in enumerate(crash_files)
    }
    observer = devices["dev0"]
    wait_for(
        lambda: any(a["status"] == "applied" and a["contributors"] == 3 for a in observer.applied().values()),
        60, "a round averaged over all three devices",
    )

    # Learn who leads the next round and make it die in that round's exchange: after
    # collecting the contributions, before sending the aggregate to anyone.
    def upcoming() -> tuple[int, str] | None:
        rounds = [r for r in observer.rounds().values() if r.get("next_leader")]
        latest = max(rounds, key=lambda r: r["round"]) if rounds else None
        return (latest["round"] + 1, latest["next_leader"]) if latest else None

    wait_for(lambda: upcoming() is not None, 10, "a round whose leader is known in advance")
    killed_round, leader = upcoming()  # type: ignore[misc]
    victim = next(d for d in devices.values() if d.peer_id == leader)
    victim_daemon = victim.event("started")["daemon_pid"]
    crash_files[victim.name].write_text(str(killed_round))
    assert wait_exit(victim, 3 * fleet.period + 10) == -signal.SIGKILL

    survivors = [d for d in devices.values() if d is not victim]
    for device in survivors:
        wait_for(lambda: device.event("finished") is not None or not device.alive(), 90, f"{device.name} to finish")
        assert wait_exit(device, 20) == 0, device.stderr()[-3000:]
    assert not process_alive(victim_daemon)

    last_applied = ROUNDS - 1  # the last round a device submits is applied after it stops
    for device in survivors:
        applied = device.applied()
        lost = [r for r in range(killed_round, last_applied + 1) if applied.get(r, {}).get("status") != "applied"]
        assert set(lost) <= {killed_round}, f"{device.name} lost rounds {lost} after {victim.name} died in round {killed_round}"
        assert all(applied[r]["contributors"] == 2 for r in range(killed_round + 1, last_applied + 1)), applied
    # The survivors and the bootstrap still hold bit-identical models.
    watchers = [*survivors, bootstrap]
    for round_index in range(killed_round - 1, last_applied + 1):
        digests = {d.name: d.digests().get(round_index) for d in watchers}
        assert len(set(digests.values())) == 1, f"round {round_index}: {digests}"


def test_a_leader_nobody_reaches_applies_the_groups_aggregate_not_its_solo_one(fleet: Fleet, tmp_path) -> None:
    # Prepare: three devices; once they averaged together, one goes deaf: it leaves every
    # contribution sent to it unanswered (a device whose uplink was just cut), while it
    # keeps heartbeating and contributing to the others' leaders.
    bootstrap = fleet.start_bootstrap(start_delay=8.0)
    devices = {f"dev{i}": fleet.start_device(f"dev{i}", i, rounds=60) for i in range(2)}
    deaf_file = tmp_path / "deaf"
    victim = fleet.start_device("dev2", 2, rounds=60, extra=["--deaf-file", str(deaf_file)])
    observer = devices["dev0"]
    wait_for(
        lambda: any(a["status"] == "applied" and a["contributors"] == 3 for a in observer.applied().values()),
        60, "a round averaged over all three devices",
    )
    deaf_from = max(observer.rounds()) + 1
    deaf_file.write_text(str(deaf_from))

    # Execute: wait for a round it leads in its own view; the others cannot reach it and
    # average under the next candidate (each round, 1 in 3 leads by the rotation).
    def replaced() -> int:
        latest = max(victim.rounds().values(), key=lambda r: r["round"], default=None)
        return latest["exchange"].get("solo_rounds_replaced", 0) if latest else 0

    wait_for(lambda: replaced() >= 1, 40 * fleet.period, "the deaf device to lead a round alone and replace its average")

    # Assert: it applied the other two devices' aggregate for that round (its own update
    # went back to its error feedback), never diverged, and holds the others' model.
    applied = victim.applied()
    rounds = [r for r in applied if r >= deaf_from]
    assert any(applied[r]["status"] == "applied" and applied[r]["contributors"] == 2 for r in rounds), applied
    assert all(applied[r]["status"] != "diverged" for r in rounds), applied
    last = max(rounds)
    wait_for(lambda: all(last in p.digests() for p in (*devices.values(), bootstrap)), 10 * fleet.period,
             f"every peer to process round {last}")
    for round_index in range(deaf_from, last + 1):
        digests = {p.name: p.digests().get(round_index) for p in (*devices.values(), victim, bootstrap)}
        assert len(set(digests.values())) == 1, f"round {round_index}: {digests}"

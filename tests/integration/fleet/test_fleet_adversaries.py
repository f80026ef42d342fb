"""Peers without the key get nothing and change nothing; bad updates with the key are refused.

One fleet: a bootstrap, two honest devices and a rogue device (right key) whose
contributions cycle through a NaN payload, a 1000x update, a stale round and a malformed
payload. Beside it, a peer with another run key (finds no run) and an attacker that
knows the run's public id but not its key (reads nothing, is refused everywhere).
"""

from __future__ import annotations

import pytest
from fleet_processes import Fleet, wait_exit, wait_for

from globetrain.fleet.keys import new_run_key
from globetrain.validation.hostile_report import TIMING_REASONS

pytestmark = pytest.mark.integration

ROUNDS = 12
ROGUE_REASONS = ("contribution/non-finite", "contribution/norm-bound", "contribution/stale-round", "contribution/corrupt")


@pytest.fixture
def fleet(tmp_path):
    fleet = Fleet(tmp_path, period=2.0)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def final_view(peer) -> dict:
    finished = peer.event("finished")
    if finished is not None:
        return finished["status"]
    rounds = peer.rounds()
    return rounds[max(rounds)] if rounds else {}


def test_wrong_key_and_rogue_peers_are_refused_and_change_nothing(fleet: Fleet) -> None:
    bootstrap = fleet.start_bootstrap(start_delay=8.0)
    honest = [fleet.start_device(f"dev{i}", i, rounds=ROUNDS) for i in range(2)]
    rogue = fleet.start_device("rogue", 2, rounds=ROUNDS, extra=["--rogue", "cycle"])

    # Another run key: the run's config is under another id, so there is no run to join.
    stranger = fleet.start_device("stranger", 3, rounds=2, run_key=new_run_key(), extra=["--join-timeout", "3"])
    assert wait_exit(stranger, 60) == 2
    assert "no run found for this run key at /ip4/127.0.0.1/" in stranger.stderr()
    assert "GLOBETRAIN_RUN_KEY" in stranger.stderr() and "Traceback" not in stranger.stderr()

    wait_for(
        lambda: any(a["status"] == "applied" for a in honest[0].applied().values()), 60, "a first averaged round",
    )
    # The run id is public (it names the run in the DHT); the key is not.
    attacker = fleet.start_device(
        "attacker", 4, rounds=2, run_key=new_run_key(), extra=["--attack-run-id", bootstrap.event("started")["run_id"]]
    )
    assert wait_exit(attacker, 60) == 0, attacker.stderr()[-3000:]
    report = attacker.event("attack")
    assert report is not None
    assert report["config_readable"] is False and "does not open with this key" in report["config_error"]
    assert report["roster_readable"] == 0
    assert len(report["targets"]) >= 4 and report["messages_sent"] >= 12
    assert report["answers_opened"] == 0

    for device in [*honest, rogue]:
        wait_for(lambda: device.event("finished") is not None or not device.alive(), 90, f"{device.name} to finish")
        assert wait_exit(device, 20) == 0, device.stderr()[-3000:]

    # Every refusal is counted by reason with the sender named, wherever the round was led.
    by_sender: dict[str, dict[str, int]] = {}
    for peer in [bootstrap, *honest, rogue]:
        for sender, entry in final_view(peer).get("rejections_by_sender", {}).items():
            for reason, count in entry["reasons"].items():
                by_sender.setdefault(sender, {}).setdefault(reason, 0)
                by_sender[sender][reason] += count
    rogue_reasons = by_sender.get(rogue.peer_id, {})
    for reason in ROGUE_REASONS:
        assert rogue_reasons.get(reason, 0) >= 1, f"no {reason} counted for the rogue: {rogue_reasons}"
    attacker_reasons = by_sender.get(report["peer_id"], {})
    for reason in ("contribution/bad-tag", "aggregate-request/bad-tag", "state-request/bad-tag"):
        assert attacker_reasons.get(reason, 0) >= 1, f"no {reason} counted for the attacker: {attacker_reasons}"
    # No honest contribution is refused for what it holds. Timing refusals (an honest update
    # arriving after a 2 s round's 0.5 s collection window on a busy 2-core machine) are
    # lateness, which the validation's hostile run does not count against the fleet either.
    honest_ids = {peer.peer_id for peer in [bootstrap, *honest]}
    assert not any(
        reason.startswith("contribution/") and reason.rsplit("/", 1)[-1] not in TIMING_REASONS
        for sender in honest_ids for reason in by_sender.get(sender, {})
    ), by_sender

    # The model stays finite and identical across honest peers, and it was trained.
    watchers = [bootstrap, *honest]
    shared = set.intersection(*(set(peer.digests()) for peer in watchers))
    assert len(shared) >= 5
    for round_index in shared:
        assert len({peer.digests()[round_index] for peer in watchers}) == 1, round_index
    assert all(e["finite"] for peer in watchers for e in peer.events() if e["event"] == "round")
    averaged = [a for a in honest[0].applied().values() if a["status"] == "applied" and a["contributors"] >= 2]
    assert len(averaged) >= 4

"""The schedule: the plan in absolute values, and the runner against a fake clock."""

from __future__ import annotations

import threading

import pytest

from globetrain.netlab.profile import NetworkProfile, validation_profile
from globetrain.netlab.schedule import Drop, Schedule, SetDelay, SetRates, Stall, plan_actions


def profile_with(changes: list[dict], **host_extra: object) -> NetworkProfile:
    return NetworkProfile.from_dict({
        "hosts": [
            {"name": "dev0", "uplink_mbit": 10, "downlink_mbit": 20, "delay_ms": 50, "jitter_ms": 4, **host_extra},
            {"name": "dev1", "delay_ms": 20},
        ],
        "changes": changes,
    })


def test_validation_plan_cuts_dev3_and_dev0_tenfold_at_60s_and_doubles_every_delay_at_90s() -> None:
    actions = plan_actions(validation_profile())

    at_60 = [action for action in actions if action.at_s == 60.0]
    at_90 = [action for action in actions if action.at_s == 90.0]
    assert at_60 == [SetRates(60.0, "dev3", 1.0, 5.0), SetRates(60.0, "dev0", pytest.approx(0.1), pytest.approx(0.8))]
    assert len(at_90) == len(validation_profile().hosts)
    assert SetDelay(90.0, "dev0", 300.0, 60.0) in at_90
    assert Stall(45.0, "dev1", 5.0) in actions and Drop(75.0, "dev5", 1.0) in actions
    assert [action.at_s for action in actions] == sorted(action.at_s for action in actions)


def test_changes_compound_and_changes_of_nothing_are_left_out() -> None:
    profile = profile_with([
        {"at_s": 20, "uplink_factor": 0.5},
        {"at_s": 10, "hosts": ["dev0"], "uplink_factor": 0.1, "delay_factor": 3},
    ])

    actions = plan_actions(profile)

    assert actions == [
        SetRates(10.0, "dev0", pytest.approx(1.0), 20.0),
        SetDelay(10.0, "dev0", 150.0, 4.0),
        SetRates(20.0, "dev0", pytest.approx(0.5), 20.0),
    ]  # dev1 is unshaped: halving "no limit" is no change


class FakeClock:
    """A clock that only moves when the schedule waits: runs take no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.stop_after_waits: int | None = None

    def time(self) -> float:
        return self.now

    def wait(self, stop: threading.Event, timeout_s: float) -> bool:
        self.waits.append(timeout_s)
        if self.stop_after_waits is not None and len(self.waits) >= self.stop_after_waits:
            stop.set()
            return True
        self.now += timeout_s
        return False


class Recorder:
    def __init__(self, name: str, log: list, fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def set_uplink(self, mbit: float | None) -> None:
        self.log.append((self.name, "uplink", mbit))

    def set_downlink(self, mbit: float | None) -> None:
        self.log.append((self.name, "downlink", mbit))

    def set_delay(self, *, delay_ms: float | None = None, jitter_ms: float | None = None,
                  direction: str = "both") -> None:
        if self.fail:
            raise ConnectionRefusedError("relay is gone")
        self.log.append((self.name, "delay", delay_ms, jitter_ms))

    def stall(self, seconds: float) -> None:
        self.log.append((self.name, "stall", seconds))

    def drop(self, fraction: float = 1.0) -> int:
        self.log.append((self.name, "drop", fraction))
        return 1


class FakeLab:
    def __init__(self, log: list) -> None:
        self.log = log

    def host(self, name: str) -> Recorder:
        return Recorder(name, self.log)


def test_the_runner_applies_each_action_at_its_time() -> None:
    profile = profile_with([{"at_s": 60, "hosts": ["dev0"], "uplink_factor": 0.1}],
                           stalls=[{"at_s": 30, "duration_s": 5}], drops=[{"at_s": 75}])
    log: list = []
    clock = FakeClock()
    schedule = Schedule(profile, FakeLab(log), {"dev0": Recorder("relay0", log)}, clock=clock.time, wait=clock.wait)

    schedule.run(started_at=clock.now)

    assert log == [
        ("relay0", "stall", 5.0),
        ("dev0", "uplink", pytest.approx(1.0)),
        ("dev0", "downlink", 20.0),
        ("relay0", "drop", 1.0),
    ]
    assert [applied.applied_at_s for applied in schedule.applied] == [30.0, 60.0, 75.0]
    assert all(applied.error is None for applied in schedule.applied)


def test_a_failing_action_is_recorded_and_the_run_goes_on() -> None:
    profile = profile_with([{"at_s": 10, "delay_factor": 2}, {"at_s": 20, "hosts": ["dev0"], "uplink_factor": 2}])
    # dev1 (delay 20 ms) has no relay; dev0's relay fails.
    log: list = []
    clock = FakeClock()
    relays = {"dev0": Recorder("relay0", log, fail=True)}  # dev1 has no relay at all
    schedule = Schedule(profile, FakeLab(log), relays, clock=clock.time, wait=clock.wait)

    schedule.run(started_at=clock.now)

    errors = [applied.error for applied in schedule.applied]
    assert "relay is gone" in errors[0]
    assert "no relay registered for host 'dev1'" in errors[1]
    assert errors[2] is None and ("dev0", "uplink", 20.0) in log


def test_stopping_skips_the_actions_not_yet_due() -> None:
    profile = profile_with([{"at_s": 10, "hosts": ["dev0"], "uplink_factor": 2},
                            {"at_s": 20, "hosts": ["dev0"], "uplink_factor": 2}])
    log: list = []
    clock = FakeClock()
    clock.stop_after_waits = 2
    schedule = Schedule(profile, FakeLab(log), clock=clock.time, wait=clock.wait)

    schedule.run(started_at=clock.now)

    assert [applied.action.at_s for applied in schedule.applied] == [10.0]


def test_the_schedule_thread_stops_promptly() -> None:
    profile = profile_with([{"at_s": 3600, "hosts": ["dev0"], "uplink_factor": 2}])
    schedule = Schedule(profile, FakeLab([]))

    with schedule:
        assert schedule.started_at is not None
    assert schedule._thread is not None and not schedule._thread.is_alive()
    assert schedule.applied == []

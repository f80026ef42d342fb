"""Run keys kept out of command lines and readable by their owner only; QoS on time-based rounds."""

from __future__ import annotations

import stat
import statistics
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from globetrain.errors import ConfigError
from globetrain.fleet.app.qos import MEASUREMENT_WINDOW, RoundPeriodSchedule, cautious_estimate, qos_for_run
from globetrain.fleet.app.run_keys import bootstrap_run_keys, device_run_keys
from globetrain.fleet.config import FleetConfig
from globetrain.fleet.keys import RUN_KEY_ENV
from globetrain.sync.config import SyncConfig
from globetrain.sync.schedule import RoundObservation, make_payload_estimator

SHAPES = [(64, 32, 3, 3), (64,), (10, 64)]


def test_a_new_run_key_is_written_for_its_owner_only_and_reused_from_the_file(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(RUN_KEY_ENV, raising=False)
    keys, written = bootstrap_run_keys(None, tmp_path / "run" / "run.key")
    assert written == tmp_path / "run" / "run.key"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert device_run_keys(str(written)).run_id == keys.run_id
    again, created = bootstrap_run_keys(str(written), tmp_path / "unused.key")
    assert created is None and again.run_id == keys.run_id
    with pytest.raises(ConfigError, match="already exists"):
        bootstrap_run_keys(None, written)


def test_the_environment_wins_and_a_missing_key_says_where_to_put_it(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(RUN_KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"set {RUN_KEY_ENV}"):
        device_run_keys(None)
    monkeypatch.setenv(RUN_KEY_ENV, "ab" * 32)
    keys, created = bootstrap_run_keys(None, tmp_path / "run.key")
    assert created is None and not (tmp_path / "run.key").exists()
    assert device_run_keys(str(tmp_path / "missing")).run_id == keys.run_id


def schedule(sync: SyncConfig, fleet: FleetConfig) -> RoundPeriodSchedule:
    return RoundPeriodSchedule(sync, qos_for_run(sync, fleet), make_payload_estimator(SHAPES))


def test_on_a_fast_link_a_device_sends_the_runs_settings_every_round():
    sync, fleet = SyncConfig(density=0.01, bits=8), FleetConfig(round_period_s=5.0)
    plan = schedule(sync, fleet)
    for _ in range(3):
        plan.note_round_steps(10)
        plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=1e8, rtt_s=0.001))
    settings = plan.settings_for(3)
    assert (settings.density, settings.bits) == (0.01, 8)
    assert plan.rounds_per_contribution(settings) == 1
    assert "fits" in settings.reason


@given(st.floats(min_value=10.0, max_value=1e9))
def test_qos_never_sends_richer_than_the_run_and_contributes_at_least_every_eighth_round(uplink):
    sync, fleet = SyncConfig(density=0.01, bits=8), FleetConfig(round_period_s=5.0)
    plan = schedule(sync, fleet)
    plan.note_round_steps(10)
    plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=uplink, rtt_s=0.01))
    settings = plan.settings_for(1)
    assert settings.density <= 0.01 and settings.bits <= 8
    assert 1 <= plan.rounds_per_contribution(settings) <= 8


def test_a_slow_link_gets_leaner_payloads_then_rarer_contributions():
    sync, fleet = SyncConfig(density=0.01, bits=8), FleetConfig(round_period_s=5.0)
    plan = schedule(sync, fleet)
    plan.note_round_steps(10)
    plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=300.0, rtt_s=0.05))
    lean = plan.settings_for(1)
    assert lean.density < 0.01 or lean.bits < 8
    for _ in range(3):  # a lasting drop: the median follows within a few rounds
        plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=20.0, rtt_s=0.05))
    rare = plan.settings_for(2)
    assert plan.rounds_per_contribution(rare) > 1


def test_one_outlier_measurement_does_not_change_the_settings():
    # On a loaded machine one ack can take seconds; the next ones are fast again.
    sync, fleet = SyncConfig(density=0.01, bits=8), FleetConfig(round_period_s=5.0)
    plan = schedule(sync, fleet)
    plan.note_round_steps(10)
    for uplink in (1e8, 1e8, 10.0, 1e8):
        plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=uplink, rtt_s=0.001))
        settings = plan.settings_for(1)
        assert (settings.density, settings.bits, plan.rounds_per_contribution(settings)) == (0.01, 8, 1)


def test_two_slow_exchanges_in_a_row_make_the_payload_leaner_at_once():
    # A tenfold (and more) drop after a long fast history: the median of five would still
    # say "fast" after two slow rounds; two agreeing rounds are enough to go leaner.
    sync, fleet = SyncConfig(density=0.01, bits=8), FleetConfig(round_period_s=5.0)
    plan = schedule(sync, fleet)
    plan.note_round_steps(10)
    for _ in range(5):
        plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=1e8, rtt_s=0.001))
    plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=300.0, rtt_s=0.001))
    settings = plan.settings_for(6)
    assert (settings.density, settings.bits) == (0.01, 8)  # one slow round: could be an outlier
    plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=300.0, rtt_s=0.001))
    settings = plan.settings_for(7)
    assert settings.density < 0.01 or settings.bits < 8
    # The link recovers: once the median is fast again, so are the settings.
    for _ in range(3):
        plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=1e8, rtt_s=0.001))
    settings = plan.settings_for(10)
    assert (settings.density, settings.bits) == (0.01, 8)


@given(st.lists(st.floats(min_value=1.0, max_value=1e9), min_size=1, max_size=12))
def test_the_cautious_estimate_lies_between_the_median_and_the_slower_side(values):
    recent = deque(values[-MEASUREMENT_WINDOW:], maxlen=MEASUREMENT_WINDOW)
    uplink = cautious_estimate(recent, slower_is_larger=False)
    rtt = cautious_estimate(recent, slower_is_larger=True)
    median = statistics.median(recent)
    assert min(recent) <= uplink <= median <= rtt <= max(recent)


def test_a_device_contributing_every_second_round_goes_leaner_after_one_slow_exchange():
    # Its exchanges come every second round: one of them already spans the two rounds
    # that confirm a slower link for a device contributing every round.
    sync, fleet = SyncConfig(density=0.01, bits=8), FleetConfig(round_period_s=5.0)
    plan = schedule(sync, fleet)
    plan.note_round_steps(10)
    for _ in range(5):
        plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=100.0, rtt_s=0.05))
    before = plan.settings_for(5)
    assert plan.rounds_per_contribution(before) == 2
    plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=20.0, rtt_s=0.05))
    after = plan.settings_for(7)
    assert plan.rounds_per_contribution(after) > 2 or (after.density, after.bits) < (before.density, before.bits)

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
from globetrain.fleet.app.qos import MEASUREMENT_WINDOW, RoundPeriodSchedule, cautious_estimate
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
    return RoundPeriodSchedule.for_run(sync, fleet, make_payload_estimator(SHAPES))


def fresh_plan() -> RoundPeriodSchedule:
    """A device of a run with density 0.01, 8 bits and T = 5 s that does 10 steps a round."""
    plan = schedule(SyncConfig(density=0.01, bits=8), FleetConfig(round_period_s=5.0))
    plan.note_round_steps(10)
    return plan


MAX_LEAD = 0.5 * 0.25 * 5.0
"""Half the collection window of FleetConfig(round_period_s=5.0)."""


def test_on_a_fast_link_a_device_sends_the_runs_settings_every_round():
    sync, fleet = SyncConfig(density=0.01, bits=8), FleetConfig(round_period_s=5.0)
    plan = schedule(sync, fleet)
    for _ in range(3):
        plan.note_round_steps(10)
        plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=1e8, rtt_s=0.001))
    settings = plan.settings_for(3)
    assert (settings.density, settings.bits, settings.inner_steps) == (0.01, 8, 10)
    assert plan.submit_lead_s == 0.0
    assert "fits" in settings.reason


@given(st.floats(min_value=10.0, max_value=1e9), st.floats(min_value=0.0, max_value=2.0))
def test_qos_never_sends_richer_than_the_run_and_contributes_every_round_at_most_half_a_window_early(uplink, rtt):
    plan = fresh_plan()
    plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=uplink, rtt_s=rtt))
    settings = plan.settings_for(1)
    assert settings.density <= 0.01 and settings.bits <= 8
    assert settings.inner_steps == 10
    assert 0.0 <= plan.submit_lead_s <= MAX_LEAD
    # Early only where nothing fits at the round's end, or where what fits needs over half the budget.
    at_end = plan.adaptive.fitting_settings(uplink_bytes_per_s=uplink, rtt_s=rtt, max_inner_steps=10)
    tight = at_end is not None and plan.adaptive.exchange_seconds_on(at_end.density, at_end.bits, uplink, rtt) > 0.5 * 1.0
    assert (plan.submit_lead_s > 0) == (at_end is None or tight)
    if at_end is not None:
        assert (settings.density, settings.bits) == (at_end.density, at_end.bits)


def test_a_slow_link_gets_leaner_payloads_then_earlier_submissions_never_rarer_ones():
    plan = fresh_plan()
    plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=300.0, rtt_s=0.05))
    lean = plan.settings_for(1)
    assert lean.density < 0.01 or lean.bits < 8
    assert lean.inner_steps == 10
    for _ in range(3):  # a lasting drop: the median follows within a few rounds
        plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=20.0, rtt_s=0.05))
    early = plan.settings_for(2)
    assert early.inner_steps == 10 and plan.submit_lead_s == MAX_LEAD
    assert "early" in early.reason


def test_round_trips_that_fill_the_window_move_the_submission_earlier():
    # As in the shaped lab: a 0.1 Mbit/s device whose round trips grew to 0.45 s needs
    # 2.5 x 0.45 s before its envelope is at the leader, more than its 1 s budget (T = 5 s);
    # half a window early, a lean payload fits.
    plan = fresh_plan()
    observe(plan, 12_500.0, rtt=0.45, times=3)
    settings = plan.settings_for(3)
    assert plan.submit_lead_s == MAX_LEAD and "fits" in settings.reason
    observe(plan, 12_500.0, rtt=0.05, times=8)  # the round trips recover: back to the round's end
    recovered = plan.settings_for(11)
    assert "fits" in recovered.reason and "early" not in recovered.reason and plan.submit_lead_s == 0.0


def test_a_payload_that_fits_with_little_to_spare_goes_early_unchanged():
    # Run V: an 18 KB upload planned at 1.67 s of a 1.69 s budget took 4 s and was refused.
    plan = fresh_plan()
    observe(plan, 1e8, rtt=0.3, times=3)  # 0.75 s of round trips: fits a 1 s budget, but tightly
    settings = plan.settings_for(3)
    assert (settings.density, settings.bits) == (0.01, 8)
    assert plan.submit_lead_s == MAX_LEAD and "for slack" in settings.reason


def test_a_link_too_slow_even_early_sends_the_leanest_payload_every_round_and_warns_once(caplog):
    plan = fresh_plan()
    observe(plan, 1.0, rtt=2.0, times=3)
    with caplog.at_level("WARNING"):
        first, second = plan.settings_for(3), plan.settings_for(4)
    for settings in (first, second):
        assert (settings.density, settings.bits) == (plan.qos.min_density, min(plan.qos.bits_choices))
        assert settings.inner_steps == 10 and plan.submit_lead_s == MAX_LEAD
    assert len([r for r in caplog.records if "too slow for the collection window" in r.getMessage()]) == 1


def observe(plan: RoundPeriodSchedule, uplink: float, rtt: float = 0.001, times: int = 1) -> None:
    for _ in range(times):
        plan.observe(RoundObservation(inner_steps=10, compute_seconds=5.0, uplink_bytes_per_s=uplink, rtt_s=rtt))


def payload_of(settings) -> int:
    return make_payload_estimator(SHAPES)(settings.density, settings.bits)


def test_one_outlier_measurement_makes_one_round_leaner_and_none_rarer():
    # On a loaded machine one ack can take seconds; the next ones are fast again.
    plan = fresh_plan()
    observe(plan, 1e8, times=2)
    assert (plan.settings_for(2).density, plan.settings_for(2).bits) == (0.01, 8)
    observe(plan, 10.0)
    outlier = plan.settings_for(3)
    assert payload_of(outlier) < payload_of(SyncConfig(density=0.01, bits=8))
    assert plan.submit_lead_s == 0.0 and "until confirmed" in outlier.reason
    observe(plan, 1e8)
    after = plan.settings_for(4)
    assert (after.density, after.bits, plan.submit_lead_s) == (0.01, 8, 0.0)


def test_a_tenfold_drop_makes_the_payload_leaner_at_once_and_two_rounds_confirm_it():
    # After a long fast history the median of five would still say "fast" after two slow
    # rounds: the first slow exchange makes the next payload leaner, the second makes it count.
    plan = fresh_plan()
    observe(plan, 3000.0, times=5)
    before = plan.settings_for(5)
    observe(plan, 300.0)
    first = plan.settings_for(6)
    assert payload_of(first) < payload_of(before) and "until confirmed" in first.reason
    observe(plan, 300.0)
    confirmed = plan.settings_for(7)
    assert payload_of(confirmed) <= payload_of(first) and "until confirmed" not in confirmed.reason
    # The link recovers: once the median is fast again, so are the settings.
    observe(plan, 3000.0, times=3)
    assert payload_of(plan.settings_for(10)) == payload_of(before)


def test_a_round_trip_that_alone_got_slower_also_makes_one_round_leaner():
    plan = fresh_plan()
    observe(plan, 3000.0, rtt=0.05, times=5)
    before = plan.settings_for(5)
    observe(plan, 3000.0, rtt=0.5)
    slower = plan.settings_for(6)
    assert payload_of(slower) < payload_of(before)
    assert plan.submit_lead_s == 0.0  # one signal: leaner, never earlier


@given(st.lists(st.tuples(st.floats(min_value=0.75, max_value=1.45), st.floats(min_value=0.75, max_value=1.45)), min_size=6, max_size=12))
def test_jitter_of_less_than_twofold_never_changes_the_payload_alone(swings):
    # A device whose budget is nearly all round trips (1 Mbit/s, 400 ms): a relay's jitter
    # around the link's true speed (here at most 1.45 / 0.75 = 1.93x apart) must not flip its payload by itself.
    plan = fresh_plan()
    for uplink_swing, rtt_swing in swings:
        observe(plan, 125_000.0 * uplink_swing, rtt=0.4 * rtt_swing)
        chosen = plan.settings_for(1)
        assert "until confirmed" not in chosen.reason
        by_estimates, _lead = plan.settings_on_link(1, plan.adaptive.uplink_bytes_per_s, plan.adaptive.rtt_s)
        assert (chosen.density, chosen.bits) == (by_estimates.density, by_estimates.bits)


@given(
    st.lists(st.floats(min_value=10.0, max_value=1e9), min_size=1, max_size=8),
    st.floats(min_value=1.0, max_value=1e9),
    st.floats(min_value=0.0, max_value=2.0),
)
def test_a_single_measurement_never_makes_a_round_richer_or_earlier_than_the_estimates_choose(history, latest, rtt):
    plan = fresh_plan()
    for uplink in history:
        observe(plan, uplink, rtt=0.01)
    observe(plan, latest, rtt=rtt)
    chosen = plan.settings_for(len(history) + 1)
    lead = plan.submit_lead_s
    by_estimates, lead_by_estimates = plan.settings_on_link(len(history) + 1, plan.adaptive.uplink_bytes_per_s, plan.adaptive.rtt_s)
    assert chosen.inner_steps == by_estimates.inner_steps == 10
    assert payload_of(chosen) <= payload_of(by_estimates)
    assert lead == lead_by_estimates


@given(st.lists(st.floats(min_value=1.0, max_value=1e9), min_size=1, max_size=12))
def test_the_cautious_estimate_lies_between_the_median_and_the_slower_side(values):
    recent = deque(values[-MEASUREMENT_WINDOW:], maxlen=MEASUREMENT_WINDOW)
    uplink = cautious_estimate(recent, slower_is_larger=False)
    rtt = cautious_estimate(recent, slower_is_larger=True)
    median = statistics.median(recent)
    assert min(recent) <= uplink <= median <= rtt <= max(recent)

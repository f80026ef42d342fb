"""The numbers of the validation reports, from hand-made curves, counters and round lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from globetrain.validation.accounting import (
    CounterSeries,
    adaptation_after,
    change_was_needed,
    compare_bytes,
    progress_rates,
    ratio_or_none,
    time_to_target,
)


def evaluation(t: float, accuracy: float | None) -> dict:
    return {"event": "evaluation", "t": t, "val_accuracy": accuracy}


def round_line(t: float, sent: int, received: int = 0, *, h: int = 40, density: float = 0.03, bits: int = 8) -> dict:
    return {"t": t, "bytes_sent": sent, "bytes_received": received, "qos_inner_steps": h, "density": density, "bits": bits}


# -- time to target ---------------------------------------------------------------------------------


def test_time_to_target_is_the_first_evaluation_at_or_above_the_target():
    curve = [evaluation(110.0, 0.4), evaluation(130.0, 0.6), evaluation(150.0, 0.55), evaluation(170.0, 0.8)]
    assert time_to_target(curve, start_time=100.0, target=0.6) == pytest.approx(30.0)


def test_time_to_target_orders_evaluations_by_time_and_skips_missing_accuracies():
    curve = [evaluation(170.0, 0.9), evaluation(120.0, None), evaluation(140.0, 0.7)]
    assert time_to_target(curve, start_time=100.0, target=0.7) == pytest.approx(40.0)


def test_time_to_target_is_none_when_never_reached():
    assert time_to_target([evaluation(110.0, 0.59)], start_time=100.0, target=0.6) is None
    assert time_to_target([], start_time=100.0, target=0.6) is None


def test_ratio_or_none_refuses_missing_values_and_zero():
    assert ratio_or_none(3.0, 2.0) == 1.5
    assert ratio_or_none(None, 2.0) is None
    assert ratio_or_none(1.0, None) is None
    assert ratio_or_none(1.0, 0) is None


# -- interface counters ------------------------------------------------------------------------------


def series(*samples: tuple[float, int, int]) -> CounterSeries:
    counters = CounterSeries()
    for sample in samples:
        counters.add(*sample)
    return counters


def test_counters_interpolate_between_samples_and_hold_at_the_ends():
    counters = series((10.0, 1000, 0), (20.0, 3000, 500))
    assert counters.at(15.0) == pytest.approx(2000.0)
    assert counters.at(15.0, direction="rx") == pytest.approx(250.0)
    assert counters.at(5.0) == 1000.0
    assert counters.at(25.0) == 3000.0
    assert counters.between(12.0, 18.0) == pytest.approx(1200.0)


def test_counters_refuse_samples_out_of_order():
    counters = series((10.0, 1, 1))
    with pytest.raises(ValueError, match="time order"):
        counters.add(9.0, 2, 2)


@given(st.lists(st.tuples(st.floats(0.1, 10.0), st.integers(0, 10**6)), min_size=2, max_size=20),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_counter_deltas_are_never_negative_and_never_exceed_the_total(steps, first, second):
    counters, now, total = CounterSeries(), 0.0, 0
    for gap, amount in steps:
        now += gap
        total += amount
        counters.add(now, total, 0)
    span = counters.times[-1] - counters.times[0]
    start, end = sorted((counters.times[0] + first * span, counters.times[0] + second * span))
    delta = counters.between(start, end)
    assert -1e-6 <= delta <= counters.tx[-1] - counters.tx[0] + 1e-6


def test_compare_bytes_uses_the_window_of_the_round_lines():
    # The first line's bytes happened before the window (since the peer started): not counted.
    rounds = [round_line(100.0, 50_000, 1_000), round_line(110.0, 10_000, 2_000), round_line(120.0, 10_000, 2_000)]
    counters = series((90.0, 0, 0), (100.0, 60_000, 2_000), (120.0, 81_000, 6_200))
    comparison = compare_bytes("device-0", rounds, counters)
    assert comparison is not None
    assert comparison.reported_sent == 20_000
    assert comparison.counter_sent == pytest.approx(21_000)
    assert comparison.sent_ratio == pytest.approx(1.05)
    assert comparison.received_ratio == pytest.approx(4_200 / 4_000)
    assert comparison.within(0.10)
    assert not comparison.within(0.04)
    assert comparison.to_dict()["window_s"] == 20.0
    assert comparison.unreported_sent_per_s == pytest.approx(50.0)


def test_compare_bytes_prefers_the_wire_bytes_when_every_line_has_them():
    def wire_line(t: float, streams: int, wire: int | None) -> dict:
        return {**round_line(t, streams, 100), "wire_bytes_sent": wire, "wire_bytes_received": None if wire is None else 300}

    counters = series((100.0, 0, 0), (120.0, 30_000, 600))
    comparison = compare_bytes("device-0", [wire_line(100.0, 5, 5), wire_line(110.0, 1_000, 14_000),
                                            wire_line(120.0, 1_000, 15_000)], counters)
    assert comparison is not None and comparison.reported_from == "wire"
    assert (comparison.reported_sent, comparison.streams_sent, comparison.reported_received) == (29_000, 2_000, 600)
    # One line without kernel counters: the whole window falls back to the streams.
    comparison = compare_bytes("device-0", [wire_line(100.0, 5, 5), wire_line(110.0, 1_000, None),
                                            wire_line(120.0, 1_000, 15_000)], counters)
    assert comparison is not None and comparison.reported_from == "streams" and comparison.reported_sent == 2_000


def test_compare_bytes_needs_a_window_and_counters_covering_it():
    counters = series((100.0, 0, 0), (110.0, 100, 0))
    assert compare_bytes("device-0", [round_line(105.0, 10)], counters) is None
    assert compare_bytes("device-0", [round_line(95.0, 10), round_line(105.0, 10)], counters) is None


def test_no_reported_bytes_is_never_within_tolerance():
    rounds = [round_line(100.0, 0), round_line(110.0, 0)]
    comparison = compare_bytes("device-0", rounds, series((100.0, 0, 0), (110.0, 500, 0)))
    assert comparison is not None and comparison.sent_ratio is None and not comparison.within(0.5)


# -- adaptation and progress ----------------------------------------------------------------------------


def test_adaptation_counts_rounds_after_the_change_until_density_or_bits_move():
    # H moves with each round's compute time: not an adaptation of the payload.
    rounds = [round_line(50.0, 1, h=40), round_line(58.0, 1, h=40), round_line(66.0, 1, h=31),
              round_line(74.0, 1, h=40, density=0.01), round_line(82.0, 1, h=40, density=0.01)]
    adaptation = adaptation_after(rounds, change_time=60.0)
    assert adaptation.before == (0.03, 8)
    assert adaptation.rounds_until_change == 2
    assert adaptation.first_changed == (0.01, 8)
    assert adaptation.adapted_within(2) and not adaptation.adapted_within(1)
    assert adaptation.rounds_after == 3


def test_the_round_in_progress_at_the_change_counts_neither_before_nor_after():
    # Rounds of 8 s ending at 56, 64, 72, 80: the change at 60 s falls inside the round 56-64,
    # whose settings were chosen at 56 s. The first round after the change is the one from 64.
    rounds = [{**round_line(t, 1, density=density), "round_s": 8.0}
              for t, density in ((56.0, 0.03), (64.0, 0.03), (72.0, 0.03), (80.0, 0.01))]
    adaptation = adaptation_after(rounds, change_time=60.0)
    assert adaptation.before == (0.03, 8)
    assert adaptation.rounds_after == 2
    assert adaptation.rounds_until_change == 2 and adaptation.adapted_within(2)


def test_a_one_round_outlier_just_before_the_change_is_not_the_baseline():
    # Run W: device-0's exchange through a stalled leader made the round before the cut the
    # leanest, "until confirmed"; its settled choice (0.03, 8) is what the cut must change.
    outlier = {**round_line(58.0, 1, density=0.0005, bits=4),
               "qos_reason": "latest exchange alone saw a much slower link, leaner until confirmed: leanest setting"}
    rounds = [round_line(50.0, 1), outlier, round_line(66.0, 1), round_line(74.0, 1, bits=4)]
    adaptation = adaptation_after(rounds, change_time=60.0)
    assert adaptation.before == (0.03, 8)
    assert adaptation.rounds_until_change == 2 and adaptation.first_changed == (0.03, 4)


def test_adaptation_sees_fewer_bits_as_a_change():
    rounds = [round_line(50.0, 1), round_line(65.0, 1, bits=4)]
    assert adaptation_after(rounds, change_time=60.0).first_changed == (0.03, 4)


def test_a_richer_choice_after_the_change_is_not_an_adaptation_to_a_rate_drop():
    # Settings that swung before the drop (4 bits) and swing back (8 bits) after it.
    rounds = [round_line(50.0, 1, bits=4), round_line(65.0, 1, bits=8), round_line(73.0, 1, density=0.01, bits=8)]
    adaptation = adaptation_after(rounds, change_time=60.0)
    assert adaptation.before == (0.03, 4)
    assert adaptation.rounds_until_change == 2 and adaptation.first_changed == (0.01, 8)


def test_adaptation_ignores_rounds_without_a_choice_and_reports_never():
    rounds = [round_line(50.0, 1, h=40), round_line(62.0, 1, h=0, density=0.0, bits=0), round_line(70.0, 1, h=22)]
    adaptation = adaptation_after(rounds, change_time=60.0)
    assert adaptation.rounds_until_change is None
    assert not adaptation.adapted_within(2)
    assert adaptation.rounds_after == 1


def test_adaptation_without_rounds_before_the_change_has_no_baseline():
    adaptation = adaptation_after([round_line(70.0, 1)], change_time=60.0)
    assert adaptation.before is None and adaptation.rounds_until_change is None


def test_progress_rates_compare_the_sample_rate_before_and_after_settling():
    lines = [{"t": float(t), "global_samples": samples} for t, samples in
             [(30, 0), (60, 3000), (70, 3500), (80, 4000), (110, 5500)]]
    rates = progress_rates(lines, change_time=60.0, settle_s=20.0, window_s=30.0)
    assert rates["before"] == pytest.approx(100.0)
    assert rates["after"] == pytest.approx(50.0)
    assert rates["recovered"] == pytest.approx(0.5)


def test_progress_rates_are_none_without_two_points_in_a_window():
    rates = progress_rates([{"t": 10.0, "global_samples": 1}], change_time=60.0, settle_s=10.0, window_s=30.0)
    assert rates == {"before": None, "after": None, "recovered": None}


def reasoned(t: float, reason: str, **choice) -> dict:
    return {**round_line(t, 1, **choice), "qos_reason": reason}


def test_no_change_is_needed_while_the_old_choice_still_fits():
    rounds = [reasoned(50.0, "exchange 1.3s fits 1.5s of compute"), reasoned(65.0, "exchange 1.2s fits 1.4s of compute"),
              reasoned(73.0, "exchange 1.2s fits 1.4s of compute")]
    assert not change_was_needed(rounds, 60.0)


def test_a_change_is_needed_when_the_old_choice_stops_fitting_or_the_choice_moved():
    leanest = [reasoned(50.0, "exchange 1.3s fits 1.5s of compute"), reasoned(65.0, "leanest setting; exchange 9s exceeds compute")]
    assert change_was_needed(leanest, 60.0)
    moved = [reasoned(50.0, "exchange 1s fits 2s of compute"), reasoned(65.0, "exchange 1s fits 2s of compute", density=0.01)]
    assert change_was_needed(moved, 60.0)

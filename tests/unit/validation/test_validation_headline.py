"""The shaped report's headline: ratios, lower bounds and the targets' verdicts."""

from __future__ import annotations

import pytest

from globetrain.validation.shaped_report import headline


def case(method: str, shaped: bool, ttt: float | None, seconds: float = 300.0, **extra) -> dict:
    return {"method": method, "shaped": shaped, "time_to_target_s": ttt, "reached": ttt is not None,
            "training_seconds": seconds, **extra}


def cases(shaped_ttt: float | None, unshaped_ttt: float | None) -> dict:
    return {"two-step-shaped": case("two-step", True, shaped_ttt, 320.0),
            "two-step-unshaped": case("two-step", False, unshaped_ttt, 200.0)}


def test_ratio_within_the_target():
    result = headline(cases(220.0, 200.0), methods=["two-step"], byte_tolerance=0.1)
    assert result["methods"]["two-step"]["shaped_over_unshaped"] == pytest.approx(1.1)
    assert result["targets"]["two_step_shaped_within_1.25x_of_unshaped"] is True


def test_shaped_never_reaching_it_is_a_miss_with_a_lower_bound():
    result = headline(cases(None, 200.0), methods=["two-step"], byte_tolerance=0.1)
    assert result["methods"]["two-step"]["shaped_over_unshaped"] is None
    assert result["methods"]["two-step"]["shaped_over_unshaped_at_least"] == pytest.approx(1.6)
    assert result["targets"]["two_step_shaped_within_1.25x_of_unshaped"] is False


def test_unknown_when_the_reference_never_reached_it():
    result = headline(cases(None, None), methods=["two-step"], byte_tolerance=0.1)
    assert result["targets"]["two_step_shaped_within_1.25x_of_unshaped"] is None


def test_adaptation_counts_only_where_a_change_was_needed():
    needed = {"change_needed": True, "adapted_within_2_rounds": True, "progress": {"recovered": 1.0}}
    not_needed = {"change_needed": False, "adapted_within_2_rounds": None, "progress": {"recovered": 0.9}}
    both = cases(220.0, 200.0)
    both["two-step-shaped"]["adaptation"] = [not_needed]
    assert headline(both, methods=["two-step"], byte_tolerance=0.1)["targets"]["adapted_within_2_rounds"] is None
    both["two-step-shaped"]["adaptation"] = [not_needed, needed]
    assert headline(both, methods=["two-step"], byte_tolerance=0.1)["targets"]["adapted_within_2_rounds"] is True

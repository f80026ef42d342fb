"""The adaptive QoS scheduler: an exchange must fit inside the next round's compute."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from globetrain.errors import ConfigError
from globetrain.sync import AdaptiveSchedule, QoSConfig, RoundObservation, SyncConfig

PARAMETERS = 1_000_000


def payload_bytes(density: float, bits: int) -> int:
    # Values plus ~6 bits of index per sent value, plus a header: close to the real codec.
    return int(density * PARAMETERS * (bits + 6) / 8) + 200


def make(**qos) -> AdaptiveSchedule:
    return AdaptiveSchedule(SyncConfig(inner_steps=16, density=0.01, bits=8), QoSConfig(**qos), payload_bytes)


def observe(schedule: AdaptiveSchedule, *, step_s: float, uplink_mbit: float, rtt_ms: float = 50.0) -> None:
    schedule.observe(
        RoundObservation(
            inner_steps=16,
            compute_seconds=16 * step_s,
            uplink_bytes_per_s=uplink_mbit * 1e6 / 8,
            rtt_s=rtt_ms / 1000,
        )
    )


def test_defaults_until_measured() -> None:
    settings = make().settings_for(0)
    assert (settings.inner_steps, settings.density, settings.bits) == (16, 0.01, 8)


@given(
    step_s=st.floats(0.01, 2.0),
    uplink_mbit=st.floats(0.5, 100.0),
    rtt_ms=st.floats(1.0, 400.0),
)
def test_chosen_setting_fits_or_is_the_leanest_at_max_h(step_s: float, uplink_mbit: float, rtt_ms: float) -> None:
    schedule = make()
    observe(schedule, step_s=step_s, uplink_mbit=uplink_mbit, rtt_ms=rtt_ms)
    settings = schedule.settings_for(1)
    needed = schedule.exchange_seconds(settings.density, settings.bits)
    budget = settings.inner_steps * schedule.step_seconds * schedule.qos.fit_fraction
    if needed > budget:
        assert settings.inner_steps == schedule.qos.max_inner_steps
        assert (settings.density, settings.bits) == schedule.candidates[-1]
    else:
        # Nothing richer would have fitted at this H, and no smaller H fitted anything.
        richer = schedule.candidates[: schedule.candidates.index((settings.density, settings.bits))]
        assert all(schedule.exchange_seconds(d, b) > budget for d, b in richer)


def test_tenfold_rate_drop_is_adapted_to_in_the_next_round() -> None:
    # 16 steps of 20 ms leave 0.26 s for an exchange: the richest payload fits at
    # 10 Mbit/s but not at 1 Mbit/s, so the very next round must send less per step.
    schedule = make()
    observe(schedule, step_s=0.02, uplink_mbit=10.0)
    fast = schedule.settings_for(1)
    assert (fast.density, fast.bits) == schedule.candidates[0]
    observe(schedule, step_s=0.02, uplink_mbit=1.0)
    slow = schedule.settings_for(2)
    assert payload_bytes(slow.density, slow.bits) / slow.inner_steps < payload_bytes(fast.density, fast.bits) / fast.inner_steps
    assert schedule.exchange_seconds(slow.density, slow.bits) <= slow.inner_steps * 0.02 * schedule.qos.fit_fraction


def test_slow_link_raises_h_up_to_the_limit() -> None:
    schedule = make(max_inner_steps=64)
    observe(schedule, step_s=0.001, uplink_mbit=0.1, rtt_ms=300)
    settings = schedule.settings_for(1)
    assert settings.inner_steps == 64
    assert "exceeds" in settings.reason


def test_a_rise_is_smoothed_but_a_drop_is_taken_at_once() -> None:
    schedule = make(smoothing=0.5)
    observe(schedule, step_s=0.1, uplink_mbit=10.0)
    observe(schedule, step_s=0.1, uplink_mbit=1.0)
    assert schedule.uplink_bytes_per_s == pytest.approx(1e6 / 8)
    observe(schedule, step_s=0.1, uplink_mbit=9.0)
    assert schedule.uplink_bytes_per_s == pytest.approx(0.5 * 9e6 / 8 + 0.5 * 1e6 / 8)


@pytest.mark.parametrize(
    "field,value",
    [("min_inner_steps", 0), ("max_density", 2.0), ("bits_choices", (3,)), ("fit_fraction", 0.0), ("smoothing", 1.5)],
)
def test_invalid_qos_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        QoSConfig(**{field: value})

"""The soak's verdict from hand-made curves, and the sampler on this test's own process."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from globetrain.validation.soak_sampler import FlatnessRule, ProcessSample, read_process, trend

RULE = FlatnessRule()


def curve(rss_mb, fds, *, every_s: float = 5.0) -> list[ProcessSample]:
    return [ProcessSample(i * every_s, "p", 1, int(r * 1024), f) for i, (r, f) in enumerate(zip(rss_mb, fds))]


def test_a_steady_process_with_transient_descriptor_spikes_is_flat() -> None:
    rss = [400.0 + (i % 3) * 0.2 for i in range(120)]
    fds = [11 + (20 if i % 12 == 5 else 0) for i in range(120)]
    verdict = trend(curve(rss, fds), warmup_end=0.0, rule=RULE)
    assert verdict["flat"] is True
    assert verdict["fd_peak_rise"] == 20 and verdict["fd_peak_within_rise"] is False and verdict["fd_rise"] == 0


def test_a_memory_leak_and_a_descriptor_leak_are_caught() -> None:
    minutes = 10
    samples = minutes * 12
    leaking = trend(curve([400.0 + 3.0 * i / 12 for i in range(samples)], [11] * samples), warmup_end=0.0, rule=RULE)
    assert leaking["memory_flat"] is False and leaking["rss_slope_mb_per_minute"] > 2.9
    fd_leak = trend(curve([400.0] * samples, [11 + i // 6 for i in range(samples)]), warmup_end=0.0, rule=RULE)
    assert fd_leak["memory_flat"] is True and fd_leak["fds_bounded"] is False


def test_samples_before_the_warm_up_do_not_count() -> None:
    rss = [50.0 + 10 * i for i in range(24)] + [400.0] * 60
    verdict = trend(curve(rss, [11] * 84), warmup_end=24 * 5.0, rule=RULE)
    assert verdict["flat"] is True and verdict["samples_after_warmup"] == 60
    assert trend(curve([1.0] * 2, [1] * 2), warmup_end=0.0, rule=RULE)["flat"] is None


@given(st.floats(0.5, 2000.0), st.floats(-0.5, 0.5))
def test_a_small_percent_growth_of_a_small_process_passes_whatever_its_size(base: float, wobble: float) -> None:
    rss = [base * (1 + 0.02 * i / 120) + wobble for i in range(121)]
    assert trend(curve(rss, [9] * 121), warmup_end=0.0, rule=RULE)["memory_flat"] is True


def test_the_sampler_reads_this_process() -> None:
    name, rss_kb, fds = read_process(os.getpid())
    assert name and rss_kb > 10_000 and fds >= 3
    assert read_process(2**22 + 12345) is None

"""Fleet numbers from round lines: dense all-reduce bytes, exchanges, compute fraction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from globetrain.report.summary import dense_allreduce_bytes, summarize_fleet


def round_line(device: str, round_index: int, *, steps: int = 10, compute: float = 4.5, wait: float = 0.1,
               round_s: float = 5.0, sent: int = 1000, received: int = 2000, status: str = "applied") -> dict:
    return {
        "event": "round", "t": 1000.0 + 5 * round_index, "device": device, "round": round_index,
        "inner_steps": steps, "samples": 16 * steps, "compute_s": compute, "wait_s": wait, "round_s": round_s,
        "bytes_sent": sent, "bytes_received": received, "density": 0.01, "bits": 8, "status": status,
        "contributed": steps > 0,
        "applied": [] if status == "pending" else [{"round": round_index - 1, "status": status, "contributors": 2}],
    }


def test_dense_bytes_are_a_fp32_ring_allreduce_of_every_step():
    # 2 (N - 1) / N of the gradient leaves each device per step, 4 bytes per parameter.
    assert dense_allreduce_bytes(10, 4, 1000) == 10 * 2 * 3 / 4 * 4 * 1000
    assert dense_allreduce_bytes(10, 1, 1000) == 0.0  # alone, nothing to all-reduce


def test_fleet_totals_count_bytes_exchanges_and_time_per_device():
    rows = [round_line("a", 0, status="pending"), round_line("a", 1), round_line("a", 2, status="abandoned"),
            round_line("b", 0, status="pending", compute=2.5), round_line("b", 1, status="failed"),
            {"event": "evaluation", "t": 1001.0, "val_accuracy": 0.5}]

    totals = summarize_fleet(rows, fleet_size=2, parameters=1000)

    a, b = totals.devices
    assert (a.device, a.rounds, a.inner_steps, a.bytes_sent) == ("a", 3, 30, 3000)
    assert (a.exchanges_succeeded, a.exchanges_failed) == (1, 1)
    assert (b.exchanges_succeeded, b.exchanges_failed) == (0, 1)
    summary = totals.to_dict()
    assert summary["bytes_sent_per_device"] == 2500.0
    assert summary["bytes_received_per_device"] == 5000.0
    assert summary["dense_bytes_per_device"] == pytest.approx(dense_allreduce_bytes(25, 2, 1000))
    assert summary["exchanges_succeeded"] == 1 and summary["exchanges_failed"] == 2
    assert summary["compute_fraction"] == pytest.approx((3 * 4.5 + 2.5 + 4.5) / 25.0)


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10), st.floats(0, 10)), min_size=1, max_size=30))
def test_compute_fraction_is_a_fraction_of_active_time(parts):
    rows = [round_line("a", index, compute=compute, wait=wait, round_s=compute + wait + other)
            for index, (compute, wait, other) in enumerate(parts)]
    fraction = summarize_fleet(rows, fleet_size=4, parameters=10).compute_fraction
    assert 0.0 <= fraction <= 1.0 + 1e-9


def test_wire_bytes_are_summed_and_unknown_once_a_line_lacks_them():
    def with_wire(line: dict, sent: int | None) -> dict:
        return {**line, "wire_bytes_sent": sent, "wire_bytes_received": None if sent is None else 2 * sent}

    rows = [with_wire(round_line("a", 0), 1500), with_wire(round_line("a", 1), 2500),
            with_wire(round_line("b", 0), 1000), with_wire(round_line("b", 1), 3000)]
    summary = summarize_fleet(rows, fleet_size=2, parameters=1000).to_dict()
    assert summary["wire_bytes_sent_per_device"] == 4000.0
    assert summary["wire_bytes_received_per_device"] == 8000.0
    assert summary["dense_over_wire_sent"] == pytest.approx(summary["dense_bytes_per_device"] / 4000.0, rel=1e-3)

    # Older lines (no field) or a peer without kernel counters: the total is unknown, not low.
    rows[2] = round_line("b", 0)
    summary = summarize_fleet(rows, fleet_size=2, parameters=1000).to_dict()
    assert summary["wire_bytes_sent_per_device"] is None and summary["dense_over_wire_sent"] is None
    assert summary["bytes_sent_per_device"] == 2000.0

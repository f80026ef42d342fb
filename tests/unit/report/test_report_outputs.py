"""Plots and the human-readable report are drawn from the metrics and the summary."""

from __future__ import annotations

from pathlib import Path

from globetrain.report.plots import plot_device_time, plot_progress
from globetrain.report.run_report import render_report, write_report
from globetrain.report.summary import summarize_fleet


def _rows() -> list[dict]:
    rows = []
    for device in ("device-0", "device-1"):
        for round_index in range(4):
            rows.append({
                "event": "round", "t": 100.0 + 5 * round_index, "device": device, "round": round_index,
                "inner_steps": 10, "samples": 160, "compute_s": 4.6, "wait_s": 0.0, "round_s": 5.0,
                "bytes_sent": 5000, "bytes_received": 6000, "density": 0.01, "bits": 8, "status": "applied",
                "applied": [{"round": round_index - 1, "status": "applied", "contributors": 2}],
            })
    return rows


def test_plots_are_written_as_png_files(tmp_path: Path):
    rows = _rows()
    evaluations = [{"event": "evaluation", "t": 110.0, "val_accuracy": 0.4}, {"event": "evaluation", "t": 118.0, "val_accuracy": 0.8}]
    plot_progress(rows, evaluations, tmp_path / "progress.png", start_time=100.0, fleet_size=2, parameters=1000,
                  target_accuracy=0.9)
    plot_device_time(summarize_fleet(rows, fleet_size=2, parameters=1000).devices, tmp_path / "device_time.png")
    for name in ("progress.png", "device_time.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_states_how_the_run_ended_and_its_numbers(tmp_path: Path):
    totals = summarize_fleet(_rows(), fleet_size=2, parameters=1000)
    summary = {"devices": 2, "method": "two-step", "stopped_by": "interrupted", "wall_seconds": 42.0,
               "training_seconds": 20.0, "rounds": 4, "round_period_s": 5.0, "val_accuracy": 0.875,
               "test_accuracy": None, "target_accuracy": 0.9, "model": "tsm-small", "parameters": 1000,
               "data_layout": "non-IID by class", **totals.to_dict()}

    text = render_report(summary, [d.to_dict() for d in totals.devices], ["summary.json", "metrics.jsonl"])

    assert "interrupted (Ctrl+C); this is a partial report" in text
    assert "87.5%" in text and "test accuracy | n/a" in text
    assert "| device-1 | 4 | 40 | 640 |" in text
    write_report(tmp_path / "report.md", summary, [], ["summary.json"])
    assert (tmp_path / "report.md").read_text().startswith("# globetrain demo: 2 devices, two-step")

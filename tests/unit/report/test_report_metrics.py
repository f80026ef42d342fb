"""The metrics files: whole lines only, readable while they grow, and never fatal to training."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from globetrain.report.metrics import MetricsTail, MetricsWriter, read_metrics

records = st.lists(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(st.integers(-10**9, 10**9), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20), st.none()),
        max_size=5,
    ),
    max_size=20,
)


@given(records, st.integers(min_value=0, max_value=5))
def test_a_tail_returns_every_written_record_once_in_order(tmp_path_factory, written, polls_between):
    path = tmp_path_factory.mktemp("tail") / "metrics.jsonl"
    tail = MetricsTail(path)
    seen = []
    with MetricsWriter(path) as writer:
        for index, record in enumerate(written):
            writer.write(record)
            if polls_between and index % polls_between == 0:
                seen += tail.read_new()
    seen += tail.read_new()
    assert seen == written
    assert tail.read_new() == []


def test_an_incomplete_last_line_is_skipped_until_it_is_complete(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"round": 1}\n{"round": 2')  # a crash mid-line, or a line being written now
    tail = MetricsTail(path)

    assert read_metrics(path) == [{"round": 1}]
    assert tail.read_new() == [{"round": 1}]
    with open(path, "ab") as stream:
        stream.write(b"}\n")
    assert tail.read_new() == [{"round": 2}]


def test_read_metrics_filters_by_event_and_skips_garbage_lines(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "round", "round": 0}\nnot json\n[1, 2]\n{"event": "evaluation"}\n')
    assert read_metrics(path, event="round") == [{"event": "round", "round": 0}]
    assert len(read_metrics(path)) == 2
    assert read_metrics(tmp_path / "missing.jsonl") == []


def _append_many(path: str, writer_id: int, count: int) -> None:
    with MetricsWriter(path) as writer:
        for index in range(count):
            writer.write({"writer": writer_id, "index": index, "padding": "x" * 200})


def test_lines_of_concurrent_writer_processes_never_interleave(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(path), writer_id, 300)) for writer_id in range(3)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(timeout=60)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    lines = path.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is whole JSON
    for writer_id in range(3):
        assert [row["index"] for row in parsed if row["writer"] == writer_id] == list(range(300))


def test_an_unwritable_metrics_file_warns_once_and_lets_training_go_on(tmp_path: Path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the metrics folder should be")
    writer = MetricsWriter(blocker / "metrics.jsonl")
    writer.write({"round": 1})
    writer.write({"round": 2})
    assert not writer.working
    # levelno, not levelname: importing hivemind renames WARNING to "WARN" process-wide.
    assert [record.levelno for record in caplog.records] == [logging.WARNING]
    assert "training goes on" in caplog.records[0].getMessage()


def test_a_full_disk_mid_run_turns_metrics_off_with_one_warning(tmp_path: Path, caplog, monkeypatch):
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    writer.write({"round": 1})

    def full(descriptor: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    writer.write({"round": 2})
    writer.write({"round": 3})
    monkeypatch.undo()
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"round": 1}]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

"""The hostile run, reduced: a real demo fleet with a rogue, wrong-key peers and a late joiner.

``python -m globetrain.validation.hostile`` with two honest devices and a short budget
(no honest reference run): every attack the rogue sent must be counted with its peer id
by the honest peers, the wrong-key device must fail to join, the wrong-key attacker must
open nothing, the late joiner must get a state despite the rogue's poisoned one, and
every honest process must exit 0 with a finite model. The runner ends its children
itself (SIGTERM to it, then SIGKILL to any process of this test that is left).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 420


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line mentions ``text`` (this test's folder): what it started."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                if text.encode() in stream.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture
def hostile_report(tmp_path: Path):
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(tmp_path / "hostile.out", "wb") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "globetrain.validation.hostile", "--no-honest-reference", "--devices", "2",
             "--budget", "16", "--start-delay", "15", "--late-join-round", "2", "--out", str(out),
             "--runs", str(tmp_path / "runs")],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    try:
        code = runner.wait(timeout=RUN_TIMEOUT_S)
        yield code, out, (tmp_path / "hostile.out").read_text(errors="replace")
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGTERM)  # the runner stops its fleet in order
            with contextlib.suppress(subprocess.TimeoutExpired):
                runner.wait(timeout=30)
        for pid in processes_mentioning(str(tmp_path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_attacks_are_refused_counted_with_the_sender_and_change_nothing(hostile_report) -> None:
    code, out, output = hostile_report
    assert (out / "hostile.json").is_file(), output[-4000:]
    report = json.loads((out / "hostile.json").read_text())
    failed = [name for name, ok in report["verdicts"].items() if not ok]
    assert failed == [], (failed, json.dumps(report["findings"], indent=1)[:6000])
    assert code == 0
    rogue = report["findings"]["rogue"]
    counted = rogue["refusals_counted_by_reason"]
    for reason in ("contribution/non-finite", "contribution/corrupt", "contribution/bad-tag", "contribution/stale-round"):
        assert counted.get(reason, 0) >= 1, counted
    assert report["findings"]["wrong_key"]["attacker_report"]["answers_opened"] == 0
    assert report["findings"]["honest"]["exit_codes"]["device-late"] == 0
    assert report["hostile_run"]["final_model_finite"] is True
    assert (out / "hostile.png").stat().st_size > 0

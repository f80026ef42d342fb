"""The shaped validation, reduced: a bootstrap and 2 devices, each in its own namespace (root only).

One case runs once for the module (the debug recipe, ~20 s of training on shaped links of
1 and 2 Mbit/s behind delay relays); the tests then check what it left: rounds completed
and applied with shaping on, interface counters against the devices' reported bytes, and
no namespace of the run left behind.

Without root (or without working labs) the module is skipped with the reason, unless
GLOBETRAIN_REQUIRE_NETNS=1 (CI) makes that a failure.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from globetrain.fleet.app.signals import StopSignals
from globetrain.netlab import list_namespaces, support_problem
from globetrain.report.metrics import read_metrics
from globetrain.validation.shaped_case import Case, CaseRecording, ShapedSettings, analyze_case, run_case

pytestmark = [pytest.mark.integration, pytest.mark.timeout(280)]

SETTINGS = ShapedSettings(devices=2, preset="debug", target_accuracy=0.9, time_budget_s=20.0, min_training_s=0.0,
                          counter_every_s=1.0)
CASE = Case("two-step", shaped=True)


def _require_labs() -> None:
    problem = support_problem()
    if problem is None:
        return
    message = f"network lab unavailable: {problem}"
    if os.environ.get("GLOBETRAIN_REQUIRE_NETNS") == "1":
        pytest.fail(f"{message} (GLOBETRAIN_REQUIRE_NETNS=1: this run must exercise the shaped validation)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def shaped_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[CaseRecording, dict[str, Any]]:
    _require_labs()
    root = tmp_path_factory.mktemp("shaped")
    # The dataset and clip cache go to the test's folder: nothing outside it is touched.
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(root / "cache-home")
    try:
        with StopSignals() as signals:
            recording = run_case(CASE, SETTINGS, root / "runs", signals=signals, console=Console(stderr=True, width=100))
    finally:
        if previous is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = previous
    return recording, analyze_case(CASE, recording, SETTINGS)


def test_no_namespace_or_process_of_the_run_is_left(shaped_run: tuple[CaseRecording, dict[str, Any]]) -> None:
    recording, _ = shaped_run
    assert recording.lab_prefix.startswith("gt")
    assert list_namespaces(recording.lab_prefix) == []
    joined = [row for row in read_metrics(recording.out / "metrics.jsonl") if row.get("event") in ("joined", "started")]
    pids = [int(row["pid"]) for row in joined] + [int(row["daemon_pid"]) for row in joined if row.get("daemon_pid")]
    assert pids, "no process of the run wrote its pid"
    assert not [pid for pid in pids if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_rounds_complete_and_apply_with_shaping_on(shaped_run: tuple[CaseRecording, dict[str, Any]]) -> None:
    recording, result = shaped_run
    assert result["error"] is None, result["error"]
    assert recording.profile.host("dev0").uplink_mbit == 1.0  # the profile's slowest uplink was in force
    rows = read_metrics(recording.out / "metrics.jsonl")
    for device in ("device-0", "device-1"):
        rounds = [row for row in rows if row.get("source") == device and row.get("event") == "round"]
        assert len(rounds) >= 3, f"{device} completed {len(rounds)} rounds"
        assert any(row["status"] == "applied" for row in rounds), f"{device} applied no aggregate"
        assert sum(row["bytes_sent"] for row in rounds) > 0


def test_interface_counters_carry_at_least_what_the_devices_report(
    shaped_run: tuple[CaseRecording, dict[str, Any]],
) -> None:
    _, result = shaped_run
    comparisons = {entry["device"]: entry for entry in result["bytes"]}
    assert set(comparisons) == {"device-0", "device-1"}
    for entry in comparisons.values():
        # The kernel counts every frame the host sent: never less than the fleet streams' bytes
        # (allowing 2 % for the counters being read between two samples).
        assert entry["streams_sent"] > 0
        assert entry["counter_sent"] >= 0.98 * entry["streams_sent"], entry


def test_interface_counters_within_tolerance_of_reported_bytes(shaped_run: tuple[CaseRecording, dict[str, Any]]) -> None:
    # Devices report everything their daemon's sockets carried (kernel counters), headers included.
    _, result = shaped_run
    assert result["bytes"] and all(entry["reported_from"] == "wire" for entry in result["bytes"]), result["bytes"]
    assert all(entry["within_tolerance"] for entry in result["bytes"]), result["bytes"]

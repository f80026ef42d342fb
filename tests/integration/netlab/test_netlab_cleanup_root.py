"""Nothing of a lab is left behind: body raises, SIGTERM, SIGINT, SIGKILL + cleanup_stale (root only)."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from globetrain.netlab.lab import Lab
from globetrain.netlab.state import cleanup_stale, list_namespaces, process_start_ticks, remove_run

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("lab_support")]
TIMEOUT_S = 30.0

# The owner: builds a lab with two hosts, starts a long sleeper in one, says so, then
# blocks on stdin until a signal ends it.
OWNER = """
import json, sys
from globetrain.netlab import Lab
with Lab() as lab:
    host = lab.add_host("dev0", uplink_mbit=5)
    lab.add_host("dev1")
    sleeper = host.popen(["sleep", "300"])
    print(json.dumps({"run_id": lab.run_id, "prefix": lab.prefix, "sleeper": sleeper.pid}), flush=True)
    sys.stdin.read()
"""


@contextmanager
def lab_owner() -> Iterator[tuple[subprocess.Popen, dict[str, Any]]]:
    """A separate process that owns a lab; whatever happens, it and its lab are gone afterwards."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    info: dict[str, Any] = {}
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(owner.stdout, selectors.EVENT_READ)
            assert selector.select(TIMEOUT_S), "the lab owner did not start in time"
        line = owner.stdout.readline()
        assert line, f"the lab owner failed: {owner.stderr.read()}"
        info = json.loads(line)
        yield owner, info
    finally:
        owner.kill()
        owner.wait(TIMEOUT_S)
        if info:
            # Never leave a failed test's lab; this also ends the sleeper, which holds the
            # owner's output pipes open.
            remove_run(info["run_id"])
        owner.communicate(timeout=TIMEOUT_S)


def test_the_lab_is_removed_when_its_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with Lab() as lab:
            lab.add_host("dev0").popen(["sleep", "300"])
            sleeper = lab.add_host("dev1").popen(["sleep", "300"])
            raise RuntimeError("boom")

    assert list_namespaces(lab.prefix) == []
    assert sleeper.poll() is not None


def test_a_lab_left_open_is_removed_at_exit() -> None:
    script = ("from globetrain.netlab import Lab\n"
              "lab = Lab().start()\n"
              "lab.add_host('dev0')\n"
              "print(lab.prefix, flush=True)\n"
              "raise SystemExit('forgot to close the lab')\n")

    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT_S)

    prefix = completed.stdout.strip()
    assert prefix.startswith("gt") and completed.returncode == 1
    assert list_namespaces(prefix) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_owner_removes_its_lab_before_it_ends(signum: int) -> None:
    with lab_owner() as (owner, info):
        assert len(list_namespaces(info["prefix"])) == 3

        owner.send_signal(signum)
        owner.wait(TIMEOUT_S)

        # Ended by the signal itself (Python re-raises an uncaught KeyboardInterrupt as SIGINT).
        assert owner.returncode == -signum
        assert list_namespaces(info["prefix"]) == []
        assert process_start_ticks(info["sleeper"]) is None


def test_cleanup_stale_removes_what_a_sigkilled_owner_left() -> None:
    with lab_owner() as (owner, info):
        owner.kill()
        owner.wait(TIMEOUT_S)
        left = list_namespaces(info["prefix"])
        assert len(left) == 3  # SIGKILL cannot be caught: the leftovers are there...
        assert process_start_ticks(info["sleeper"]) is not None

        removed = cleanup_stale()

        assert set(left) <= set(removed)  # ...until cleanup_stale finds their owner dead
        assert list_namespaces(info["prefix"]) == []
        assert process_start_ticks(info["sleeper"]) is None


def test_cleanup_stale_leaves_live_labs_alone() -> None:
    with lab_owner() as (_, info), Lab(remove_stale=False) as mine:
        mine.add_host("dev0")

        cleanup_stale()

        assert len(list_namespaces(info["prefix"])) == 3
        assert len(list_namespaces(mine.prefix)) == 2

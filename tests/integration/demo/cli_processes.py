"""Test harness: ``globetrain`` commands as real processes on loopback, always ended by the test.

Every process runs in its own session; ``Processes.stop_all`` SIGKILLs each process
group the test started (the process, its libp2p daemon, encoder workers), whatever
happened. Waits are bounded polls of files and exit codes, never sleeps as
synchronisation. The clip cache and the demo's data cache live in the test's folder
(``XDG_CACHE_HOME``), so tests touch nothing outside it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from globetrain.fleet.app.processes import processes_in_group
from globetrain.fleet.keys import new_run_key

LIVENESS_TIMEOUT_S = 120.0
"""Generous: the suite shares two cores, and each process imports torch and starts a daemon."""


class CliProcess:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], output: Path) -> None:
        self.name = name
        self.popen = popen
        self.output_path = output

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout:.0f}s:\n{self.output()[-3000:]}") from None


class Processes:
    """Starts ``python -m globetrain ...`` commands and ends every one of them."""

    def __init__(self, directory: Path, *, run_key: str | None = None) -> None:
        self.directory = directory
        self.run_key = run_key or new_run_key()
        self.started: list[CliProcess] = []
        self.cache_home = directory / "cache-home"

    def environment(self, run_key: str | None = None) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(self.cache_home))
        env["GLOBETRAIN_RUN_KEY"] = run_key if run_key is not None else self.run_key
        return env

    def start(self, name: str, arguments: list[str], *, run_key: str | None = None) -> CliProcess:
        """``python -m globetrain ARGUMENTS`` in its own session."""
        return self.start_python(name, ["-m", "globetrain", *arguments], run_key=run_key)

    def start_python(self, name: str, arguments: list[str], *, run_key: str | None = None) -> CliProcess:
        """``python ARGUMENTS`` (a module or a script) in its own session, output to NAME.out."""
        output = self.directory / f"{name}.out"
        with open(output, "wb") as stream:
            popen = subprocess.Popen(
                [sys.executable, *arguments], stdin=subprocess.DEVNULL, stdout=stream,
                stderr=subprocess.STDOUT, env=self.environment(run_key), start_new_session=True,
            )
        process = CliProcess(name, popen, output)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for process in self.started:
            try:
                process.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def leftovers(self) -> list[int]:
        return [pid for process in self.started for pid in processes_in_group(process.pid)]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def lines(path: Path, event: str | None = None) -> list[dict[str, Any]]:
    """Complete JSON lines of a metrics file (optionally one event)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if event is None or record.get("event") == event:
            out.append(record)
    return out


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

"""Ending processes for good: whole process groups, bounded waits, then SIGKILL.

Processes the lab starts run in their own session (so their process group id is their
pid), and ending them signals the whole group, which also reaches the children a device
process forks (a hivemind peer starts a p2pd daemon, for example). Anything that still
lives inside a lab namespace after that (a child that made its own session) is found by
its network namespace and killed, so that no process keeps a deleted namespace alive.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterable

from globetrain.netlab.commands import run_command, tool_path


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        # The group is gone (or its leader is a zombie we have not reaped yet): fall
        # back to the process itself, which Popen knows how to signal safely.
        if process.poll() is None:
            process.send_signal(signum)


def end_process_groups(processes: Iterable[subprocess.Popen], *, grace_s: float) -> None:
    """SIGTERM every process group, wait up to ``grace_s`` in total, SIGKILL the rest, reap all."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in running:
        # Also after the leader exited: its children may still hold the group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if process.poll() is None:
            process.kill()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass  # unkillable (D state); kill_namespace_processes reports it if it matters


def namespace_pids(namespace: str) -> list[int]:
    """Pids of the processes whose network namespace is ``namespace``."""
    ip = tool_path("ip") or "ip"
    output = run_command([ip, "netns", "pids", namespace], check=False)
    return [int(word) for word in output.split() if word.isdigit()]


def _wait_for_exit(pids: list[int], timeout_s: float) -> list[int]:
    """Wait (without polling loops) until each pid has exited; return those that did not."""
    deadline = time.monotonic() + timeout_s
    survivors = []
    for pid in pids:
        try:
            descriptor = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            poller = select.poll()
            poller.register(descriptor, select.POLLIN)
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not poller.poll(remaining_ms):
                survivors.append(pid)
        finally:
            os.close(descriptor)
    return survivors


def kill_namespace_processes(namespace: str, *, timeout_s: float = 5.0) -> list[int]:
    """SIGKILL every process left in ``namespace``; return the pids that would not die."""
    pids = namespace_pids(namespace)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return _wait_for_exit(pids, timeout_s)

"""Child processes of a local fleet (the demo): started in their own sessions, always ended.

Each child (the bootstrap, a device, the dataset writer) runs in its own session, so its
process group holds it and everything it starts (the libp2p daemon, encoder workers),
and a Ctrl+C in the terminal reaches only the parent, which decides the order of
shutdown: ``stop`` asks every child to leave (SIGTERM: a device saves its checkpoint and
leaves its run), waits a bounded time, then SIGKILLs every process group it started,
stragglers and leftovers alike. Nothing the parent started outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def processes_in_group(group_id: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``group_id`` (Linux /proc)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == group_id:
            found.append(int(entry))
    return found


class ChildProcess:
    """One child in its own session, its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=dict(env),
                start_new_session=True,
            )
        self.pid = self.popen.pid
        self.started = time.monotonic()

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, signum: int) -> None:
        """Signal the child itself (not its group: it ends its own children in order)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    def kill_group(self) -> None:
        """SIGKILL everything left in the child's process group (the child included)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ChildGroup:
    """The children of one parent; ``stop`` ends all of them within its bounds."""

    def __init__(self) -> None:
        self.children: list[ChildProcess] = []

    def start(self, name: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str]) -> ChildProcess:
        child = ChildProcess(name, argv, log_path=log_path, env=env)
        self.children.append(child)
        return child

    def alive(self) -> list[ChildProcess]:
        return [child for child in self.children if child.alive()]

    def stop(self, *, grace_s: float, signum: int = signal.SIGTERM, only: Sequence[ChildProcess] | None = None) -> None:
        """Ask children to leave, wait up to ``grace_s``, then SIGKILL their process groups."""
        targets = list(only) if only is not None else list(self.children)
        try:
            for child in targets:
                child.send(signum)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(child.alive() for child in targets):
                time.sleep(0.05)
        finally:
            # Whatever interrupted the wait (a second Ctrl+C): no child outlives this call.
            self.kill(targets)

    def kill(self, targets: Sequence[ChildProcess] | None = None) -> None:
        """SIGKILL the process groups of ``targets`` (default: all), then reap the children."""
        targets = list(targets) if targets is not None else list(self.children)
        for child in targets:
            # Also for children that exited: a daemon of theirs may linger in the group.
            child.kill_group()
        for child in targets:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=5)

    def leftovers(self) -> list[int]:
        """Processes still alive in any of the children's groups (should be none after ``stop``)."""
        return [pid for child in self.children for pid in processes_in_group(child.pid)]

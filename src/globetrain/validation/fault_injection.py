"""Carrying out a fault plan against a running local fleet, and undoing what must not outlive it.

``FaultInjector`` runs on a thread from round 0 on and applies each ``FaultEvent`` of the
plan at its time to the processes of a ``ValidationRun`` (SIGKILL of a process group, a
restart with ``--resume`` and no join address, SIGSTOP/SIGCONT of a group, filling and
freeing a device's checkpoint folder). ``close`` undoes what is still in force, whatever
happened: stopped groups get SIGCONT (so they can save and leave), the filler file goes.

``SmallFolder`` is the checkpoint folder of the filled device: a tmpfs of a few MB
mounted over the device's run folder before it starts (root only). ``fill`` leaves a
little room, enough for the device's metrics and log lines but not for a checkpoint: a
disk that is nearly full, as on an SD card, and the case the checkpointer must survive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from globetrain.errors import GlobetrainError
from globetrain.fleet.app.processes import ChildProcess
from globetrain.validation.fault_plan import FaultEvent, resume_argv
from globetrain.validation.lab_run import ValidationRun

log = logging.getLogger(__name__)

FILLER_NAME = ".validation-filler"
ROOM_LEFT_BYTES = 256 * 1024
"""What ``fill`` leaves free: room for metrics and log lines of the rest of the run, not for a checkpoint."""


class FaultSetupError(GlobetrainError):
    """A fault could not be prepared (e.g. mounting the small folder needs root)."""


class SmallFolder:
    """A tmpfs of ``size_mb`` mounted on ``path`` (created empty); ``unmount`` keeps its files."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.mounted = False

    def mount(self) -> SmallFolder:
        self.path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755", "tmpfs", str(self.path)],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise FaultSetupError(f"cannot mount a {self.size_mb} MB tmpfs on {self.path} (needs root): "
                                  f"{result.stderr.strip() or result.returncode}")
        self.mounted = True
        return self

    def fill(self, *, leave_bytes: int = ROOM_LEFT_BYTES) -> int:
        """Write a filler file until only ``leave_bytes`` are free; returns the bytes written."""
        free = os.statvfs(self.path)
        room = free.f_bavail * free.f_frsize - leave_bytes
        written = 0
        chunk = b"\0" * (1 << 20)
        with open(self.path / FILLER_NAME, "ab") as filler:
            while written < room:
                try:
                    written += filler.write(chunk[: min(len(chunk), room - written)])
                    filler.flush()
                except OSError:
                    break  # full already (the device wrote meanwhile): that is the point
        return written

    def free(self) -> None:
        (self.path / FILLER_NAME).unlink(missing_ok=True)

    def unmount(self) -> None:
        """Copy the files out, unmount, put them back in the (now plain) folder."""
        if not self.mounted:
            return
        self.free()
        keep = Path(tempfile.mkdtemp(prefix="gt-small-folder-"))
        try:
            shutil.copytree(self.path, keep, dirs_exist_ok=True)
            result = subprocess.run(["umount", str(self.path)], capture_output=True, text=True, timeout=30)
            if result.returncode != 0:
                # Busy (a process still inside): detach it now, it goes when the last user does.
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True, text=True, timeout=30)
            self.mounted = False
            shutil.copytree(keep, self.path, dirs_exist_ok=True)
        finally:
            shutil.rmtree(keep, ignore_errors=True)


def _group_signal(child: ChildProcess, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


class FaultInjector:
    """Applies ``events`` to ``run``'s processes from round 0 on; every outcome is recorded."""

    def __init__(self, run: ValidationRun, events: Sequence[FaultEvent], *, small_folders: dict[str, SmallFolder],
                 clock: Callable[[], float] = time.time) -> None:
        self.run = run
        self.events = list(events)
        self.small_folders = small_folders
        self.clock = clock
        self.applied: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped_groups: dict[str, ChildProcess] = {}

    def start_at(self, round_zero: float) -> None:
        """The ``at_round_zero`` hook of the run."""
        self._thread = threading.Thread(target=self._apply_all, args=(round_zero,), name="faults", daemon=True)
        self._thread.start()

    def _current(self, name: str) -> ChildProcess:
        for child in reversed(self.run.children.children):
            if child.name == name:
                return child
        raise LookupError(f"no process named {name!r} in this run")

    def _apply_all(self, round_zero: float) -> None:
        for event in self.events:
            if self._stop.wait(max(round_zero + event.at_s - self.clock(), 0.0)):
                return
            record: dict[str, Any] = {**event.to_dict(), "applied_at_s": None, "error": None}
            try:
                record.update(self._apply(event))
            except Exception as error:  # noqa: BLE001 - recorded; one failed fault must not end the run
                record["error"] = f"{type(error).__name__}: {error}"
                log.warning("fault %s on %s failed: %s", event.kind, event.target, record["error"])
            record["applied_at_s"] = round(self.clock() - round_zero, 3)
            self.applied.append(record)

    def _apply(self, event: FaultEvent) -> dict[str, Any]:
        if event.kind == "kill":
            child = self._current(event.target)
            _group_signal(child, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=10)
            return {"pid": child.pid, "exit": child.returncode}
        if event.kind == "restart":
            old = self._current(event.target)
            new = self.run.children.start(event.target, resume_argv(old.argv), log_path=old.log_path,
                                          env=self.run.child_env)
            return {"pid": new.pid, "argv_tail": new.argv[-6:]}
        if event.kind == "stop":
            child = self._current(event.target)
            _group_signal(child, signal.SIGSTOP)
            self._stopped_groups[event.target] = child
            return {"pid": child.pid}
        if event.kind == "continue":
            child = self._stopped_groups.pop(event.target, None) or self._current(event.target)
            _group_signal(child, signal.SIGCONT)
            return {"pid": child.pid, "alive": child.alive()}
        if event.kind == "fill":
            return {"filler_bytes": self.small_folders[event.target].fill()}
        if event.kind == "free":
            self.small_folders[event.target].free()
            return {}
        raise ValueError(f"unknown fault kind {event.kind!r}")

    def close(self) -> None:
        """Stop applying; continue stopped groups; free filled folders."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        for child in self._stopped_groups.values():
            _group_signal(child, signal.SIGCONT)
        self._stopped_groups.clear()
        for folder in self.small_folders.values():
            folder.free()

"""Who owns which lab namespaces, and removing those whose owner died.

Before a lab creates its first namespace it writes a state file
``<state dir>/<run-id>.json`` with the owner's pid and the owner's start time (so a
recycled pid is not mistaken for the owner). The file is removed only after every
namespace of the run is gone. Hence, for any namespace named ``gt<run-id>-*``:

- state file present, owner alive: a live lab; never touched;
- state file present, owner dead (SIGKILL, OOM, power cut of a VM): a leftover;
- no state file: a leftover whose state was lost (the state directory was wiped).

``cleanup_stale`` removes the leftovers: it kills the processes still running inside
them, deletes the namespaces (which destroys their veth cables and the switch with them)
and then the state file. The state directory lives on /run, a tmpfs cleared at boot just
like the /run/netns mounts it describes; every lab on a machine must use the same one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from globetrain.netlab.commands import run_command, run_json, tool_path
from globetrain.netlab.errors import LabError
from globetrain.netlab.naming import HUB_NAME, NAMESPACE_FAMILY, run_id_of, run_prefix
from globetrain.netlab.processes import kill_namespace_processes

logger = logging.getLogger(__name__)

STATE_DIR_ENV = "GLOBETRAIN_NETLAB_STATE_DIR"


def default_state_dir() -> Path:
    """$GLOBETRAIN_NETLAB_STATE_DIR, else /run/globetrain-netlab, else <tmp>/globetrain-netlab."""
    configured = os.environ.get(STATE_DIR_ENV)
    if configured:
        return Path(configured)
    if os.access("/run", os.W_OK):
        return Path("/run/globetrain-netlab")
    return Path(tempfile.gettempdir()) / "globetrain-netlab"


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], int(fields[19])
    if state in ("Z", "X"):
        return None  # killed, not yet reaped: it will never clean up after itself
    return start_ticks


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """The state file of one lab run."""

    run_id: str
    owner_pid: int
    owner_start_ticks: int
    created_unix: float

    @classmethod
    def for_this_process(cls, run_id: str) -> RunRecord:
        pid = os.getpid()
        ticks = process_start_ticks(pid)
        assert ticks is not None, "the running process always has a /proc entry"
        return cls(run_id=run_id, owner_pid=pid, owner_start_ticks=ticks, created_unix=time.time())

    @staticmethod
    def path(state_dir: Path, run_id: str) -> Path:
        return state_dir / f"{run_id}.json"

    def save(self, state_dir: Path) -> Path:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            target = self.path(state_dir, self.run_id)
            temporary = target.with_suffix(".tmp")
            temporary.write_text(json.dumps(dataclasses.asdict(self)))
            os.replace(temporary, target)  # never a half-written state file
        except OSError as error:
            raise LabError(
                f"cannot write the lab state file in {state_dir}: {error}; "
                f"set {STATE_DIR_ENV} to a writable directory"
            ) from error
        return target

    @classmethod
    def load(cls, path: Path) -> RunRecord | None:
        """The record in ``path``, or None if it vanished meanwhile or is unreadable."""
        try:
            data = json.loads(path.read_text())
            return cls(
                run_id=str(data["run_id"]),
                owner_pid=int(data["owner_pid"]),
                owner_start_ticks=int(data["owner_start_ticks"]),
                created_unix=float(data["created_unix"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("ignoring unreadable lab state file %s: %s", path, error)
            return None

    def owner_alive(self) -> bool:
        return process_start_ticks(self.owner_pid) == self.owner_start_ticks


def list_namespaces(prefix: str = NAMESPACE_FAMILY) -> list[str]:
    """Names of the network namespaces (as listed by `ip netns`) that start with ``prefix``."""
    ip = tool_path("ip") or "ip"
    entries = run_json([ip, "-json", "netns", "list"])
    return sorted(entry["name"] for entry in entries if entry.get("name", "").startswith(prefix))


def remove_run_namespaces(run_id: str) -> list[str]:
    """Kill the processes in, and delete, every namespace of ``run_id``; return those deleted.

    Host namespaces go first and the switch last, so no host is ever left attached to a
    half-removed switch. Raises ``LabError`` if a namespace could not be removed.
    """
    ip = tool_path("ip") or "ip"
    prefix = run_prefix(run_id)
    hub = prefix + HUB_NAME
    names = sorted(list_namespaces(prefix), key=lambda name: name == hub)
    removed, problems = [], []
    for name in names:
        unkillable = kill_namespace_processes(name)
        if unkillable:
            problems.append(f"{name}: processes {unkillable} survived SIGKILL")
        run_command([ip, "netns", "delete", name], check=False)
        removed.append(name)
    left = set(list_namespaces(prefix))
    if left:
        problems.append(f"`ip netns delete` left {sorted(left)}")
    if problems:
        raise LabError(
            "could not remove every lab namespace (" + "; ".join(problems) + "); "
            "run `python -m globetrain.netlab cleanup` as root to retry"
        )
    return [name for name in removed if name not in left]


def cleanup_stale() -> list[str]:
    """Remove the namespaces of lab runs whose owner process is dead; return their names.

    Safe to call while other labs run: namespaces of live owners are never touched.
    """
    state_dir = default_state_dir()
    # List the namespaces before reading the records: a lab writes its record before its
    # first namespace, so every namespace seen here whose run has no record (read
    # afterwards) is truly orphaned, never a lab that was starting up meanwhile.
    named_runs = {run_id_of(name) for name in list_namespaces(NAMESPACE_FAMILY)} - {None}
    records = {}
    if state_dir.is_dir():
        for path in state_dir.glob("*.json"):
            record = RunRecord.load(path)
            if record is not None:
                records[record.run_id] = record
    live_runs = {run_id for run_id, record in records.items() if record.owner_alive()}
    stale_runs = (named_runs | set(records)) - live_runs
    removed: list[str] = []
    for run_id in sorted(stale_runs):
        names = remove_run(run_id)
        if names:
            logger.warning("removed leftover lab namespaces of dead run %s: %s", run_id, names)
        removed.extend(names)
    return removed


def remove_run(run_id: str) -> list[str]:
    """Remove one run's namespaces, then its state file, whoever owns it; return the namespaces."""
    names = remove_run_namespaces(run_id)
    RunRecord.path(default_state_dir(), run_id).unlink(missing_ok=True)
    return names

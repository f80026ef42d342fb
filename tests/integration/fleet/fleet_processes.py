"""Test harness: fleet peers as real processes on loopback, always ended by the test.

Every peer (``python -m globetrain.fleet.testpeer``) runs in its own session, so its
process group holds it and its libp2p daemon; ``Fleet.stop_all`` SIGKILLs every group
the test started, whatever happened. Peers report through JSON-lines status files,
which the test polls with bounded waits (``wait_for``).
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

from globetrain.fleet.keys import new_run_key

LIVENESS_TIMEOUT_S = 90.0


class PeerProcess:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], status: Path, stderr: Path) -> None:
        self.name = name
        self.popen = popen
        self.status = status
        self.stderr_path = stderr

    def events(self) -> list[dict[str, Any]]:
        if not self.status.exists():
            return []
        rows = []
        for line in self.status.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass  # a line being written right now
        return rows

    def event(self, name: str) -> dict[str, Any] | None:
        found = [e for e in self.events() if e["event"] == name]
        return found[-1] if found else None

    def rounds(self) -> dict[int, dict[str, Any]]:
        return {e["round"]: e for e in self.events() if e["event"] == "round"}

    def applied(self) -> dict[int, dict[str, Any]]:
        """Round -> its ``applied`` entry (status, contributors...), over the whole run."""
        out: dict[int, dict[str, Any]] = {}
        for record in (e for e in self.events() if e["event"] == "round"):
            for applied in record["applied"]:
                out[applied["round"]] = applied
        return out

    def digests(self) -> dict[int, str]:
        """Processed round -> digest of the global model after it."""
        return {e["digest_round"]: e["digest"] for e in self.events() if e["event"] == "round" and e["digest"]}

    @property
    def peer_id(self) -> str:
        started = self.event("started")
        return started["peer_id"] if started else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def group_pids(self) -> list[int]:
        return pids_in_group(self.popen.pid)

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass


class Fleet:
    """Starts peers of one run (one run key) and ends them all."""

    def __init__(self, directory: Path, *, period: float = 2.0) -> None:
        self.directory = directory
        self.period = period
        self.run_key = new_run_key()
        self.peers: dict[str, PeerProcess] = {}

    def start(self, name: str, arguments: list[str], *, run_key: str | None = None) -> PeerProcess:
        status = self.directory / f"{name}.jsonl"
        stderr = self.directory / f"{name}.stderr"
        env = dict(os.environ, GLOBETRAIN_RUN_KEY=run_key or self.run_key, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        command = [sys.executable, "-m", "globetrain.fleet.testpeer", "--name", name, "--status", str(status), *arguments]
        with open(stderr, "wb") as err:
            popen = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
        peer = PeerProcess(name, popen, status, stderr)
        self.peers[name] = peer
        return peer

    def start_bootstrap(self, *, start_delay: float = 8.0, extra: list[str] | None = None) -> PeerProcess:
        address_file = self.directory / "bootstrap.addr"
        peer = self.start(
            "bootstrap",
            ["--bootstrap", "--address-file", str(address_file), "--period", str(self.period),
             "--start-delay", str(start_delay), *(extra or [])],
        )
        wait_for(lambda: address_file.exists() or not peer.alive(), 30, "the bootstrap to listen")
        assert peer.alive(), f"bootstrap exited: {peer.stderr()}"
        self.bootstrap_address = address_file.read_text().split()[0]
        return peer

    def start_device(self, name: str, index: int, *, rounds: int | None = None, extra: list[str] | None = None,
                     run_key: str | None = None) -> PeerProcess:
        arguments = ["--join", self.bootstrap_address, "--index", str(index)]
        if rounds is not None:
            arguments += ["--rounds", str(rounds)]
        return self.start(name, arguments + (extra or []), run_key=run_key)

    def stop_all(self) -> None:
        for peer in self.peers.values():
            peer.signal_group(signal.SIGKILL)
        for peer in self.peers.values():
            try:
                peer.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def clock(self) -> tuple[float, float]:
        """(t0, T) of the run, from the bootstrap's status."""
        started = self.peers["bootstrap"].event("started")
        assert started is not None
        return started["start_time"], started["period"]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_exit(peer: PeerProcess, timeout: float) -> int:
    try:
        return peer.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{peer.name} did not exit within {timeout:.0f}s") from None


def pids_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _decode_address(hex_address: str) -> str:
    host, _, port = hex_address.partition(":")
    if len(host) == 8:
        octets = bytes.fromhex(host)[::-1]
        return ".".join(str(b) for b in octets) + f":{int(port, 16)}"
    raw = bytes.fromhex(host)
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    import ipaddress

    return f"[{ipaddress.IPv6Address(b''.join(words))}]:{int(port, 16)}"


def inet_sockets(pids: list[int]) -> list[tuple[str, str, str]]:
    """(protocol, local, remote) of every TCP/UDP socket the processes hold."""
    inodes = set().union(*(_socket_inodes(pid) for pid in pids)) if pids else set()
    found = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                found.append((protocol, _decode_address(fields[1]), _decode_address(fields[2])))
    return found


def is_loopback_socket_address(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1") or host.startswith("::ffff:127.")


def is_unbound_remote(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return port == "0" and host.strip("[]") in ("0.0.0.0", "::")

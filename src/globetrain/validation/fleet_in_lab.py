"""Placing the demo's local fleet in a network lab: every peer on its own host, behind its relay.

The demo (``globetrain.fleet.app.demo``) starts its processes through a ``ChildGroup``;
``PlacedChildGroup`` is that group with a placement per process name: the command runs
inside the host's namespace (``ip netns exec``), the peer listens on the namespace's
loopback only, and it announces the address of the delay relay in front of it::

    peer ──TCP──> relay 10.213.0.5:7000 (delay, jitter, stalls, drops) ──> peer 127.0.0.1:7001

so every connection *to* a peer crosses its relay, and everything a peer sends leaves
through its host's shaped ``eth0`` (uplink rate, tc htb). Nothing else about the demo
changes: same presets, same monitor, same reports.

``CounterSampler`` reads every host's interface counters every few seconds during the
run, so the bytes can later be read over exactly the window a device's metrics cover.
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from globetrain.fleet.app.processes import ChildGroup, ChildProcess
from globetrain.netlab import Host, LabError, NetworkProfile, RelayControl, relay_command
from globetrain.netlab.commands import tool_path
from globetrain.validation.accounting import CounterSeries

RELAY_PORT = 7000
"""Where a host's relay listens on the lab network (the address peers dial)."""
PEER_PORT = 7001
"""Where the peer itself listens, on the namespace's loopback (only its relay reaches it)."""
RELAY_READY_TIMEOUT_S = 60.0
"""Generous: a relay imports globetrain on a machine shared by a dozen busy processes."""


def host_for_process(process_name: str) -> str:
    """The lab host of a demo process: ``bootstrap`` -> ``bootstrap``, ``device-3`` -> ``dev3``."""
    if process_name == "bootstrap":
        return "bootstrap"
    prefix, _, index = process_name.rpartition("-")
    if prefix != "device" or not index.isdigit():
        raise ValueError(f"not a demo process name: {process_name!r} (expected 'bootstrap' or 'device-N')")
    return f"dev{int(index)}"


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one peer runs: a namespace, and the relay address it announces."""

    namespace: str
    address: str

    def wrap(self, argv: Sequence[str], *, ip: str = "ip") -> list[str]:
        """``argv`` run inside the namespace, listening on loopback, announcing the relay.

        ``ip netns exec`` execs the command in place (same pid), so the demo's process
        group handling (SIGTERM, then SIGKILL of the group) works unchanged.
        """
        return [
            ip, "netns", "exec", self.namespace, *argv,
            "--host", "127.0.0.1", "--port", str(PEER_PORT),
            "--announce", f"/ip4/{self.address}/tcp/{RELAY_PORT}",
        ]


class PlacedChildGroup(ChildGroup):
    """A ``ChildGroup`` that starts each named process at its placement (others as they are)."""

    def __init__(self, placements: Mapping[str, Placement]) -> None:
        super().__init__()
        self.placements = dict(placements)
        self._ip = tool_path("ip") or "ip"

    def start(self, name: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str]) -> ChildProcess:
        placement = self.placements.get(name)
        if placement is not None:
            argv = placement.wrap(argv, ip=self._ip)
        return super().start(name, argv, log_path=log_path, env=env)


def placements_for(hosts: Mapping[str, Host], devices: int) -> dict[str, Placement]:
    """Placements of the demo's ``bootstrap`` and ``device-0..N-1`` on the lab's hosts."""
    names = ["bootstrap", *(f"device-{index}" for index in range(devices))]
    return {name: Placement(hosts[host_for_process(name)].namespace, hosts[host_for_process(name)].address)
            for name in names}


def start_relays(
    hosts: Mapping[str, Host], profile: NetworkProfile, control_dir: Path, *, delays: bool, seed: int = 0
) -> dict[str, RelayControl]:
    """One delay relay per host (profile delay and jitter, or none), ready to accept connections.

    The relay runs as a process of the lab (``host.popen``), so the lab ends it; its
    control socket lives in ``control_dir`` on the shared filesystem, outside the lab's
    network, so the schedule's changes never compete with the traffic they shape.
    """
    control_dir.mkdir(parents=True, exist_ok=True)
    relays: dict[str, RelayControl] = {}
    for index, spec in enumerate(profile.hosts):
        host = hosts[spec.name]
        control = control_dir / f"{spec.name}.sock"
        control.unlink(missing_ok=True)
        log = open(control_dir / f"{spec.name}.relay.log", "ab")  # noqa: SIM115 - the child owns it from here
        with log:
            host.popen(
                relay_command(
                    listen=f"{host.address}:{RELAY_PORT}", target=f"127.0.0.1:{PEER_PORT}",
                    delay_ms=spec.delay_ms if delays else 0.0, jitter_ms=spec.jitter_ms if delays else 0.0,
                    control=control, seed=seed + index,
                ),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        relays[spec.name] = RelayControl(control)
    for name, relay in relays.items():
        try:
            relay.wait_ready(RELAY_READY_TIMEOUT_S)
        except Exception as error:
            raise LabError(f"the delay relay of host {name} did not start: {error} (log: {control_dir / name}.relay.log)") \
                from error
    return relays


class CounterSampler:
    """Reads every host's interface counters every ``every_s`` seconds on a background thread."""

    def __init__(self, hosts: Mapping[str, Host], *, every_s: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.hosts = dict(hosts)
        self.every_s = every_s
        self.clock = clock
        self.series: dict[str, CounterSeries] = {name: CounterSeries() for name in hosts}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counter-sampler", daemon=True)

    def sample(self) -> None:
        for name, host in self.hosts.items():
            try:
                counters = host.counters()
            except (LabError, OSError) as error:
                # A lab being closed under us: keep what was read, say why the rest is missing.
                self.errors.append(f"{name}: {error}")
                continue
            self.series[name].add(self.clock(), counters.tx_bytes, counters.rx_bytes)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> CounterSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

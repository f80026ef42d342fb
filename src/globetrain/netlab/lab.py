"""``Lab``: hosts in their own network namespaces, cabled to one switch, shaped by tc.

Topology of one lab (run id ``3fa9c1``)::

    gt3fa9c1-dev0                 gt3fa9c1-hub                  gt3fa9c1-dev1
    eth0 10.213.0.2/16 ==veth== to-dev0 ┐                ┌ to-dev1 ==veth== eth0 10.213.0.3/16
      (uplink: htb egress)              └─ br0 (bridge) ─┘ (downlink: htb egress)

- The switch (a Linux bridge) sits in a namespace of its own, not in the root one: the
  lab never adds an interface, address or route to the machine's own network stack,
  so it cannot disturb the machine's connectivity or collide with other labs.
- Each veth pair is created directly with its two ends in the two namespaces, so even
  for a moment no lab interface exists in the root namespace.
- Hosts get one address on the lab subnet and a connected route for it, nothing else:
  no default route, so a process in the lab can reach the lab's hosts and its own
  loopback, and nothing beyond.
- Uplink shaping is htb on the egress of the host's eth0 (what the host sends), downlink
  shaping htb on the egress of the switch port (what the host receives), so no ifb
  redirect is needed. See ``shaping.py``.
- IPv6 address generation is off on lab links: no router solicitations or MLD reports
  add noise to the byte counters.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, NamedTuple

from globetrain.netlab import lifecycle
from globetrain.netlab.commands import run_command, run_json, tool_path
from globetrain.netlab.errors import LabError
from globetrain.netlab.naming import (
    HUB_NAME,
    LAB_SUBNET,
    host_address,
    host_name_problem,
    hub_port_name,
    namespace_name,
    new_run_id,
    run_prefix,
)
from globetrain.netlab.processes import end_process_groups
from globetrain.netlab.shaping import check_rate, set_egress_rate
from globetrain.netlab.state import RunRecord, cleanup_stale, default_state_dir, list_namespaces, remove_run_namespaces

logger = logging.getLogger(__name__)

HOST_INTERFACE = "eth0"
BRIDGE = "br0"
# A home router buffers a few hundred milliseconds of its uplink (see shaping.py).
DEFAULT_QUEUE_MS = 200.0
DEFAULT_STOP_GRACE_S = 5.0


class InterfaceCounters(NamedTuple):
    """Bytes through a host's interface as the kernel counts them (frames incl. headers)."""

    tx_bytes: int
    rx_bytes: int

    def since(self, earlier: InterfaceCounters) -> InterfaceCounters:
        return InterfaceCounters(self.tx_bytes - earlier.tx_bytes, self.rx_bytes - earlier.rx_bytes)


class Host:
    """One machine of the lab: a network namespace with one shaped interface."""

    def __init__(self, lab: Lab, name: str, address: ipaddress.IPv4Interface) -> None:
        self._lab = lab
        self.name = name
        self.namespace = namespace_name(lab.run_id, name)
        self.interface = HOST_INTERFACE
        self.switch_port = hub_port_name(name)
        self.address = str(address.ip)
        self.network = str(address.network)
        self._uplink_mbit: float | None = None
        self._downlink_mbit: float | None = None

    def __repr__(self) -> str:
        return (f"Host({self.name!r}, address={self.address}, uplink_mbit={self._uplink_mbit}, "
                f"downlink_mbit={self._downlink_mbit})")

    @property
    def uplink_mbit(self) -> float | None:
        return self._uplink_mbit

    @property
    def downlink_mbit(self) -> float | None:
        return self._downlink_mbit

    def popen(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` inside this host's namespace (same keywords as ``subprocess.Popen``).

        The process leads a new session, so the lab can end it together with its
        children; the lab ends it when it closes (SIGTERM, a bounded wait, SIGKILL).
        """
        for owned in ("start_new_session", "process_group", "preexec_fn"):
            if owned in popen_kwargs:
                raise TypeError(f"Host.popen sets {owned} itself (the lab owns process groups)")
        if not argv:
            raise ValueError("Host.popen needs a command: argv is empty")
        ip = tool_path("ip") or "ip"
        return self._lab._start_process([ip, "netns", "exec", self.namespace, *argv], popen_kwargs)

    def set_uplink(self, mbit: float | None) -> None:
        """Shape what this host sends to ``mbit`` Mbit/s (None: unshaped); open connections survive."""
        bits = check_rate(mbit, f"{self.name}.uplink_mbit")
        with self._lab._lock:
            self._lab._require_open()
            set_egress_rate(self.namespace, self.interface, bits, queue_ms=self._lab.queue_ms)
            self._uplink_mbit = mbit

    def set_downlink(self, mbit: float | None) -> None:
        """Shape what this host receives to ``mbit`` Mbit/s (None: unshaped)."""
        bits = check_rate(mbit, f"{self.name}.downlink_mbit")
        with self._lab._lock:
            self._lab._require_open()
            set_egress_rate(self._lab.hub_namespace, self.switch_port, bits, queue_ms=self._lab.queue_ms)
            self._downlink_mbit = mbit

    def counters(self) -> InterfaceCounters:
        """Bytes sent and received by this host's interface, from the kernel's own counters.

        These are the counters /sys/class/net/eth0/statistics shows inside the namespace,
        read through netlink (`ip -s -json link`), which needs no process in the namespace.
        """
        ip = tool_path("ip") or "ip"
        links = run_json([ip, "-n", self.namespace, "-s", "-json", "link", "show", "dev", self.interface])
        if not links:
            raise LabError(f"host {self.name}: interface {self.interface} is gone (was the lab closed?)")
        stats = links[0]["stats64"]
        return InterfaceCounters(tx_bytes=int(stats["tx"]["bytes"]), rx_bytes=int(stats["rx"]["bytes"]))


class Lab:
    """A private network of hosts in namespaces; ``with Lab() as lab:`` removes it all at the end.

    Construct, then ``start()`` (done by ``with``), then ``add_host`` per machine. Closing
    ends every process started with ``Host.popen`` and deletes every namespace of the run;
    it also happens at exit and on SIGINT/SIGTERM. A run killed with SIGKILL leaves its
    namespaces; the next ``Lab`` (or ``cleanup_stale``) removes them.
    """

    def __init__(
        self,
        *,
        subnet: str = LAB_SUBNET,
        queue_ms: float = DEFAULT_QUEUE_MS,
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
        remove_stale: bool = True,
    ) -> None:
        try:
            self.subnet = ipaddress.IPv4Network(subnet)
        except ValueError as error:
            raise LabError(
                f"Lab.subnet = {subnet!r} is invalid: expected an IPv4 network like 10.213.0.0/16"
            ) from error
        if not self.subnet.is_private:
            raise LabError(f"Lab.subnet = {subnet!r} is invalid: expected a private (RFC 1918) network")
        if not queue_ms > 0:
            raise LabError(f"Lab.queue_ms = {queue_ms!r} is invalid: expected milliseconds > 0")
        if not stop_grace_s > 0:
            raise LabError(f"Lab.stop_grace_s = {stop_grace_s!r} is invalid: expected seconds > 0")
        self.queue_ms = float(queue_ms)
        self.stop_grace_s = float(stop_grace_s)
        # One state folder per machine (see state.py): not a per-lab choice.
        self.state_dir = default_state_dir()
        self.remove_stale = remove_stale
        self.run_id = ""
        self._lock = threading.RLock()
        self._hosts: dict[str, Host] = {}
        self._processes: list[subprocess.Popen] = []
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def prefix(self) -> str:
        """The prefix of every namespace of this run, ``gt<run-id>-``."""
        return run_prefix(self.run_id)

    @property
    def hub_namespace(self) -> str:
        return namespace_name(self.run_id, HUB_NAME)

    @property
    def hosts(self) -> Mapping[str, Host]:
        return MappingProxyType(self._hosts)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def start(self) -> Lab:
        """Create the switch namespace; first remove leftovers of dead runs (``remove_stale``)."""
        with self._lock:
            if self._started:
                raise LabError("Lab.start was called twice; a lab is started once (`with Lab() as lab:`)")
            if os.geteuid() != 0:
                raise LabError("the network lab needs root (it creates network namespaces): run it as root")
            for tool in ("ip", "tc"):
                if tool_path(tool) is None:
                    raise LabError(f"`{tool}` is not installed; the network lab needs iproute2: install it")
            if self.remove_stale:
                cleanup_stale()
            self.run_id = self._unused_run_id()
            RunRecord.for_this_process(self.run_id).save(self.state_dir)
            self._started = True
            lifecycle.register(self)
            try:
                self._create_switch()
            except BaseException:
                self.close()
                raise
            logger.info("network lab %s started (state %s)", self.prefix, self.state_dir)
            return self

    def close(self) -> None:
        """End the lab's processes and delete its namespaces; safe to call more than once."""
        with self._lock:
            if self._closed or not self._started:
                self._closed = True
                return
            self._closed = True
            with lifecycle.closing():
                try:
                    end_process_groups(self._processes, grace_s=self.stop_grace_s)
                finally:
                    # The state file goes only once the namespaces are gone: if removal
                    # fails, cleanup_stale finds the run by it after this process ends.
                    remove_run_namespaces(self.run_id)
                    RunRecord.path(self.state_dir, self.run_id).unlink(missing_ok=True)
                    lifecycle.unregister(self)
            logger.info("network lab %s removed", self.prefix)

    # ------------------------------------------------------------------ building

    def add_host(self, name: str, *, uplink_mbit: float | None = None,
                 downlink_mbit: float | None = None) -> Host:
        """Create host ``name`` with the next free address, its rates in Mbit/s (None: unshaped)."""
        problem = host_name_problem(name)
        if problem:
            raise LabError(f"host name {name!r} is invalid: expected {problem}")
        check_rate(uplink_mbit, f"{name}.uplink_mbit")
        check_rate(downlink_mbit, f"{name}.downlink_mbit")
        with self._lock:
            self._require_open()
            if name in self._hosts:
                raise LabError(f"host name {name!r} is taken: this lab already has a host of that name")
            try:
                address = host_address(self.subnet, len(self._hosts))
            except ValueError as error:
                raise LabError(str(error)) from error
            host = Host(self, name, address)
            self._cable(host, address)
            self._hosts[name] = host
            host.set_uplink(uplink_mbit)
            host.set_downlink(downlink_mbit)
            return host

    def host(self, name: str) -> Host:
        try:
            return self._hosts[name]
        except KeyError:
            raise LabError(f"this lab has no host {name!r}; its hosts are {sorted(self._hosts)}") from None

    def _require_open(self) -> None:
        if not self._started:
            raise LabError("the lab is not started: use `with Lab() as lab:` or call lab.start() first")
        if self._closed:
            raise LabError(f"the lab {self.prefix} is closed; start a new Lab")

    def _unused_run_id(self) -> str:
        taken_prefixes = list_namespaces()
        for _ in range(100):
            run_id = new_run_id()
            if not RunRecord.path(self.state_dir, run_id).exists() and not any(
                name.startswith(run_prefix(run_id)) for name in taken_prefixes
            ):
                return run_id
        raise LabError("could not find an unused lab run id in 100 tries; run cleanup_stale")

    def _create_switch(self) -> None:
        ip = tool_path("ip") or "ip"
        hub = self.hub_namespace
        run_command([ip, "netns", "add", hub])
        run_command([ip, "-n", hub, "link", "add", BRIDGE, "type", "bridge"])
        run_command([ip, "-n", hub, "link", "set", BRIDGE, "addrgenmode", "none", "up"])

    def _cable(self, host: Host, address: ipaddress.IPv4Interface) -> None:
        ip = tool_path("ip") or "ip"
        hub = self.hub_namespace
        run_command([ip, "netns", "add", host.namespace])
        run_command([ip, "-n", hub, "link", "add", host.switch_port, "type", "veth",
                     "peer", "name", host.interface, "netns", host.namespace])
        # One segment per packet: the shaper's queue limit and accounting are then exact
        # (see shaping.py). addrgenmode none: no IPv6 chatter on the lab links.
        run_command([ip, "-n", hub, "link", "set", host.switch_port, "gso_max_segs", "1",
                     "addrgenmode", "none", "master", BRIDGE, "up"])
        run_command([ip, "-n", host.namespace, "link", "set", "lo", "up"])
        run_command([ip, "-n", host.namespace, "link", "set", host.interface, "gso_max_segs", "1",
                     "addrgenmode", "none"])
        run_command([ip, "-n", host.namespace, "address", "add", str(address), "dev", host.interface])
        run_command([ip, "-n", host.namespace, "link", "set", host.interface, "up"])

    def _start_process(self, argv: list[str], popen_kwargs: dict[str, Any]) -> subprocess.Popen:
        with self._lock:
            self._require_open()
            process = subprocess.Popen(argv, start_new_session=True, **popen_kwargs)
            self._processes.append(process)
            return process


def support_problem() -> str | None:
    """Why labs cannot run here (not root, no iproute2, no namespaces, no htb), or None if they can."""
    if os.geteuid() != 0:
        return f"the network lab needs root (it creates network namespaces); running as uid {os.geteuid()}"
    for tool in ("ip", "tc"):
        if tool_path(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    try:
        with Lab(remove_stale=False) as lab:
            lab.add_host("probe", uplink_mbit=1.0, downlink_mbit=1.0)
    except LabError as error:
        return f"cannot build a network lab here: {error}"
    return None

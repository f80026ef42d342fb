"""Names and addresses of a lab: who owns a namespace can be read from its name alone.

A lab's namespaces are named ``gt<run-id>-<host>`` (``gt3fa9c1-dev3``), with the switch
(bridge) namespace ``gt<run-id>-hub``. The run id is random per ``Lab``, so parallel labs
and leftovers of killed runs are told apart by prefix, and a leftover can be matched to
its state file (see ``state.py``) by the run id in its name.

Addresses come from ``LAB_SUBNET``, 10.213.0.0/16: a private (RFC 1918) block that the
project reserves for its test hosts. Every lab is a closed world (its own switch, no
route out), so parallel labs may reuse the same addresses without meeting each other.
"""

from __future__ import annotations

import ipaddress
import re
import secrets

NAMESPACE_FAMILY = "gt"
RUN_ID_HEX_DIGITS = 6
HUB_NAME = "hub"
LAB_SUBNET = "10.213.0.0/16"

# Host names are part of namespace and interface names: the Linux limit of 15 characters
# per interface name leaves 12 for the host part of the switch port name ("to-<host>").
HOST_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,11}$")
NAMESPACE_PATTERN = re.compile(rf"^{NAMESPACE_FAMILY}(?P<run_id>[0-9a-f]{{{RUN_ID_HEX_DIGITS}}})-(?P<host>[a-z0-9_]+)$")


def new_run_id() -> str:
    return secrets.token_hex(RUN_ID_HEX_DIGITS // 2)


def run_prefix(run_id: str) -> str:
    """The prefix shared by every namespace of one run: ``gt<run-id>-``."""
    return f"{NAMESPACE_FAMILY}{run_id}-"


def namespace_name(run_id: str, host: str) -> str:
    return f"{run_prefix(run_id)}{host}"


def hub_port_name(host: str) -> str:
    """The switch-side end of a host's cable, named after the host for `ip link` readers."""
    return f"to-{host}"


def run_id_of(namespace: str) -> str | None:
    """The run id in a lab namespace name, or None for namespaces that are not the lab's."""
    match = NAMESPACE_PATTERN.match(namespace)
    return match.group("run_id") if match else None


def host_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a lab host, or None if it can."""
    if not isinstance(name, str) or not HOST_NAME_PATTERN.match(name):
        return (
            "1-12 characters: a lowercase letter, then lowercase letters, digits or '_' "
            "(it becomes part of namespace and interface names)"
        )
    if name == HUB_NAME:
        return f"a name other than {HUB_NAME!r} (reserved for the lab's switch namespace)"
    return None


def host_address(subnet: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Interface:
    """The address of the ``index``-th host (0-based): .2, .3, ...; .1 is kept for the switch."""
    first_host = 2
    capacity = subnet.num_addresses - first_host - 1  # minus network, .1 and broadcast
    if not 0 <= index < capacity:
        raise ValueError(f"subnet {subnet} has room for {capacity} hosts; host #{index + 1} does not fit")
    return ipaddress.IPv4Interface(f"{subnet.network_address + first_host + index}/{subnet.prefixlen}")

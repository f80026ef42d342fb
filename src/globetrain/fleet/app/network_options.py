"""Command-line flags for one peer's network, shared by ``bootstrap`` and ``device``.

Defaults are safe: listen on loopback only, no NAT port mapping, no AutoNAT, no relays
(``FleetNetworkConfig``). A real deployment opts in, flag by flag (docs/running-a-fleet.md):

    --host 0.0.0.0 --port 31337 --announce /ip4/203.0.113.7/tcp/31337   # a reachable bootstrap
    --nat-port-map --auto-nat --relay                                    # a device behind NAT

Any other network setting (timeouts) is ``--set network.FIELD=VALUE``.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

from globetrain.errors import ConfigError
from globetrain.fleet.config import FleetNetworkConfig


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("network (safe defaults: loopback only, no NAT traversal, no relays)")
    group.add_argument("--host", default="127.0.0.1",
                       help="IP address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    group.add_argument("--port", type=int, default=0, help="TCP port to listen on (default 0: any free port)")
    group.add_argument("--announce", action="append", default=[], metavar="MULTIADDR",
                       help="address other peers should dial, e.g. /ip4/203.0.113.7/tcp/31337 (repeatable)")
    group.add_argument("--nat-port-map", action="store_true", help="ask the router for a port mapping (UPnP/NAT-PMP)")
    group.add_argument("--auto-nat", action="store_true", help="let other peers probe whether this peer is reachable")
    group.add_argument("--relay", action="store_true",
                       help="allow libp2p circuit relays and look for one (a device behind NAT that cannot be reached)")


def listen_address(host: str, port: int) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"--host {host!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0 or ::)") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port (0-65535)")
    family = "ip4" if address.version == 4 else "ip6"
    return f"/{family}/{address}/tcp/{port}"


def network_config(
    args: argparse.Namespace,
    *,
    initial_peers: tuple[str, ...] = (),
    run_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> FleetNetworkConfig:
    """The peer's network settings from the flags; a run folder keeps its identity and peers file."""
    settings: dict[str, Any] = dict(
        host_maddrs=(listen_address(args.host, args.port),),
        announce_maddrs=tuple(args.announce),
        initial_peers=initial_peers,
        nat_port_map=args.nat_port_map,
        auto_nat=args.auto_nat,
        use_relay=args.relay,
        use_auto_relay=args.relay,
    )
    if run_dir is not None:
        settings["peers_file"] = str(run_dir / "peers.json")
        settings["identity_path"] = str(run_dir / "identity.key")
    settings.update(overrides or {})
    return FleetNetworkConfig.from_dict(settings)

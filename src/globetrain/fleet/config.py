"""Settings of the fleet runtime: the run-wide protocol timing and one peer's network.

Two sections, because they are decided by different people:

- ``FleetConfig`` is part of the run: the bootstrap publishes it (inside the encrypted run
  config) and every device follows the same values, so that all of them agree on when a
  round ends, who leads it and how long anyone waits. Its timeouts are fractions of the
  round period T, so one number (``round_period_s``) scales the whole protocol.
- ``FleetNetworkConfig`` belongs to one peer: where it listens, what it announces, whom
  it joins through, and how long it waits for its own connections.

Settings by symptom (the log line, then the setting to change; docs/fleet-protocol.md):

- ``rejected contribution from NAME (PEER): stale-round`` at a leader, or many
  ``abandoned``/``failed`` rounds on slow links: raise ``FleetConfig.collection_window``
  (or ``round_period_s``, which also gives slow links more compute per round).
- ``round R: no aggregate by the deadline`` on devices with a slow downlink: raise
  ``FleetConfig.aggregate_deadline`` (at most 0.95: the aggregate must arrive before the
  round is due).
- ``leader NAME (PEER) did not answer (...); trying the next candidate`` right after a
  peer died is the protocol working; for peers that are alive, raise
  ``FleetNetworkConfig.connect_timeout_s``.
- ``no run found for this run key at ADDRS: check GLOBETRAIN_RUN_KEY``: the run key
  differs from the bootstrap's, or the addresses are not the run's.
- ``could not reach any peer of the run at ADDRS``: the join address is wrong or dead;
  a ``peers_file`` from an earlier session offers other peers to join through.
- ``state download timed out``: raise ``FleetNetworkConfig.state_download_timeout_s``
  (a slow link and a large model) or ``request_timeout_s`` (one chunk takes longer).
- ``rejected contribution from NAME (PEER): norm-bound`` for honest devices: raise
  ``FleetConfig.norm_kappa`` (devices with very different H or batch sizes).
"""

from __future__ import annotations

import dataclasses

from globetrain.config import ConfigSection, field, require, require_finite_positive

LOOPBACK_LISTEN = ("/ip4/127.0.0.1/tcp/0",)


@dataclasses.dataclass(frozen=True)
class FleetConfig(ConfigSection):
    """Run-wide protocol settings, published by the bootstrap with the run config."""

    round_period_s: float = field(
        30.0,
        help=(
            "T: length of a round's compute window in seconds; round r is [t0 + r*T, t0 + (r+1)*T). "
            "Every protocol timeout below is a fraction of it"
        ),
    )
    collection_window: float = field(
        0.25,
        help=(
            "fraction of T after a round ends during which its leader accepts contributions; "
            "a contribution arriving later is not averaged in (it goes back to its sender's error feedback)"
        ),
    )
    aggregate_deadline: float = field(
        0.85,
        help=(
            "fraction of T after a round ends by which a device must hold the round's aggregate "
            "(from the leader or any peer keeping it); past it the round fails for that device"
        ),
    )
    heartbeat_interval: float = field(
        0.5,
        help=(
            "fraction of T between two roster heartbeats of a peer (announcing it is alive, and "
            "reading the others'); each costs a few KB on the wire, so not more often than needed"
        ),
    )
    roster_ttl: float = field(
        1.25,
        help=(
            "fraction of T a heartbeat keeps a peer in the roster; a peer silent for longer is "
            "dead for leader choice (short, so that a dead leader is replaced within two rounds; "
            "until then, devices that cannot reach it move on to the next candidate)"
        ),
    )
    max_group_size: int = field(
        64,
        help=(
            "most contributions one leader averages per round; later ones get the aggregate "
            "without being in it (their update returns to their error feedback)"
        ),
    )
    norm_kappa: float = field(
        10.0,
        help=(
            "an update whose L2 norm exceeds kappa x the median norm of the round's other updates "
            "and kappa x the running median of accepted norms is rejected (same rule for samples)"
        ),
    )
    norm_history: int = field(32, help="accepted norms the running median is taken over")
    aggregates_kept: int = field(
        4, help="rounds of aggregates every peer keeps and serves to peers that missed one"
    )
    states_kept: int = field(
        2, help="rounds of model state every peer keeps ready for downloads (resume needs 2)"
    )
    aggregate_density_factor: float = field(
        2.0,
        help=(
            "the leader re-encodes the average at this many times the densest contribution's "
            "density (capped at 1); what it drops returns to each contributor's error feedback"
        ),
    )
    bootstrap_may_lead: bool = field(
        False,
        help=(
            "let the bootstrap peer lead rounds; off by default so that its uplink stays free "
            "for state downloads and leader choice does not change when it leaves"
        ),
    )
    uplink_bucket_factor: float = field(
        4.0,
        help=(
            "leader choice compares measured uplinks in buckets of this ratio, so that noise in "
            "measurements does not move leadership around"
        ),
    )
    state_chunk_bytes: int = field(
        1 << 20, help="bytes per chunk of a state download (the unit a download resumes from)"
    )

    def __post_init__(self) -> None:
        name = "fleet"
        require_finite_positive(name, "round_period_s", self.round_period_s)
        require(
            0 < self.collection_window < self.aggregate_deadline <= 0.95,
            name,
            "collection_window/aggregate_deadline",
            (self.collection_window, self.aggregate_deadline),
            "0 < collection_window < aggregate_deadline <= 0.95 (fractions of the round period)",
        )
        require(
            0 < self.heartbeat_interval < self.roster_ttl,
            name,
            "heartbeat_interval/roster_ttl",
            (self.heartbeat_interval, self.roster_ttl),
            "0 < heartbeat_interval < roster_ttl (fractions of the round period)",
        )
        require(
            isinstance(self.max_group_size, int) and self.max_group_size >= 1,
            name, "max_group_size", self.max_group_size, "an integer >= 1",
        )
        require(self.norm_kappa > 1, name, "norm_kappa", self.norm_kappa, "a number > 1")
        require(self.norm_history >= 3, name, "norm_history", self.norm_history, "an integer >= 3")
        require(self.aggregates_kept >= 2, name, "aggregates_kept", self.aggregates_kept, "an integer >= 2")
        require(self.states_kept >= 1, name, "states_kept", self.states_kept, "an integer >= 1")
        require(
            self.aggregate_density_factor >= 1,
            name, "aggregate_density_factor", self.aggregate_density_factor, "a number >= 1",
        )
        require(self.uplink_bucket_factor > 1, name, "uplink_bucket_factor", self.uplink_bucket_factor, "a number > 1")
        require(
            isinstance(self.state_chunk_bytes, int) and 1024 <= self.state_chunk_bytes <= 64 << 20,
            name, "state_chunk_bytes", self.state_chunk_bytes, "an integer between 1024 and 64 MiB",
        )

    # Seconds, for code that waits: the fractions above times the period.
    def seconds(self, fraction: float) -> float:
        return fraction * self.round_period_s


@dataclasses.dataclass(frozen=True)
class FleetNetworkConfig(ConfigSection):
    """One peer's network: safe defaults (loopback only, no NAT traversal, no relays)."""

    host_maddrs: tuple[str, ...] = field(
        LOOPBACK_LISTEN,
        help=(
            "multiaddrs to listen on; the default listens on loopback only. A real deployment "
            "sets e.g. /ip4/0.0.0.0/tcp/31337"
        ),
    )
    announce_maddrs: tuple[str, ...] = field(
        (),
        help=(
            "multiaddrs other peers should dial instead of the listening ones (a public address, "
            "or a relay in front of this peer); explicit ports only"
        ),
    )
    initial_peers: tuple[str, ...] = field(
        (), help="multiaddrs (with /p2p/<peer id>) of running peers of the run to join through"
    )
    peers_file: str = field(
        "",
        help=(
            "file where addresses of peers seen in the roster are kept, so that this peer can "
            "rejoin through any of them when its initial peers are gone ('' = do not keep)"
        ),
    )
    identity_path: str = field(
        "", help="file holding this peer's libp2p private key (a stable peer id across restarts; '' = new each start)"
    )
    nat_port_map: bool = field(False, help="ask the router for a port mapping (UPnP/NAT-PMP); opt-in")
    auto_nat: bool = field(False, help="let other peers probe whether this peer is reachable (AutoNAT); opt-in")
    use_relay: bool = field(False, help="allow libp2p circuit relays for this peer's connections; opt-in")
    use_auto_relay: bool = field(False, help="look for relays to become reachable behind NAT; opt-in")
    startup_timeout_s: float = field(20.0, help="longest wait for the libp2p daemon to start")
    connect_timeout_s: float = field(
        5.0, help="longest wait to reach one peer (a dead peer costs at most this per attempt)"
    )
    request_timeout_s: float = field(
        10.0, help="longest wait for one request's answer (an aggregate lookup, a state chunk)"
    )
    state_download_timeout_s: float = field(
        300.0, help="longest a whole state download may take, over every peer it tries"
    )
    shutdown_timeout_s: float = field(
        5.0, help="longest a clean shutdown waits for the network thread and the libp2p daemon"
    )
    dht_rpc_timeout_s: float = field(3.0, help="a DHT request without an answer after this long counts as lost")

    def __post_init__(self) -> None:
        name = "network"
        require(len(self.host_maddrs) > 0, name, "host_maddrs", self.host_maddrs, "at least one multiaddr")
        for what in ("host_maddrs", "announce_maddrs", "initial_peers"):
            for address in getattr(self, what):
                problem = _multiaddr_problem(address)
                require(problem is None, name, what, address, problem or "")
        for address in self.announce_maddrs:
            require(
                "/tcp/0/" not in address + "/" and "/udp/0/" not in address + "/",
                name, "announce_maddrs", address, "an explicit port (port 0 cannot be announced)",
            )
        for address in self.initial_peers:
            require("/p2p/" in address, name, "initial_peers", address, "a multiaddr ending in /p2p/<peer id>")
        for what in (
            "startup_timeout_s",
            "connect_timeout_s",
            "request_timeout_s",
            "state_download_timeout_s",
            "shutdown_timeout_s",
            "dht_rpc_timeout_s",
        ):
            require_finite_positive(name, what, getattr(self, what))


def _multiaddr_problem(address: str) -> str | None:
    from hivemind.utils.multiaddr import Multiaddr

    if not isinstance(address, str) or not address.startswith("/"):
        return "a multiaddr such as /ip4/127.0.0.1/tcp/31337"
    try:
        Multiaddr(address)
    except Exception as error:  # noqa: BLE001 - the multiaddr library raises several types
        return f"a valid multiaddr ({error})"
    return None

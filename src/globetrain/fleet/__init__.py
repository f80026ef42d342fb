"""The fleet runtime's protocol layer: real devices training one model over hivemind.

hivemind gives discovery (its DHT) and transport (libp2p streams); the exchange's timing
is ours: time-based rounds, one leader per round, every wait bounded, compute never
waiting on the network. See docs/fleet-protocol.md for the protocol.

Public API:

- ``RunKeys`` / ``new_run_key`` / ``parse_run_key`` (``keys``): the run key and what it derives;
- ``seal`` / ``open_envelope`` / ``MessageKind`` / ``EnvelopeRejected`` (``envelope``);
- ``FleetConfig`` (run-wide protocol timing), ``FleetNetworkConfig`` (one peer's network);
- ``RunConfig`` / ``RoundClock`` / ``RunNotFound`` (``run``): the published run and its rounds;
- ``FleetPeer`` / ``PeerBook`` (``peer``): hivemind P2P + DHT in a background thread;
- ``Roster`` / ``RosterRecord`` / ``leader_candidates`` (``roster``);
- ``FleetExchange`` (``exchange``): the ``Exchange`` the sync loop uses;
- ``StateSnapshot`` / ``download_state`` (``state``): resumable, verified state download;
- ``RejectionLog`` / ``OutlierBound`` (``checks``);
- ``FleetNode`` (``node``): one peer with all services; ``RoundDriver`` (``driver``): the
  time-based round loop around a ``SyncLoop``.
"""

from globetrain.fleet.checks import OutlierBound, RejectionLog
from globetrain.fleet.config import FleetConfig, FleetNetworkConfig
from globetrain.fleet.driver import RoundDriver
from globetrain.fleet.envelope import Envelope, EnvelopeRejected, MessageKind, open_envelope, seal
from globetrain.fleet.exchange import FleetExchange
from globetrain.fleet.keys import RUN_KEY_ENV, RunKeys, new_run_key, parse_run_key, run_key_from_environment
from globetrain.fleet.node import FleetNode
from globetrain.fleet.peer import FleetPeer, PeerBook, PeerStartError
from globetrain.fleet.roster import Roster, RosterRecord, leader_candidates
from globetrain.fleet.run import RoundClock, RunConfig, RunNotFound
from globetrain.fleet.state import StateDownloadFailed, StateSnapshot, download_state

__all__ = [
    "RUN_KEY_ENV",
    "Envelope",
    "EnvelopeRejected",
    "FleetConfig",
    "FleetExchange",
    "FleetNetworkConfig",
    "FleetNode",
    "FleetPeer",
    "MessageKind",
    "OutlierBound",
    "PeerBook",
    "PeerStartError",
    "RejectionLog",
    "RoundClock",
    "RoundDriver",
    "Roster",
    "RosterRecord",
    "RunConfig",
    "RunKeys",
    "RunNotFound",
    "StateDownloadFailed",
    "StateSnapshot",
    "download_state",
    "leader_candidates",
    "new_run_key",
    "open_envelope",
    "parse_run_key",
    "run_key_from_environment",
    "seal",
]

"""The run: its published config, its identity in the DHT, and its clock of rounds.

The bootstrap creates a run: it picks the start time t0 and publishes ``RunConfig``
(model, method, hyperparameters, the protocol's ``FleetConfig`` with the round period T,
data layout, software version) as an encrypted envelope under the DHT key
``globetrain/<run_id>/config``. Every peer that holds the config re-publishes the same
sealed bytes now and then, so the run outlives its bootstrap.

``RoundClock`` turns wall-clock time into rounds: round r is the compute window
[t0 + r*T, t0 + (r+1)*T); its contributions are collected during the collection window
after it, and its aggregate must be in every device's hands by the aggregate deadline.
Devices' clocks must agree to well within the collection window (NTP does: tens of ms).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import time
from typing import TYPE_CHECKING, Any

from globetrain import __version__
from globetrain.config import ConfigSection, field, require
from globetrain.errors import CorruptPayload, GlobetrainError
from globetrain.fleet.config import FleetConfig
from globetrain.fleet.envelope import EnvelopeRejected, MessageKind, open_envelope, seal
from globetrain.fleet.keys import RUN_KEY_ENV, RunKeys
from globetrain.sync.config import SyncConfig

if TYPE_CHECKING:
    from globetrain.fleet.peer import FleetPeer

MAX_RUN_CONFIG_BYTES = 1 << 20
PROTOCOL_NAMESPACE = "globetrain"


class RunNotFound(GlobetrainError):
    """No run config under this run key's id in the DHT (wrong key or wrong addresses)."""


@dataclasses.dataclass(frozen=True)
class RunConfig(ConfigSection):
    """Everything every device of a run must agree on; published encrypted by the bootstrap."""

    start_time: float = field(help="t0: wall-clock time (Unix seconds) at which round 0 starts")
    fleet: FleetConfig = field(FleetConfig(), help="protocol timing and limits (round period T, windows...)")
    sync: SyncConfig = field(SyncConfig(), help="inner/outer optimisation and compression settings")
    method: str = field("two-step", help="sync method name (globetrain.sync.methods)")
    model: dict[str, Any] = field({}, help="model description, interpreted by the process layer (name, sizes, seed)")
    data: dict[str, Any] = field({}, help="data layout, interpreted by the process layer (dataset, sharding)")
    training: dict[str, Any] = field({}, help="local training (inner optimizer, batch), interpreted by the process layer")
    software_version: str = field(__version__, help="globetrain version of the bootstrap; devices warn on a mismatch")
    run_name: str = field("", help="a human-readable name for logs and reports")

    def __post_init__(self) -> None:
        require(
            isinstance(self.start_time, (int, float)) and math.isfinite(self.start_time) and self.start_time > 0,
            "run", "start_time", self.start_time, "a Unix time in seconds",
        )
        require(isinstance(self.model, dict), "run", "model", self.model, "a mapping")
        require(isinstance(self.data, dict), "run", "data", self.data, "a mapping")
        require(isinstance(self.training, dict), "run", "training", self.training, "a mapping")

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunConfig:
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as error:
            # RecursionError: arrays nested deeper than the interpreter's limit (found by the fuzz).
            raise CorruptPayload(f"run config is not JSON: {str(error)[:200]}") from None
        if not isinstance(parsed, dict):
            raise CorruptPayload("run config is not a JSON object")
        try:
            return cls.from_dict(parsed)
        except (TypeError, OverflowError, RecursionError) as error:
            # A missing required field (TypeError) or an integer beyond float range: found by the fuzz.
            raise CorruptPayload(f"run config has a missing or out-of-range field: {str(error)[:200]}") from None

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON: names this exact config in state downloads."""
        return hashlib.sha256(self.to_json()).hexdigest()

    def clock(self) -> RoundClock:
        return RoundClock(self.start_time, self.fleet)


@dataclasses.dataclass(frozen=True)
class RoundClock:
    """Rounds of a run on the wall clock (``time.time``)."""

    start_time: float
    fleet: FleetConfig

    @property
    def period(self) -> float:
        return self.fleet.round_period_s

    def round_at(self, when: float | None = None) -> int:
        """The round whose compute window contains ``when`` (negative before t0)."""
        moment = time.time() if when is None else when
        return math.floor((moment - self.start_time) / self.period)

    def start_of(self, round_index: int) -> float:
        return self.start_time + round_index * self.period

    def end_of(self, round_index: int) -> float:
        return self.start_time + (round_index + 1) * self.period

    def collection_deadline(self, round_index: int) -> float:
        """Until when the round's leader accepts contributions."""
        return self.end_of(round_index) + self.fleet.seconds(self.fleet.collection_window)

    def aggregate_deadline(self, round_index: int) -> float:
        """Until when a device tries to obtain the round's aggregate."""
        return self.end_of(round_index) + self.fleet.seconds(self.fleet.aggregate_deadline)


def config_key(keys: RunKeys) -> str:
    return f"{PROTOCOL_NAMESPACE}/{keys.run_id_hex}/config"


def roster_key(keys: RunKeys) -> str:
    return f"{PROTOCOL_NAMESPACE}/{keys.run_id_hex}/roster"


def protocol_name(keys: RunKeys, service: str) -> str:
    """libp2p protocol id of one of the run's services (contribute, aggregate, state)."""
    return f"/{PROTOCOL_NAMESPACE}/{keys.run_id_hex[:16]}/{service}/1"


def seal_run_config(keys: RunKeys, config: RunConfig, *, sender: str, name: str = "") -> bytes:
    return seal(keys, MessageKind.RUN_CONFIG, config.to_json(), sender=sender, name=name)


def open_run_config(keys: RunKeys, sealed: bytes) -> RunConfig:
    envelope = open_envelope(keys, sealed, kinds=(MessageKind.RUN_CONFIG,), max_payload_bytes=MAX_RUN_CONFIG_BYTES)
    return RunConfig.from_json(envelope.payload)


def config_expiration(config: RunConfig) -> float:
    """How long a published config lives in the DHT before someone must store it again."""
    return max(3600.0, 20 * config.fleet.round_period_s)


async def publish_run_config(peer: FleetPeer, keys: RunKeys, sealed: bytes, config: RunConfig) -> bool:
    from globetrain.fleet.peer import dht_time

    return await peer.dht_store(config_key(keys), None, sealed, dht_time() + config_expiration(config))


async def fetch_run_config(peer: FleetPeer, keys: RunKeys, *, timeout: float) -> tuple[RunConfig, bytes]:
    """The run's config from the DHT, retried until ``timeout``; ``RunNotFound`` if absent.

    A config that is there but does not open with this key (someone stored garbage under
    the run's id, or the key is wrong but the id was copied) is reported as such.
    """
    deadline = time.monotonic() + timeout
    problem = ""
    while True:
        found = await peer.dht_get(config_key(keys))
        if isinstance(found, bytes):
            try:
                return open_run_config(keys, found), found
            except (EnvelopeRejected, CorruptPayload, GlobetrainError) as error:
                problem = f"; a config is published under this run id but it does not open with this key ({error})"
        if time.monotonic() >= deadline:
            where = ", ".join(peer.joined_through) or "the local peer only (no --join address)"
            raise RunNotFound(f"no run found for this run key at {where}: check {RUN_KEY_ENV}{problem}")
        await asyncio.sleep(min(0.25, max(deadline - time.monotonic(), 0.0)))

"""The roster: who is in the run right now, and who leads each round.

Every peer heartbeats an encrypted ``RosterRecord`` into the DHT under the run's roster
key (one subkey per peer id), every ``heartbeat_interval`` x T, valid for ``roster_ttl``
x T, and reads the roster back at the same pace. Neither walks the DHT (in hivemind's
walk every node that holds the roster answers with all of it): the store goes to the
key's 3 nearest nodes (``FleetPeer.roster_store``), the read merges the entries of the 5
nearest, each sending only what the reader lacks (``FleetPeer.roster_read``, see
``Roster.refresh``). A peer that stops heartbeating (killed, partitioned) drops out of
everyone's view when its last record expires.

Leader choice is a pure function of a roster snapshot and the round (``leader_candidates``):

- eligible: devices (the bootstrap too if ``bootstrap_may_lead``) whose record is alive
  at the round's end and who joined at least one full period before (so every peer has
  long seen their record); if nobody qualifies by age, every alive device does;
- order: best measured uplink bucket first (buckets of ``uplink_bucket_factor``, so that
  measurement noise does not reshuffle leadership), ties broken by
  ``sha256(round, peer id)``, which rotates leadership among equals from round to round.

A record carries its uplink bucket together with the round from which it counts and the
bucket before it; a peer changes its published bucket only after the previous change took
effect, two rounds after publishing. Peers whose views lag by less than two rounds thus
use the same bucket for every round, and choose the same leader.

Views can still differ briefly (a record that has not propagated yet, a leader that died
after serving some peers). A device that cannot reach its chosen leader suspects it (for
this round on, until the suspect heartbeats again) and moves to the next candidate. A
peer aggregates whatever is sent to it, so a split view yields two smaller groups for a
round, not a stall; the model digest in every aggregate then tells diverged devices to
download state.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from globetrain.errors import CorruptPayload
from globetrain.fleet.checks import RejectionLog
from globetrain.fleet.envelope import EnvelopeRejected, MessageKind, open_envelope, seal
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.run import RoundClock, roster_key

if TYPE_CHECKING:
    from globetrain.fleet.peer import FleetPeer

log = logging.getLogger(__name__)

Role = Literal["device", "bootstrap"]
MAX_ROSTER_RECORD_BYTES = 16 << 10
MAX_ADDRESSES = 16
UNKNOWN_BUCKET = -1
LAST_AS_LEADER_BUCKET = 0
"""What a peer that nobody reached as leader publishes: below any real link (>= 4 bytes/s)."""
MAX_BAD_ENTRIES_REMEMBERED = 4096
"""Bad roster entries remembered so each is counted once (a stranger's flood ages out)."""


@dataclasses.dataclass(frozen=True)
class RosterRecord:
    """What one peer says about itself in the roster."""

    peer_id: str
    name: str
    role: Role
    addresses: tuple[str, ...]
    joined_at: float
    """Wall-clock time of the peer's first heartbeat in this run."""
    heartbeat_at: float
    alive_until: float
    active_round: int = -1
    """Last round the peer submitted to (contribution or listen); -1 before its first."""
    uplink_bucket: int = UNKNOWN_BUCKET
    previous_uplink_bucket: int = UNKNOWN_BUCKET
    bucket_from_round: int = 0
    """``uplink_bucket`` counts for rounds >= this one, ``previous_uplink_bucket`` before."""
    state_round: int = -1
    """Newest round of model state the peer serves (-1: none yet)."""
    bytes_sent: int = 0
    bytes_received: int = 0
    """Bytes the peer's protocol streams moved so far (for the fleet view; not trusted for anything)."""
    inner_steps: int = 0
    """Inner steps the peer computed so far (for the fleet view's dense-equivalent bytes)."""

    def bucket_for(self, round_index: int) -> int:
        return self.uplink_bucket if round_index >= self.bucket_from_round else self.previous_uplink_bucket

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RosterRecord:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as error:
            # RecursionError: arrays nested deeper than the interpreter's limit (found by the fuzz).
            raise CorruptPayload(f"roster record is not JSON: {str(error)[:200]}") from None
        if not isinstance(raw, dict):
            raise CorruptPayload("roster record is not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        if set(raw) != names:
            raise CorruptPayload(f"roster record fields {sorted(raw)} are not {sorted(names)}")
        try:
            record = cls(
                peer_id=_text(raw["peer_id"], 64),
                name=_text(raw["name"], 64),
                role=raw["role"] if raw["role"] in ("device", "bootstrap") else _bad("role", raw["role"]),
                addresses=tuple(_text(a, 256) for a in _list(raw["addresses"], MAX_ADDRESSES)),
                joined_at=_number(raw["joined_at"]),
                heartbeat_at=_number(raw["heartbeat_at"]),
                alive_until=_number(raw["alive_until"]),
                active_round=_integer(raw["active_round"]),
                uplink_bucket=_integer(raw["uplink_bucket"]),
                previous_uplink_bucket=_integer(raw["previous_uplink_bucket"]),
                bucket_from_round=_integer(raw["bucket_from_round"]),
                state_round=_integer(raw["state_round"]),
                bytes_sent=_integer(raw["bytes_sent"]),
                bytes_received=_integer(raw["bytes_received"]),
                inner_steps=_integer(raw["inner_steps"]),
            )
        except (TypeError, ValueError, OverflowError) as error:
            # OverflowError: math.isfinite of an integer beyond float range (found by the fuzz).
            raise CorruptPayload(f"roster record has an invalid field: {str(error)[:200]}") from None
        return record


def _bad(what: str, value: Any) -> Any:
    raise ValueError(f"{what}={value!r}")


def _text(value: Any, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"expected a string of at most {limit} characters, got {value!r:.80}")
    return value


def _list(value: Any, limit: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise ValueError(f"expected a list of at most {limit} items")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r:.40}")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 1 << 62:
        raise ValueError(f"expected an integer, got {value!r:.40}")
    return value


def uplink_bucket(bytes_per_s: float | None, factor: float) -> int:
    """Bucket of a measured uplink: floor(log_factor(bytes/s)); -1 when unknown."""
    if bytes_per_s is None or not math.isfinite(bytes_per_s) or bytes_per_s <= 1:
        return UNKNOWN_BUCKET
    return int(math.floor(math.log(bytes_per_s) / math.log(factor)))


def _tie_break(round_index: int, peer_id: str) -> bytes:
    return hashlib.sha256(f"{round_index}:{peer_id}".encode()).digest()


def leader_candidates(
    records: Iterable[RosterRecord],
    round_index: int,
    clock: RoundClock,
    *,
    bootstrap_may_lead: bool = False,
    excluded: Iterable[str] = (),
    alive_at: float | None = None,
) -> list[RosterRecord]:
    """Peers that may lead ``round_index``, best first (the first one is the leader).

    ``alive_at`` is the moment records must be alive at: the round's end (the default,
    when contributors choose), or now, to predict a coming round's leader.
    """
    round_end = clock.end_of(round_index) if alive_at is None else alive_at
    excluded_ids = set(excluded)
    alive = [
        record
        for record in records
        if record.alive_until >= round_end
        and record.peer_id not in excluded_ids
        and (record.role == "device" or (bootstrap_may_lead and record.role == "bootstrap"))
    ]
    seasoned = [record for record in alive if record.joined_at <= clock.start_of(round_index)]
    pool = seasoned or alive
    return sorted(pool, key=lambda r: (-r.bucket_for(round_index), _tie_break(round_index, r.peer_id)))


class Roster:
    """This peer's view of the roster, kept fresh by a heartbeat task on the network loop."""

    def __init__(
        self,
        peer: FleetPeer,
        keys: RunKeys,
        clock: RoundClock,
        *,
        role: Role,
        rejections: RejectionLog,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.peer = peer
        self.keys = keys
        self.clock = clock
        self.fleet = clock.fleet
        self.role: Role = role
        self.rejections = rejections
        self.now = now
        self._lock = threading.Lock()
        self.records: dict[str, RosterRecord] = {}
        self.suspects: dict[str, float] = {}
        # Fingerprints of bad DHT entries already counted, oldest first. Bounded: anyone can
        # write DHT entries, so an unbounded set would let a stranger grow our memory.
        self._bad_entries: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        started = now()
        self.me = RosterRecord(
            peer_id=peer.peer_id,
            name=peer.name,
            role=role,
            addresses=tuple(peer.addresses[:MAX_ADDRESSES]),
            joined_at=started,
            heartbeat_at=started,
            alive_until=started,
        )

    # -- own record ---------------------------------------------------------------------------

    def update_me(self, **changes: Any) -> None:
        """Change fields of this peer's record (sent with the next heartbeat)."""
        with self._lock:
            self.me = dataclasses.replace(self.me, **changes)

    def note_round(self, round_index: int) -> None:
        with self._lock:
            if round_index > self.me.active_round:
                self.me = dataclasses.replace(self.me, active_round=round_index)

    def note_uplink(self, bytes_per_s: float | None, current_round: int) -> None:
        """Publish a new uplink bucket, effective two rounds on, once the last change counts."""
        self._publish_bucket(uplink_bucket(bytes_per_s, self.fleet.uplink_bucket_factor), current_round)

    def step_back_as_leader(self, current_round: int) -> None:
        """Rank this peer below every measured uplink from two rounds on: none of its peers reached it.

        The next ``note_uplink`` (its next exchange through another leader) publishes
        what it measures then.
        """
        self._publish_bucket(LAST_AS_LEADER_BUCKET, current_round)

    def _publish_bucket(self, bucket: int, current_round: int) -> None:
        with self._lock:
            me = self.me
            if bucket == UNKNOWN_BUCKET or bucket == me.uplink_bucket or current_round < me.bucket_from_round:
                return
            self.me = dataclasses.replace(
                me,
                previous_uplink_bucket=me.uplink_bucket,
                uplink_bucket=bucket,
                bucket_from_round=current_round + 2,
            )

    # -- the view -----------------------------------------------------------------------------

    def snapshot(self) -> list[RosterRecord]:
        """Alive records (this peer's own included)."""
        now = self.now()
        with self._lock:
            others = [r for r in self.records.values() if r.alive_until >= now and r.peer_id != self.me.peer_id]
            return [*others, self.me]

    def get(self, peer_id: str) -> RosterRecord | None:
        with self._lock:
            return self.me if peer_id == self.me.peer_id else self.records.get(peer_id)

    def suspect(self, peer_id: str) -> None:
        """This peer could not reach ``peer_id``: skip it as leader until it heartbeats again."""
        with self._lock:
            if peer_id != self.me.peer_id:
                self.suspects[peer_id] = self.now()

    def excluded(self) -> set[str]:
        with self._lock:
            out = set()
            for peer_id, since in list(self.suspects.items()):
                record = self.records.get(peer_id)
                # A heartbeat written well after the suspicion proves it alive again.
                if record is not None and record.heartbeat_at > since + self.fleet.seconds(self.fleet.heartbeat_interval):
                    del self.suspects[peer_id]
                else:
                    out.add(peer_id)
            return out

    def candidates(self, round_index: int, *, alive_at: float | None = None) -> list[RosterRecord]:
        return leader_candidates(
            self.snapshot(),
            round_index,
            self.clock,
            bootstrap_may_lead=self.fleet.bootstrap_may_lead,
            excluded=self.excluded(),
            alive_at=alive_at,
        )

    def participants(self, round_index: int) -> set[str]:
        """Peers expected to submit ``round_index``: every alive, unsuspected peer.

        A leader closes its collection early once all of them arrived. A peer that is
        alive but does not submit (joining, catching up) makes it wait for the window's
        end instead: slower, never wrong.
        """
        round_end = self.clock.end_of(round_index)
        excluded = self.excluded()
        return {r.peer_id for r in self.snapshot() if r.alive_until >= round_end and r.peer_id not in excluded}

    def state_holders(self) -> list[RosterRecord]:
        """Other peers serving state, newest state first."""
        return sorted(
            (r for r in self.snapshot() if r.peer_id != self.me.peer_id and r.state_round >= 0),
            key=lambda r: -r.state_round,
        )

    # -- heartbeat (on the network loop) ------------------------------------------------------

    async def heartbeat_once(self) -> None:
        now = self.now()
        ttl = self.fleet.seconds(self.fleet.roster_ttl)
        with self._lock:
            self.me = dataclasses.replace(self.me, heartbeat_at=now, alive_until=now + ttl)
            record = self.me
        sealed = seal(self.keys, MessageKind.ROSTER, record.to_json(), sender=record.peer_id, name=record.name)
        from globetrain.fleet.peer import dht_time

        await self.peer.roster_store(roster_key(self.keys), record.peer_id, sealed, dht_time() + ttl)
        await self.refresh()

    async def refresh(self) -> None:
        """Read the roster: the union of this peer's copy and those of the key's 5 nearest nodes.

        Every view must hold every alive record: reading one replica (tried before) let
        views differ whenever peers' routing tables disagreed on the key's nearest nodes
        (peers joining or leaving the DHT), which gave two leaders for one round and models
        that differed afterwards. A record is stored on the 3 nearest nodes in its writer's
        table and read from the 5 nearest in the reader's, so tables may disagree on two of
        those nodes. Merging costs about one copy of the roster per read, not one per node
        (``FleetPeer.roster_read``: the nodes after the first send only what the reader lacks).
        """
        found = await self.peer.roster_read(roster_key(self.keys))
        if not isinstance(found, dict):
            return
        fresh: dict[str, RosterRecord] = {}
        for subkey, sealed in found.items():
            record = self._open(subkey, sealed)
            if record is not None and record.peer_id != self.me.peer_id:
                fresh[record.peer_id] = record
        with self._lock:
            self.records = fresh
        self.peer.book.remember(a for r in fresh.values() for a in r.addresses)

    def _open(self, subkey: Any, sealed: Any) -> RosterRecord | None:
        try:
            if not isinstance(subkey, str) or not isinstance(sealed, bytes):
                raise EnvelopeRejected("malformed", "roster entry is not (peer id, bytes)")
            envelope = open_envelope(self.keys, sealed, kinds=(MessageKind.ROSTER,), max_payload_bytes=MAX_ROSTER_RECORD_BYTES)
            record = RosterRecord.from_json(envelope.payload)
            if not (record.peer_id == envelope.sender == subkey):
                raise EnvelopeRejected(
                    "sender-mismatch",
                    f"record of {record.peer_id} sealed by {envelope.sender} under {subkey}",
                    sender=envelope.sender,
                    name=envelope.name,
                )
            return record
        except CorruptPayload as error:
            fingerprint = hashlib.sha256(repr((subkey, sealed)).encode()).digest()
            if fingerprint not in self._bad_entries:
                # Count a bad entry once, not at every refresh that sees it again.
                self._bad_entries[fingerprint] = None
                if len(self._bad_entries) > MAX_BAD_ENTRIES_REMEMBERED:
                    self._bad_entries.popitem(last=False)
                reason = getattr(error, "reason", "malformed")
                sender = getattr(error, "sender", "") or str(subkey)[:64]
                self.rejections.reject("roster", reason, sender=sender, name=getattr(error, "name", ""), detail=str(error))
            return None

    async def run(self) -> None:
        """Heartbeat forever (cancelled by the peer's shutdown)."""
        interval = max(self.fleet.seconds(self.fleet.heartbeat_interval), 0.1)
        while True:
            started = time.monotonic()
            await self.heartbeat_once()
            await asyncio.sleep(max(interval - (time.monotonic() - started), 0.01))

"""``FleetExchange``: the sync loop's ``Exchange`` over the real fleet.

A device submits round r's contribution at the end of r's compute window and gets a
future at once; the exchange runs on the network thread:

1. pick r's leader from the roster (``Roster.candidates``); when it is this peer, hand
   the contribution to the local ``LeaderService``;
2. otherwise open a ``contribute`` stream to it: ping (RTT), the contribution envelope,
   its ack (the upload's timing gives the uplink throughput for QoS and the roster),
   then wait on the same stream for the aggregate. A leader that cannot be reached is
   suspected and the next candidate tried (at most three);
3. if the stream breaks after the ack (the leader died after serving some) or no leader
   answers, ask other peers' archives for r's aggregate until the aggregate deadline;
   a leader that nobody reached while others were expected does the same before it
   falls back on its solo average (``_instead_of_solo``);
4. check the aggregate (envelope, round, codec, shapes, finite values, norm against the
   history of aggregates), keep it in this peer's archive, and resolve the future with
   the decoded update, the contributor count and samples, what the aggregate dropped of
   this device's own values (``returned``), bytes on the wire, seconds, uplink and RTT,
   and the leader's model digest (``base_round``/``base_digest``).

Every step has a deadline, and the whole exchange ends at the round's aggregate deadline
(before the round is due), so the future always resolves in time: to an outcome or to
``ExchangeFailed``. An empty payload (``Contribution(payload=b"", samples=0)``) listens
only: the device gets the aggregate without contributing.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from globetrain.compression import Codec, SparseTensorUpdate
from globetrain.errors import CorruptPayload, ExchangeFailed
from globetrain.fleet.aggregate import everything, returned_values, unpack_aggregate
from globetrain.fleet.archive import AggregateArchive
from globetrain.fleet.checks import (
    OutlierBound,
    RejectionLog,
    codec_rejection_reason,
    non_finite_problem,
    shape_problem,
    update_norm,
)
from globetrain.fleet.config import FleetNetworkConfig
from globetrain.fleet.envelope import EnvelopeRejected, MessageKind, open_envelope, seal
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.leader import LeaderService
from globetrain.fleet.peer import FleetPeer
from globetrain.fleet.roster import RosterRecord, Roster
from globetrain.fleet.run import RoundClock, protocol_name
from globetrain.fleet.transport import Conversation, TransportError, frame_kind
from globetrain.sync.exchange import Contribution, Exchange, ExchangeOutcome

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 4096
MAX_LEADER_ATTEMPTS = 3
ARCHIVE_FANOUT = 3


@dataclasses.dataclass
class RoundTraffic:
    """What one round's exchange measured."""

    leader: str = ""
    leader_name: str = ""
    bytes_sent: int = 0
    bytes_received: int = 0
    rtt_s: float | None = None
    uplink_bytes_per_s: float | None = None
    serving_bytes_per_s: float | None = None
    """What the roster's leader choice compares (``serving_rate``)."""
    source: str = ""
    """Where the aggregate came from: ``leader``, ``local`` (this peer led) or ``archive``."""

    def add(self, conversation: Conversation) -> None:
        self.bytes_sent += conversation.bytes_sent
        self.bytes_received += conversation.bytes_received


class _Unreachable(Exception):
    pass


class FleetExchange(Exchange):
    """Contributes to each round's leader and returns the checked aggregate."""

    def __init__(
        self,
        *,
        peer: FleetPeer,
        keys: RunKeys,
        clock: RoundClock,
        roster: Roster,
        leader: LeaderService,
        archive: AggregateArchive,
        rejections: RejectionLog,
        shapes: Sequence[tuple[int, ...]],
        network: FleetNetworkConfig,
    ) -> None:
        self.peer = peer
        self.keys = keys
        self.clock = clock
        self.fleet = clock.fleet
        self.roster = roster
        self.leader = leader
        self.archive = archive
        self.rejections = rejections
        self.shapes = [tuple(int(d) for d in shape) for shape in shapes]
        self.numel = max(sum(_numel(shape) for shape in self.shapes), 1)
        self.network = network
        self.me = peer.peer_id
        self.name = peer.name
        self.contribute_protocol = protocol_name(keys, "contribute")
        self.archive_protocol = protocol_name(keys, "aggregate")
        self.aggregate_bound = OutlierBound(self.fleet.norm_kappa, self.fleet.norm_history)
        self.serving_bytes_per_s: float | None = None
        """Moving average of ``serving_rate`` over this device's exchanges: its published uplink bucket."""
        self.stats: collections.Counter[str] = collections.Counter()
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=256)
        self._pending: dict[int, Future[ExchangeOutcome]] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- Exchange -----------------------------------------------------------------------------

    def submit(self, contribution: Contribution) -> Future[ExchangeOutcome]:
        future: Future[ExchangeOutcome] = Future()
        if self._closed:
            future.set_exception(ExchangeFailed("the fleet exchange is closed"))
            return future
        with self._lock:
            self._pending[id(future)] = future
        future.add_done_callback(lambda f: self._forget(f))
        try:
            self.peer.spawn(self._exchange(contribution, future))
        except Exception as error:  # noqa: BLE001 - a stopped network fails the round, not the loop
            _settle(future, error=ExchangeFailed(f"round {contribution.round}: network not running ({error})"))
        return future

    def close(self) -> None:
        self._closed = True
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            _settle(future, error=ExchangeFailed("the fleet exchange was closed"))

    def _forget(self, future: Future[ExchangeOutcome]) -> None:
        with self._lock:
            self._pending.pop(id(future), None)

    # -- one round ----------------------------------------------------------------------------

    async def _exchange(self, contribution: Contribution, future: Future[ExchangeOutcome]) -> None:
        round_index = contribution.round
        started = time.monotonic()
        traffic = RoundTraffic()
        listen = len(contribution.payload) == 0
        try:
            self.roster.note_round(round_index)
            sealed = seal(
                self.keys, MessageKind.CONTRIBUTION, contribution.payload, sender=self.me, name=self.name,
                round_index=round_index, samples=max(int(contribution.samples), 0),
            )
            remaining = self.clock.aggregate_deadline(round_index) - time.time()
            past = remaining <= 0
            if past and listen:
                # Catching up (a joiner listening to rounds that already ended): the
                # aggregate can only come from archives; give that one request's time.
                remaining = self.network.request_timeout_s
            elif past:
                raise ExchangeFailed(
                    f"round {round_index}: submitted {-remaining:.1f}s after its aggregate deadline "
                    "(the device is behind the fleet's clock)"
                )
            try:
                aggregate = await asyncio.wait_for(
                    self._obtain(round_index, sealed, listen, traffic, past=past), timeout=remaining
                )
            except asyncio.TimeoutError:
                raise ExchangeFailed(
                    f"round {round_index}: no aggregate by the deadline (leader {traffic.leader_name or traffic.leader or 'none'}); "
                    "if this repeats on a slow link raise fleet.aggregate_deadline"
                ) from None
            outcome = await asyncio.get_running_loop().run_in_executor(
                None, self._outcome, contribution, aggregate, traffic, started
            )
            self.archive.put(round_index, aggregate)
            if not listen and traffic.serving_bytes_per_s is not None:
                previous = self.serving_bytes_per_s
                measured = traffic.serving_bytes_per_s
                self.serving_bytes_per_s = measured if previous is None else 0.5 * measured + 0.5 * previous
                self.roster.note_uplink(self.serving_bytes_per_s, round_index)
            self._record(round_index, "ok", "", traffic, outcome)
            _settle(future, result=outcome)
        except ExchangeFailed as error:
            self._record(round_index, "failed", str(error), traffic, None)
            _settle(future, error=error)
        except asyncio.CancelledError:
            _settle(future, error=ExchangeFailed(f"round {round_index}: the network stopped"))
            raise
        except Exception as error:  # noqa: BLE001 - whatever happened, the loop gets ExchangeFailed
            log.error("[%s round %d] exchange error: %s: %s", self.name, round_index, type(error).__name__, error)
            self._record(round_index, "failed", f"{type(error).__name__}: {error}", traffic, None)
            _settle(future, error=ExchangeFailed(f"round {round_index}: {type(error).__name__}: {error}"))

    async def _obtain(self, round_index: int, sealed: bytes, listen: bool, traffic: RoundTraffic, *, past: bool) -> bytes:
        kept = self.archive.get(round_index)
        if kept is not None:
            traffic.source = "archive"
            return kept
        if past:
            # A round long over: its aggregate exists in archives or nowhere; ask each peer once.
            found = await self._from_archives(round_index, self.roster.excluded(), traffic, passes=1)
            if found is None:
                raise ExchangeFailed(f"round {round_index}: no peer keeps its aggregate (the round failed, or is too old)")
            return found
        tried: set[str] = set()
        for leader in self.roster.candidates(round_index)[:MAX_LEADER_ATTEMPTS]:
            tried.add(leader.peer_id)
            traffic.leader, traffic.leader_name = leader.peer_id, leader.name
            if leader.peer_id == self.me:
                admission = await self.leader.contribute_local(sealed)
                if admission.result is None:
                    break
                result = await asyncio.shield(admission.result)
                collection = self.leader.collections.get(round_index)
                arrived = collection.arrived if collection is not None else {self.me}
                # Only a solo collection reads the roster: the usual led round does not.
                expected = len(self.roster.participants(round_index) - {self.me}) if arrived <= {self.me} else 0
                if expected:
                    group = await self._instead_of_solo(round_index, expected, traffic)
                    if group is not None:
                        return group
                traffic.source = "local"
                recipients = len(arrived - {self.me})
                traffic.bytes_sent += (len(result.sealed) + 4) * recipients
                return result.sealed
            try:
                aggregate = await self._via_leader(leader, round_index, sealed, listen, traffic)
            except _Unreachable as error:
                self.roster.suspect(leader.peer_id)
                log.warning(
                    "[%s round %d] leader %s (%s) did not answer (%s); trying the next candidate",
                    self.name, round_index, leader.name, leader.peer_id, error,
                )
                continue
            if aggregate is not None:
                traffic.source = "leader"
                return aggregate
            break
        found = await self._from_archives(round_index, tried | self.roster.excluded(), traffic)
        assert found is not None  # without a pass limit it returns an aggregate or is cancelled
        return found

    async def _instead_of_solo(self, round_index: int, expected: int, traffic: RoundTraffic) -> bytes | None:
        """This peer led ``round_index`` and nobody reached it, though others were expected.

        Most likely its own link just got worse (a device whose rate was cut tenfold,
        measured in the shaped validation): the others timed out on it, suspected it and
        averaged under the next candidate. Applying the solo average would split this
        device off the fleet (it diverges and must download the whole state over the very
        link that is slow), so it takes the group's aggregate from their archives (its own
        update goes back to its error feedback) and ranks itself last as leader until it
        measures its uplink again. When no peer has one shortly before the aggregate
        deadline (the others really are gone, or catching up), the solo average stands.
        """
        log.warning(
            "[%s round %d] led the round alone while %d peers were expected (they could not reach this device in "
            "time); taking the round's aggregate from their leader instead, and stepping back as leader",
            self.name, round_index, expected,
        )
        self.stats["solo_rounds_led"] += 1
        self.serving_bytes_per_s = None
        self.roster.step_back_as_leader(round_index)
        # The others' leader closes its window when this one did; leave a tenth of a period
        # at the end to check and apply the solo average should no peer hold another.
        budget = self.clock.aggregate_deadline(round_index) - self.fleet.seconds(0.1) - time.time()
        try:
            found = await asyncio.wait_for(
                self._from_archives(round_index, {self.me} | self.roster.excluded(), traffic), timeout=max(budget, 0.0)
            )
        except asyncio.TimeoutError:
            found = None
        if found is None:
            log.warning("[%s round %d] no peer holds another aggregate of the round: applying the solo one", self.name, round_index)
            return None
        self.stats["solo_rounds_replaced"] += 1
        return found

    async def _via_leader(
        self, leader: RosterRecord, round_index: int, sealed: bytes, listen: bool, traffic: RoundTraffic
    ) -> bytes | None:
        timeout = self.network.connect_timeout_s
        try:
            conversation = await self.peer.converse(
                leader.peer_id, self.contribute_protocol, timeout=timeout, addresses=leader.addresses
            )
        except TransportError as error:
            raise _Unreachable(str(error)) from None
        acknowledged = False
        try:
            ping = seal(self.keys, MessageKind.PING, b"", sender=self.me, name=self.name, round_index=round_index)
            sent_at = time.monotonic()
            await conversation.send(ping, timeout=timeout)
            self._open_reply(await conversation.receive(max_bytes=MAX_REPLY_BYTES, timeout=timeout), leader.peer_id)
            rtt = time.monotonic() - sent_at
            traffic.rtt_s = rtt
            sent_at = time.monotonic()
            until_window_closes = self.clock.collection_deadline(round_index) - time.time()
            await conversation.send(sealed, timeout=max(until_window_closes, 0.0) + self.network.request_timeout_s)
            ack = self._open_reply(
                await conversation.receive(max_bytes=MAX_REPLY_BYTES, timeout=self.network.request_timeout_s), leader.peer_id
            )
            acknowledged = True
            if not listen:
                upload_seconds = max(time.monotonic() - sent_at - rtt, 1e-4)
                traffic.uplink_bytes_per_s = (len(sealed) + 4) / upload_seconds
                traffic.serving_bytes_per_s = serving_rate(len(sealed) + 4, upload_seconds, rtt)
            if not ack.get("accepted", False):
                log.warning(
                    "[%s round %d] leader %s refused this device's submission: %s",
                    self.name, round_index, leader.name, ack.get("reason", "?"),
                )
            if not ack.get("listening", False):
                return None
            remaining = self.clock.aggregate_deadline(round_index) - time.time()
            return await conversation.receive(max_bytes=self._max_aggregate_frame(), timeout=max(remaining, 0.0))
        except (TransportError, EnvelopeRejected, CorruptPayload) as error:
            if not acknowledged:
                raise _Unreachable(str(error)) from None
            log.warning("[%s round %d] lost leader %s after its ack: %s", self.name, round_index, leader.name, error)
            return None
        finally:
            traffic.add(conversation)
            conversation.close()

    def _open_reply(self, data: bytes, expected_sender: str) -> dict[str, Any]:
        envelope = open_envelope(self.keys, data, kinds=(MessageKind.REPLY,), max_payload_bytes=MAX_REPLY_BYTES)
        if envelope.sender != expected_sender:
            raise EnvelopeRejected("sender-mismatch", f"reply from {envelope.sender}, expected {expected_sender}")
        try:
            content = json.loads(envelope.payload)
        except (ValueError, RecursionError):
            # RecursionError: arrays nested deeper than the interpreter's limit (found by the fuzz).
            raise CorruptPayload("reply is not JSON") from None
        if not isinstance(content, dict):
            raise CorruptPayload("reply is not a JSON object")
        return content

    async def _from_archives(
        self, round_index: int, skip: set[str], traffic: RoundTraffic, *, passes: int | None = None
    ) -> bytes | None:
        """Ask other peers for the round's aggregate until one has it (the caller bounds the time)."""
        pause = max(self.fleet.seconds(0.05), 0.05)
        asked_empty: collections.Counter[str] = collections.Counter()
        done = 0
        while passes is None or done < passes:
            done += 1
            holders = [
                r for r in self.roster.snapshot() if r.peer_id != self.me and r.peer_id not in skip
            ]
            holders.sort(key=lambda r: (asked_empty[r.peer_id], r.peer_id))
            for start in range(0, len(holders), ARCHIVE_FANOUT):
                batch = holders[start : start + ARCHIVE_FANOUT]
                answers = await asyncio.gather(*(self._ask_archive(r, round_index, traffic) for r in batch))
                for record, answer in zip(batch, answers):
                    if answer is not None:
                        traffic.source = "archive"
                        traffic.leader = traffic.leader or record.peer_id
                        return answer
                    asked_empty[record.peer_id] += 1
            await asyncio.sleep(pause)
        return None

    async def _ask_archive(self, holder: RosterRecord, round_index: int, traffic: RoundTraffic) -> bytes | None:
        timeout = self.network.request_timeout_s
        try:
            conversation = await self.peer.converse(
                holder.peer_id, self.archive_protocol, timeout=self.network.connect_timeout_s, addresses=holder.addresses
            )
        except TransportError:
            return None
        try:
            request = seal(
                self.keys, MessageKind.AGGREGATE_REQUEST, b"", sender=self.me, name=self.name, round_index=round_index
            )
            await conversation.send(request, timeout=timeout)
            answer = await conversation.receive(max_bytes=self._max_aggregate_frame(), timeout=timeout)
        except TransportError:
            return None
        finally:
            traffic.add(conversation)
            conversation.close()
        return answer if frame_kind(answer) == MessageKind.AGGREGATE.label else None

    # -- checking the aggregate ---------------------------------------------------------------

    def _max_aggregate_frame(self) -> int:
        return self.leader.max_payload_bytes + (64 << 10) + 1024

    def _reject(self, reason: str, detail: str, *, sender: str, name: str, round_index: int) -> ExchangeFailed:
        self.rejections.reject("aggregate", reason, sender=sender, name=name, round_index=round_index, detail=detail)
        return ExchangeFailed(f"round {round_index}: aggregate from {name or sender} refused ({reason}): {detail}")

    def _outcome(
        self, contribution: Contribution, sealed: bytes, traffic: RoundTraffic, started: float
    ) -> ExchangeOutcome:
        round_index = contribution.round
        try:
            envelope = open_envelope(
                self.keys, sealed, kinds=(MessageKind.AGGREGATE,), max_payload_bytes=self._max_aggregate_frame()
            )
        except EnvelopeRejected as error:
            raise self._reject(error.reason, error.detail, sender=error.sender, name=error.name, round_index=round_index) from None
        who = {"sender": envelope.sender, "name": envelope.name, "round_index": round_index}
        if envelope.round != round_index:
            raise self._reject("wrong-round", f"aggregate of round {envelope.round}", **who)
        try:
            info, payload = unpack_aggregate(envelope.payload, max_contributors=self.fleet.max_group_size)
        except CorruptPayload as error:
            raise self._reject("corrupt", str(error), **who) from None
        if info.status != "ok":
            raise ExchangeFailed(f"round {round_index}: leader {envelope.name or envelope.sender} reported: {info.reason}")
        try:
            aggregate = Codec(1.0, 32, max_elements=self.numel).decode_sparse(payload)
        except CorruptPayload as error:
            raise self._reject(codec_rejection_reason(error), str(error), **who) from None
        problem = shape_problem(aggregate, self.shapes)
        if problem is not None:
            raise self._reject("shape-mismatch", problem, **who)
        problem = non_finite_problem(aggregate)
        if problem is not None:
            raise self._reject("non-finite", problem, **who)
        norm = update_norm(aggregate)
        bound = self.aggregate_bound.bound([])
        if bound is not None and norm > bound:
            raise self._reject("norm-bound", f"norm {norm:.4g} exceeds {bound:.4g} (kappa x median of past aggregates)", **who)
        self.aggregate_bound.remember([norm])
        returned = None
        if contribution.payload:
            try:
                own = self._own_sent(contribution.payload)
            except CorruptPayload as error:
                log.error("[%s round %d] this device's own payload does not decode: %s", self.name, round_index, error)
            else:
                returned = returned_values(own, aggregate) if self.me in info.contributors else everything(own)
        return ExchangeOutcome(
            round=round_index,
            update=[part.to_dense() for part in aggregate],
            contributors=len(info.contributors),
            samples=envelope.samples,
            returned=returned,
            bytes_sent=traffic.bytes_sent,
            bytes_received=traffic.bytes_received,
            seconds=time.monotonic() - started,
            uplink_bytes_per_s=traffic.uplink_bytes_per_s,
            rtt_s=traffic.rtt_s,
            base_round=info.base_round,
            base_digest=info.base_digest,
        )

    def _own_sent(self, payload: bytes) -> list[SparseTensorUpdate]:
        # Decoding our own payload gives exactly the values receivers got (the codec's
        # ``sent``), which is what error feedback must take back.
        return Codec(1.0, 32, max_elements=self.numel).decode_sparse(payload)

    def _record(
        self, round_index: int, status: str, reason: str, traffic: RoundTraffic, outcome: ExchangeOutcome | None
    ) -> None:
        self.stats[f"rounds_{status}"] += 1
        self.history.append(
            {
                "round": round_index,
                "status": status,
                "reason": reason,
                "leader": traffic.leader,
                "leader_name": traffic.leader_name,
                "source": traffic.source,
                "bytes_sent": traffic.bytes_sent,
                "bytes_received": traffic.bytes_received,
                "contributors": outcome.contributors if outcome else 0,
                "samples": outcome.samples if outcome else 0,
                "rtt_s": traffic.rtt_s,
                "uplink_bytes_per_s": traffic.uplink_bytes_per_s,
            }
        )


def serving_rate(payload_bytes: int, upload_seconds: float, rtt_s: float) -> float:
    """Bytes per second over the longer of the upload and the round trip: a leader's rank.

    An upload shorter than a round trip cannot be timed: it hides inside the ack's round
    trip and its jitter (in the shaped validation a 10 Mbit/s device 90 ms away measured
    1,400 Mbit/s and outranked everyone). A leader answers every member over a round
    trip too, so the rate leader choice compares is a link's rate capped by its latency:
    far devices rank below near ones of the same rate. The QoS keeps the uncapped
    throughput beside the RTT. Small payloads still do not tell a 1 from a 50 Mbit/s
    uplink (docs/validation.md, runs H and I).
    """
    return payload_bytes / max(upload_seconds, rtt_s, 1e-4)


def _settle(future: Future[ExchangeOutcome], *, result: ExchangeOutcome | None = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - settled concurrently (close() raced the result)
        pass


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total

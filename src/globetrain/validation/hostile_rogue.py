"""A rogue peer WITH the run key: joins a real fleet and sends it everything it should refuse.

    GLOBETRAIN_RUN_KEY=... python -m globetrain.validation.hostile_rogue --join-file boot/addresses \\
        --name rogue --status rogue.jsonl

It joins like a device (same key, same DHT), but trains nothing. Every round, at the
start of the round's collection window, it sends to that round's leader:

- one contribution whose content must be refused, cycling through NaN values, a 1000x
  update (1000 x the fleet's last aggregate), a truncated and a bit-flipped codec
  payload, a valid update claiming 10**9 samples, and tensors of the wrong shapes;
- two contributions broken in one envelope field each (tag, flags, run id, version,
  magic, truncation, length, kind, a sender that is another peer, a ping's tag);
- a contribution for a stale or a future round;
- one bad request to the archive or state service (bad tag, not JSON, a round that is
  not an integer).

It also serves model state, and lies about it: its roster record claims the newest state
(role ``bootstrap``, so it is never chosen to lead), and a joiner asking it gets, in turn,
a manifest of a NaN model whose chunks match, a manifest whose chunks do not, or a
manifest that is not JSON.

Each attack is written to ``--status`` (JSON lines: ``attack`` with the ``kind/reason``
the receiver must count, and the answer if one came), so ``globetrain.validation.hostile``
can check every one was refused, counted and logged with this peer's id. SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from globetrain.compression import Codec
from globetrain.errors import GlobetrainError
from globetrain.fleet.aggregate import unpack_aggregate
from globetrain.fleet.app.spec import VideoRunSpec
from globetrain.fleet.config import FleetNetworkConfig
from globetrain.fleet.envelope import MessageKind, open_envelope
from globetrain.fleet.keys import RunKeys, run_key_from_environment
from globetrain.fleet.node import FleetNode
from globetrain.fleet.run import protocol_name
from globetrain.fleet.state import PreparedState
from globetrain.fleet.transport import Conversation, TransportError
from globetrain.report.metrics import MetricsWriter
from globetrain.validation.hostile_tampering import (
    Attack,
    Sealer,
    envelope_attacks,
    payload_attacks,
    poisoned_state,
    request_attacks,
    round_attacks,
)

log = logging.getLogger(__name__)

PAYLOAD_CYCLE = ("nan", "huge", "truncated-payload", "bit-flipped-payload", "claimed-samples", "shape-mismatch")
STATE_MODES = ("nan-state", "bad-chunk", "garbage-manifest")
ATTACK_AT = 0.06
"""Fraction of a period after a round's end when the attacks go out (inside the collection window)."""
STREAM_TIMEOUT_S = 3.0


class Rogue:
    def __init__(self, node: FleetNode, status: MetricsWriter, stop: threading.Event) -> None:
        self.node = node
        self.status = status
        self.stop = stop
        self.keys = node.keys
        self.sealer = Sealer(node.keys, node.peer.peer_id, node.name)
        self.shapes = [tuple(p.shape) for p in VideoRunSpec.from_run_config(node.run_config).build_model().parameters()
                       if p.requires_grad]
        self.numel = sum(int(torch.Size(s).numel()) for s in self.shapes)
        self.base: list[torch.Tensor] | None = None
        self.rounds_attacked = 0
        self.state_requests = 0
        self.state_mode_for: dict[str, str] = {}
        self.poisoned: dict[int, PreparedState] = {}
        self._lock = threading.Lock()

    # -- joining: serve a lying state service, heartbeat as a state holder ----------------------

    def start(self) -> None:
        peer = self.node.peer

        async def serve() -> None:
            await peer.serve(protocol_name(self.keys, "state"), self.serve_state)
            self.node.roster.update_me(state_round=self.node.clock.round_at(time.time()) + 2)
            await self.node.roster.heartbeat_once()
            peer.background(self.node.roster.run(), "roster heartbeat")

        peer.call(serve(), timeout=30)

    async def serve_state(self, conversation: Conversation) -> None:
        data = await conversation.receive(max_bytes=4096, timeout=STREAM_TIMEOUT_S)
        try:
            request = open_envelope(self.keys, data, kinds=(MessageKind.STATE_REQUEST,), max_payload_bytes=1024)
            what = json.loads(request.payload)
        except (GlobetrainError, ValueError):
            return  # the wrong-key attacker probes the rogue too; a rogue owes nobody a count
        if not isinstance(what, dict):
            return
        clock = self.node.clock
        current = clock.round_at(time.time())
        asker = conversation.remote_peer_id
        if what.get("what") == "manifest":
            mode = STATE_MODES[self.state_requests % len(STATE_MODES)]
            self.state_requests += 1
            self.state_mode_for[asker] = mode
            prepared = self._poisoned(current)
            if mode == "garbage-manifest":
                payload = b'{"next_round": "soon", "chunk_digests": 7}'
            else:
                payload = prepared.manifest.to_json()
            answer = self.sealer(MessageKind.STATE_MANIFEST, payload, round_index=current)
            expected = "state/corrupt"
        else:
            mode = self.state_mode_for.get(asker, STATE_MODES[0])
            round_index = int(what.get("round", current))
            prepared = self._poisoned(round_index)
            index = int(what.get("index", 0)) % len(prepared.chunks)
            chunk = bytearray(prepared.chunks[index])
            if mode == "bad-chunk":
                chunk[0] ^= 0xFF
            answer = self.sealer(MessageKind.STATE_CHUNK, index.to_bytes(4, "big") + bytes(chunk), round_index=round_index)
            expected = "state/corrupt"
        await conversation.send(answer, timeout=STREAM_TIMEOUT_S)
        self.status.write({"event": "served-state", "t": time.time(), "what": what.get("what"), "mode": mode,
                           "to": asker, "expected": expected})

    def _poisoned(self, round_index: int) -> PreparedState:
        with self._lock:
            if round_index not in self.poisoned:
                fleet = self.node.run_config.fleet
                self.poisoned = {round_index: poisoned_state(
                    self.shapes, next_round=round_index, config_digest=self.node.run_config.digest,
                    chunk_bytes=fleet.state_chunk_bytes,
                ), **{r: p for r, p in self.poisoned.items() if r >= round_index - 2}}
            return self.poisoned[round_index]

    # -- every round ------------------------------------------------------------------------

    def run(self) -> None:
        clock = self.node.clock
        round_index = max(clock.round_at(time.time()), 0)
        while not self.stop.is_set():
            moment = clock.end_of(round_index) + ATTACK_AT * clock.period
            if self.stop.wait(max(moment - time.time(), 0.0)):
                break
            self.node.roster.update_me(state_round=round_index + 3)
            try:
                self.node.peer.call(self.attack_round(round_index), timeout=clock.period * 2)
            except (GlobetrainError, TimeoutError, asyncio.TimeoutError, OSError) as error:
                log.warning("[%s round %d] attacks interrupted: %s", self.node.name, round_index, error)
            round_index = max(round_index + 1, clock.round_at(time.time()))

    async def attack_round(self, round_index: int) -> None:
        candidates = [r for r in self.node.roster.candidates(round_index) if r.peer_id != self.node.peer.peer_id]
        if not candidates:
            await self.node.roster.refresh()
            return
        leader = candidates[0]
        other = next((r.peer_id for r in candidates[1:]), leader.peer_id)
        await self._refresh_base(leader.peer_id, round_index, leader.addresses)
        k = self.rounds_attacked
        self.rounds_attacked += 1
        payloads = {attack.name: attack for attack in payload_attacks(self.sealer, self.shapes, self.base, round_index)}
        chosen = payloads.get(PAYLOAD_CYCLE[k % len(PAYLOAD_CYCLE)], payloads["nan"])
        plausible = Codec(0.05, 8).encode([torch.zeros(s) for s in self.shapes], seed=round_index)
        envelopes = envelope_attacks(self.sealer, plausible, round_index, other_peer=other)
        plan: list[tuple[str, Attack]] = [
            # First: it must arrive inside the round's collection window to be judged on its content.
            ("contribute", chosen),
            ("contribute", envelopes[(2 * k) % len(envelopes)]),
            ("contribute", envelopes[(2 * k + 1) % len(envelopes)]),
            ("contribute", round_attacks(self.sealer, plausible, round_index)[k % 2]),
            request_attacks(self.sealer, round_index)[k % 4],
        ]
        for service, attack in plan:
            answer = await self._send(leader.peer_id, leader.addresses, service, attack.message)
            self.status.write({
                "event": "attack", "t": time.time(), "round": round_index, "attack": attack.name,
                "expected": attack.expected, "service": service, "target": leader.peer_id, "target_name": leader.name,
                "answer": answer,
            })

    async def _send(self, peer_id: str, addresses: Any, service: str, message: bytes) -> dict[str, Any] | None:
        try:
            conversation = await self.node.peer.converse(
                peer_id, protocol_name(self.keys, service), timeout=STREAM_TIMEOUT_S, addresses=addresses
            )
        except TransportError as error:
            return {"error": str(error)[:200]}
        try:
            await conversation.send(message, timeout=STREAM_TIMEOUT_S)
            data = await conversation.receive(max_bytes=8 << 20, timeout=STREAM_TIMEOUT_S)
        except TransportError as error:
            return {"closed": str(error)[:200]}  # refused without an answer: what receivers do
        finally:
            conversation.close()
        try:
            reply = open_envelope(self.keys, data, kinds=tuple(MessageKind), max_payload_bytes=8 << 20)
        except GlobetrainError as error:
            return {"unreadable": str(error)[:200]}
        if reply.kind is MessageKind.REPLY:
            return {"reply": json.loads(reply.payload)}
        return {"kind": reply.kind.label, "bytes": len(data)}

    async def _refresh_base(self, holder: str, round_index: int, addresses: Any) -> None:
        """The fleet's aggregate of an earlier round: the honest scale the huge update is 1000x of."""
        request = self.sealer(MessageKind.AGGREGATE_REQUEST, b"", round_index=max(round_index - 2, 0))
        try:
            conversation = await self.node.peer.converse(
                holder, protocol_name(self.keys, "aggregate"), timeout=STREAM_TIMEOUT_S, addresses=addresses
            )
        except TransportError:
            return
        try:
            await conversation.send(request, timeout=STREAM_TIMEOUT_S)
            data = await conversation.receive(max_bytes=64 << 20, timeout=STREAM_TIMEOUT_S)
            envelope = open_envelope(self.keys, data, kinds=(MessageKind.AGGREGATE,), max_payload_bytes=64 << 20)
            info, payload = unpack_aggregate(envelope.payload, max_contributors=1024)
            if info.status == "ok" and payload:
                update = Codec(1.0, 32, max_elements=self.numel).decode(payload)
                if all(bool(torch.isfinite(t).all()) for t in update) and any(bool(t.abs().sum() > 0) for t in update):
                    self.base = update
        except (TransportError, GlobetrainError):
            pass
        finally:
            conversation.close()


def wait_for_addresses(path: Path, timeout: float, stop: threading.Event) -> tuple[str, ...]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        try:
            found = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        except FileNotFoundError:
            found = ()
        if found:
            return found
        stop.wait(0.2)
    raise GlobetrainError(f"--join-file {path} did not appear within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m globetrain.validation.hostile_rogue", description=__doc__.split("\n")[0])
    parser.add_argument("--join-file", required=True, help="file with the bootstrap's multiaddrs (the demo writes it)")
    parser.add_argument("--name", default="rogue", help="this peer's name in the roster and in logs")
    parser.add_argument("--status", required=True, help="JSON lines: started, attack, served-state, finished")
    parser.add_argument("--join-timeout", type=float, default=90.0, help="seconds to find the run (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with MetricsWriter(args.status) as status:
        try:
            keys = RunKeys.from_run_key(run_key_from_environment())
            addresses = wait_for_addresses(Path(args.join_file), args.join_timeout, stop)
            network = FleetNetworkConfig(initial_peers=addresses, connect_timeout_s=STREAM_TIMEOUT_S, request_timeout_s=5.0)
            node = FleetNode.join(keys, network, name=args.name, role="bootstrap", timeout=args.join_timeout)
        except GlobetrainError as error:
            print(f"hostile_rogue: error: {error}", file=sys.stderr)
            return 2
        try:
            status.write({"event": "started", "t": time.time(), "peer_id": node.peer.peer_id, "name": args.name,
                          "pid": os.getpid(), "daemon_pid": node.peer.daemon_pid})
            rogue = Rogue(node, status, stop)
            rogue.start()
            rogue.run()
            status.write({"event": "finished", "t": time.time(), "rounds_attacked": rogue.rounds_attacked,
                          "state_requests": rogue.state_requests})
        finally:
            node.close(drain_timeout=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A minimal runnable fleet peer on the proxy task, for multi-process tests and trials.

    python -m globetrain.fleet.testpeer --bootstrap --address-file boot.addr --status boot.jsonl
    python -m globetrain.fleet.testpeer --join $(cat boot.addr) --name dev1 --index 0 --status dev1.jsonl

The run key comes from ``--run-key`` or ``GLOBETRAIN_RUN_KEY``. The bootstrap publishes a
run config for ``ProxyTask`` (a generated MLP task, ``globetrain.sync.proxy_task``) and
follows the global model as a listener; devices train it through ``SyncLoop`` +
``FleetExchange`` on time-based rounds (``RoundDriver``). Each peer appends JSON lines to
its ``--status`` file: ``started`` (peer id, addresses, daemon pid), ``joined`` (state
download), one ``round`` per boundary (what was applied, the global model's digest, the
counters of the fleet view) and ``finished`` or ``interrupted``.

Test-only behaviours exercise the checks and failure handling of the protocol:

- ``--rogue cycle``: a peer with the right key whose contributions cycle through a NaN
  payload, a 1000x update, a stale round and a malformed payload (it still listens, so
  its global model follows the fleet's);
- ``--attack-run-id HEX``: a peer with a wrong key that knows the run's public id; it
  tries to read the run config, the roster and state, and sends contributions and
  aggregate requests to every peer it finds, and reports what it got;
- ``--perturb-file PATH``: once PATH holds a round number, the peer nudges its global
  model in that round (as if it had missed an aggregate), to exercise divergence and resync;
- ``--crash-file PATH``: once PATH holds a round number, the peer SIGKILLs itself in that
  round's exchange (as its leader: after collecting, before answering anyone).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from torch import nn

from globetrain.compression import Codec
from globetrain.compression.wire import PayloadWriter
from globetrain.errors import GlobetrainError
from globetrain.fleet.config import FleetConfig, FleetNetworkConfig
from globetrain.fleet.driver import RoundDriver
from globetrain.fleet.envelope import MessageKind, open_envelope, seal
from globetrain.fleet.exchange import FleetExchange
from globetrain.fleet.keys import RunKeys, run_key_from_environment
from globetrain.fleet.node import FleetNode
from globetrain.fleet.peer import FleetPeer
from globetrain.fleet.run import RunConfig, RunNotFound, fetch_run_config, protocol_name, roster_key
from globetrain.fleet.transport import TransportError
from globetrain.sync.config import SyncConfig
from globetrain.sync.exchange import Contribution, Exchange, ExchangeOutcome
from globetrain.sync.loop import SyncLoop
from globetrain.sync.methods import get_method
from globetrain.sync.proxy_task import ProxyTask, ProxyTaskConfig

log = logging.getLogger("globetrain.fleet.testpeer")

ROGUE_MODES = ("nan", "huge", "stale", "malformed")


class StatusFile:
    """Appends one JSON object per line, flushed at once (tests read it while we run)."""

    def __init__(self, path: str | None) -> None:
        self.stream = open(path, "a", buffering=1) if path else None  # noqa: SIM115 - closed in close()
        self.lock = threading.Lock()

    def write(self, event: str, **fields: Any) -> None:
        if self.stream is None:
            return
        with self.lock:
            self.stream.write(json.dumps({"event": event, "time": time.time(), **fields}, default=str) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


# ------------------------------------------------------------------------------------------
# run config of the proxy task


def proxy_run_config(args: argparse.Namespace) -> RunConfig:
    period = args.period
    return RunConfig(
        start_time=time.time() + args.start_delay,
        fleet=FleetConfig(round_period_s=period, state_chunk_bytes=args.state_chunk_bytes),
        sync=get_method("two-step").sync_config(SyncConfig(
            inner_steps=max(args.steps_per_round, 1),
            density=0.05,
            bits=8,
            exchange_timeout_s=3 * period,
            # Outer momentum on purpose: the state a joiner downloads then carries momentum
            # buffers, and bit-identical models must include them.
            outer_lr=0.7,
            outer_momentum=0.9,
        )),
        method="two-step",
        model={"task": "proxy", "features": 16, "classes": 5, "hidden": args.hidden, "seed": 0,
               "train_samples": 4000, "test_samples": 500},
        data={"partition": "iid", "shards": args.shards},
        run_name="testpeer",
    )


def proxy_task(run_config: RunConfig) -> ProxyTask:
    model = run_config.model
    return ProxyTask(
        ProxyTaskConfig(
            classes=int(model["classes"]), features=int(model["features"]), hidden=int(model["hidden"]),
            seed=int(model["seed"]), train_samples=int(model["train_samples"]), test_samples=int(model["test_samples"]),
        )
    )


# ------------------------------------------------------------------------------------------
# the rogue (right key, bad updates)


def nan_payload(shapes: list[tuple[int, ...]]) -> bytes:
    """A well-formed dense float32 payload whose values are NaN (the codec refuses to make one)."""
    writer = PayloadWriter(len(shapes))
    for shape in shapes:
        numel = 1
        for dim in shape:
            numel *= dim
        writer.u8(0)  # float32
        writer.u8(len(shape))
        for dim in shape:
            writer.varint(dim)
        writer.u8(0)  # dense
        writer.u8(32)  # raw float32 values
        writer.varint(numel)
        writer.raw(torch.full((numel,), float("nan")).numpy().astype("<f4").tobytes())
    return writer.seal()


class RogueExchange(Exchange):
    """Sends a crafted contribution instead of the honest one, cycling through ``ROGUE_MODES``."""

    def __init__(self, inner: FleetExchange, node: FleetNode, shapes: list[tuple[int, ...]]) -> None:
        self.inner = inner
        self.node = node
        self.shapes = shapes
        self.sent: list[str] = []

    def submit(self, contribution: Contribution) -> Future[ExchangeOutcome]:
        if not contribution.payload:
            return self.inner.submit(contribution)
        mode = ROGUE_MODES[len(self.sent) % len(ROGUE_MODES)]
        self.sent.append(mode)
        if mode == "stale":
            stale = Contribution(max(contribution.round - 3, 0), contribution.payload, contribution.samples)
            self.node.peer.spawn(self._send_raw(stale, contribution.round))
            return self.inner.submit(Contribution(contribution.round, b"", 0))
        if mode == "nan":
            payload = nan_payload(self.shapes)
        elif mode == "huge":
            update = Codec(1.0, 32).decode(contribution.payload)
            payload = Codec(0.05, 8).encode([t * 1000.0 for t in update], seed=contribution.round)
        else:
            payload = os.urandom(max(len(contribution.payload), 64))
        return self.inner.submit(Contribution(contribution.round, payload, contribution.samples))

    async def _send_raw(self, contribution: Contribution, current_round: int) -> None:
        """Send ``contribution`` straight to the current round's leader (bypassing the archive)."""
        candidates = [r for r in self.node.roster.candidates(current_round) if r.peer_id != self.node.peer.peer_id]
        if not candidates:
            return
        sealed = seal(
            self.node.keys, MessageKind.CONTRIBUTION, contribution.payload, sender=self.node.peer.peer_id,
            name=self.node.name, round_index=contribution.round, samples=contribution.samples,
        )
        try:
            conversation = await self.node.peer.converse(candidates[0].peer_id, protocol_name(self.node.keys, "contribute"), timeout=3)
        except TransportError:
            return
        try:
            await conversation.send(sealed, timeout=3)
            await conversation.receive(max_bytes=4096, timeout=3)
        except TransportError:
            pass
        finally:
            conversation.close()

    def close(self) -> None:
        self.inner.close()


# ------------------------------------------------------------------------------------------
# a device that falls out of step


def perturb_if_asked(loop: SyncLoop, path: str, record: dict[str, Any], done: list[int]) -> None:
    """Once ``path`` names a round and it has come, nudge the global model (as if an aggregate was missed)."""
    try:
        target = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return
    if record["round"] < target:
        return
    with torch.no_grad():
        loop.global_params[0].add_(1e-3)
    # The digest after the last processed round now describes the nudged model.
    loop.record_digest(record["digest_round"])
    record["digest"] = loop.last_digest[1] if loop.last_digest else None
    record["perturbed"] = True
    done.append(record["round"])


# ------------------------------------------------------------------------------------------
# a crash in the middle of an exchange


def arm_crash(node: FleetNode, path: str, stop: threading.Event) -> None:
    """Die (SIGKILL to this process group) in the round written to ``path``, mid-exchange.

    If this peer leads that round, it dies after collecting the contributions and before
    sending the aggregate to anyone; otherwise when the round's collection window closes.
    """

    def die() -> None:
        os.killpg(os.getpgid(0), signal.SIGKILL)

    def arm(target: int) -> None:
        leader = node.leader
        assert leader is not None
        finish = leader._finish

        async def finish_or_die(collection: Any) -> Any:
            if collection.round == target:
                die()
            return await finish(collection)

        leader._finish = finish_or_die  # type: ignore[method-assign]
        if not stop.wait(max(node.clock.collection_deadline(target) + 0.05 - time.time(), 0.0)):
            die()

    when_round_is_written(path, stop, arm, name="crash")


def arm_deafness(node: FleetNode, path: str, stop: threading.Event) -> None:
    """From the round written to ``path`` on, drop every contribute stream other peers open for it.

    The peer stays alive, heartbeats and contributes to other leaders; as a leader nobody
    reaches it, like a device whose uplink was just cut to a trickle.
    """

    def arm(target: int) -> None:
        leader = node.leader
        assert leader is not None
        open_envelope_of = leader._open

        def deaf_open(conversation: Any, data: bytes, kind: Any, bound: int) -> Any:
            envelope = open_envelope_of(conversation, data, kind, bound)
            if envelope is not None and envelope.round >= target:
                return None  # the handler returns and the stream closes unanswered
            return envelope

        leader._open = deaf_open  # type: ignore[method-assign]

    when_round_is_written(path, stop, arm, name="deaf")


def when_round_is_written(path: str, stop: threading.Event, arm: Callable[[int], None], *, name: str) -> None:
    """On a thread: once ``path`` holds a round number (the test writes it), call ``arm`` with it."""

    def watch() -> None:
        while not stop.is_set():
            try:
                target = int(Path(path).read_text().strip())
            except (OSError, ValueError):
                stop.wait(0.05)
            else:
                arm(target)
                return

    threading.Thread(target=watch, name=name, daemon=True).start()


# ------------------------------------------------------------------------------------------
# the attacker (wrong key)


def attack(args: argparse.Namespace, network: FleetNetworkConfig, status: StatusFile, stop: threading.Event) -> int:
    """Try everything a peer without the run key could, and report what it obtained."""
    keys = RunKeys(run_id=bytes.fromhex(args.attack_run_id), _run_key=os.urandom(32))
    peer = FleetPeer(network, name=args.name).start()
    report: dict[str, Any] = {"peer_id": peer.peer_id, "config_readable": False, "roster_readable": 0,
                              "answers_received": 0, "answers_opened": 0, "messages_sent": 0}
    status.write("started", peer_id=peer.peer_id, addresses=peer.addresses, daemon_pid=peer.daemon_pid, role="attacker")
    try:
        try:
            peer.call(fetch_run_config(peer, keys, timeout=3), timeout=10)
            report["config_readable"] = True
        except RunNotFound as error:
            report["config_error"] = str(error)
        found = peer.call(peer.dht_get(roster_key(keys)), timeout=10) or {}
        targets = sorted(found) if isinstance(found, dict) else []
        for sealed in (found.values() if isinstance(found, dict) else []):
            try:
                open_envelope(keys, sealed, kinds=(MessageKind.ROSTER,), max_payload_bytes=1 << 16)
                report["roster_readable"] += 1
            except GlobetrainError:
                pass
        report["targets"] = targets
        requests = [
            ("contribute", MessageKind.CONTRIBUTION, os.urandom(256)),
            ("aggregate", MessageKind.AGGREGATE_REQUEST, b""),
            ("state", MessageKind.STATE_REQUEST, b'{"what": "manifest", "round": null}'),
        ]
        for _ in range(max(args.rounds or 3, 1)):
            if stop.is_set():
                break
            for target in targets:
                for service, kind, payload in requests:
                    answer = peer.call(_probe(peer, keys, target, service, kind, payload), timeout=15)
                    report["messages_sent"] += 1
                    if answer is not None:
                        report["answers_received"] += 1
                        try:
                            open_envelope(keys, answer, kinds=tuple(MessageKind), max_payload_bytes=1 << 30)
                            report["answers_opened"] += 1
                        except GlobetrainError:
                            pass
            stop.wait(args.period)
        status.write("attack", **report)
        return 0
    finally:
        peer.stop()


async def _probe(peer: FleetPeer, keys: RunKeys, target: str, service: str, kind: MessageKind, payload: bytes) -> bytes | None:
    try:
        conversation = await peer.converse(target, protocol_name(keys, service), timeout=3)
    except TransportError:
        return None
    try:
        await conversation.send(seal(keys, kind, payload, sender=peer.peer_id, name=peer.name, round_index=0), timeout=3)
        return await conversation.receive(max_bytes=1 << 24, timeout=3)
    except TransportError:
        return None
    finally:
        conversation.close()


# ------------------------------------------------------------------------------------------
# an honest peer


def run_peer(args: argparse.Namespace, network: FleetNetworkConfig, status: StatusFile, stop: threading.Event) -> int:
    keys = RunKeys.from_run_key(run_key_from_environment(args.run_key))
    if args.bootstrap:
        node = FleetNode.create_run(keys, proxy_run_config(args), network, name=args.name)
    else:
        node = FleetNode.join(keys, network, name=args.name, timeout=args.join_timeout)
    try:
        if args.address_file:
            temporary = Path(args.address_file + ".tmp")
            temporary.write_text("\n".join(node.peer.addresses) + "\n")
            os.replace(temporary, args.address_file)
        run_config = node.run_config
        task = proxy_task(run_config)
        model = task.build_model()
        shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
        exchange: Exchange = node.make_exchange(shapes)
        if args.rogue:
            exchange = RogueExchange(node.exchange, node, shapes)  # type: ignore[arg-type]
        listener = args.bootstrap
        optimizer = None if listener else torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loop = SyncLoop(model, optimizer, exchange, run_config.sync, name=args.name, device_index=args.index)
        node.attach(loop)
        status.write(
            "started", peer_id=node.peer.peer_id, name=args.name, role=node.role, addresses=node.peer.addresses,
            daemon_pid=node.peer.daemon_pid, run_id=keys.run_id_hex, start_time=run_config.start_time,
            period=run_config.fleet.round_period_s,
        )
        train_step = None if listener else make_train_step(task, model, optimizer, run_config, args.index)
        evaluation = task.build_model()

        perturbed: list[int] = []

        def on_round(record: dict[str, Any]) -> None:
            if args.perturb_file and not perturbed and record["digest_round"] is not None:
                perturb_if_asked(loop, args.perturb_file, record, perturbed)
            view = node.status()
            if listener and record["round"] % 2 == 0:
                loop.load_global_into(evaluation)
                record["accuracy"] = task.accuracy(evaluation)
            finite = all(bool(torch.isfinite(g).all()) for g in loop.global_params)
            upcoming = node.roster.candidates(record["round"] + 1, alive_at=time.time())
            record["next_leader"] = upcoming[0].peer_id if upcoming else None
            status.write("round", **record, finite=finite, rejections=view["rejections"],
                         rejections_by_sender=view["rejections_by_sender"], bytes=view["bytes"], roster=view["roster"],
                         exchange=view["exchange"])

        driver = RoundDriver(node, loop, train_step=train_step, stop=stop, on_round=on_round,
                             max_steps_per_round=args.steps_per_round)
        if args.crash_file:
            arm_crash(node, args.crash_file, stop)
        if args.deaf_file:
            arm_deafness(node, args.deaf_file, stop)
        download = driver.join()
        status.write("joined", round=loop.round, downloaded=download.__dict__ if download else None,
                     digest=loop.last_digest)
        driver.run(until_round=args.rounds)
        status.write("finished", round=loop.round, status=node.status(), digest=loop.last_digest)
        return 0
    finally:
        node.close()


def make_train_step(task: ProxyTask, model: nn.Module, optimizer: torch.optim.Optimizer, run_config: RunConfig, index: int):
    shards = task.shards(max(int(run_config.data.get("shards", 1)), index + 1), partition="iid")
    batches = task.batches(shards[index], 32, seed=index)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> int:
        inputs, labels = next(batches)
        optimizer.zero_grad()
        loss_fn(model(inputs), labels).backward()
        optimizer.step()
        return len(labels)

    return step


# ------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m globetrain.fleet.testpeer", description=__doc__.split("\n")[0])
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--bootstrap", action="store_true", help="create the run and follow it as a listener")
    role.add_argument("--join", action="append", metavar="ADDR", help="multiaddr (/p2p/...) of a peer of the run")
    parser.add_argument("--run-key", default=None, help="run key (default: $GLOBETRAIN_RUN_KEY)")
    parser.add_argument("--name", default="", help="this peer's name in logs and the roster")
    parser.add_argument("--index", type=int, default=0, help="device index: which data shard it trains on")
    parser.add_argument("--shards", type=int, default=4, help="number of data shards (bootstrap: written into the run)")
    parser.add_argument("--status", default=None, help="append JSON lines about this peer here")
    parser.add_argument("--address-file", default=None, help="write this peer's multiaddrs here once it listens")
    parser.add_argument("--peers-file", default="", help="remember seen peers here (rejoin through them)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--announce", action="append", default=[], help="multiaddr to announce instead of the listening one")
    parser.add_argument("--period", type=float, default=2.0, help="bootstrap: round period T in seconds")
    parser.add_argument("--start-delay", type=float, default=4.0, help="bootstrap: seconds until round 0 starts")
    parser.add_argument("--state-chunk-bytes", type=int, default=64 << 10, help="bootstrap: state download chunk size")
    parser.add_argument("--hidden", type=int, default=64, help="bootstrap: width of the proxy MLP")
    parser.add_argument("--rounds", type=int, default=None, help="stop after this round (default: until SIGINT/SIGTERM)")
    parser.add_argument("--steps-per-round", type=int, default=20, help="most inner steps per round (leaves CPU to others)")
    parser.add_argument("--join-timeout", type=float, default=20.0, help="seconds to find the run config")
    parser.add_argument("--rogue", choices=["cycle"], default=None, help="test only: send bad contributions")
    parser.add_argument("--perturb-file", default=None, help="test only: nudge the global model in the round written here")
    parser.add_argument("--crash-file", default=None, help="test only: SIGKILL this peer in the round written here")
    parser.add_argument("--deaf-file", default=None,
                        help="test only: from the round written here on, leave other peers' contributions unanswered")
    parser.add_argument("--attack-run-id", default=None, help="test only: act as a wrong-key peer of this run id")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.name = args.name or ("bootstrap" if args.bootstrap else f"device{args.index}")
    logging.basicConfig(level=getattr(logging, args.log_level), format=f"%(asctime)s %(levelname)s [{args.name}] %(name)s: %(message)s")
    torch.set_num_threads(1)
    stop = threading.Event()
    # SIGTERM ends the peer like the end of its rounds: finish the step, leave cleanly.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    status = StatusFile(args.status)
    try:
        network = FleetNetworkConfig(
            host_maddrs=(f"/ip4/{args.host}/tcp/0",),
            announce_maddrs=tuple(args.announce),
            initial_peers=tuple(args.join or ()),
            peers_file=args.peers_file,
            connect_timeout_s=3.0,
            request_timeout_s=5.0,
            state_download_timeout_s=60.0,
            shutdown_timeout_s=4.0,
        )
        if args.attack_run_id:
            return attack(args, network, status, stop)
        return run_peer(args, network, status, stop)
    except KeyboardInterrupt:
        status.write("interrupted")
        print(f"[{args.name}] interrupted", file=sys.stderr)
        return 130
    except GlobetrainError as error:
        status.write("error", message=str(error))
        print(f"testpeer: error: {error}", file=sys.stderr)
        return 2
    finally:
        status.close()


if __name__ == "__main__":
    sys.exit(main())

"""The delay relay: a TCP proxy that adds one-way delay, jitter, stalls and drops.

netem is missing from this kernel, so latency is added in user space. The relay runs in
a device's namespace, listens on the device's lab address and forwards each accepted
connection to the device's real listener on loopback; the device announces the relay's
address, so every connection *to* the device passes through it. Each direction of each
connection is a ``DelayLine`` (see ``delay_line.py``): read a chunk, hold it until its
release time, write it on. The relay splits each TCP connection in two, so the kernels'
TCP sees a short round trip while the application sees the configured latency (as with
a performance-enhancing proxy); ``docs/netlab.md`` discusses what that does and does not
model.

Run as ``python -m globetrain.netlab.relay --listen 10.213.0.3:7000 --target
127.0.0.1:7001 --delay-ms 40 --jitter-ms 10 --control /run/relay-dev1.sock``. It prints
one JSON line ``{"event": "ready", ...}`` once it accepts connections, and on SIGTERM a
``{"event": "stopped", "stats": ...}`` line. Settings change at runtime through the
control socket (``relay_control.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from globetrain.config import ConfigSection, field, require
from globetrain.errors import ConfigError
from globetrain.netlab.delay_line import DelayLine, PathDelay, StallCalendar, choose_dropped
from globetrain.netlab.events import DropEvent, StallEvent

logger = logging.getLogger(__name__)

Direction = Literal["forward", "backward"]
DIRECTIONS: tuple[Direction, ...] = ("forward", "backward")


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``"10.213.0.3:7000"`` or ``"[::1]:7000"`` as (host, port); ``ConfigError`` naming ``what`` otherwise."""
    host, separator, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not separator or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} = {text!r} is invalid: expected HOST:PORT, e.g. 10.213.0.3:7000")
    return host, int(port)


def _milliseconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class RelayConfig(ConfigSection):
    """Where a relay listens and forwards to, and what it does to the bytes in between."""

    listen: str = field(help="HOST:PORT to accept connections on (port 0: any free port)")
    target: str = field(help="HOST:PORT each accepted connection is forwarded to")
    forward_delay_ms: float = field(0.0, help="one-way delay added to bytes from the client to the target")
    forward_jitter_ms: float = field(0.0, help="up to this much extra delay per chunk, client to target (order kept)")
    backward_delay_ms: float = field(0.0, help="one-way delay added to bytes from the target back to the client")
    backward_jitter_ms: float = field(0.0, help="up to this much extra delay per chunk, target to client (order kept)")
    stalls: tuple[StallEvent, ...] = field((), help="times (after start) at which nothing is forwarded for a while")
    drops: tuple[DropEvent, ...] = field((), help="times (after start) at which open connections are cut")
    seed: int | None = field(None, help="seed of the jitter and drop choices (None: a fresh one each run)")
    chunk_bytes: int = field(65536, help="largest chunk read at once; each chunk gets its own jitter")
    max_pending_bytes: int = field(
        4 * 1024 * 1024,
        help="bytes held per direction and connection before the relay stops reading (back-pressure); "
        "must exceed rate x delay of the path or it caps the throughput",
    )
    connect_timeout_s: float = field(10.0, help="how long to try reaching the target for each new connection")

    def __post_init__(self) -> None:
        parse_address(self.listen, "RelayConfig.listen")
        parse_address(self.target, "RelayConfig.target")
        for name in ("forward_delay_ms", "forward_jitter_ms", "backward_delay_ms", "backward_jitter_ms"):
            value = getattr(self, name)
            require(_milliseconds(value), "RelayConfig", name, value, "milliseconds >= 0")
        require(isinstance(self.chunk_bytes, int) and self.chunk_bytes > 0,
                "RelayConfig", "chunk_bytes", self.chunk_bytes, "an integer > 0")
        require(isinstance(self.max_pending_bytes, int) and self.max_pending_bytes >= self.chunk_bytes,
                "RelayConfig", "max_pending_bytes", self.max_pending_bytes,
                f"an integer >= chunk_bytes ({self.chunk_bytes})")
        require(_milliseconds(self.connect_timeout_s) and self.connect_timeout_s > 0,
                "RelayConfig", "connect_timeout_s", self.connect_timeout_s, "seconds > 0")

    def path_delay(self, direction: Direction) -> PathDelay:
        return PathDelay(getattr(self, f"{direction}_delay_ms") / 1000, getattr(self, f"{direction}_jitter_ms") / 1000)


@dataclass
class RelayStats:
    """What a relay did so far; bytes count what was written on (after the delay)."""

    connections_accepted: int = 0
    connections_open: int = 0
    connections_dropped: int = 0
    connections_failed: int = 0
    forward_bytes: int = 0
    backward_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Pipe:
    """One direction of one connection: read chunks, hold each until released, write it on."""

    def __init__(self, relay: Relay, direction: Direction, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.relay = relay
        self.direction = direction
        self.reader = reader
        self.writer = writer
        self.line = DelayLine(relay.delays[direction], relay.rng, relay.stalls)
        self._woken = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def wake(self) -> None:
        self._woken.set()

    async def read_side(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._room.wait()
            chunk = await self.reader.read(self.relay.config.chunk_bytes)
            self.line.delay = self.relay.delays[self.direction]
            self.line.push(chunk, loop.time())
            self._woken.set()
            if not chunk:
                return  # end of stream: queued as the last chunk, released in order
            if self.line.pending_bytes >= self.relay.config.max_pending_bytes:
                self._room.clear()

    async def write_side(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for chunk in self.line.pop_due(loop.time()):
                if not chunk:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                    return
                self.writer.write(chunk)
                await self.writer.drain()
                self.relay.count(self.direction, len(chunk))
            if self.line.pending_bytes < self.relay.config.max_pending_bytes:
                self._room.set()
            release = self.line.next_release(loop.time())
            self._woken.clear()
            timeout = None if release is None else max(0.0, release - loop.time())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout)


class _Connection:
    def __init__(self, relay: Relay, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 target: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.client_writer = client[1]
        self.target_writer = target[1]
        self.pipes = (
            _Pipe(relay, "forward", client[0], target[1]),
            _Pipe(relay, "backward", target[0], client[1]),
        )
        self.tasks: list[asyncio.Task] = []

    async def run(self) -> None:
        self.tasks = [asyncio.ensure_future(coroutine) for pipe in self.pipes
                      for coroutine in (pipe.read_side(), pipe.write_side())]
        try:
            await asyncio.gather(*self.tasks)
        except (OSError, asyncio.IncompleteReadError):
            self.abort()  # one side reset: pass the reset on to the other side
        finally:
            for task in self.tasks:
                task.cancel()
            for writer in (self.client_writer, self.target_writer):
                writer.close()

    def abort(self) -> None:
        """Cut both sides at once with a TCP reset, as a rebooted NAT router does."""
        for writer in (self.client_writer, self.target_writer):
            connection = writer.get_extra_info("socket")
            if connection is not None:
                # Linger 0: closing sends RST instead of an orderly FIN, so the peer sees
                # "connection reset", not a clean end of stream it could mistake for success.
                with contextlib.suppress(OSError):
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()

    def wake(self) -> None:
        for pipe in self.pipes:
            pipe.wake()


class Relay:
    """The relay's runtime; embeddable (``await relay.start()``) or run by ``main``."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stalls = StallCalendar()
        self.delays: dict[Direction, PathDelay] = {direction: config.path_delay(direction) for direction in DIRECTIONS}
        self.stats = RelayStats()
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task] = set()
        self._server: asyncio.AbstractServer | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self.listen_address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        """Listen; schedule the configured stalls and drops; return the bound (host, port)."""
        loop = asyncio.get_running_loop()
        host, port = parse_address(self.config.listen, "RelayConfig.listen")
        self._server = await asyncio.start_server(self._accept, host, port)
        bound = self._server.sockets[0].getsockname()
        self.listen_address = (bound[0], bound[1])
        started = loop.time()
        for stall in self.config.stalls:
            self.stalls.add(started + stall.at_s, stall.duration_s)
        for drop in self.config.drops:
            self._timers.append(loop.call_at(started + drop.at_s, self.drop, drop.fraction))
        return self.listen_address

    async def close(self) -> None:
        """Stop listening and cut every open connection."""
        for timer in self._timers:
            timer.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for connection in list(self._connections):
            connection.abort()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    # ------------------------------------------------------------------ runtime settings

    def set_delay(self, direction: Direction | Literal["both"], *, delay_ms: float | None = None,
                  jitter_ms: float | None = None) -> None:
        """Change the delay/jitter of new chunks in ``direction`` ("forward", "backward", "both")."""
        targets = DIRECTIONS if direction == "both" else (direction,)
        for name in targets:
            if name not in DIRECTIONS:
                raise ValueError(f"direction = {direction!r} is invalid: expected forward, backward or both")
            current = self.delays[name]
            self.delays[name] = PathDelay(
                current.delay_s if delay_ms is None else delay_ms / 1000,
                current.jitter_s if jitter_ms is None else jitter_ms / 1000,
            )

    def stall(self, seconds: float) -> None:
        """Forward nothing from now on for ``seconds`` (queued chunks wait too)."""
        now = asyncio.get_running_loop().time()
        self.stalls.forget_before(now)
        self.stalls.add(now, seconds)
        for connection in self._connections:
            connection.wake()  # their next release moved: recompute the wait

    def drop(self, fraction: float) -> int:
        """Cut ``fraction`` of the open connections now (rounded up); return how many."""
        victims = choose_dropped(sorted(self._connections, key=id), fraction, self.rng)
        for connection in victims:
            connection.abort()
        self.stats.connections_dropped += len(victims)
        if victims:
            logger.info("relay dropped %d of %d connections", len(victims), len(self._connections))
        return len(victims)

    def stalled(self) -> bool:
        return self.stalls.stalled_at(asyncio.get_running_loop().time())

    def count(self, direction: Direction, size: int) -> None:
        if direction == "forward":
            self.stats.forward_bytes += size
        else:
            self.stats.backward_bytes += size

    def pending_bytes(self) -> dict[str, int]:
        return {
            f"{direction}_pending_bytes": sum(
                connection.pipes[index].line.pending_bytes for connection in self._connections
            )
            for index, direction in enumerate(DIRECTIONS)
        }

    def status(self) -> dict[str, Any]:
        return {
            "stats": {**self.stats.to_dict(), **self.pending_bytes()},
            "delay": {
                direction: {"delay_ms": delay.delay_s * 1000, "jitter_ms": delay.jitter_s * 1000}
                for direction, delay in self.delays.items()
            },
            "stalled": self.stalled(),
        }

    # ------------------------------------------------------------------ connections

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.stats.connections_accepted += 1
        try:
            host, port = parse_address(self.config.target, "RelayConfig.target")
            try:
                target = await asyncio.wait_for(asyncio.open_connection(host, port), self.config.connect_timeout_s)
            except (OSError, asyncio.TimeoutError) as error:
                # The device behind the relay is not (yet) listening: refuse like it would.
                self.stats.connections_failed += 1
                logger.info("relay could not reach its target %s: %s", self.config.target, error)
                client_writer.transport.abort()
                return
            connection = _Connection(self, (client_reader, client_writer), target)
            self._connections.add(connection)
            self.stats.connections_open += 1
            try:
                await connection.run()
            except asyncio.CancelledError:
                pass  # dropped or relay closing: abort() already cut both sides
            finally:
                self._connections.discard(connection)
                self.stats.connections_open -= 1
        finally:
            self._handlers.discard(task)


# ---------------------------------------------------------------------- command line


def relay_command(*, listen: str, target: str, delay_ms: float = 0.0, jitter_ms: float = 0.0,
                  control: Path | None = None, stats_out: Path | None = None, seed: int | None = None,
                  python: str = sys.executable) -> list[str]:
    """The argv that runs a relay as its own process (e.g. ``host.popen(relay_command(...))``)."""
    argv = [python, "-m", "globetrain.netlab.relay", "--listen", listen, "--target", target,
            "--delay-ms", repr(float(delay_ms)), "--jitter-ms", repr(float(jitter_ms))]
    if control is not None:
        argv += ["--control", str(control)]
    if stats_out is not None:
        argv += ["--stats-out", str(stats_out)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    return argv



def _timed(text: str, what: str, build: type) -> Any:
    at, separator, value = text.partition(":")
    try:
        numbers = float(at), float(value)
    except ValueError:
        numbers = None
    if not separator or numbers is None:
        raise ConfigError(f"{what} {text!r} is invalid: expected AT_SECONDS:VALUE, e.g. 30:5")
    return build(*numbers)  # the event's own validation names the bad field


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m globetrain.netlab.relay",
        description="TCP relay that adds one-way delay, jitter, stalls and connection drops "
        "(the lab's stand-in for netem). Prints a JSON 'ready' line once listening.",
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on (port 0: any free port)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward each connection to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, both directions (default 0)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="extra random delay per chunk, both directions")
    for direction, meaning in (("forward", "client to target"), ("backward", "target to client")):
        parser.add_argument(f"--{direction}-delay-ms", type=float, help=f"delay {meaning} (overrides --delay-ms)")
        parser.add_argument(f"--{direction}-jitter-ms", type=float, help=f"jitter {meaning} (overrides --jitter-ms)")
    parser.add_argument("--stall", action="append", default=[], metavar="AT_S:SECONDS",
                        help="forward nothing for SECONDS from AT_S after start (repeatable)")
    parser.add_argument("--drop", action="append", default=[], metavar="AT_S:FRACTION",
                        help="cut FRACTION of the open connections at AT_S after start (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="seed of jitter and drop choices")
    parser.add_argument("--control", type=Path, default=None,
                        help="unix socket path for runtime changes (JSON lines, see relay_control.py)")
    parser.add_argument("--stats-out", type=Path, default=None, help="write the final stats as JSON here on exit")
    parser.add_argument("--max-pending-bytes", type=int, default=4 * 1024 * 1024,
                        help="bytes held per direction and connection before reading pauses")
    return parser


def config_from_args(args: argparse.Namespace) -> RelayConfig:
    def pick(override: float | None, both: float) -> float:
        return both if override is None else override

    return RelayConfig(
        listen=args.listen,
        target=args.target,
        forward_delay_ms=pick(args.forward_delay_ms, args.delay_ms),
        forward_jitter_ms=pick(args.forward_jitter_ms, args.jitter_ms),
        backward_delay_ms=pick(args.backward_delay_ms, args.delay_ms),
        backward_jitter_ms=pick(args.backward_jitter_ms, args.jitter_ms),
        stalls=tuple(_timed(text, "--stall", lambda at, seconds: StallEvent(at_s=at, duration_s=seconds))
                     for text in args.stall),
        drops=tuple(_timed(text, "--drop", lambda at, fraction: DropEvent(at_s=at, fraction=fraction))
                    for text in args.drop),
        seed=args.seed,
        max_pending_bytes=args.max_pending_bytes,
    )


async def serve(config: RelayConfig, control_path: Path | None, stats_out: Path | None) -> dict[str, Any]:
    """Run a relay (and its control socket) until SIGTERM/SIGINT; return its final status."""
    from globetrain.netlab.relay_control import serve_control  # the control protocol, kept apart

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    relay = Relay(config)
    host, port = await relay.start()
    control = await serve_control(relay, control_path) if control_path else None
    ready = {"event": "ready", "listen": f"{host}:{port}", "target": config.target,
             "control": str(control_path) if control_path else None}
    print(json.dumps(ready), flush=True)
    try:
        await stop.wait()
    finally:
        if control is not None:
            control.close()
            await control.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                control_path.unlink()  # type: ignore[union-attr]
        final = relay.status()
        await relay.close()
    if stats_out is not None:
        stats_out.write_text(json.dumps(final, indent=2))
    print(json.dumps({"event": "stopped", **final}), flush=True)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s relay %(levelname)s: %(message)s")
    try:
        config = config_from_args(args)
        asyncio.run(serve(config, args.control, args.stats_out))
    except ConfigError as error:
        print(f"relay: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"relay: error: cannot listen on {args.listen} or open {args.control}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

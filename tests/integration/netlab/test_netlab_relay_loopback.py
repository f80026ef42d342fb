"""The delay relay on loopback, in-process and as its own process (no root needed).

Timing assertions are lower bounds only (a delay is at least what was configured),
which hold however slow or busy the machine is.
"""

from __future__ import annotations

import asyncio
import json
import selectors
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from globetrain.netlab.errors import LabError
from globetrain.netlab.relay import Relay, RelayConfig
from globetrain.netlab.relay_control import RelayControl, serve_control

pytestmark = pytest.mark.integration
STEP_TIMEOUT_S = 20.0


@asynccontextmanager
async def echo_relay(**settings: Any) -> AsyncIterator[tuple[Relay, Callable[[], Awaitable[tuple]]]]:
    """An echo server behind a relay; yields the relay and a function opening a client connection."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = Relay(RelayConfig(listen="127.0.0.1:0", target=f"127.0.0.1:{port}", seed=0, **settings))
    host, relay_port = await relay.start()
    clients: list[asyncio.StreamWriter] = []

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(host, relay_port)
        clients.append(writer)
        return reader, writer

    try:
        yield relay, connect
    finally:
        for writer in clients:
            writer.transport.abort()
        await relay.close()
        server.close()
        await server.wait_closed()


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, STEP_TIMEOUT_S))


def test_every_byte_is_forwarded_both_ways_and_counted() -> None:
    async def body() -> None:
        async with echo_relay() as (relay, connect):
            reader, writer = await connect()
            payload = bytes(range(256)) * 4096  # 1 MiB

            writer.write(payload)
            writer.write_eof()
            echoed = await reader.read(-1)  # until the echo's end of stream, passed on by the relay

            assert echoed == payload
            # Counted before the end of stream is passed on, so complete once it arrived.
            status = relay.status()["stats"]
            assert status["forward_bytes"] == status["backward_bytes"] == len(payload)
            assert status["connections_accepted"] == 1

    run(body())


def test_each_direction_is_delayed_by_at_least_its_delay() -> None:
    async def body() -> None:
        async with echo_relay(forward_delay_ms=80, backward_delay_ms=40, forward_jitter_ms=10) as (_, connect):
            reader, writer = await connect()
            loop = asyncio.get_running_loop()

            sent = loop.time()
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"

            assert loop.time() - sent >= 0.080 + 0.040

    run(body())


def test_a_stall_holds_data_until_it_ends() -> None:
    async def body() -> None:
        async with echo_relay() as (relay, connect):
            reader, writer = await connect()
            loop = asyncio.get_running_loop()
            writer.write(b"a")
            assert await reader.readexactly(1) == b"a"  # connected and flowing

            stalled_at = loop.time()
            relay.stall(0.3)
            writer.write(b"b")
            assert await reader.readexactly(1) == b"b"

            assert loop.time() - stalled_at >= 0.3
            assert not relay.stalled()

    run(body())


def test_latency_changes_mid_run_apply_to_new_data() -> None:
    async def body() -> None:
        async with echo_relay(forward_delay_ms=10) as (relay, connect):
            reader, writer = await connect()
            loop = asyncio.get_running_loop()
            writer.write(b"a")
            await reader.readexactly(1)

            relay.set_delay("both", delay_ms=150)
            sent = loop.time()
            writer.write(b"b")
            await reader.readexactly(1)

            assert loop.time() - sent >= 0.300  # 150 ms each way now

    run(body())


def test_drops_cut_the_chosen_share_of_connections() -> None:
    async def body() -> None:
        async with echo_relay() as (relay, connect):
            connections = [await connect() for _ in range(4)]
            for reader, writer in connections:  # every connection is established through the relay
                writer.write(b"x")
                assert await reader.readexactly(1) == b"x"

            assert relay.drop(0.5) == 2

            reset, intact = 0, 0
            for reader, writer in connections:
                try:
                    writer.write(b"y")
                    intact += await reader.read(1) == b"y"
                except ConnectionResetError:
                    reset += 1  # a reset, not a clean end of stream
            assert (reset, intact) == (2, 2)
            assert relay.status()["stats"]["connections_dropped"] == 2
            assert relay.drop(1.0) == 2

    run(body())


def test_a_target_that_is_not_listening_counts_as_a_failed_connection() -> None:
    async def body() -> None:
        relay = Relay(RelayConfig(listen="127.0.0.1:0", target="127.0.0.1:1", connect_timeout_s=5))
        host, port = await relay.start()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            with pytest.raises(ConnectionError):
                if await reader.read(1) == b"":
                    raise ConnectionResetError("closed")
            writer.close()
            assert relay.status()["stats"]["connections_failed"] == 1
        finally:
            await relay.close()

    run(body())


def test_back_pressure_bounds_what_the_relay_holds() -> None:
    async def body() -> None:
        limit, chunk = 128 * 1024, 16 * 1024
        async with echo_relay(max_pending_bytes=limit, chunk_bytes=chunk) as (relay, connect):
            _, writer = await connect()
            relay.stall(60.0)  # nothing leaves: everything sent piles up before the relay

            writer.write(bytes(4 * 1024 * 1024))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(writer.drain(), 1.0)  # the relay stopped reading

            assert relay.pending_bytes()["forward_pending_bytes"] <= limit + chunk

    run(body())


def test_the_control_socket_changes_and_reports_a_running_relay(tmp_path: Path) -> None:
    async def body() -> None:
        async with echo_relay(forward_delay_ms=20) as (relay, _):
            server = await serve_control(relay, tmp_path / "control.sock")
            try:
                control = RelayControl(tmp_path / "control.sock")
                changed = await asyncio.to_thread(control.set_delay, delay_ms=40, jitter_ms=4)
                assert changed["delay"]["forward"] == {"delay_ms": 40.0, "jitter_ms": 4.0}
                assert await asyncio.to_thread(control.drop, 1.0) == 0
                with pytest.raises(LabError, match="seconds = -1.0 is invalid"):
                    await asyncio.to_thread(control.stall, -1)
            finally:
                server.close()
                await server.wait_closed()

    run(body())
    with pytest.raises(LabError, match="is unreachable"):
        RelayControl(tmp_path / "control.sock", timeout_s=1).status()


def read_line(process: subprocess.Popen, timeout_s: float = STEP_TIMEOUT_S) -> dict[str, Any]:
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout_s), "the relay printed nothing in time"
    return json.loads(process.stdout.readline())


def test_the_relay_process_announces_itself_and_reports_on_sigterm(tmp_path: Path) -> None:
    control, stats = tmp_path / "relay.sock", tmp_path / "stats.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "globetrain.netlab.relay", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:1",
         "--delay-ms", "25", "--control", str(control), "--stats-out", str(stats)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready = read_line(process)
        assert ready["event"] == "ready" and ready["listen"].startswith("127.0.0.1:")
        assert RelayControl(control).status()["delay"]["forward"]["delay_ms"] == 25.0

        process.send_signal(signal.SIGTERM)
        stopped = read_line(process)

        assert process.wait(STEP_TIMEOUT_S) == 0
        assert stopped["event"] == "stopped"
        assert json.loads(stats.read_text())["stats"]["connections_accepted"] == 0
        assert not control.exists()
    finally:
        process.kill()
        process.communicate()


def test_the_relay_process_refuses_bad_options_with_a_message() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "globetrain.netlab.relay", "--listen", "nowhere", "--target", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=STEP_TIMEOUT_S,
    )

    assert completed.returncode == 2
    assert "RelayConfig.listen = 'nowhere' is invalid" in completed.stderr

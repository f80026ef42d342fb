"""A measuring TCP transfer between lab hosts: one-way delay, duration, bytes.

Run a sink in one host's namespace and a source in another's::

    python -m globetrain.netlab.probe sink --listen 10.213.0.3:9000
    python -m globetrain.netlab.probe source --connect 10.213.0.3:9000 --bytes 2000000

The source sends an 8-byte timestamp (CLOCK_MONOTONIC, which all namespaces of one
machine share) and then the payload; the sink timestamps the arrival of the first and
the last byte and sends its report back, so the source prints one JSON object with
both sides. Used by the lab's tests and by ``python -m globetrain.netlab calibrate`` to
check that the lab delivers the rates and delays a profile asks for.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

from globetrain.errors import ConfigError
from globetrain.netlab.relay import parse_address

HEADER = struct.Struct("!Q")  # the source's send time, ns
BLOCK_BYTES = 64 * 1024


def run_sink(listen: tuple[str, int], *, timeout_s: float, announce: bool = True) -> dict[str, Any]:
    """Accept one connection, read it to the end, reply with and return the measurement."""
    with socket.create_server(listen) as server:
        server.settimeout(timeout_s)
        if announce:
            host, port = server.getsockname()[:2]
            print(json.dumps({"event": "ready", "listen": f"{host}:{port}"}), flush=True)
        connection, _ = server.accept()
    with connection:
        connection.settimeout(timeout_s)
        received = bytearray()
        while len(received) < HEADER.size:
            chunk = connection.recv(HEADER.size - len(received))
            if not chunk:
                raise ConnectionError("the source closed the connection before its timestamp arrived")
            received += chunk
        first_arrival_ns = time.monotonic_ns()
        (sent_ns,) = HEADER.unpack(received)
        total = HEADER.size
        last_arrival_ns = first_arrival_ns
        while chunk := connection.recv(BLOCK_BYTES):
            total += len(chunk)
            last_arrival_ns = time.monotonic_ns()
        transfer_s = (last_arrival_ns - sent_ns) / 1e9
        report = {
            "received_bytes": total,
            "one_way_delay_s": (first_arrival_ns - sent_ns) / 1e9,
            "transfer_s": transfer_s,
            "goodput_mbit": total * 8 / transfer_s / 1e6 if transfer_s > 0 else None,
        }
        connection.sendall(json.dumps(report).encode() + b"\n")
    return report


def run_source(connect: tuple[str, int], payload_bytes: int, *, timeout_s: float) -> dict[str, Any]:
    """Send a timestamp and ``payload_bytes`` bytes; return what was sent and the sink's report."""
    block = memoryview(bytes(BLOCK_BYTES))
    with socket.create_connection(connect, timeout=timeout_s) as connection:
        connection.sendall(HEADER.pack(time.monotonic_ns()))
        remaining = payload_bytes
        while remaining > 0:
            size = min(remaining, BLOCK_BYTES)
            connection.sendall(block[:size])
            remaining -= size
        connection.shutdown(socket.SHUT_WR)
        with connection.makefile("rb") as replies:
            line = replies.readline()
    if not line:
        raise ConnectionError("the sink closed the connection without a report")
    return {"sent_bytes": HEADER.size + payload_bytes, "sink": json.loads(line)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m globetrain.netlab.probe", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sink = commands.add_parser("sink", help="accept one transfer and report its timing")
    sink.add_argument("--listen", required=True, help="HOST:PORT (port 0: any free port, printed on the ready line)")
    sink.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the source and for each read")
    source = commands.add_parser("source", help="send a timed transfer to a sink")
    source.add_argument("--connect", required=True, help="HOST:PORT of the sink (or of a relay in front of it)")
    source.add_argument("--bytes", type=int, required=True, help="payload bytes after the 8-byte timestamp")
    source.add_argument("--timeout", type=float, default=60.0, help="seconds for connecting and each send/read")
    args = parser.parse_args(argv)
    try:
        if args.command == "sink":
            run_sink(parse_address(args.listen, "--listen"), timeout_s=args.timeout)
        else:
            if args.bytes < 0:
                raise ConfigError(f"--bytes = {args.bytes} is invalid: expected bytes >= 0")
            result = run_source(parse_address(args.connect, "--connect"), args.bytes, timeout_s=args.timeout)
            print(json.dumps(result), flush=True)
    except ConfigError as error:
        print(f"probe: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"probe: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

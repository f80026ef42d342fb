"""Changing a running relay: one JSON object per line over a unix socket, one reply per line.

Requests (``op`` picks the action; replies carry ``"ok": true`` or ``"ok": false`` and
an ``"error"`` that says what was wrong):

- ``{"op": "status"}``: stats (connections, bytes forwarded and pending per direction),
  current delays, whether a stall is on;
- ``{"op": "set_delay", "direction": "both", "delay_ms": 80, "jitter_ms": 10}``: new
  delay and/or jitter for chunks arriving from now on ("forward", "backward" or "both");
- ``{"op": "stall", "seconds": 5}``: forward nothing for 5 s from now;
- ``{"op": "drop", "fraction": 1.0}``: cut that share of the open connections now.

A unix socket (not TCP) keeps the control channel out of the lab network: it cannot be
shaped, delayed or reached by the devices, and file permissions guard it.
``RelayControl`` is the blocking client the harness and ``Schedule`` use.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from pathlib import Path
from typing import Any

from globetrain.netlab.errors import LabError
from globetrain.netlab.relay import Relay

MAX_REQUEST_BYTES = 64 * 1024


def _number(request: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = request.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} = {value!r} is invalid: expected a number")
    return float(value)


def handle_request(relay: Relay, request: Any) -> dict[str, Any]:
    """Apply one control request to ``relay`` and return the reply (never raises)."""
    try:
        if not isinstance(request, dict):
            raise ValueError(f"a request is a JSON object with an 'op', got {request!r}")
        op = request.get("op")
        if op == "status":
            return {"ok": True, **relay.status()}
        if op == "set_delay":
            delay_ms = _number(request, "delay_ms", optional=True)
            jitter_ms = _number(request, "jitter_ms", optional=True)
            for key, value in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms)):
                if value is not None and value < 0:
                    raise ValueError(f"{key} = {value!r} is invalid: expected milliseconds >= 0")
            relay.set_delay(request.get("direction", "both"), delay_ms=delay_ms, jitter_ms=jitter_ms)
            return {"ok": True, **relay.status()}
        if op == "stall":
            seconds = _number(request, "seconds")
            if seconds is None or seconds <= 0:
                raise ValueError(f"seconds = {seconds!r} is invalid: expected seconds > 0")
            relay.stall(seconds)
            return {"ok": True, **relay.status()}
        if op == "drop":
            fraction = _number(request, "fraction")
            if fraction is None or not 0 <= fraction <= 1:
                raise ValueError(f"fraction = {fraction!r} is invalid: expected a share in [0, 1]")
            return {"ok": True, "dropped": relay.drop(fraction)}
        raise ValueError(f"op = {op!r} is unknown: expected one of status, set_delay, stall, drop")
    except ValueError as error:
        return {"ok": False, "error": str(error)}


async def serve_control(relay: Relay, path: Path) -> asyncio.AbstractServer:
    """Answer control requests for ``relay`` on the unix socket ``path`` (replaced if stale)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                except json.JSONDecodeError as error:
                    reply: dict[str, Any] = {"ok": False, "error": f"not a JSON line: {error}"}
                else:
                    reply = handle_request(relay, request)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            pass  # a client that went away or sent a line over the limit: nothing to answer
        finally:
            writer.close()

    path.unlink(missing_ok=True)
    return await asyncio.start_unix_server(answer, str(path), limit=MAX_REQUEST_BYTES)


class RelayControl:
    """Blocking client of a relay's control socket."""

    def __init__(self, path: str | Path, *, timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request; return the reply; ``LabError`` if the relay is unreachable or refuses."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(self.timeout_s)
                connection.connect(str(self.path))
                connection.sendall(json.dumps(request).encode() + b"\n")
                with connection.makefile("rb") as replies:
                    line = replies.readline(MAX_REQUEST_BYTES)
        except OSError as error:
            raise LabError(
                f"relay control socket {self.path} is unreachable ({error}); is the relay running?"
            ) from error
        if not line:
            raise LabError(f"relay at {self.path} closed the control connection without a reply")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise LabError(f"relay at {self.path} refused {request}: {reply.get('error')}")
        return reply

    def status(self) -> dict[str, Any]:
        return self.request({"op": "status"})

    def set_delay(self, *, delay_ms: float | None = None, jitter_ms: float | None = None,
                  direction: str = "both") -> dict[str, Any]:
        return self.request({"op": "set_delay", "direction": direction, "delay_ms": delay_ms, "jitter_ms": jitter_ms})

    def stall(self, seconds: float) -> dict[str, Any]:
        return self.request({"op": "stall", "seconds": seconds})

    def drop(self, fraction: float = 1.0) -> int:
        return int(self.request({"op": "drop", "fraction": fraction})["dropped"])

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the relay answers (for callers that cannot read its 'ready' line)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.status()
                return
            except LabError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)  # the relay process is still starting; retry briefly

"""Metrics as JSON lines, written as they happen and read back whole or as they grow.

A fleet device appends one line per round boundary (``ROUND_FIELDS`` at least: the
simulator's calibration reads exactly these), the bootstrap one line per evaluation of
the global model, and reports are drawn from the files afterwards. Each line reaches
the file in one ``write`` on a descriptor opened with ``O_APPEND``, so a reader never
sees half of a line followed by another writer's line, and a crash leaves at most one
incomplete last line, which readers skip.

Metrics must never stop training: a full or unwritable disk turns the writer off with
one warning, and training goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROUND_FIELDS: tuple[str, ...] = (
    "t",
    "device",
    "round",
    "inner_steps",
    "samples",
    "compute_s",
    "wait_s",
    "bytes_sent",
    "bytes_received",
    "density",
    "bits",
    "status",
)
"""Fields of a device's per-round line (``event: "round"``). ``t``: Unix time of the
boundary; ``compute_s``: seconds in inner steps since the previous line; ``wait_s``:
seconds the boundary blocked on exchanges; ``bytes_*``: bytes this device's peer put on
or took off the wire since the previous line (exchanges, state served or downloaded,
envelopes and frames included); ``density``/``bits``: the round's compression settings;
``status``: what happened to the exchange applied at this boundary (``applied``,
``failed``, ``abandoned``, ``diverged``, or ``pending`` when none was due yet).

Devices also write ``wire_bytes_sent``/``wire_bytes_received``: every frame their libp2p
daemon sent or received since the previous line (DHT, libp2p's own traffic, TCP/IP and
Ethernet headers included), from the kernel's socket counters; null where unavailable."""


class MetricsWriter:
    """Appends JSON objects to ``path``, one line each; safe from several threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._descriptor: int | None = None
        self._failed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as error:
            self._disable(error)

    def write(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(dict(record), default=_plain, allow_nan=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._descriptor is None:
                return
            try:
                # One write per line: concurrent appenders never interleave inside a line.
                written = os.write(self._descriptor, line)
                if written != len(line):
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
            except OSError as error:
                self._disable(error)

    def _disable(self, error: OSError) -> None:
        if not self._failed:
            log.warning(
                "cannot write metrics to %s (%s); training goes on without metrics (free space or fix the folder)",
                self.path, error.strerror or error,
            )
        self._failed = True
        if self._descriptor is not None:
            try:
                os.close(self._descriptor)
            except OSError:
                pass
        self._descriptor = None

    @property
    def working(self) -> bool:
        return self._descriptor is not None

    def close(self) -> None:
        with self._lock:
            if self._descriptor is not None:
                os.close(self._descriptor)
                self._descriptor = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _plain(value: Any) -> Any:
    """JSON for values that are not JSON types (numpy scalars, tuples, paths, non-finite floats)."""
    if hasattr(value, "item"):
        value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: metrics carry None for an undefined number (an empty evaluation)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def parse_lines(data: bytes) -> Iterator[dict[str, Any]]:
    """JSON objects of complete lines; lines that are not a JSON object are skipped."""
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def read_metrics(path: Path | str, *, event: str | None = None) -> list[dict[str, Any]]:
    """Every complete line of ``path`` (optionally only ``event``); [] if it does not exist."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    complete = data[: data.rfind(b"\n") + 1]  # a crash may leave the last line incomplete
    return [record for record in parse_lines(complete) if event is None or record.get("event") == event]


class MetricsTail:
    """The lines appended to a growing JSON-lines file since the previous ``read_new``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        return list(parse_lines(data[:cut]))

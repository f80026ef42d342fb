"""When the relay may release each chunk: delay, jitter, stalls. Pure; no clock, no I/O.

The relay reads a chunk from one side of a connection at time ``arrival`` and may write
it to the other side at its release time:

    planned_i = max(arrival_i + delay + U(0, jitter), planned_{i-1})
    release_i = the first moment >= max(planned_i, now) outside every stall window

- Jitter is extra delay drawn per chunk from a seeded RNG, never negative, so the
  configured delay is a lower bound. A TCP stream carries bytes in order, so a chunk is
  never released before an earlier one (the max with the previous plan): jitter makes
  later chunks bunch up behind a slow one, as a real queue does, but never reorders.
- Stalls are windows [start, start + duration) in which nothing is released; they are
  evaluated at release time, so a stall added on command also holds chunks that were
  already waiting. Stall windows are shared by both directions and all connections of
  a relay (a stalled link carries nothing).
- A delay change (latency doubles mid-run) applies to chunks arriving after it.

Times are seconds on any monotonic clock chosen by the caller; tests pass exact numbers.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
from collections import deque
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class PathDelay:
    """One direction's added latency: a fixed one-way ``delay_s`` plus up to ``jitter_s`` more."""

    delay_s: float = 0.0
    jitter_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("delay_s", "jitter_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"PathDelay.{name} = {value!r} is invalid: expected seconds >= 0")


class StallCalendar:
    """Windows of time in which a relay forwards nothing."""

    def __init__(self) -> None:
        self._windows: list[tuple[float, float]] = []  # (start, end), sorted by start

    def add(self, start: float, duration: float) -> None:
        if not (math.isfinite(start) and math.isfinite(duration) and duration > 0):
            raise ValueError(
                f"a stall needs a finite start and a duration > 0, got start={start!r}, duration={duration!r}"
            )
        bisect.insort(self._windows, (start, start + duration))

    def open_at_or_after(self, time: float) -> float:
        """The first moment >= ``time`` that lies in no stall window."""
        for start, end in self._windows:  # sorted by start: one pass handles overlaps
            if start <= time < end:
                time = end
        return time

    def stalled_at(self, time: float) -> bool:
        return self.open_at_or_after(time) != time

    def forget_before(self, time: float) -> None:
        """Drop windows that ended before ``time`` (they can no longer hold anything)."""
        self._windows = [window for window in self._windows if window[1] > time]

    @property
    def windows(self) -> tuple[tuple[float, float], ...]:
        return tuple(self._windows)


class DelayLine:
    """The chunks of one direction of one connection, waiting for their release time.

    A chunk is any sized payload (``len()``); ``b""`` works as an end-of-stream marker
    that is released in order after all data before it.
    """

    def __init__(self, delay: PathDelay, rng: random.Random, stalls: StallCalendar) -> None:
        self.delay = delay
        self._rng = rng
        self._stalls = stalls
        self._queue: deque[tuple[float, Sequence]] = deque()
        self._last_planned = -math.inf
        self.pending_bytes = 0
        self.released_bytes = 0

    def push(self, chunk: Sequence, arrival: float) -> float:
        """Queue ``chunk`` read at ``arrival``; return its planned release (before stalls)."""
        extra = self._rng.uniform(0.0, self.delay.jitter_s) if self.delay.jitter_s > 0 else 0.0
        planned = max(arrival + self.delay.delay_s + extra, self._last_planned)
        self._last_planned = planned
        self._queue.append((planned, chunk))
        self.pending_bytes += len(chunk)
        return planned

    def next_release(self, now: float) -> float | None:
        """When (>= ``now``) the oldest waiting chunk may go out, stalls included; None if none waits.

        From ``now`` on, not from the chunk's planned time: a chunk planned before a stall
        that began before anyone released it waits for the stall's end, not for the past.
        """
        if not self._queue:
            return None
        return self._stalls.open_at_or_after(max(self._queue[0][0], now))

    def pop_due(self, now: float) -> list[Sequence]:
        """Remove and return, in order, every chunk whose release time is <= ``now``."""
        due = []
        if self._stalls.stalled_at(now):
            return due
        # Planned times are non-decreasing and no stall covers ``now``: every chunk planned
        # at or before ``now`` is released now (those planned inside an earlier stall too).
        while self._queue and self._queue[0][0] <= now:
            _, chunk = self._queue.popleft()
            self.pending_bytes -= len(chunk)
            self.released_bytes += len(chunk)
            due.append(chunk)
        return due

    def __len__(self) -> int:
        return len(self._queue)


def choose_dropped(connections: Sequence[T], fraction: float, rng: random.Random) -> list[T]:
    """The connections to cut for a drop of ``fraction``: ceil(fraction * n) of them, at random.

    Rounding up makes "drop 10 %" of three connections cut one rather than none; 1.0 cuts all.
    """
    if not (isinstance(fraction, (int, float)) and 0 <= fraction <= 1):
        raise ValueError(f"drop fraction = {fraction!r} is invalid: expected a number in [0, 1]")
    count = min(len(connections), math.ceil(fraction * len(connections) - 1e-9))
    return rng.sample(list(connections), count)

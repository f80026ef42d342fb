"""The discrete-event core: a clock and a queue of timed actions.

Simulated time only moves when the next event is taken from the queue. Events at the same
instant run by ``priority`` (lower first), then in the order they were scheduled (a
sequence number breaks ties), which keeps runs deterministic. An event can be cancelled
through the handle ``schedule`` returns.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(eq=False)
class EventHandle:
    time: float
    label: str
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class EventQueue:
    """Run callbacks in simulated-time order; ``now`` is the time of the event running."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, int, EventHandle, Callable[..., Any], tuple[Any, ...]]] = []
        self._sequence = itertools.count()
        self.events_run = 0

    def clock(self) -> float:
        """The simulated clock, in the shape ``SyncLoop(clock=...)`` takes."""
        return self.now

    def schedule(
        self, time: float, action: Callable[..., Any], *args: Any, label: str = "", priority: int = 0
    ) -> EventHandle:
        if math.isnan(time):
            raise ValueError(f"event {label or action!r} scheduled at NaN")
        if time < self.now:
            raise ValueError(f"event {label or action!r} scheduled at {time:.6f}s, before now ({self.now:.6f}s)")
        handle = EventHandle(time, label)
        heapq.heappush(self._heap, (time, priority, next(self._sequence), handle, action, args))
        return handle

    def after(self, delay: float, action: Callable[..., Any], *args: Any, label: str = "") -> EventHandle:
        return self.schedule(self.now + max(delay, 0.0), action, *args, label=label)

    def next_time(self) -> float:
        while self._heap and self._heap[0][3].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else math.inf

    def run_next(self) -> bool:
        """Run the earliest pending event; False when none is left."""
        while self._heap:
            time, _, _, handle, action, args = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            self.now = time
            self.events_run += 1
            action(*args)
            return True
        return False

    def run_until(self, limit: float, *, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to and including time ``limit`` (or until ``stop()`` says so)."""
        while self.next_time() <= limit:
            if stop is not None and stop():
                return
            self.run_next()
        if not (stop is not None and stop()):
            self.now = max(self.now, limit) if math.isfinite(limit) else self.now

    def __len__(self) -> int:
        return sum(1 for entry in self._heap if not entry[3].cancelled)

"""Ending a fleet process cleanly on Ctrl+C (SIGINT) or SIGTERM.

While a process trains, a signal only sets ``StopSignals.event``: the round loop sees it
after the current inner step (well under a second), the process saves its checkpoint,
leaves the run and exits. Where the process waits on something it cannot check an
event in (joining the run, downloading state), a signal raises ``KeyboardInterrupt``
at once instead, and the ``finally`` blocks still shut the network down. A second
Ctrl+C always interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

EXIT_INTERRUPTED = 130


class StopSignals:
    """SIGINT/SIGTERM handlers that ask the process to stop; install from the main thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: int | None = None
        self._blocking = 0
        self._previous: dict[int, object] = {}

    def install(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        repeated = self.received is not None
        if self.received is None:
            self.received = signum
        self.event.set()
        if self._blocking or (repeated and signum == signal.SIGINT):
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        """A stretch that cannot watch the event: a signal raises ``KeyboardInterrupt`` in it."""
        if self.event.is_set():
            raise KeyboardInterrupt
        self._blocking += 1
        try:
            yield
        finally:
            self._blocking -= 1

    @property
    def stopped(self) -> bool:
        return self.event.is_set()

    def exit_code(self) -> int:
        """130 after Ctrl+C (the shell's convention), 0 after SIGTERM or without a signal."""
        return EXIT_INTERRUPTED if self.received == signal.SIGINT else 0

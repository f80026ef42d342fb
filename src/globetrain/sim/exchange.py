"""``SimExchange``: the sync loop's ``Exchange`` over simulated time.

Each simulated device's ``SyncLoop`` holds one of these. ``submit`` hands the
contribution to the method's protocol (leader rounds or a collective) and returns a
``Future`` at once; the protocol resolves it (``set_result`` with an ``ExchangeOutcome``
or ``set_exception(ExchangeFailed)``) when simulated time reaches the end of the
transfers, exactly as the real fleet's network thread resolves its futures. Nothing of
the algorithm lives here: averaging, error feedback, delayed application and QoS are
the real code's.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

from globetrain.errors import ExchangeFailed
from globetrain.sync.exchange import Contribution, Exchange, ExchangeOutcome


class ExchangeProtocol(Protocol):
    def accept(self, device: int, contribution: Contribution, future: Future[ExchangeOutcome]) -> None:
        """Take a device's contribution; resolve ``future`` later in simulated time."""

    def device_closed(self, device: int) -> None:
        """The device's loop is gone (it went offline): stop delivering to it."""


class SimExchange(Exchange):
    """One device's port into the simulated exchange."""

    def __init__(self, protocol: ExchangeProtocol, device: int) -> None:
        self.protocol = protocol
        self.device = device
        self.closed = False
        self.submitted = 0

    def submit(self, contribution: Contribution) -> Future[ExchangeOutcome]:
        future: Future[ExchangeOutcome] = Future()
        if self.closed:
            future.set_exception(ExchangeFailed(f"device {self.device} left the fleet"))
            return future
        self.submitted += 1
        self.protocol.accept(self.device, contribution, future)
        return future

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.device_closed(self.device)


def resolve(future: Future[ExchangeOutcome], outcome: ExchangeOutcome | None, failure: str = "") -> bool:
    """Resolve ``future`` once (later resolutions are ignored); returns whether it was resolved now."""
    if future.done():
        return False
    if outcome is not None:
        future.set_result(outcome)
    else:
        future.set_exception(ExchangeFailed(failure or "exchange failed"))
    return True

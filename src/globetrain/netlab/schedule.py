"""Applying a profile's timed events to a running lab: a plan (pure) and a runner (a thread).

``plan_actions`` turns a profile into a time-ordered list of absolute actions: "at 60 s
set dev3's uplink to 1.0 Mbit/s", "at 90 s set dev0's delay to 300 ms". Folding the
multiplicative changes into absolute values here (and not at run time) makes the plan
checkable before a run and exact in tests.

``Schedule`` runs the plan against a lab (rates, via tc) and the hosts' relays (delay,
stalls, drops, via their control sockets) on a thread that sleeps on a stop Event. An
action that fails (a relay that died) is recorded and logged, and the run goes on:
failures are data, and the validation report shows them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, Union

from globetrain.netlab.profile import NetworkProfile

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SetRates:
    at_s: float
    host: str
    uplink_mbit: float | None
    downlink_mbit: float | None


@dataclasses.dataclass(frozen=True)
class SetDelay:
    at_s: float
    host: str
    delay_ms: float
    jitter_ms: float


@dataclasses.dataclass(frozen=True)
class Stall:
    at_s: float
    host: str
    duration_s: float


@dataclasses.dataclass(frozen=True)
class Drop:
    at_s: float
    host: str
    fraction: float


Action = Union[SetRates, SetDelay, Stall, Drop]


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def plan_actions(profile: NetworkProfile) -> list[Action]:
    """Every timed event of ``profile`` as absolute actions, ordered by time (ties: profile order)."""
    current = {host.name: [host.uplink_mbit, host.downlink_mbit, host.delay_ms, host.jitter_ms]
               for host in profile.hosts}
    actions: list[Action] = []
    for change in sorted(profile.changes, key=lambda item: item.at_s):
        for host in profile.hosts:
            if not change.applies_to(host.name):
                continue
            state = current[host.name]
            # A factor on an unshaped rate or a zero delay changes nothing: no action, so a
            # host without a relay is not asked to change a delay it does not have.
            rates = [_scaled(state[0], change.uplink_factor), _scaled(state[1], change.downlink_factor)]
            if rates != state[:2]:
                state[:2] = rates
                actions.append(SetRates(change.at_s, host.name, rates[0], rates[1]))
            delays = [state[2] * change.delay_factor, state[3] * change.jitter_factor]
            if delays != state[2:]:
                state[2:] = delays
                actions.append(SetDelay(change.at_s, host.name, delays[0], delays[1]))
    for host in profile.hosts:
        actions.extend(Stall(stall.at_s, host.name, stall.duration_s) for stall in host.stalls)
        actions.extend(Drop(drop.at_s, host.name, drop.fraction) for drop in host.drops)
    return sorted(actions, key=lambda action: action.at_s)  # stable: ties keep the order above


class ShapedHost(Protocol):
    def set_uplink(self, mbit: float | None) -> None: ...
    def set_downlink(self, mbit: float | None) -> None: ...


class ShapedNetwork(Protocol):
    """What the schedule needs of a lab (``Lab`` is one)."""

    def host(self, name: str) -> ShapedHost: ...


class PathControl(Protocol):
    """What the schedule needs of a host's relay (``RelayControl`` is one)."""

    def set_delay(self, *, delay_ms: float | None = None, jitter_ms: float | None = None,
                  direction: str = "both") -> Any: ...
    def stall(self, seconds: float) -> Any: ...
    def drop(self, fraction: float = 1.0) -> int: ...


@dataclasses.dataclass(frozen=True)
class AppliedAction:
    """One action as it happened: when (seconds after start) and the error if it failed."""

    action: Action
    applied_at_s: float
    error: str | None = None


def _wait_on_event(stop: threading.Event, timeout_s: float) -> bool:
    return stop.wait(timeout_s)


class Schedule:
    """Applies a profile's timed actions to a running lab and relays, from ``start()`` on.

    ``clock`` and ``wait`` (``wait(stop_event, seconds) -> stopped``) are injectable so
    tests run a whole schedule in no time with a fake clock.
    """

    def __init__(
        self,
        profile: NetworkProfile,
        network: ShapedNetwork,
        relays: Mapping[str, PathControl] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = _wait_on_event,
    ) -> None:
        self.actions = plan_actions(profile)
        self._network = network
        self._relays = dict(relays or {})
        self._clock = clock
        self._wait = wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._applied: list[AppliedAction] = []
        self.started_at: float | None = None

    @property
    def applied(self) -> list[AppliedAction]:
        with self._lock:
            return list(self._applied)

    def start(self) -> Schedule:
        """Start applying on a daemon thread; time zero is now."""
        if self._thread is not None:
            raise RuntimeError("Schedule.start was called twice")
        self.started_at = self._clock()
        self._thread = threading.Thread(target=self.run, args=(self.started_at,), name="netlab-schedule", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop applying (pending actions are skipped) and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until every action was applied (or the schedule stopped); False on timeout."""
        if self._thread is None:
            raise RuntimeError("Schedule.wait before Schedule.start")
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def __enter__(self) -> Schedule:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def run(self, started_at: float) -> None:
        """Apply every action at its time after ``started_at``, until done or stopped."""
        for action in self.actions:
            while True:
                remaining = started_at + action.at_s - self._clock()
                if remaining <= 0:
                    break
                if self._wait(self._stop, remaining):
                    return
            if self._stop.is_set():
                return
            error = None
            try:
                self._apply(action)
            except Exception as failure:  # noqa: BLE001 - recorded; one failed action must not end the run
                error = f"{type(failure).__name__}: {failure}"
                logger.warning("network schedule: %s failed: %s", action, error)
            with self._lock:
                self._applied.append(AppliedAction(action, self._clock() - started_at, error))

    def _relay(self, host: str) -> PathControl:
        try:
            return self._relays[host]
        except KeyError:
            raise LookupError(f"no relay registered for host {host!r}; pass it in Schedule(relays=...)") from None

    def _apply(self, action: Action) -> None:
        if isinstance(action, SetRates):
            host = self._network.host(action.host)
            host.set_uplink(action.uplink_mbit)
            host.set_downlink(action.downlink_mbit)
        elif isinstance(action, SetDelay):
            self._relay(action.host).set_delay(delay_ms=action.delay_ms, jitter_ms=action.jitter_ms)
        elif isinstance(action, Stall):
            self._relay(action.host).stall(action.duration_s)
        elif isinstance(action, Drop):
            self._relay(action.host).drop(action.fraction)
        else:  # pragma: no cover - Action is a closed union
            raise TypeError(f"unknown action {action!r}")

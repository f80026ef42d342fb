"""The demo's run, with the two hooks a validation run needs: round 0, and a minimum length.

``ValidationRun`` is ``DemoRun`` (data, fleet, progress bars, stop, final evaluation,
summary.json, plots) with:

- its processes started through a caller's ``ChildGroup`` (``PlacedChildGroup`` puts
  them in a network lab; the plain one keeps them on loopback);
- ``at_round_zero`` callbacks, called on a helper thread with round 0's Unix time once the
  bootstrap published it: the network schedule and the fault plan count from there;
- ``min_training_s``: reaching the target does not end the run before this many seconds,
  so what happens after a mid-run change (a rate drop at 60 s) is always observed;
- ``before_fleet`` callbacks, called after the demo cleared its output folder and before
  it starts any process (a fault run mounts a device's small run folder there);
- the environment the children got (``child_env``), so a fault plan can restart one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from globetrain.fleet.app.demo import DemoConfig, DemoRun
from globetrain.fleet.app.demo_monitor import FleetMonitor
from globetrain.fleet.app.processes import ChildGroup
from globetrain.fleet.app.signals import StopSignals

log = logging.getLogger(__name__)

RoundZeroHook = Callable[[float], None]


class _TargetHeldBack:
    """A ``FleetMonitor`` seen through: no target counts as reached before ``min_training_s``."""

    def __init__(self, monitor: FleetMonitor, min_training_s: float) -> None:
        self._monitor = monitor
        self._min_training_s = min_training_s

    def first_reaching(self, target: float) -> dict[str, Any] | None:
        if self._monitor.training_seconds() < self._min_training_s:
            return None
        return self._monitor.first_reaching(target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._monitor, name)


class ValidationRun(DemoRun):
    def __init__(
        self,
        config: DemoConfig,
        signals: StopSignals,
        console: Console,
        extra_run_settings: Sequence[str] = (),
        *,
        children: ChildGroup | None = None,
        at_round_zero: Sequence[RoundZeroHook] = (),
        min_training_s: float = 0.0,
    ) -> None:
        super().__init__(config, signals, console, list(extra_run_settings))
        if children is not None:
            self.children = children
        self.at_round_zero = list(at_round_zero)
        self.min_training_s = min_training_s
        self.before_fleet: list[Callable[[], None]] = []
        self.child_env: dict[str, str] = {}
        self.round_zero: float | None = None
        self.hook_errors: list[str] = []

    @property
    def out_dir(self) -> Path:
        return self.out

    def _start_fleet(self, data_root: Path, env: dict[str, str]) -> None:
        self.child_env = dict(env)
        self.data_root = data_root
        for prepare in self.before_fleet:
            prepare()
        super()._start_fleet(data_root, env)

    def _watch(self, monitor: FleetMonitor) -> str:
        finished = threading.Event()
        waiter = threading.Thread(target=self._call_hooks_at_round_zero, args=(monitor, finished),
                                  name="round-zero-hooks", daemon=True)
        waiter.start()
        try:
            return super()._watch(_TargetHeldBack(monitor, self.min_training_s))  # type: ignore[arg-type]
        finally:
            finished.set()
            waiter.join(10)

    def _call_hooks_at_round_zero(self, monitor: FleetMonitor, finished: threading.Event) -> None:
        # ``start_time`` is set by the watch loop's polls on the main thread; reading it is safe.
        while monitor.start_time is None:
            if finished.wait(0.2):
                return
        self.round_zero = float(monitor.start_time)
        for hook in self.at_round_zero:
            try:
                hook(self.round_zero)
            except Exception as error:  # noqa: BLE001 - a failed hook is reported, the run goes on
                self.hook_errors.append(f"{type(error).__name__}: {error}")
                log.warning("validation hook failed: %s: %s", type(error).__name__, error)

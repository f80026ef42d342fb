"""Step 1 of the two-step deep compression: local steps, rare overlapped syncs.

Public API:

- ``SyncLoop``: wraps a model and its inner optimizer (``globetrain.sync.loop``);
- ``Exchange``, ``Contribution``, ``ExchangeOutcome``: the asynchronous exchange interface;
- ``InProcessGroup``: K workers in one process through that interface;
- ``SyncConfig``, ``QoSConfig``; ``FixedSchedule``, ``AdaptiveSchedule``, ``RoundSettings``;
- ``get_method``/``method_names``: the registry of sync methods (two-step and baselines).
"""

from globetrain.sync.config import QoSConfig, SyncConfig
from globetrain.sync.exchange import Contribution, Exchange, ExchangeOutcome
from globetrain.sync.inprocess import InProcessExchange, InProcessGroup
from globetrain.sync.loop import AppliedExchange, RoundReport, SyncLoop
from globetrain.sync.methods import Method, get_method, method_names
from globetrain.sync.schedule import AdaptiveSchedule, FixedSchedule, RoundObservation, RoundSettings

__all__ = [
    "AdaptiveSchedule",
    "AppliedExchange",
    "Contribution",
    "Exchange",
    "ExchangeOutcome",
    "FixedSchedule",
    "InProcessExchange",
    "InProcessGroup",
    "Method",
    "QoSConfig",
    "RoundObservation",
    "RoundReport",
    "RoundSettings",
    "SyncConfig",
    "SyncLoop",
    "get_method",
    "method_names",
]

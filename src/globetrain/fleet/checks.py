"""Checks on what other peers send, and the counters of what was refused.

Every received contribution (at a leader) and every aggregate (at a device) goes through
the same gates: the envelope (run, tag, kind, sizes: ``envelope``), the round (stale or
future), the codec (``CorruptPayload``), the model's shapes, finite values, and a norm
bound. A refused message is simply not used; it is counted by (message kind, reason) and
logged with the sender's name and peer id. Nothing another peer sends can raise out of
these checks.

The norm bound (``OutlierBound``): an update is refused when its L2 norm exceeds both
``kappa`` x the median norm of the round's other updates and ``kappa`` x the running
median of norms accepted in earlier rounds (whichever references exist; with none, it is
accepted). Why this shape:

- medians, not means: one huge update cannot drag its own reference up, and up to half
  of a round's updates can be outsized without moving the median;
- the round's own median follows legitimate changes of scale at once (a dense warm-up
  round, a learning-rate change, all devices doubling H), which a history alone would
  refuse; the history covers rounds with too few others to compare with (two devices,
  one of them rogue);
- requiring both to be exceeded keeps honest spread safe: norms of honest drifts differ
  by the ratio of their step counts (QoS and device speed give a few x), well below
  kappa = 10, while a 1000x update exceeds both references by two orders of magnitude.

The same rule bounds the samples a contribution claims, since samples are its weight in
the average: a device claiming 1000x the samples of the others is refused too.
"""

from __future__ import annotations

import collections
import logging
import math
import statistics
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from globetrain.compression import SparseTensorUpdate
from globetrain.errors import CorruptPayload, NonFinitePayload

log = logging.getLogger(__name__)

RECENT_REJECTIONS = 200
MAX_SENDERS_TRACKED = 1024
"""Distinct senders counted one by one; the rest are counted together as ``OTHER_SENDERS``."""
OTHER_SENDERS = "(other senders)"


class RejectionLog:
    """Refused messages counted by (kind, reason) and by sender; each one logged once."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._senders: dict[str, collections.Counter[str]] = {}
        self._sender_names: dict[str, str] = {}
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_REJECTIONS)

    def reject(
        self,
        kind: str,
        reason: str,
        *,
        sender: str,
        name: str = "",
        round_index: int | None = None,
        detail: str = "",
    ) -> None:
        key = f"{kind}/{reason}"
        with self._lock:
            self._counts[key] += 1
            row = sender
            if row not in self._senders and len(self._senders) >= MAX_SENDERS_TRACKED:
                # Sender ids of refused messages are the sender's to choose: past the bound,
                # new ones share one row (the log line below still names each), so a flood
                # of made-up ids cannot grow memory.
                row = OTHER_SENDERS
            self._senders.setdefault(row, collections.Counter())[key] += 1
            if name and row != OTHER_SENDERS:
                self._sender_names[row] = name
            self.recent.append(
                {"kind": kind, "reason": reason, "sender": sender, "name": name, "round": round_index, "detail": detail[:200]}
            )
        where = f" round {round_index}" if round_index is not None else ""
        log.warning(
            "[%s%s] rejected %s from %s (%s): %s%s",
            self.name, where, kind, name or "unnamed peer", sender or "unknown peer id", reason,
            f" - {detail}" if detail else "",
        )

    def counts(self) -> dict[str, int]:
        """``{"contribution/bad-tag": 3, ...}``."""
        with self._lock:
            return dict(sorted(self._counts.items()))

    def by_sender(self) -> dict[str, dict[str, Any]]:
        """``{peer_id: {"name": ..., "reasons": {"contribution/non-finite": 1}}}``."""
        with self._lock:
            return {
                sender: {"name": self._sender_names.get(sender, ""), "reasons": dict(sorted(counter.items()))}
                for sender, counter in self._senders.items()
            }

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


class OutlierBound:
    """Refuses a value beyond kappa x the median of its peers' and of accepted history."""

    def __init__(self, kappa: float, history: int) -> None:
        self.kappa = float(kappa)
        self.history: collections.deque[float] = collections.deque(maxlen=history)

    def bound(self, others: Sequence[float]) -> float | None:
        """The largest acceptable value given the round's ``others``; None = no reference."""
        references = []
        if others:
            references.append(statistics.median(others))
        if len(self.history) >= 3:
            references.append(statistics.median(self.history))
        if not references:
            return None
        return self.kappa * max(references)

    def judge(self, values: Mapping[str, float]) -> dict[str, float | None]:
        """For each key, its bound if its value exceeds it (refuse), else None (accept)."""
        verdicts: dict[str, float | None] = {}
        for key, value in values.items():
            bound = self.bound([v for k, v in values.items() if k != key])
            verdicts[key] = bound if bound is not None and value > bound else None
        return verdicts

    def remember(self, accepted: Sequence[float]) -> None:
        self.history.extend(float(v) for v in accepted)


def update_norm(update: Sequence[SparseTensorUpdate]) -> float:
    """L2 norm of a decoded update, accumulated in float64."""
    return math.sqrt(sum(float(part.values.double().square().sum()) for part in update))


def shape_problem(update: Sequence[SparseTensorUpdate], shapes: Sequence[tuple[int, ...]]) -> str | None:
    """Why a decoded update does not fit the model, or None if it does."""
    if len(update) != len(shapes):
        return f"{len(update)} tensors where the model has {len(shapes)}"
    for position, (part, shape) in enumerate(zip(update, shapes)):
        if tuple(part.shape) != tuple(shape):
            return f"tensor {position} has shape {tuple(part.shape)}, the model's is {tuple(shape)}"
    return None


def non_finite_problem(update: Sequence[SparseTensorUpdate]) -> str | None:
    for position, part in enumerate(update):
        if part.count and not bool(torch.isfinite(part.values).all()):
            return f"tensor {position} holds NaN or infinite values"
    return None


def codec_rejection_reason(error: CorruptPayload) -> str:
    """``non-finite`` for payloads refused for NaN/infinite values, else ``corrupt``."""
    return "non-finite" if isinstance(error, NonFinitePayload) else "corrupt"

"""K workers averaging in one process, through exactly the exchange interface.

``InProcessGroup`` is the exchange of tests, benchmarks and the in-process demo: a
round resolves when every active member has submitted it, to the sample-weighted
average (``sync.weighting``) of the decoded payloads (the same decode every real
receiver runs). It has no network, so it measures no link; members can leave, rejoin,
or have a round fail, which is how the loop's failure handling is tested.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import torch

from globetrain.compression import Codec, SparseTensorUpdate
from globetrain.errors import CorruptPayload, ExchangeFailed
from globetrain.sync.exchange import Contribution, Exchange, ExchangeOutcome
from globetrain.sync.weighting import sample_weights


class InProcessGroup:
    """An all-to-all averaging group of ``size`` members living in this process."""

    def __init__(self, size: int, *, shapes: list[tuple[int, ...]] | None = None) -> None:
        if size < 1:
            raise ValueError(f"an in-process group needs at least one member, got size={size}")
        self.size = size
        self.shapes = shapes
        self.active: set[int] = set(range(size))
        self._pending: dict[int, dict[int, tuple[Contribution, Future[ExchangeOutcome]]]] = {}
        self._failing_rounds: dict[int, str] = {}
        self._lock = threading.Lock()
        self._decoder = Codec(1.0, 32)
        self.rounds_resolved = 0

    def exchange(self, member: int) -> InProcessExchange:
        if not 0 <= member < self.size:
            raise ValueError(f"member {member} is not in a group of {self.size}")
        return InProcessExchange(self, member)

    def leave(self, member: int) -> None:
        """``member`` stops contributing; rounds waiting only for it resolve now."""
        with self._lock:
            self.active.discard(member)
            ready = [r for r in self._pending if self._complete(r)]
        for round_index in sorted(ready):
            self._resolve(round_index)

    def join(self, member: int) -> None:
        with self._lock:
            self.active.add(member)

    def fail_round(self, round_index: int, reason: str = "injected failure") -> None:
        """Make ``round_index`` fail for everyone (tests of the loop's failure handling)."""
        with self._lock:
            self._failing_rounds[round_index] = reason

    # -- internals ----------------------------------------------------------------------------

    def _submit(self, member: int, contribution: Contribution) -> Future[ExchangeOutcome]:
        future: Future[ExchangeOutcome] = Future()
        with self._lock:
            if member not in self.active:
                future.set_exception(ExchangeFailed(f"member {member} is not active in the group"))
                return future
            contributions = self._pending.setdefault(contribution.round, {})
            if member in contributions:
                future.set_exception(ExchangeFailed(f"member {member} submitted round {contribution.round} twice"))
                return future
            contributions[member] = (contribution, future)
            ready = self._complete(contribution.round)
        if ready:
            self._resolve(contribution.round)
        return future

    def _complete(self, round_index: int) -> bool:
        submitted = self._pending.get(round_index, {})
        return bool(submitted) and self.active.issubset(submitted)

    def _resolve(self, round_index: int) -> None:
        with self._lock:
            entries = self._pending.pop(round_index, {})
            failure = self._failing_rounds.pop(round_index, None)
        if not entries:
            return
        futures = [future for _, future in entries.values()]
        if failure is not None:
            for future in futures:
                future.set_exception(ExchangeFailed(f"round {round_index}: {failure}"))
            return
        # An empty payload is a member that only listens this round (``submit_round(contribute=False)``).
        contributing = {member: contribution for member, (contribution, _) in entries.items() if contribution.payload}
        if not contributing:
            for future in futures:
                future.set_exception(ExchangeFailed(f"round {round_index}: every member only listened"))
            return
        try:
            update, returned = self._average(contributing)
        except CorruptPayload as error:
            for future in futures:
                future.set_exception(ExchangeFailed(f"round {round_index}: corrupt contribution: {error}"))
            return
        samples = sum(max(c.samples, 0) for c in contributing.values())
        for member, (contribution, future) in entries.items():
            future.set_result(
                ExchangeOutcome(
                    round=round_index,
                    update=update,
                    contributors=len(contributing),
                    samples=samples,
                    returned=returned.get(member),
                    bytes_sent=len(contribution.payload),
                    bytes_received=sum(len(c.payload) for m, (c, _) in entries.items() if m != member),
                )
            )
        self.rounds_resolved += 1

    def _average(
        self, contributions: dict[int, Contribution]
    ) -> tuple[list[torch.Tensor], dict[int, list[torch.Tensor] | None]]:
        """(the weighted average, per member what goes back to its error feedback)."""
        decoded = self._decode(list(contributions.values()))
        update = [torch.zeros(tuple(part.shape), dtype=torch.float32) for part in decoded[0]]
        weights = sample_weights([c.samples for c in contributions.values()])
        for weight, tensors in zip(weights, decoded):
            for target, sparse in zip(update, tensors):
                sparse.add_into(target, alpha=weight)
        return update, {}

    def _decode(self, contributions: list[Contribution]) -> list[list[SparseTensorUpdate]]:
        first = self._decoder.decode_sparse(contributions[0].payload, expect=self.shapes)
        shapes = [tuple(t.shape) for t in first]
        return [first] + [self._decoder.decode_sparse(c.payload, expect=shapes) for c in contributions[1:]]


class InProcessExchange(Exchange):
    """One member's view of an ``InProcessGroup``."""

    def __init__(self, group: InProcessGroup, member: int) -> None:
        self.group = group
        self.member = member

    def submit(self, contribution: Contribution) -> Future[ExchangeOutcome]:
        return self.group._submit(self.member, contribution)

    def close(self) -> None:
        self.group.leave(self.member)

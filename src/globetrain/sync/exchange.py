"""The exchange interface: how a round's compressed update meets the others.

The sync loop hands a ``Contribution`` (its codec payload plus the samples behind it)
to an ``Exchange`` and gets a ``concurrent.futures.Future`` back at once. The future
resolves to an ``ExchangeOutcome`` (the sample-weighted average of the group's
updates) or fails with ``globetrain.errors.ExchangeFailed``. Three implementations
exist, and the algorithm exists once, in ``SyncLoop``:

- ``globetrain.sync.inprocess``: K workers in one process (tests, benchmarks);
- ``globetrain.fleet``: real devices over hivemind;
- ``globetrain.sim``: thousands of simulated devices over simulated time.

A future is the right shape for all three: a real exchange resolves it from a network
thread, the simulator resolves it when simulated time reaches the transfer's end, and
the loop never blocks on it except where its staleness bound says it must (and then
with a bounded wait).
"""

from __future__ import annotations

import abc
import dataclasses
from concurrent.futures import Future

import torch


@dataclasses.dataclass(frozen=True)
class Contribution:
    """One device's share of one round."""

    round: int
    """Round number this update belongs to (devices in one group share it)."""
    payload: bytes
    """Codec payload (``globetrain.compression.Codec``) of the compressed pseudo-gradient."""
    samples: int
    """Training samples processed in this round; the average is weighted by them."""


@dataclasses.dataclass
class ExchangeOutcome:
    """What a round's exchange produced for one device."""

    round: int
    update: list[torch.Tensor]
    """Sample-weighted average of the group's decoded updates (float32, parameter shapes)."""
    contributors: int
    """Devices whose updates are in ``update`` (the device itself included)."""
    samples: int
    """Total samples behind ``update``."""
    returned: list[torch.Tensor] | None = None
    """Part of this device's own contribution that the group did not apply (for example,
    a span whose aggregator died); the loop adds it back into error feedback so nothing
    is lost. ``None`` means everything sent was applied."""
    rejected: int = 0
    """Updates received but refused (bad tag, stale round, non-finite, norm bound...)."""
    bytes_sent: int = 0
    """Bytes this device put on the wire for the round (envelopes included)."""
    bytes_received: int = 0
    """Bytes this device received for the round (envelopes included)."""
    seconds: float = 0.0
    """Time from submission to resolution (wall or simulated, by implementation)."""
    uplink_bytes_per_s: float | None = None
    """Uplink throughput this exchange measured, for the QoS scheduler (None if unknown)."""
    rtt_s: float | None = None
    """Round-trip time to peers this exchange measured (None if unknown)."""
    base_round: int | None = None
    """With ``base_digest``: the round after which the aggregator's global model had that digest."""
    base_digest: str | None = None
    """Digest (``global_model_digest``) of the global model the aggregator applies this update
    to. A loop that tracks digests and held another model after ``base_round`` has diverged:
    it does not apply the update and reports the round as ``diverged`` (download state)."""


class Exchange(abc.ABC):
    """Asynchronous averaging of one device's contributions with its peers'."""

    @abc.abstractmethod
    def submit(self, contribution: Contribution) -> Future[ExchangeOutcome]:
        """Start exchanging ``contribution``; return at once.

        The future resolves to the group's average, or fails with ``ExchangeFailed``
        (never any other exception for network or peer trouble). Implementations bound
        every wait themselves: the future always resolves within their round timeout.
        """

    def close(self) -> None:
        """Release resources; pending futures fail with ``ExchangeFailed``."""

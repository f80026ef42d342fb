"""Up-front memory estimate of a simulation, so a fleet too large is refused before it starts.

Per device the simulator keeps the proxy model's parameters in several float32 copies
(the stacked model, the loop's global model and anchor, the error-feedback residual, the
outer momentum, the drift of rounds in flight, the batch's working copy, an aggregate in
transit) plus its Python objects (loop, schedule, exchange port, round records), and the
proxy task's data and shards. ``PYTHON_BYTES_PER_DEVICE`` and ``PROCESS_BYTES`` were
measured on this machine (resident memory of 1,000- and 10,000-device runs, see
docs/simulator.md) and are rounded up.
"""

from __future__ import annotations

import dataclasses

from globetrain.errors import ConfigError
from globetrain.sync.config import SyncConfig

PROCESS_BYTES = 700 << 20
"""Python, torch, numpy and the simulator's modules, before any device (measured ~0.55 GB)."""
PYTHON_BYTES_PER_DEVICE = 64 << 10
"""A device's loop, schedule, exchange port, views and round records (measured ~40 KB)."""
TRANSIENT_COPIES = 2
"""The batch's working copy of the parameters and an aggregate or average in transit."""


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    devices: int
    per_device_bytes: int
    fixed_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.fixed_bytes + self.devices * self.per_device_bytes

    def describe(self) -> str:
        return (
            f"about {self.total_bytes / 2**30:.2f} GiB ({self.per_device_bytes / 2**10:.0f} KiB per device x "
            f"{self.devices} + {self.fixed_bytes / 2**30:.2f} GiB fixed)"
        )


def estimate_memory(
    *, devices: int, proxy_parameters: int, sync: SyncConfig, inner_momentum: float, train_samples: int,
    features: int, samples_per_device: int,
) -> MemoryEstimate:
    copies = 1  # the stacked model
    copies += 1 if inner_momentum > 0 else 0
    copies += 2  # the loop's global model and anchor
    copies += 1 if sync.error_feedback else 0
    copies += 1 if sync.outer_momentum > 0 else 0
    copies += sync.apply_delay + 1  # drift of rounds in flight
    copies += TRANSIENT_COPIES
    per_device = copies * 4 * proxy_parameters + PYTHON_BYTES_PER_DEVICE + 8 * samples_per_device
    data = train_samples * (4 * features + 8) * 2  # raw and standardised inputs, labels
    return MemoryEstimate(devices, per_device, PROCESS_BYTES + data)


def refuse_if_over(estimate: MemoryEstimate, budget_gb: float) -> None:
    if estimate.total_bytes > budget_gb * 1e9:
        largest = int((budget_gb * 1e9 - estimate.fixed_bytes) // estimate.per_device_bytes)
        raise ConfigError(
            f"{estimate.devices} devices need {estimate.describe()}, over the memory budget of {budget_gb:g} GB; "
            f"use at most ~{max(largest, 0)} devices, a smaller proxy model (--proxy-hidden), or raise --memory-budget-gb"
        )

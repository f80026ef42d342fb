"""How much each contribution counts in a round's average.

FedAvg weights a device by its samples because, there, more samples mean more data. In
a fleet that adapts H per device, more samples behind one contribution mostly mean more
rounds: a device contributes the drift of several rounds at once after rounds it missed
(a contribution that came after the leader closed, a device behind the fleet's clock;
until 2026-12-04 also the fleet's QoS, which made slow links contribute every 2-8
rounds), and that drift already carries those rounds' steps.
Weighting it by its samples as well counts them twice, and lets one device's non-IID
drift dominate the average: in shaped validation run K a device contributing 7 rounds
at once held 53 % of an average of 6, and validation fell 35 points within two
evaluations, then recovered. FedNova (Wang et al., 2020) names the bias: with
heterogeneous local steps, step-weighted averaging optimises a skewed objective.

So each weight is the contribution's samples capped at the median of the round's
contributions (``sample_weights``): devices that trained less than the typical one (a
late joiner, a slow CPU) still count less, and none counts more than the typical one.
The same function serves the fleet's leader, the in-process group and the simulator, so
all three average alike. The samples reported with the aggregate stay the true total
(the fleet's learning-rate clock counts them). Where the items averaged are groups of
devices (the simulator's upper levels of leaders), more samples do mean more devices'
data, and ``proportional_weights`` keeps FedAvg's rule.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def sample_weights(samples: Sequence[int]) -> list[float]:
    """Weights of device contributions, summing to 1: samples capped at their median."""
    counts = [max(int(s), 0) for s in samples]
    cap = statistics.median(counts) if counts else 0
    return proportional_weights([min(count, cap) for count in counts])


def proportional_weights(samples: Sequence[float]) -> list[float]:
    """Weights proportional to samples, summing to 1; equal when nobody reports samples."""
    counts = [max(float(s), 0.0) for s in samples]
    total = sum(counts)
    if total <= 0:
        return [1.0 / len(counts)] * len(counts) if counts else []
    return [count / total for count in counts]

"""A simulated leader's math: the fleet's aggregation code, applied at each level of leaders.

A leader averages the updates it received weighted by samples and re-encodes the average
(``globetrain.sync.weighting.sample_weights``, ``globetrain.fleet.aggregate``:
``weighted_average``, ``aggregate_codec``, ``aggregate_seed``), exactly as
``fleet.leader.LeaderService`` does.
With more than one level, a group leader's re-encoded aggregate is what the next level
averages (weighted by the group's samples), and the root's re-encoded average is what
every device applies.

What a device sent but the aggregates did not carry goes back to its error feedback
(``ExchangeOutcome.returned``). With one level that is what the fleet's
``returned_values`` computes; with several, a value survives only if every aggregate on
its way up carried its position, which ``values_not_carried`` generalises to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from globetrain.compression import Codec, SparseTensorUpdate
from globetrain.fleet.aggregate import aggregate_codec, aggregate_seed, weighted_average
from globetrain.sync.weighting import proportional_weights, sample_weights


def aggregate(
    updates: Sequence[Sequence[SparseTensorUpdate]],
    samples: Sequence[int],
    shapes: Sequence[tuple[int, ...]],
    *,
    density_factor: float,
    bits: int,
    run_id: bytes,
    round_index: int,
    decoder: Codec,
    of_groups: bool = False,
) -> tuple[bytes, list[SparseTensorUpdate]]:
    """The leader's re-encoded, sample-weighted average: (payload, what receivers decode).

    Devices' contributions are weighted as the fleet's leader does (``sample_weights``);
    ``of_groups``: the updates are lower leaders' aggregates, weighted by their samples.
    """
    weights = proportional_weights(samples) if of_groups else sample_weights(samples)
    average = weighted_average(updates, weights, shapes)
    numel = sum(int(torch.Size(shape).numel()) for shape in shapes)
    codec = aggregate_codec(updates, density_factor=density_factor, bits=bits, max_elements=max(numel, 1))
    payload = codec.encode(average, seed=aggregate_seed(run_id, round_index))
    return payload, decoder.decode_sparse(payload, expect=shapes)


def carried_positions(aggregate_update: Sequence[SparseTensorUpdate]) -> list[torch.Tensor | None]:
    """Per tensor, a boolean mask of the positions the aggregate carries (None: all of them)."""
    masks: list[torch.Tensor | None] = []
    for part in aggregate_update:
        if part.is_dense:
            masks.append(None)
            continue
        mask = torch.zeros(part.shape.numel(), dtype=torch.bool)
        mask[part.indices] = True
        masks.append(mask)
    return masks


def values_not_carried(
    own: Sequence[SparseTensorUpdate], chain: Sequence[Sequence[torch.Tensor | None]]
) -> list[torch.Tensor] | None:
    """Own sent values at positions some aggregate of ``chain`` dropped (dense), or None.

    ``chain`` holds ``carried_positions`` of each aggregate on the way up, computed once
    per aggregate rather than once per member. With one aggregate this is exactly the
    fleet's ``returned_values``.
    """
    returned: list[torch.Tensor] = []
    anything = False
    for position, mine in enumerate(own):
        dense = torch.zeros(mine.shape.numel(), dtype=torch.float32)
        if mine.count:
            carried: torch.Tensor | None = None
            for level in chain:
                mask = level[position]
                if mask is None:
                    continue
                here = mask[mine.indices]
                carried = here if carried is None else carried & here
            if carried is not None and not bool(carried.all()):
                dropped = ~carried
                dense[mine.indices[dropped]] = mine.values[dropped]
                anything = True
        returned.append(dense.view(mine.shape))
    return returned if anything else None

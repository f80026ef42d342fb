"""Top-k by magnitude without a sort: a sampled threshold, one scan, an exact cut.

The selection is global: one top-k over all the tensors of an update together (the codec
passes every tensor it sends sparse), so the k values sent are the k largest of the
whole update, wherever they are. It never concatenates the tensors.

Small updates (below ``LARGE_TENSOR`` elements in total) take the exact route: one O(n)
``np.partition`` finds the k-th largest magnitude, the whole update being its own sample.

Large updates:

1. Threshold: a strided sample of the magnitudes, at one stride through all tensors
   (sized for about 256 expected hits, so the count it predicts is good to a few
   percent), gives a threshold aimed at 1.25 k + 4 sqrt(k) elements: several standard
   deviations above k.
2. Scan, the one pass over memory: in cache-sized chunks, |x| into a scratch buffer, its
   maximum (which also catches NaN and inf), the comparison and the positions of the
   hits. Chunks of a large tensor are shared out dynamically among worker threads (as
   many as torch's intra-op setting); numpy releases the GIL inside each operation, so
   the threads run in parallel, and a worker delayed by another process on its core just
   takes fewer chunks (no barrier where one late thread stalls all, as with many short
   OpenMP regions). Should the sample have aimed too high (fewer than k hits, more than
   four standard deviations off), the threshold is lowered and the scan repeats.
3. Exact top-k among the hits: one O(k) partition.

So the count sent is exactly k (never more; fewer only when the update has fewer than k
nonzero elements: zeros are never sent), and every sent magnitude is >= every unsent one
(ties at the cut are broken towards earlier tensors and positions). Positions come out
sorted within each tensor.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

LARGE_TENSOR = 1 << 18
SCAN_CHUNK = 1 << 18  # 1 MiB of float32: the scratch buffers of a worker stay in L2
# Below this many elements a second thread costs more to start than it saves.
THREADED_SCAN = 1 << 21
SAMPLE_EXPECTED_HITS = 256
MIN_SAMPLE = 1 << 16
MAX_SAMPLE = 1 << 20
# The threshold is never below the smallest positive float32, so zeros are never sent.
SMALLEST_MAGNITUDE = float(np.finfo(np.float32).smallest_subnormal)


class NonFiniteValues(ValueError):
    """A tensor holds NaN or infinite values (raised before anything is selected)."""

    def __init__(self, member: int | None = None) -> None:
        super().__init__(f"member {member} holds NaN or infinite values")
        self.member = member
        """Position, in the list given to the selection, of the offending array."""


def top_magnitude_positions(values: np.ndarray, count: int) -> np.ndarray:
    """Sorted positions of the ``count`` largest nonzero magnitudes of float32 ``values``."""
    return global_top_positions([values], count)[0]


def global_top_positions(members: Sequence[np.ndarray], count: int) -> list[np.ndarray]:
    """One top-k over several float32 arrays together: sorted positions within each.

    The ``count`` largest nonzero magnitudes among all elements of all arrays, without
    concatenating them: a common threshold, one scan per array, one exact cut over the
    union of the hits. Raises ``NonFiniteValues`` naming the first array with NaN or inf.
    """
    sizes = [len(member) for member in members]
    total = sum(sizes)
    if total < LARGE_TENSOR:
        magnitudes = [np.abs(member) for member in members]
        for index, member_magnitudes in enumerate(magnitudes):
            if len(member_magnitudes) and not math.isfinite(float(member_magnitudes.max())):
                raise NonFiniteValues(index)
        flat = np.concatenate(magnitudes) if len(members) > 1 else magnitudes[0]
        return _split(exact_top_positions(flat, count), [None] * len(members), sizes)
    sample = _strided_magnitude_sample(members, total, count)
    rank = max(1, math.ceil((1.25 * count + 4 * math.sqrt(count)) * len(sample) / total))
    while True:
        threshold = SMALLEST_MAGNITUDE
        if rank < len(sample):
            threshold = max(threshold, float(np.partition(sample, len(sample) - rank)[len(sample) - rank]))
        hits = []
        for index, member in enumerate(members):
            try:
                hits.append(_scan_above(member, threshold))
            except NonFiniteValues:
                raise NonFiniteValues(index) from None
        found = sum(len(positions) for positions, _ in hits)
        if found >= count or threshold == SMALLEST_MAGNITUDE:
            break
        rank *= 4
    positions = [member_positions for member_positions, _ in hits]
    chosen = exact_top_positions(np.concatenate([magnitudes for _, magnitudes in hits]), count)
    return _split(chosen, positions, [len(member_positions) for member_positions in positions])


def check_finite(values: np.ndarray) -> None:
    """Raise ``NonFiniteValues`` unless every value is finite (two reductions, no temporary)."""
    if len(values) and not (math.isfinite(float(values.max())) and math.isfinite(float(values.min()))):
        raise NonFiniteValues()


def exact_top_positions(magnitudes: np.ndarray, count: int) -> np.ndarray:
    """Sorted positions of the ``count`` largest nonzero entries of ``magnitudes``."""
    size = len(magnitudes)
    if count >= size:
        return np.flatnonzero(magnitudes > 0)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    cut = np.partition(magnitudes, size - count)[size - count]
    if cut <= 0:
        return np.flatnonzero(magnitudes > 0)
    chosen = magnitudes > cut
    missing = count - int(np.count_nonzero(chosen))
    if missing > 0:
        chosen[np.flatnonzero(magnitudes == cut)[:missing]] = True
    return np.flatnonzero(chosen)


def _split(chosen: np.ndarray, candidates: Sequence[np.ndarray | None], lengths: Sequence[int]) -> list[np.ndarray]:
    """Cut picks (sorted indices into the members' candidate lists, concatenated) per member.

    ``candidates[i]`` maps member i's candidates to positions in the member (``None``:
    its candidates are all its elements, in order).
    """
    bounds = np.cumsum([0, *lengths])
    cuts = np.searchsorted(chosen, bounds)
    picks = []
    for index, mapping in enumerate(candidates):
        local = chosen[cuts[index] : cuts[index + 1]] - bounds[index]
        picks.append(local if mapping is None else mapping[local])
    return picks


def _scan_above(values: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions and magnitudes of all |values| >= threshold, in order; checks finiteness."""
    size = len(values)
    if size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    chunks = -(-size // SCAN_CHUNK)
    found: list[tuple[np.ndarray, np.ndarray] | None] = [None] * chunks
    finite = [True] * chunks
    next_chunk = itertools.count()  # next() on it is atomic under the GIL

    def work() -> None:
        scratch = np.empty(min(size, SCAN_CHUNK), dtype=np.float32)
        hit = np.empty(len(scratch), dtype=bool)
        while (chunk := next(next_chunk)) < chunks:
            start = chunk * SCAN_CHUNK
            stop = min(start + SCAN_CHUNK, size)
            magnitudes, mask = scratch[: stop - start], hit[: stop - start]
            np.abs(values[start:stop], out=magnitudes)
            finite[chunk] = math.isfinite(float(magnitudes.max()))
            np.greater_equal(magnitudes, threshold, out=mask)
            local = np.flatnonzero(mask)
            found[chunk] = (local + start, magnitudes[local])

    _run_workers(work, _worker_count(size, chunks))
    if not all(finite):
        raise NonFiniteValues()
    parts = [part for part in found if part is not None]
    return np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts])


def _worker_count(size: int, chunks: int) -> int:
    if size < THREADED_SCAN:
        return 1
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1, chunks))


def _run_workers(work: Callable[[], None], workers: int) -> None:
    """Run ``work`` on this thread and ``workers - 1`` helpers; re-raise a helper's error."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - handed to the calling thread
            errors.append(error)

    helpers = [threading.Thread(target=guarded, name="globetrain-topk-scan", daemon=True) for _ in range(workers - 1)]
    for helper in helpers:
        helper.start()
    try:
        work()
    finally:
        for helper in helpers:
            helper.join()
    if errors:
        raise errors[0]


def _strided_magnitude_sample(members: Sequence[np.ndarray], total: int, count: int) -> np.ndarray:
    """Magnitudes at one common stride through all members: each stands for ``stride`` elements."""
    wanted = SAMPLE_EXPECTED_HITS * total / max(count, 1)
    sample_size = int(min(max(wanted, MIN_SAMPLE), MAX_SAMPLE, total // 2))
    stride = max(1, total // sample_size)
    # A stride sharing no small factor with typical tensor strides (kernel sizes, channel
    # counts) keeps the sample from aliasing with the layout of the flattened tensor.
    while math.gcd(stride, 2 * 3 * 5 * 7) != 1:
        stride += 1
    return np.abs(np.concatenate([member[stride // 2 :: stride] for member in members]))

"""Several device processes sharing one clip cache folder, with a cap that forces evictions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# Each process puts and gets entries whose bytes are a function of their key, so any
# frame served from a shard another process wrote (or is evicting) can be checked.
WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from globetrain.video.cache import ClipCache

    folder, worker, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cache = ClipCache(folder, max_bytes=300_000, shard_bytes=40_000)
    rng = np.random.default_rng(worker)

    def frames_of(key):
        return np.full((int(key) % 7 + 1, 20, 20, 3), int(key) % 251, dtype=np.uint8)

    served = 0
    for _ in range(rounds):
        key = str(rng.integers(0, 60))
        found = cache.get(key)
        if found is None:
            cache.put(key, frames_of(key))
        else:
            assert np.array_equal(found, frames_of(key)), f"worker {worker}: wrong frames for {key}"
            served += 1
        assert cache.size_bytes() <= 300_000 + 40_000 * 2, cache.size_bytes()
    print(served)
    """
)


def test_processes_sharing_a_cache_only_ever_get_exact_frames(tmp_path: Path):
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path / "cache"), str(worker), "400"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(3)
    ]
    try:
        results = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    for process, (stdout, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr
        assert int(stdout) > 0  # some entries were served from the shared cache

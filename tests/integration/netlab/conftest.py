"""Shared fixtures of the network lab's integration tests."""

from __future__ import annotations

import pytest

from globetrain.netlab.lab import support_problem


@pytest.fixture(scope="session")
def lab_support() -> None:
    """Skip (saying why) where labs cannot run: not root, no iproute2, no namespaces or htb."""
    problem = support_problem()
    if problem:
        pytest.skip(f"network lab unavailable: {problem}")

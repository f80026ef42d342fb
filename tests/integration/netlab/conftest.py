"""Shared fixtures of the network lab's integration tests."""

from __future__ import annotations

import os

import pytest

from globetrain.netlab.lab import support_problem


@pytest.fixture(scope="session")
def lab_support() -> None:
    """Skip (saying why) where labs cannot run: not root, no iproute2, no namespaces or htb.

    CI sets GLOBETRAIN_REQUIRE_NETNS=1: there the lab must work, and a skip would hide that
    the shaped-network tests never ran, so it fails instead.
    """
    problem = support_problem()
    if problem:
        message = f"network lab unavailable: {problem}"
        if os.environ.get("GLOBETRAIN_REQUIRE_NETNS") == "1":
            pytest.fail(f"{message} (GLOBETRAIN_REQUIRE_NETNS=1: these tests must run here)")
        pytest.skip(message)

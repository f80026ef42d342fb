"""Shared test settings.

Torch uses one thread in tests: the suite runs on 2 cores, often beside multi-process
tests, and oversubscribed intra-op threads only add noise.
"""

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)
os.environ.setdefault("GLOBETRAIN_TEST", "1")

settings.register_profile(
    "default",
    deadline=None,  # the machine is shared and noisy: never fail a property on time
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")

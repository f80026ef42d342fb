"""Physics: dense-sync is never faster than the ring all-reduce bound on its own fleet."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REAL_SHAPES, tiny_config, tiny_profile
from globetrain.sim.collectives import (
    butterfly_allreduce,
    ring_allgather,
    ring_allreduce,
    ring_allreduce_lower_bound,
    ring_order,
)
from globetrain.sim.engine import Simulation
from globetrain.sim.fleets import AccessLink, FleetProfile, Region
from globetrain.sim.population import sample_fleet
from globetrain.sync.schedule import make_payload_estimator

link = st.builds(
    lambda up, down, rtt, share: (up, down, rtt, share),
    st.floats(0.05, 1000), st.floats(0.05, 1000), st.floats(0.0, 80.0), st.floats(0.1, 1.0),
)


def random_profile(links: list[tuple[float, float, float, float]], spread: float, regions: int) -> FleetProfile:
    total = sum(share for *_, share in links)
    access = tuple(
        AccessLink(f"link{i}", share / total, up, down, spread=spread, access_rtt_ms=rtt, jitter_ms=rtt / 10,
                   evening_dip=0.3, source="test")
        for i, (up, down, rtt, share) in enumerate(links)
    )
    hubs = tuple(Region(f"r{i}", 1.0 / regions, -60 + 40 * i, -150 + 70 * i, 500.0) for i in range(regions))
    # The last share absorbs rounding so the shares sum to 1 exactly.
    access = access[:-1] + (access[-1].replace(share=1.0 - sum(a.share for a in access[:-1])),)
    hubs = hubs[:-1] + (hubs[-1].replace(share=1.0 - sum(r.share for r in hubs[:-1])),)
    return tiny_profile().replace(access=access, regions=hubs, rtt_inflation=2.5)


@settings(max_examples=40)
@given(
    links=st.lists(link, min_size=1, max_size=3),
    spread=st.floats(0.0, 1.5),
    regions=st.integers(1, 3),
    devices=st.integers(2, 24),
    megabytes=st.floats(0.01, 50.0),
    seed=st.integers(0, 10_000),
    hour=st.floats(0.0, 48 * 3600.0),
)
def test_ring_all_reduce_never_beats_its_lower_bound(links, spread, regions, devices, megabytes, seed, hour) -> None:
    fleet = sample_fleet(random_profile(links, spread, regions), devices, seed=seed, clips_per_hpl_gflop=1.0,
                         batch_size=16, horizon_s=1.0)
    members = np.arange(devices)
    total = megabytes * 1e6
    bound = ring_allreduce_lower_bound(fleet, members, total, hour)
    for ring in (ring_order(fleet, members), np.random.default_rng(seed).permutation(members)):
        assert ring_allreduce(fleet, ring, total, hour).seconds >= bound * (1 - 1e-12)
    # Sanity of the other collectives on the same fleet: positive, and every member moves bytes.
    assert butterfly_allreduce(fleet, members, total, hour).seconds > 0
    assert ring_allgather(fleet, ring_order(fleet, members), total / devices, hour).bytes_sent_per_member > 0


def test_simulated_dense_sync_steps_respect_the_bound(tiny_fleet, reference) -> None:
    # Prepare: a fleet of unequal links (two kinds of access, spread), no churn.
    profile = random_profile([(2.0, 20.0, 15.0, 0.5), (40.0, 100.0, 5.0, 0.5)], 0.8, 2)
    path = tiny_fleet()
    with open(path, "w") as handle:
        handle.write(profile.to_json())
    simulation = Simulation(tiny_config(path, devices=5, method="dense-sync", max_sim_seconds=600.0),
                            reference=reference)

    # Execute
    result = simulation.run()

    # Assert: every step lasted at least one inner step plus the ring bound of its start time.
    fleet = result.fleet
    total = make_payload_estimator(REAL_SHAPES)(1.0, 32)
    times = [0.0] + [point["time_s"] for point in result.curve[1:]]
    assert len(times) > 3
    slowest_step = float(simulation.config.batch_size / fleet.samples_per_s.min())
    for start, end in zip(times, times[1:]):
        bound = ring_allreduce_lower_bound(fleet, np.arange(fleet.count), total, start + slowest_step)
        assert end - start >= slowest_step + bound * (1 - 1e-9)

"""Fleet and device profiles: named fleets, files, and refusals that name the bad field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_config, tiny_profile
from globetrain.errors import ConfigError
from globetrain.sim.devices import DEVICE_CLASSES
from globetrain.sim.engine import Simulation
from globetrain.sim.fleets import NAMED_FLEETS, fleet_names, load_fleet
from globetrain.sim.methods import sim_method
from globetrain.sim.population import sample_fleet


def test_named_fleets_load_and_every_number_has_a_source() -> None:
    assert fleet_names() == ["campus-lan", "cellular-edge", "global-iot"]
    for name in fleet_names():
        fleet = load_fleet(name)
        for item in (*fleet.access, *fleet.regions, *fleet.availability, *fleet.devices):
            assert item.source.strip()
        assert fleet.rtt_inflation_source.strip() and fleet.compute_source.strip()
    for device in DEVICE_CLASSES.values():
        assert "assumption" in device.source or "http" in device.source or "datasheet" in device.source


def test_a_fleet_round_trips_through_its_json_file(tmp_path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(NAMED_FLEETS["global-iot"].to_json())
    assert load_fleet(str(path)) == NAMED_FLEETS["global-iot"]


def test_a_toml_fleet_file_loads(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "mini"\ndescription = "toml"\n'
        '[[devices]]\ndevice = "raspberry-pi-5"\nshare = 1.0\n'
        '[[access]]\nname = "lan"\nshare = 1.0\nuplink_mbps = 100\ndownlink_mbps = 100\nspread = 0\n'
        'access_rtt_ms = 1\njitter_ms = 0\nevening_dip = 0\nsource = "test"\n'
        '[[regions]]\nname = "here"\nshare = 1.0\nlatitude = 0\nlongitude = 0\nradius_km = 0\n'
        '[[availability]]\ndevice = "*"\nmean_online_s = 1000\nmean_offline_s = 0\n'
    )
    assert load_fleet(str(path)).access[0].uplink_mbps == 100.0


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d["access"][0].update(uplink_mbps=-3), "access[fixed].uplink_mbps"),
        (lambda d: d["access"][0].update(share=1.5), "access[fixed].share"),
        (lambda d: d["regions"][0].update(latitude=123), "regions[here].latitude"),
        (lambda d: d["availability"][0].update(mean_offline_s=-1), "availability[*].mean_offline_s"),
        (lambda d: d["devices"][0].update(device="toaster"), "devices[toaster].device"),
        (lambda d: d["access"][0].pop("downlink_mbps"), "downlink_mbps"),
        (lambda d: d.update(rtt_inflation=0.5), "fleet.rtt_inflation"),
        (lambda d: d.update(surprise=1), "surprise"),
    ],
)
def test_a_fleet_file_with_impossible_values_is_refused_naming_the_field(tmp_path, change, field) -> None:
    data = tiny_profile().to_dict()
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as error:
        load_fleet(str(path))
    assert field in str(error.value)
    assert str(path) in str(error.value)


def test_shares_must_sum_to_one(tmp_path) -> None:
    data = tiny_profile().to_dict()
    data["access"].append(dict(data["access"][0], name="second", share=0.5))
    path = tmp_path / "shares.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"access\[\*\]\.share"):
        load_fleet(str(path))


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="campus-lan.*cellular-edge.*global-iot"):
        load_fleet("moon-base")
    with pytest.raises(ConfigError, match="dense-sync.*fp16-average.*dgc.*diloco.*two-step"):
        sim_method("gossip")
    assert sim_method("dense").name == "dense-sync"


def test_too_many_devices_for_the_memory_budget_are_refused_with_the_estimate(tiny_fleet, reference) -> None:
    with pytest.raises(ConfigError, match=r"1000000 devices need about .* GiB .* per device .* budget of 8 GB"):
        Simulation(tiny_config(tiny_fleet(), devices=1_000_000, memory_budget_gb=8.0), reference=reference)


def test_sampled_fleets_follow_the_profile() -> None:
    profile = NAMED_FLEETS["global-iot"]
    fleet = sample_fleet(profile, 4000, seed=1, clips_per_hpl_gflop=2.0, batch_size=16, horizon_s=24 * 3600.0)
    shares = np.bincount(fleet.device_class, minlength=len(profile.devices)) / fleet.count
    assert shares == pytest.approx([d.share for d in profile.devices], abs=0.03)
    median_up = float(np.median(fleet.uplink_bytes_per_s[fleet.access == 0])) * 8 / 1e6
    assert 0.4 * profile.access[0].uplink_mbps < median_up < 3 * profile.access[0].uplink_mbps
    # Phones are online less than always-on boards; availability matches the profile's means.
    phone = fleet.class_names.index("phone-soc")
    online = np.array([fleet.online_seconds(i, 24 * 3600.0) for i in range(fleet.count)]) / (24 * 3600.0)
    assert online[fleet.device_class == phone].mean() < 0.6 < online[fleet.device_class != phone].mean()
    # A far pair of devices is further (in RTT) than two in one region.
    assert fleet.rtt_s(0, 1) > 0

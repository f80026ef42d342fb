"""Network profiles: the validation profile, loading, and errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from globetrain.errors import ConfigError
from globetrain.netlab.events import DropEvent, StallEvent
from globetrain.netlab.profile import (
    HostProfile,
    NetworkProfile,
    ProfileChange,
    add_profile_hosts,
    load_profile,
    resolve_profile,
    validation_profile,
)


def two_hosts(**change: object) -> dict:
    return {
        "name": "pair",
        "hosts": [{"name": "dev0", "uplink_mbit": 2}, {"name": "dev1", "uplink_mbit": 5, "delay_ms": 40}],
        "changes": [change] if change else [],
    }


def test_validation_profile_has_a_bootstrap_and_enough_devices_of_every_rate_class() -> None:
    profile = validation_profile()

    devices = profile.devices()
    assert [host.role for host in profile.hosts].count("bootstrap") == 1
    assert len(devices) >= 8
    assert {device.uplink_mbit for device in devices} == {1.0, 2.0, 5.0, 10.0, 50.0}
    assert all(10.0 <= device.delay_ms <= 150.0 for device in devices)
    assert all(device.downlink_mbit >= device.uplink_mbit for device in devices)


def test_validation_profile_cuts_dev3_and_dev0_tenfold_then_doubles_all_delays() -> None:
    dev3, dev0, later = validation_profile().changes

    assert (dev3.at_s, dev3.hosts, dev3.uplink_factor) == (60.0, ("dev3",), 0.1)
    assert (dev0.at_s, dev0.hosts, dev0.uplink_factor) == (60.0, ("dev0",), 0.1)
    assert (later.at_s, later.hosts, later.delay_factor) == (90.0, (), 2.0)


def test_a_profile_survives_a_json_round_trip() -> None:
    profile = validation_profile()

    again = NetworkProfile.from_dict(json.loads(json.dumps(profile.to_dict())))

    assert again == profile


def test_profiles_load_from_json_and_toml(tmp_path: Path) -> None:
    (tmp_path / "pair.json").write_text(json.dumps(two_hosts(at_s=10, hosts=["dev1"], delay_factor=2)))
    (tmp_path / "pair.toml").write_text(
        'name = "pair"\n'
        '[[hosts]]\nname = "dev0"\nuplink_mbit = 2\n'
        '[[hosts]]\nname = "dev1"\nuplink_mbit = 5\ndelay_ms = 40\n'
        'stalls = [{at_s = 30, duration_s = 5}]\n'
        '[[changes]]\nat_s = 10\nhosts = ["dev1"]\ndelay_factor = 2\n'
    )

    from_json = load_profile(tmp_path / "pair.json")
    from_toml = load_profile(tmp_path / "pair.toml")

    assert from_json.host("dev1").delay_ms == 40.0
    assert from_toml.host("dev1").stalls == (StallEvent(at_s=30.0, duration_s=5.0),)
    assert from_toml.changes == from_json.changes
    assert resolve_profile(str(tmp_path / "pair.json")) == from_json
    assert resolve_profile("validation") == validation_profile()


@pytest.mark.parametrize(
    "host, field",
    [
        ({"name": "dev0", "uplink_mbit": -1}, "HostProfile[dev0].uplink_mbit"),
        ({"name": "dev0", "downlink_mbit": 0}, "HostProfile[dev0].downlink_mbit"),
        ({"name": "dev0", "delay_ms": -5}, "HostProfile[dev0].delay_ms"),
        ({"name": "dev0", "jitter_ms": float("nan")}, "HostProfile[dev0].jitter_ms"),
        ({"name": "Dev 0"}, "HostProfile.name"),
        ({"name": "hub"}, "HostProfile.name"),
        ({"name": "dev0", "role": "router"}, "HostProfile.role"),
        ({"name": "dev0", "uplink_mbit": "fast"}, "HostProfile.uplink_mbit"),
        ({"name": "dev0", "stalls": [{"at_s": 5, "duration_s": 0}]}, "StallEvent.duration_s"),
        ({"name": "dev0", "drops": [{"at_s": 5, "fraction": 1.5}]}, "DropEvent.fraction"),
        ({"name": "dev0", "drops": [{"at_s": -1}]}, "DropEvent.at_s"),
        ({"name": "dev0", "uplink": 5}, "unknown setting(s) ['uplink']"),
    ],
)
def test_invalid_host_settings_name_the_field(host: dict, field: str) -> None:
    with pytest.raises(ConfigError) as error:
        NetworkProfile.from_dict({"hosts": [host]})

    assert field in str(error.value)


def test_a_change_naming_an_unknown_host_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as error:
        NetworkProfile.from_dict(two_hosts(at_s=60, hosts=["dev9"], uplink_factor=0.1))

    message = str(error.value)
    assert "NetworkProfile.changes[0].hosts" in message
    assert "dev9" in message and "dev0" in message


@pytest.mark.parametrize(
    "change, field",
    [
        ({"at_s": -1, "delay_factor": 2}, "ProfileChange.at_s"),
        ({"at_s": 1, "uplink_factor": 0}, "ProfileChange.uplink_factor"),
        ({"at_s": 1, "delay_factor": -2}, "ProfileChange.delay_factor"),
        ({"at_s": 1}, "ProfileChange.factors"),
    ],
)
def test_invalid_changes_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        NetworkProfile.from_dict(two_hosts(**change))


def test_repeated_host_names_and_empty_profiles_are_refused() -> None:
    with pytest.raises(ConfigError, match="repeated: \\['dev0'\\]"):
        NetworkProfile(hosts=(HostProfile(name="dev0"), HostProfile(name="dev0")))
    with pytest.raises(ConfigError, match="NetworkProfile.hosts"):
        NetworkProfile(hosts=())


def test_loading_reports_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"hosts": [{"name": "dev0", "uplink_mbit": -3}]}))

    with pytest.raises(ConfigError, match="broken.json is not valid JSON"):
        load_profile(broken)
    with pytest.raises(ConfigError, match=r"wrong.json: HostProfile\[dev0\].uplink_mbit = -3"):
        load_profile(wrong)
    with pytest.raises(ConfigError, match="cannot read network profile"):
        load_profile(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="use .json or .toml"):
        load_profile(tmp_path / "profile.yaml")
    with pytest.raises(ConfigError, match="neither a built-in"):
        resolve_profile("no-such-profile")


def test_profile_host_lookup_names_the_hosts_it_has() -> None:
    with pytest.raises(ConfigError, match="no host 'dev7'"):
        NetworkProfile.from_dict(two_hosts()).host("dev7")


def test_add_profile_hosts_creates_every_host_with_its_initial_rates() -> None:
    class FakeLab:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def add_host(self, name: str, *, uplink_mbit: float | None = None, downlink_mbit: float | None = None) -> str:
            self.calls.append((name, uplink_mbit, downlink_mbit))
            return f"host:{name}"

    lab = FakeLab()
    hosts = add_profile_hosts(lab, validation_profile())

    assert lab.calls[0] == ("bootstrap", 100.0, 100.0)
    assert ("dev3", 10.0, 50.0) in lab.calls
    assert hosts["dev3"] == "host:dev3"


def test_events_are_valid_sections() -> None:
    assert DropEvent(at_s=1.0).fraction == 1.0
    with pytest.raises(ConfigError, match="StallEvent.at_s"):
        StallEvent(at_s=float("inf"), duration_s=1.0)
    assert ProfileChange(at_s=0.0, jitter_factor=3.0).applies_to("anyone")

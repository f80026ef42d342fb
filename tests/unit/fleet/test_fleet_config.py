"""Fleet settings: safe network defaults, validation that names the value, JSON round trips."""

from __future__ import annotations

import json

import pytest

from globetrain.errors import ConfigError
from globetrain.fleet.config import FleetConfig, FleetNetworkConfig
from globetrain.fleet.peer import PeerBook, is_loopback_address, split_peer_address
from globetrain.fleet.run import RunConfig


def test_network_defaults_are_loopback_only_without_nat_traversal_or_relays() -> None:
    network = FleetNetworkConfig()
    assert network.host_maddrs == ("/ip4/127.0.0.1/tcp/0",)
    assert all(is_loopback_address(a) for a in network.host_maddrs)
    assert (network.nat_port_map, network.auto_nat, network.use_relay, network.use_auto_relay) == (False,) * 4


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"host_maddrs": ()}, "host_maddrs"),
        ({"host_maddrs": ("127.0.0.1:80",)}, "host_maddrs"),
        ({"announce_maddrs": ("/ip4/1.2.3.4/tcp/0",)}, "explicit port"),
        ({"initial_peers": ("/ip4/1.2.3.4/tcp/5",)}, "/p2p/"),
        ({"connect_timeout_s": 0.0}, "connect_timeout_s"),
    ],
)
def test_invalid_network_settings_name_the_value(changes: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        FleetNetworkConfig(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"round_period_s": 0.0},
        {"collection_window": 0.9, "aggregate_deadline": 0.5},
        {"aggregate_deadline": 0.99},
        {"heartbeat_interval": 0.6, "roster_ttl": 0.5},
        {"norm_kappa": 1.0},
        {"max_group_size": 0},
        {"state_chunk_bytes": 10},
    ],
)
def test_invalid_protocol_settings_are_refused(changes: dict) -> None:
    with pytest.raises(ConfigError, match="fleet\\."):
        FleetConfig(**changes)


def test_run_config_round_trips_and_its_digest_names_it() -> None:
    config = RunConfig(start_time=1_700_000_000.0, fleet=FleetConfig(round_period_s=2.0), model={"hidden": 64})
    again = RunConfig.from_json(config.to_json())
    assert again == config and again.digest == config.digest
    assert RunConfig.from_dict(json.loads(config.to_json())) == config
    assert config.replace(model={"hidden": 65}).digest != config.digest
    clock = config.clock()
    assert clock.round_at(1_700_000_000.0 + 4.1) == 2
    assert clock.collection_deadline(2) == pytest.approx(1_700_000_000.0 + 6.5)


def test_peer_book_keeps_recent_addresses(tmp_path) -> None:
    book = PeerBook(tmp_path / "peers.json", limit=3)
    assert book.load() == []
    book.remember(["/ip4/127.0.0.1/tcp/1/p2p/A", "/ip4/127.0.0.1/tcp/2/p2p/B"])
    book.remember(["/ip4/127.0.0.1/tcp/3/p2p/C", "/ip4/127.0.0.1/tcp/4/p2p/D", "no-peer-id"])
    assert book.load() == ["/ip4/127.0.0.1/tcp/3/p2p/C", "/ip4/127.0.0.1/tcp/4/p2p/D", "/ip4/127.0.0.1/tcp/1/p2p/A"]
    (tmp_path / "peers.json").write_text("not json")
    assert book.load() == []
    assert split_peer_address("/ip4/1.2.3.4/tcp/5/p2p/Qm") == ("/ip4/1.2.3.4/tcp/5", "Qm")
    assert not is_loopback_address("/ip4/10.0.0.1/tcp/5")

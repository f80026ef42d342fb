"""A real lab (root only): topology, isolation, shaping, relay delay and byte counters.

Time assertions are lower bounds (a shaped link is never faster than its rate; a relay
never delivers sooner than its delay), so a slow or busy machine cannot fail them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from globetrain.netlab.commands import run_json
from globetrain.netlab.errors import LabError
from globetrain.netlab.lab import Lab
from globetrain.netlab.measure import measure_transfer, start_relay
from globetrain.netlab.profile import NetworkProfile, add_profile_hosts
from globetrain.netlab.schedule import Schedule
from globetrain.netlab.shaping import egress_rate
from globetrain.netlab.state import list_namespaces, process_start_ticks

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("lab_support")]


def test_hosts_get_namespaces_addresses_loopback_and_no_route_out() -> None:
    with Lab() as lab:
        hosts = [lab.add_host(name) for name in ("dev0", "dev1", "dev2")]

        assert list_namespaces(lab.prefix) == sorted([host.namespace for host in hosts] + [lab.hub_namespace])
        assert [host.address for host in hosts] == ["10.213.0.2", "10.213.0.3", "10.213.0.4"]
        for host in hosts:
            (loopback,) = run_json(["ip", "-n", host.namespace, "-json", "link", "show", "lo"])
            assert "UP" in loopback["flags"]
            routes = run_json(["ip", "-n", host.namespace, "-json", "route", "show"])
            assert [route["dst"] for route in routes] == ["10.213.0.0/16"]  # no default route
        root_links = [link["ifname"] for link in run_json(["ip", "-json", "link", "show"])]
        assert not [name for name in root_links if name.startswith(lab.prefix) or name.startswith("to-")]

        # Outside addresses are unreachable from inside; lab hosts are reachable.
        probe = ("import socket, sys\n"
                 "try:\n    socket.create_connection((sys.argv[1], 80), timeout=5)\n"
                 "except OSError as error:\n    print(error.errno)\n")
        outside = hosts[0].popen([sys.executable, "-c", probe, "1.1.1.1"], stdout=subprocess.PIPE, text=True)
        inside = hosts[0].popen([sys.executable, "-c", probe, hosts[1].address], stdout=subprocess.PIPE, text=True)
        assert outside.communicate(timeout=30)[0].strip() == "101"  # ENETUNREACH
        assert inside.communicate(timeout=30)[0].strip() == "111"  # ECONNREFUSED: reached, nobody listens


def test_rates_change_in_place_and_bad_hosts_are_refused() -> None:
    with Lab() as lab:
        host = lab.add_host("dev0", uplink_mbit=10, downlink_mbit=20)
        assert egress_rate(host.namespace, host.interface) == 10_000_000
        assert egress_rate(lab.hub_namespace, host.switch_port) == 20_000_000

        host.set_uplink(1)  # tenfold drop mid-run
        host.set_downlink(None)

        assert egress_rate(host.namespace, host.interface) == 1_000_000
        assert egress_rate(lab.hub_namespace, host.switch_port) is None
        assert (host.uplink_mbit, host.downlink_mbit) == (1, None)
        with pytest.raises(LabError, match="taken"):
            lab.add_host("dev0")
        with pytest.raises(LabError, match="host name 'Dev-0' is invalid"):
            lab.add_host("Dev-0")
        with pytest.raises(LabError, match="dev1.uplink_mbit = -2"):
            lab.add_host("dev1", uplink_mbit=-2)
    with pytest.raises(LabError, match="closed"):
        host.set_uplink(5)


def test_parallel_labs_are_separate_worlds() -> None:
    with Lab() as first, Lab() as second:
        a = first.add_host("dev0")
        b = second.add_host("dev0")

        assert first.prefix != second.prefix
        assert a.address == b.address  # the same address, in two closed networks
        assert list_namespaces(first.prefix) and list_namespaces(second.prefix)


def test_relay_delays_a_transfer_by_at_least_its_delay_and_counts_every_byte(tmp_path: Path) -> None:
    with Lab() as lab:
        sender, receiver = lab.add_host("dev0"), lab.add_host("dev1")

        transfer, relay = measure_transfer(sender, receiver, 50_000, relay_delay_ms=120, relay_jitter_ms=10,
                                           control_dir=tmp_path, timeout_s=60)

        assert transfer.one_way_delay_s >= 0.120
        assert transfer.received_bytes == transfer.sent_bytes
        assert relay is not None and relay["stats"]["forward_bytes"] == transfer.sent_bytes


def test_a_2_mbit_uplink_carries_2_mb_no_faster_than_its_rate_and_counters_match() -> None:
    with Lab() as lab:
        sender = lab.add_host("dev0", uplink_mbit=2)
        receiver = lab.add_host("dev1")

        transfer, _ = measure_transfer(sender, receiver, 2_000_000, timeout_s=60)

        assert transfer.received_bytes == transfer.sent_bytes
        # 16 Mbit at 2 Mbit/s is 8 s (a little more with headers); 1 s of slack for bursts.
        assert transfer.transfer_s >= 7.0
        # The kernel's frame count includes TCP/IP/Ethernet headers: within 10 % above.
        assert transfer.sent_bytes <= transfer.source_tx_bytes <= 1.10 * transfer.sent_bytes


def test_a_shaped_downlink_limits_what_a_host_receives() -> None:
    with Lab() as lab:
        sender = lab.add_host("dev0")
        receiver = lab.add_host("dev1", downlink_mbit=1)

        transfer, _ = measure_transfer(sender, receiver, 125_000, timeout_s=60)

        assert transfer.transfer_s >= 0.8  # 1 Mbit at 1 Mbit/s: 1 s, minus slack


def test_processes_get_the_environment_and_are_ended_with_the_lab() -> None:
    with Lab(stop_grace_s=2) as lab:
        host = lab.add_host("dev0")
        echo = host.popen([sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                          env={"GT_DEVICE": "dev0", "PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE, text=True)
        environment = json.loads(echo.communicate(timeout=30)[0])
        # A process that ignores SIGTERM, with a child: SIGKILL must reach both.
        stubborn = host.popen([sys.executable, "-c",
                               "import signal, subprocess, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                               "child = subprocess.Popen(['sleep', '300']); print(child.pid, flush=True);"
                               "child.wait()"], stdout=subprocess.PIPE, text=True)
        child_pid = int(stubborn.stdout.readline())
        with pytest.raises(TypeError, match="process groups"):
            host.popen(["true"], start_new_session=False)

    assert environment["GT_DEVICE"] == "dev0"
    assert stubborn.poll() is not None
    assert process_start_ticks(child_pid) is None
    stubborn.stdout.close()


def test_a_schedule_changes_a_running_lab_and_its_relays(tmp_path: Path) -> None:
    profile = NetworkProfile.from_dict({
        "hosts": [{"name": "dev0", "uplink_mbit": 10, "delay_ms": 30}, {"name": "dev1", "delay_ms": 20}],
        "changes": [{"at_s": 0, "hosts": ["dev0"], "uplink_factor": 0.1}, {"at_s": 0, "delay_factor": 2}],
    })
    with Lab() as lab:
        hosts = add_profile_hosts(lab, profile)
        relays = {name: start_relay(host, target="127.0.0.1:9", control_dir=tmp_path,
                                    delay_ms=profile.host(name).delay_ms)
                  for name, host in hosts.items()}

        schedule = Schedule(profile, lab, {name: relay.control for name, relay in relays.items()}).start()
        assert schedule.wait(30)

        assert [applied.error for applied in schedule.applied] == [None, None, None]
        assert egress_rate(hosts["dev0"].namespace, "eth0") == 1_000_000
        assert relays["dev0"].control.status()["delay"]["forward"]["delay_ms"] == 60.0
        assert relays["dev1"].control.status()["delay"]["backward"]["delay_ms"] == 40.0

"""Names, addresses, rates and state records of the lab (no root needed)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

import pytest

from globetrain.errors import ConfigError
from globetrain.netlab import lifecycle
from globetrain.netlab.errors import LabError
from globetrain.netlab.naming import (
    host_address,
    host_name_problem,
    namespace_name,
    new_run_id,
    run_id_of,
    run_prefix,
)
from globetrain.netlab.relay import parse_address, relay_command
from globetrain.netlab.shaping import MIN_QUEUE_FRAMES, FRAME_BYTES, check_rate, queue_limit_bytes
from globetrain.netlab.state import RunRecord, process_start_ticks


def test_namespace_names_carry_the_run_id() -> None:
    run_id = new_run_id()

    name = namespace_name(run_id, "dev3")

    assert name == f"gt{run_id}-dev3" and name.startswith(run_prefix(run_id))
    assert run_id_of(name) == run_id
    assert run_id_of(namespace_name(run_id, "hub")) == run_id
    assert run_id_of("gtXYZ-dev3") is None and run_id_of("netns-of-someone-else") is None


@pytest.mark.parametrize("name", ["dev0", "bootstrap", "a", "node_12", "abcdefghijkl"])
def test_valid_host_names(name: str) -> None:
    assert host_name_problem(name) is None


@pytest.mark.parametrize("name", ["", "Dev0", "0dev", "dev-3", "dev 3", "abcdefghijklm", "hub"])
def test_invalid_host_names_say_what_is_expected(name: str) -> None:
    assert host_name_problem(name)


def test_hosts_get_consecutive_addresses_after_the_reserved_first_one() -> None:
    subnet = ipaddress.IPv4Network("10.213.0.0/16")

    assert str(host_address(subnet, 0)) == "10.213.0.2/16"
    assert str(host_address(subnet, 254)) == "10.213.1.0/16"
    with pytest.raises(ValueError, match="room for 1 hosts"):
        host_address(ipaddress.IPv4Network("10.213.0.0/30"), 1)


def test_rates_are_checked_and_converted_to_bits() -> None:
    assert check_rate(None, "x") is None
    assert check_rate(2, "x") == 2_000_000
    assert check_rate(0.5, "x") == 500_000
    for bad in (0, -1, float("nan"), float("inf"), True, "2"):
        with pytest.raises(LabError, match="dev0.uplink_mbit"):
            check_rate(bad, "dev0.uplink_mbit")  # type: ignore[arg-type]
    with pytest.raises(LabError, match="below"):
        check_rate(0.001, "x")


def test_the_router_buffer_holds_queue_ms_of_the_rate_but_never_fewer_than_a_few_frames() -> None:
    assert queue_limit_bytes(50_000_000, 200.0) == 1_250_000
    assert queue_limit_bytes(1_000_000, 10.0) == MIN_QUEUE_FRAMES * FRAME_BYTES


def test_addresses_parse_or_name_the_setting() -> None:
    assert parse_address("10.213.0.3:7000", "x") == ("10.213.0.3", 7000)
    assert parse_address("[::1]:0", "x") == ("::1", 0)
    for bad in ("10.213.0.3", ":7000", "host:port", "host:70000"):
        with pytest.raises(ConfigError, match="--listen"):
            parse_address(bad, "--listen")


def test_relay_command_runs_the_relay_module() -> None:
    argv = relay_command(listen="10.213.0.3:7000", target="127.0.0.1:7001", delay_ms=40, jitter_ms=5,
                         control=Path("/run/x.sock"), seed=3, python="python3")

    assert argv[:3] == ["python3", "-m", "globetrain.netlab.relay"]
    assert argv[argv.index("--delay-ms") + 1] == "40.0"
    assert argv[argv.index("--control") + 1] == "/run/x.sock"
    assert argv[argv.index("--seed") + 1] == "3"


def test_a_state_record_round_trips_and_knows_its_owner_is_alive(tmp_path: Path) -> None:
    record = RunRecord.for_this_process("abc123")

    path = record.save(tmp_path)

    assert path == tmp_path / "abc123.json"
    assert RunRecord.load(path) == record
    assert record.owner_alive()


def test_a_recycled_pid_is_not_mistaken_for_the_owner() -> None:
    record = RunRecord.for_this_process("abc123")

    impostor = dataclasses.replace(record, owner_start_ticks=record.owner_start_ticks + 1)

    assert not impostor.owner_alive()
    assert process_start_ticks(os.getpid()) == record.owner_start_ticks


def test_unreadable_or_vanished_state_files_are_ignored(tmp_path: Path) -> None:
    garbage = tmp_path / "bad.json"
    garbage.write_text("{")

    assert RunRecord.load(garbage) is None
    assert RunRecord.load(tmp_path / "gone.json") is None


def test_a_state_dir_that_cannot_be_written_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(LabError, match="GLOBETRAIN_NETLAB_STATE_DIR"):
        RunRecord.for_this_process("abc123").save(blocker / "state")


def test_close_all_closes_every_registered_lab_even_if_one_fails() -> None:
    closed: list[str] = []

    class Fake:
        def __init__(self, name: str, fail: bool) -> None:
            self.name, self.fail = name, fail

        def close(self) -> None:
            closed.append(self.name)
            lifecycle.unregister(self)
            if self.fail:
                raise LabError("could not remove")

    first, second = Fake("first", True), Fake("second", False)
    lifecycle.register(first)
    lifecycle.register(second)
    try:
        lifecycle.close_all()
    finally:
        lifecycle.unregister(first)
        lifecycle.unregister(second)

    assert sorted(closed) == ["first", "second"]


def test_without_root_labs_refuse_to_start_and_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from globetrain.netlab import lab as lab_module

    monkeypatch.setattr(lab_module.os, "geteuid", lambda: 1000)

    assert "needs root" in (lab_module.support_problem() or "")
    with pytest.raises(LabError, match="needs root"):
        lab_module.Lab().start()


def test_a_signal_during_a_close_is_handled_after_the_close(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    events: list[str] = []
    monkeypatch.setitem(lifecycle._previous_handlers, signal.SIGUSR1, lambda signum, frame: events.append("signal"))

    with lifecycle.closing():
        lifecycle._handle_signal(signal.SIGUSR1, None)  # e.g. a second Ctrl+C while removing namespaces
        events.append("close finished")

    assert events == ["close finished", "signal"]

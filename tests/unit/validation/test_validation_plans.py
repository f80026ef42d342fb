"""The fault plan, the restart command, the profile cuts, the process placement and the shaped run's settings (no processes)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from globetrain.errors import ConfigError
from globetrain.netlab import validation_profile
from globetrain.validation.fault_plan import churn_count, plan_faults, resume_argv
from globetrain.validation.fleet_in_lab import PEER_PORT, RELAY_PORT, Placement, host_for_process
from globetrain.validation.lab_profiles import device_index, fleet_profile, rate_drops, unshaped
from globetrain.validation.shaped import main, parse_arguments, settings_from
from globetrain.validation.shaped_case import ShapedSettings

# -- fault plan -------------------------------------------------------------------------------------------


def test_churn_is_thirty_percent_rounded_up_but_never_everyone():
    assert churn_count(8, 0.3) == 3
    assert churn_count(10, 0.3) == 3
    assert churn_count(4, 0.3) == 2
    assert churn_count(2, 0.9) == 1
    with pytest.raises(ValueError):
        churn_count(1, 0.3)


@given(devices=st.integers(4, 24), seed=st.integers(0, 10_000), period=st.floats(1.0, 20.0))
def test_fault_plan_keeps_its_promises(devices, seed, period):
    names = [f"device-{index}" for index in range(devices)]
    timeout = period * 2.35
    events = plan_faults(names, round_period_s=period, exchange_timeout_s=timeout, seed=seed)
    assert [e.at_s for e in events] == sorted(e.at_s for e in events)
    kills = [e for e in events if e.kind == "kill" and e.target != "bootstrap"]
    restarts = [e for e in events if e.kind == "restart"]
    assert len(kills) == churn_count(devices, 0.3)
    assert {e.target for e in kills} == {e.target for e in restarts}
    bootstrap_kill = next(e for e in events if e.kind == "kill" and e.target == "bootstrap")
    # Restarted devices can only rejoin through other peers: the bootstrap is gone by then.
    assert all(bootstrap_kill.at_s < e.at_s for e in restarts)
    (fill,) = [e for e in events if e.kind == "fill"]
    (free,) = [e for e in events if e.kind == "free"]
    (stop,) = [e for e in events if e.kind == "stop"]
    (resume,) = [e for e in events if e.kind == "continue"]
    assert fill.target == free.target and fill.at_s < free.at_s
    assert stop.target == resume.target and resume.at_s - stop.at_s > timeout
    killed = {e.target for e in kills}
    assert fill.target not in killed and stop.target not in killed and fill.target != stop.target


def test_fault_plan_is_seeded():
    names = [f"device-{index}" for index in range(8)]
    first = plan_faults(names, round_period_s=8.0, exchange_timeout_s=18.8, seed=3)
    assert first == plan_faults(names, round_period_s=8.0, exchange_timeout_s=18.8, seed=3)


def test_fault_plan_needs_four_devices():
    with pytest.raises(ValueError, match="at least 4"):
        plan_faults(["device-0", "device-1", "device-2"], round_period_s=5.0, exchange_timeout_s=12.0)


def test_resume_argv_drops_join_addresses_and_adds_resume():
    argv = ["python", "-m", "globetrain", "device", "--join-file", "boot/addresses", "--data", "d", "--name", "device-1",
            "--join", "/ip4/1.2.3.4/tcp/1/p2p/Qm", "/ip4/5.6.7.8/tcp/2/p2p/Qm", "--run-dir", "r"]
    restarted = resume_argv(argv)
    assert "--join-file" not in restarted and "--join" not in restarted
    assert not any(item.startswith("/ip4/") or item == "boot/addresses" for item in restarted)
    assert restarted[-1] == "--resume"
    assert restarted[:4] == ["python", "-m", "globetrain", "device"]
    assert ["--name", "device-1"] == restarted[restarted.index("--name"):restarted.index("--name") + 2]
    assert resume_argv(restarted) == restarted


# -- profiles -----------------------------------------------------------------------------------------


def test_fleet_profile_keeps_the_bootstrap_and_the_first_devices_and_their_changes():
    profile = fleet_profile(validation_profile(), 3)
    assert [host.name for host in profile.hosts] == ["bootstrap", "dev0", "dev1", "dev2"]
    # dev3's rate drop names no host of the cut; dev0's does; the latency doubling names every host.
    assert [change.hosts for change in profile.changes] == [("dev0",), ()]
    eight = fleet_profile(validation_profile(), 8)
    drops = rate_drops(eight)
    assert [hosts for _, hosts in drops] == [("dev3",), ("dev0",)]
    assert all(change.uplink_factor == pytest.approx(0.1) for change, _ in drops)


def test_fleet_profile_refuses_more_devices_than_the_profile_has():
    with pytest.raises(ConfigError, match="has 10 devices"):
        fleet_profile(validation_profile(), 11)


def test_unshaped_profile_has_the_same_hosts_and_nothing_in_the_way():
    plain = unshaped(fleet_profile(validation_profile(), 8))
    assert [h.name for h in plain.hosts] == [h.name for h in fleet_profile(validation_profile(), 8).hosts]
    assert all(h.uplink_mbit is None and h.downlink_mbit is None and h.delay_ms == 0 and h.jitter_ms == 0
               and not h.stalls and not h.drops for h in plain.hosts)
    assert plain.changes == () and rate_drops(plain) == []


def test_device_and_process_names_map_to_hosts():
    assert device_index("dev12") == 12
    assert host_for_process("device-3") == "dev3"
    assert host_for_process("bootstrap") == "bootstrap"
    with pytest.raises(ValueError):
        host_for_process("evaluator")
    with pytest.raises(ValueError):
        device_index("bootstrap")


def test_placement_runs_the_command_in_the_namespace_behind_its_relay():
    argv = Placement("gtabc123-dev1", "10.213.0.3").wrap(["python", "-m", "globetrain", "device", "--name", "x"], ip="/sbin/ip")
    assert argv[:4] == ["/sbin/ip", "netns", "exec", "gtabc123-dev1"]
    assert argv[4:10] == ["python", "-m", "globetrain", "device", "--name", "x"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == str(PEER_PORT)
    assert argv[argv.index("--announce") + 1] == f"/ip4/10.213.0.3/tcp/{RELAY_PORT}"


def test_applied_actions_are_recorded_with_planned_and_actual_times():
    from globetrain.netlab.schedule import AppliedAction, SetRates, Stall
    from globetrain.validation.shaped_case import applied_actions

    records = applied_actions([AppliedAction(SetRates(60.0, "dev3", 1.0, 5.0), 60.04), AppliedAction(Stall(45.0, "dev1", 5.0), 45.5, "boom")])
    assert records[0] == {"action": "SetRates", "at_s": 60.0, "host": "dev3", "uplink_mbit": 1.0, "downlink_mbit": 5.0,
                          "applied_at_s": 60.04, "error": None}
    assert records[1]["action"] == "Stall" and records[1]["error"] == "boom"


def test_full_disk_evidence_counts_warnings_and_crashed_writers():
    from globetrain.validation.faults_report import full_disk_evidence

    log = "\n".join([
        "WARN [device-0] could not write checkpoint x: the disk is full; training goes on",
        "Exception in thread checkpoint-writer:",
        "OSError: [Errno 28] No space left on device",
        "INFO round 5",
    ])
    assert full_disk_evidence(log) == {"full_disk_lines": 2, "checkpoint_writer_crashes": 1}
    assert full_disk_evidence("") == {"full_disk_lines": 0, "checkpoint_writer_crashes": 0}


def test_shaped_command_line_carries_run_settings_and_round_models_into_its_settings():
    args = parse_arguments(["--set", "training.restricted_softmax=true", "--set", "sync.density=0.01", "--round-models"])
    settings = settings_from(args)
    assert settings.run_settings == ("training.restricted_softmax=true", "sync.density=0.01")
    assert settings.round_models is True
    assert ShapedSettings.from_dict(settings.to_dict()) == settings
    assert settings_from(parse_arguments([])).run_settings == ()


def test_a_run_setting_without_a_value_is_refused():
    with pytest.raises(ConfigError, match="run_settings"):
        ShapedSettings(run_settings=("training.restricted_softmax",))


@pytest.mark.parametrize("flag", ["--reanalyze", "--replot"])
@pytest.mark.parametrize("content, says", [(None, "run without them first"), ("{not json", "cannot read"), ("[]", "not a report")])
def test_redoing_a_report_that_is_not_there_says_what_to_run_instead(tmp_path, capsys, flag, content, says):
    if content is not None:
        (tmp_path / "shaped.json").write_text(content)
    assert main([flag, "--out", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert says in " ".join(capsys.readouterr().err.split())
    assert sorted(path.name for path in tmp_path.iterdir()) == ([] if content is None else ["shaped.json"])

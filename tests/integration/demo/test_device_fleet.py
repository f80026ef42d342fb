"""``globetrain bootstrap`` and ``globetrain device`` as real processes on loopback.

One small run (a bootstrap and a device named ``cam``, tiny model, 2-second rounds)
serves every check: the refusals a user can run into, each a clear message and exit
code 2 (no videos, a wrong run key, a name already taken, another globetrain version,
another model build), and ``--resume`` after the device was SIGKILLed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from cli_processes import LIVENESS_TIMEOUT_S, CliProcess, Processes, lines, wait_for

from globetrain.checkpoint import load_checkpoint
from globetrain.fleet.keys import new_run_key
from globetrain.video.synth import generate

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
TINY_RUN = ["--round-period", "2", "--start-delay", "4", "--no-live", "--set", "model.width=8", "--set", "model.frames=4",
            "--set", "training.batch_size=4", "--set", "training.warmup_steps=2", "--set", "sync.density=0.05"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    processes = Processes(tmp_path_factory.mktemp("fleet"))
    data = processes.directory / "data"
    generate(data, clips_per_class=3, frames=8, size=32, workers=1)
    bootstrap = processes.start("bootstrap", ["bootstrap", "--run-dir", str(processes.directory / "boot"), *TINY_RUN])
    addresses = processes.directory / "boot" / "addresses"
    wait_for(lambda: addresses.exists() or not bootstrap.alive(), LIVENESS_TIMEOUT_S, "the bootstrap to listen")
    assert bootstrap.alive(), bootstrap.output()
    processes.address = addresses.read_text().split()[0]  # type: ignore[attr-defined]
    processes.data = data  # type: ignore[attr-defined]
    try:
        yield processes
    finally:
        processes.stop_all()


def start_device(fleet: Processes, name: str, *extra: str, run_dir: str | None = None, data: Path | None = None,
                 join: str | None = None, run_key: str | None = None) -> CliProcess:
    run_dir = run_dir or str(fleet.directory / f"dev-{name}-{len(fleet.started)}")
    arguments = ["device", "--join", join or fleet.address, "--data", str(data or fleet.data), "--name", name,  # type: ignore[attr-defined]
                 "--run-dir", run_dir, "--join-timeout", "10", *extra]
    return fleet.start(f"{name}-{len(fleet.started)}", arguments, run_key=run_key)


@pytest.fixture(scope="module")
def cam(fleet: Processes) -> CliProcess:
    device = start_device(fleet, "cam", "--checkpoint-every", "1", run_dir=str(fleet.directory / "cam"))
    wait_for(lambda: lines(fleet.directory / "cam" / "metrics.jsonl", "joined") or not device.alive(),
             LIVENESS_TIMEOUT_S, "cam to join")
    assert device.alive(), device.output()[-3000:]
    return device


def refused(device: CliProcess) -> str:
    code = device.wait(timeout=LIVENESS_TIMEOUT_S)
    output = device.output()
    assert code == 2, output[-3000:]
    assert "Traceback" not in output
    return output


def test_a_device_whose_folder_has_no_videos_says_so(fleet: Processes):
    empty = fleet.directory / "empty"
    (empty / "walk").mkdir(parents=True)
    output = refused(start_device(fleet, "empty", data=empty))
    assert "globetrain: error: no videos" in output and str(empty) in output


def test_a_device_with_another_run_key_finds_no_run(fleet: Processes):
    output = refused(start_device(fleet, "stranger", run_key=new_run_key()))
    assert "no run found for this run key" in output and "GLOBETRAIN_RUN_KEY" in output


def test_a_second_device_with_a_taken_name_is_refused(fleet: Processes, cam: CliProcess):
    output = refused(start_device(fleet, "cam"))
    assert "another device named 'cam' is already in this run" in output and "--name" in output
    assert cam.alive()


@pytest.mark.parametrize(("kind", "message"), [
    ("version", "the run was created by globetrain 0.0.0-elsewhere but this device runs globetrain"),
    ("model", "this device builds it with"),
])
def test_a_run_of_another_version_or_model_build_is_refused(fleet: Processes, kind: str, message: str):
    run_dir = fleet.directory / f"mismatch-{kind}"
    bootstrap = fleet.start_python(f"bootstrap-{kind}", [str(HERE / "mismatched_bootstrap.py"), kind, str(run_dir)])
    wait_for(lambda: (run_dir / "addresses").exists() or not bootstrap.alive(), LIVENESS_TIMEOUT_S, "the other bootstrap")
    assert bootstrap.alive(), bootstrap.output()
    output = refused(start_device(fleet, f"dev-{kind}", join=(run_dir / "addresses").read_text().split()[0]))
    assert message in output


def test_resume_continues_from_the_checkpoint_round(fleet: Processes, cam: CliProcess):
    run_dir = fleet.directory / "cam"
    checkpoint = run_dir / "checkpoint.pt"
    wait_for(lambda: len(lines(run_dir / "metrics.jsonl", "round")) >= 3 or not cam.alive(), LIVENESS_TIMEOUT_S,
             "cam to train three rounds")
    assert cam.alive(), cam.output()[-3000:]
    wait_for(checkpoint.exists, LIVENESS_TIMEOUT_S, "a checkpoint")

    os.killpg(cam.pid, signal.SIGKILL)
    cam.popen.wait(timeout=30)
    saved_round = load_checkpoint(checkpoint).extra["fleet"]["round"]  # intact after the kill
    resumed = start_device(fleet, "cam", "--resume", "--checkpoint-every", "1", run_dir=str(run_dir))

    def joined_again() -> list[dict]:
        return [line for line in lines(run_dir / "metrics.jsonl", "joined") if line["pid"] == resumed.pid]

    wait_for(lambda: joined_again() or not resumed.alive(), LIVENESS_TIMEOUT_S, "cam to rejoin")
    assert resumed.alive(), resumed.output()[-3000:]
    assert joined_again()[0]["resumed_round"] == saved_round
    wait_for(lambda: [r for r in lines(run_dir / "metrics.jsonl", "round") if r["t"] > joined_again()[0]["t"] and r["round"] > saved_round]
             or not resumed.alive(), LIVENESS_TIMEOUT_S, "a round after the resumed one")
    after = [r for r in lines(run_dir / "metrics.jsonl", "round") if r["t"] > joined_again()[0]["t"]]
    assert min(r["round"] for r in after) >= saved_round
    assert "resumed from" in resumed.output()


def test_when_the_bootstrap_dies_the_device_goes_on(fleet: Processes):
    run_dir = fleet.directory / "cam"
    bootstrap = fleet.started[0]
    assert bootstrap.name == "bootstrap" and bootstrap.alive()
    os.killpg(bootstrap.pid, signal.SIGKILL)
    bootstrap.popen.wait(timeout=30)
    gone_at = lines(run_dir / "metrics.jsonl", "round")[-1]["t"]

    def applied_after() -> list[dict]:
        return [r for r in lines(run_dir / "metrics.jsonl", "round") if r["t"] > gone_at and r["status"] == "applied"]

    wait_for(lambda: len(applied_after()) >= 2, LIVENESS_TIMEOUT_S, "cam to apply two rounds without the bootstrap")

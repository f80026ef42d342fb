"""The bootstrap's round models and the per-round curve's bookkeeping (no fleet needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from rich.console import Console

from globetrain.fleet.app.checkpoints import CHECKPOINT_NAME, FleetCheckpointer
from globetrain.fleet.app.round_models import ROUND_MODELS_DIR, RoundModels, load_round_model, round_model_files
from globetrain.fleet.app.run_setup import build_run
from globetrain.sync.inprocess import InProcessGroup
from globetrain.sync.loop import SyncLoop
from globetrain.validation.round_curve import (
    RoundCurveError,
    applied_at,
    contributors_of,
    evaluate_rounds,
    largest_fall,
    left_out,
    participation,
)
from globetrain.video.actions import CLASS_NAMES


def test_round_models_are_kept_one_file_a_round_and_read_back_in_round_order(tmp_path: Path) -> None:
    models = RoundModels(tmp_path / "round_models")
    for round_index in (10, 2, 100000):
        models.keep(round_index, [torch.full((2, 3), float(round_index)), torch.arange(4.0)])
    (tmp_path / "round_models" / "round-7.pt").write_bytes(b"not ours: too few digits")
    found = list(round_model_files(tmp_path / "round_models"))
    assert [index for index, _ in found] == [2, 10, 100000]
    assert models.kept == 3
    values = load_round_model(found[1][1])
    assert torch.equal(values[0], torch.full((2, 3), 10.0)) and torch.equal(values[1], torch.arange(4.0))
    assert not list((tmp_path / "round_models").glob(".*.tmp"))


def test_a_kept_model_is_a_copy_not_a_view_of_the_live_parameters(tmp_path: Path) -> None:
    live = [torch.zeros(3)]
    models = RoundModels(tmp_path)
    models.keep(0, live)
    live[0].add_(5.0)
    models.keep(1, live)
    files = dict(round_model_files(tmp_path))
    assert torch.equal(load_round_model(files[0])[0], torch.zeros(3))
    assert torch.equal(load_round_model(files[1])[0], torch.full((3,), 5.0))


def test_a_full_disk_stops_the_keeping_with_one_warning_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    models = RoundModels(tmp_path)
    models.keep(0, [torch.zeros(2)])

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    models.keep(1, [torch.zeros(2)])
    models.keep(2, [torch.zeros(2)])
    assert models.kept == 1 and "No space left" in (models.failed or "")
    assert [index for index, _ in round_model_files(tmp_path)] == [0]
    assert not list(tmp_path.glob(".*.tmp"))
    assert len([r for r in caplog.records if "round models" in r.getMessage()]) == 1


def test_a_file_that_is_not_a_list_of_tensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "round-00001.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a round model"):
        load_round_model(path)


def test_participation_and_applied_rounds_come_from_the_metrics_lines() -> None:
    rows = [
        {"event": "round", "device": "device-0", "round": 4, "contributed": False},
        {"event": "round", "device": "device-1", "round": 4, "contributed": True},
        {"event": "round", "device": "device-1", "round": 5},
        {"event": "fleet", "round": 5, "applied": [{"round": 4, "status": "applied"}, {"round": 3, "status": "failed"}]},
        {"event": "evaluation", "round": 5},
    ]
    assert participation(rows) == {4: {"contributed": ["device-1"], "listened": ["device-0"]},
                                   5: {"contributed": ["device-1"], "listened": []}}
    assert applied_at(rows) == {5: [4]}


def test_a_contribution_sent_but_not_in_the_aggregate_counts_as_left_out() -> None:
    # Run Q's device-0 contributed to rounds whose leader had closed (stale-round): the
    # aggregate then holds fewer contributions than the devices that sent one.
    rows = [
        {"event": "round", "device": "device-0", "round": 7, "contributed": True},
        {"event": "round", "device": "device-1", "round": 7, "contributed": True},
        {"event": "round", "device": "device-2", "round": 7, "contributed": False},
        {"event": "round", "device": "device-0", "round": 8, "contributed": True},
        {"event": "fleet", "round": 8, "applied": [{"round": 7, "status": "applied", "contributors": 1}]},
        {"event": "fleet", "round": 9, "applied": [{"round": 8, "status": "applied", "contributors": 1},
                                                  {"round": 6, "status": "failed", "contributors": 0}]},
    ]
    contributors, taking_part = contributors_of(rows), participation(rows)
    assert contributors == {7: 1, 8: 1}
    assert left_out([7], taking_part, contributors) == 1
    assert left_out([8], taking_part, contributors) == 0
    assert left_out([6, 5], taking_part, contributors) == 0  # nothing known: nothing claimed


def test_largest_fall_looks_within_the_span_only() -> None:
    points = [{"round": r, "val_accuracy": a} for r, a in enumerate([0.5, 0.7, 0.6, 0.3, 0.8])]
    assert largest_fall(points, span=1) == {"drop": 0.3, "from_round": 2, "to_round": 3}
    assert largest_fall(points, span=2) == {"drop": 0.4, "from_round": 1, "to_round": 3}
    assert largest_fall(points[:1]) is None


def bootstrap_run(folder: Path) -> list[torch.Tensor]:
    """A bootstrap's run folder: its checkpoint (the model's architecture) and one good round model."""
    spec, run_config = build_run(method="two-step", class_names=CLASS_NAMES, overrides={"model": {"width": 8, "frames": 4}})
    loop = SyncLoop(spec.build_model(), None, InProcessGroup(1).exchange(0), run_config.sync)
    checkpointer = FleetCheckpointer(folder / CHECKPOINT_NAME, spec=spec, run_config=run_config, run_id="0" * 32,
                                     data_root="data", name="bootstrap")
    assert checkpointer.save(checkpointer.snapshot(loop, global_samples=0, local_state=None))
    RoundModels(folder / ROUND_MODELS_DIR).keep(0, loop.global_params)
    return loop.global_params


def test_a_damaged_round_model_is_reported_by_name_and_a_foreign_one_refused(tmp_path: Path) -> None:
    bootstrap_run(tmp_path)
    quiet = Console(quiet=True)
    damaged = tmp_path / ROUND_MODELS_DIR / "round-00003.pt"
    damaged.write_bytes(b"PK not a whole file")
    with pytest.raises(RoundCurveError, match="round-00003.pt is unreadable"):
        evaluate_rounds(tmp_path, tmp_path, quiet)
    torch.save([torch.zeros(3)], damaged)
    with pytest.raises(RoundCurveError, match="does not match the run's model"):
        evaluate_rounds(tmp_path, tmp_path, quiet)


def test_a_bootstrap_folder_without_a_demo_summary_asks_for_the_data(tmp_path: Path) -> None:
    bootstrap_run(tmp_path)
    with pytest.raises(RoundCurveError, match="pass --data DIR"):
        evaluate_rounds(tmp_path, None, Console(quiet=True))
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    with pytest.raises(RoundCurveError, match="holds no round models: run the fleet with --round-models"):
        evaluate_rounds(empty, None, Console(quiet=True))

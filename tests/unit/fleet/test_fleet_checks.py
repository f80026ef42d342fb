"""The outlier bound: honest spread passes, a 1000x update does not; rejections are counted."""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from globetrain.compression import Codec
from globetrain.fleet import checks as checks_module
from globetrain.fleet.checks import (
    OutlierBound,
    RejectionLog,
    codec_rejection_reason,
    non_finite_problem,
    shape_problem,
    update_norm,
)


@given(
    base=st.floats(1e-6, 1e6),
    factors=st.lists(st.floats(0.5, 4.0), min_size=1, max_size=16),
    history=st.lists(st.floats(0.5, 4.0), max_size=32),
)
def test_honest_spread_is_accepted(base: float, factors: list[float], history: list[float]) -> None:
    # Honest norms within a factor of 8 of each other (devices doing 8x more steps).
    bound = OutlierBound(kappa=10.0, history=32)
    bound.remember([base * f for f in history])
    verdicts = bound.judge({f"d{i}": base * f for i, f in enumerate(factors)})
    assert all(limit is None for limit in verdicts.values())


@given(
    base=st.floats(1e-6, 1e6),
    honest=st.lists(st.floats(0.5, 2.0), min_size=1, max_size=16),
    history=st.lists(st.floats(0.5, 2.0), max_size=8),
)
def test_a_thousandfold_update_is_refused(base: float, honest: list[float], history: list[float]) -> None:
    bound = OutlierBound(kappa=10.0, history=32)
    bound.remember([base * f for f in history])
    values = {f"d{i}": base * f for i, f in enumerate(honest)}
    values["rogue"] = base * 1000.0
    verdicts = bound.judge(values)
    assert verdicts["rogue"] is not None
    assert all(verdicts[key] is None for key in values if key != "rogue")


def test_history_alone_is_a_reference_and_nothing_is_no_reference() -> None:
    bound = OutlierBound(kappa=10.0, history=8)
    assert bound.judge({"only": 1e9}) == {"only": None}
    bound.remember([1.0, 1.2, 0.9])
    assert bound.judge({"only": 1e3})["only"] is not None
    assert bound.judge({"only": 5.0})["only"] is None


def test_a_round_wide_change_of_scale_is_not_refused() -> None:
    # A dense warm-up or a learning-rate change moves every norm at once: the round's own
    # median follows it even though the history does not.
    bound = OutlierBound(kappa=10.0, history=8)
    bound.remember([1.0] * 8)
    verdicts = bound.judge({f"d{i}": 50.0 + i for i in range(4)})
    assert all(limit is None for limit in verdicts.values())


def test_rejection_log_counts_by_reason_and_sender() -> None:
    log = RejectionLog("leader")
    log.reject("contribution", "non-finite", sender="PeerX", name="rogue", round_index=3)
    log.reject("contribution", "non-finite", sender="PeerX", name="rogue", round_index=4)
    log.reject("state-request", "bad-tag", sender="PeerY")
    assert log.counts() == {"contribution/non-finite": 2, "state-request/bad-tag": 1}
    assert log.by_sender()["PeerX"] == {"name": "rogue", "reasons": {"contribution/non-finite": 2}}
    assert log.total() == 3


def test_update_checks() -> None:
    codec = Codec(1.0, 32)
    update = codec.decode_sparse(codec.encode([torch.tensor([3.0, 4.0]), torch.zeros(2, 2)]))
    assert math.isclose(update_norm(update), 5.0)
    assert shape_problem(update, [(2,), (2, 2)]) is None
    assert "shape" in shape_problem(update, [(2,), (4,)])
    assert "tensors" in shape_problem(update, [(2,)])
    assert non_finite_problem(update) is None
    update[0].values[0] = float("nan")
    assert non_finite_problem(update) is not None


def test_codec_errors_are_classified() -> None:
    from globetrain.errors import CorruptPayload

    from globetrain.fleet.testpeer import nan_payload

    try:
        Codec(1.0, 32).decode_sparse(nan_payload([(3,)]))
    except CorruptPayload as error:
        assert codec_rejection_reason(error) == "non-finite"
    else:
        raise AssertionError("a NaN payload must not decode")
    try:
        Codec(1.0, 32).decode_sparse(b"\x00" * 40)
    except CorruptPayload as error:
        assert codec_rejection_reason(error) == "corrupt"


def test_made_up_sender_ids_beyond_the_bound_share_one_row(monkeypatch) -> None:
    monkeypatch.setattr(checks_module, "MAX_SENDERS_TRACKED", 4)
    log = RejectionLog()
    for index in range(50):
        log.reject("contribution", "bad-tag", sender=f"Made-up-{index}")
    senders = log.by_sender()
    assert len(senders) == 5
    assert senders[checks_module.OTHER_SENDERS]["reasons"] == {"contribution/bad-tag": 46}
    assert log.total() == 50

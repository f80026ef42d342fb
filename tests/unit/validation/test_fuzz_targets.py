"""The fuzz in the suite: every target, a couple of hundred hypothesis-drawn mutations each.

The same recipes as the million-input run (``python -m globetrain.validation.fuzz``),
drawn by hypothesis so that a failure shrinks to the fewest, smallest mutations. A
``FuzzCrash`` is an exception outside the target's documented refusals, or a refusal
nobody counted.
"""

from __future__ import annotations

import functools
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from globetrain.validation.fuzz import plan
from globetrain.validation.fuzz_engine import FuzzCase, build_input, case_strategy, draw_case, feed
from globetrain.validation.fuzz_mutations import DEEP_PLACEHOLDER, mutate_bytes, mutate_json
from globetrain.validation.fuzz_targets import FuzzTarget, FuzzWorld, build_targets

TARGET_NAMES = [
    "codec-decode", "envelope", "frame", "contribution", "aggregate", "reply", "roster-record", "run-config",
    "state-request", "aggregate-request", "state-manifest", "state-chunk", "state-bytes",
]


@functools.cache
def targets() -> dict[str, FuzzTarget]:
    return {target.name: target for target in build_targets(FuzzWorld())}


def test_every_target_is_listed_and_its_seeds_pass_without_a_finding() -> None:
    assert sorted(targets()) == sorted(TARGET_NAMES)
    for target in targets().values():
        for seed in target.seeds:
            data = target.reseal(seed) if target.reseal else seed
            assert feed(target, data) in ("accepted", "refused")


@pytest.mark.parametrize("name", TARGET_NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_messages_are_accepted_or_refused_never_crash(name: str, data: st.DataObject) -> None:
    target = targets()[name]
    case = data.draw(case_strategy(target))
    feed(target, build_input(target, case), case=case)


def test_the_long_run_draws_reproducible_cases_and_splits_inputs_evenly() -> None:
    target = targets()["roster-record"]
    first = [build_input(target, draw_case(target, random.Random(5))) for _ in range(3)]
    again = [build_input(target, draw_case(target, random.Random(5))) for _ in range(3)]
    # Sealing draws a fresh nonce: compare the plaintext recipe instead of the bytes.
    assert [draw_case(target, random.Random(5)) for _ in range(3)] == [draw_case(target, random.Random(5)) for _ in range(3)]
    assert len(first) == len(again) == 3
    tasks = plan(["a", "b", "c"], 10_001, seed=1, hang_s=1.0)
    per_target = {name: sum(count for task_name, _, count, _, _ in tasks if task_name == name) for name in "abc"}
    assert per_target == {"a": 3334, "b": 3334, "c": 3333}


def test_mutations_reach_hostile_json_and_keep_byte_edits_in_bounds() -> None:
    seed = json.dumps({"a": [1, 2], "b": "x"}).encode()
    nested = mutate_json(seed, [(4, 1, 50)])
    assert nested.count(b"[") >= 150 and DEEP_PLACEHOLDER.encode() not in nested
    assert mutate_json(b"not json", [(0, 0, 0)]) == b"not json"
    for opcode in range(9):
        assert isinstance(mutate_bytes(b"", [(opcode, 7, 9)], [seed]), bytes)
    assert mutate_bytes(seed, [(4, 3, 0)]) == seed[:3]


def test_a_random_case_of_every_mode_builds(tmp_path) -> None:
    target = targets()["state-manifest"]
    for case in (FuzzCase("random", 0, random_bytes=b"\x00" * 9), FuzzCase("bytes", 0, ((0, 1, 2),)),
                 FuzzCase("json", 0, (), ((0, 1, 11),)), FuzzCase("sealed", 0, ((5, 3, 4),))):
        assert feed(target, build_input(target, case), case=case) in ("accepted", "refused")

"""One fuzz input, from its recipe to its verdict; shared by the long run and the suite.

A ``FuzzCase`` is the recipe of one input: which seed message, which mode, which
mutation operations. ``build_input`` turns it into bytes for a target, ``feed`` runs the
target on them and says ``accepted`` or ``refused``, or raises ``FuzzCrash`` for anything
else: an exception outside the target's documented refusals, a refusal nobody counted,
or an input that took longer than the hang bound.

Modes (``draw_case``, weights in ``MODE_WEIGHTS``):

- ``random``: random bytes of about a seed's size (sealed, for enveloped messages: random
  plaintext from a key holder);
- ``bytes``: byte mutations of a seed (and splices with the other seeds);
- ``json``: structured JSON mutations of a seed, then possibly byte mutations;
- ``sealed``: the seed sealed, then byte mutations of the sealed envelope (what anyone
  on the path can send, key or not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import signal
import traceback
from collections.abc import Iterator
from typing import Any, Literal

from hypothesis import strategies as st

from globetrain.validation.fuzz_mutations import (
    BYTE_OPCODES,
    JSON_OPCODES,
    Operation,
    mutate_bytes,
    mutate_json,
    mutation_operations,
    random_operations,
)
from globetrain.validation.fuzz_targets import Finding, FuzzTarget

Mode = Literal["random", "bytes", "json", "sealed"]
RANDOM_SHARE = 0.1
MAX_RANDOM_BYTES = 4096


class FuzzCrash(Exception):
    """The target broke its contract on one input; ``record`` describes it for the report."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(f"{record['target']}: {record['error']}")
        self.record = record


class InputHang(BaseException):
    """Raised by the interval timer inside a target that ran past the hang bound.

    A ``BaseException`` so that no ``except Exception`` in the code under test swallows it.
    """


@dataclasses.dataclass(frozen=True)
class FuzzCase:
    mode: Mode
    seed_index: int
    byte_operations: tuple[Operation, ...] = ()
    json_operations: tuple[Operation, ...] = ()
    random_bytes: bytes = b""


def draw_case(target: FuzzTarget, rng: random.Random) -> FuzzCase:
    """A case for the long run, from a seeded generator."""
    seed_index = rng.randrange(len(target.seeds))
    roll = rng.random()
    if roll < RANDOM_SHARE:
        size = min(int(rng.expovariate(1 / max(len(target.seeds[seed_index]), 16))), MAX_RANDOM_BYTES)
        return FuzzCase("random", seed_index, random_bytes=rng.randbytes(size))
    if target.reseal is not None and roll < RANDOM_SHARE + target.sealed_fraction:
        return FuzzCase("sealed", seed_index, tuple(random_operations(rng, BYTE_OPCODES)))
    if target.json and rng.random() < 0.6:
        byte_operations = tuple(random_operations(rng, BYTE_OPCODES)) if rng.random() < 0.3 else ()
        return FuzzCase("json", seed_index, byte_operations, tuple(random_operations(rng, JSON_OPCODES)))
    return FuzzCase("bytes", seed_index, tuple(random_operations(rng, BYTE_OPCODES)))


def case_strategy(target: FuzzTarget) -> st.SearchStrategy[FuzzCase]:
    """The same cases as a hypothesis strategy (the suite's short fuzz)."""
    seed_index = st.integers(0, len(target.seeds) - 1)
    modes: list[st.SearchStrategy[FuzzCase]] = [
        st.builds(FuzzCase, st.just("random"), seed_index, random_bytes=st.binary(max_size=512)),
        st.builds(FuzzCase, st.just("bytes"), seed_index, mutation_operations(BYTE_OPCODES).map(tuple)),
    ]
    if target.reseal is not None:
        modes.append(st.builds(FuzzCase, st.just("sealed"), seed_index, mutation_operations(BYTE_OPCODES).map(tuple)))
    if target.json:
        modes.append(st.builds(
            FuzzCase, st.just("json"), seed_index, st.lists(st.tuples(st.integers(0, BYTE_OPCODES - 1),
                                                                     st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                                                           max_size=2).map(tuple),
            mutation_operations(JSON_OPCODES).map(tuple),
        ))
    return st.one_of(modes)


def build_input(target: FuzzTarget, case: FuzzCase) -> bytes:
    seed = target.seeds[case.seed_index]
    if case.mode == "random":
        data = case.random_bytes
    elif case.mode == "sealed":
        assert target.reseal is not None
        return mutate_bytes(target.reseal(seed), case.byte_operations)
    elif case.mode == "json":
        data = mutate_bytes(mutate_json(seed, case.json_operations), case.byte_operations)
    else:
        data = mutate_bytes(seed, case.byte_operations, target.seeds)
    return target.reseal(data) if target.reseal is not None else data


@contextlib.contextmanager
def hang_bound(seconds: float) -> Iterator[None]:
    """Raise ``InputHang`` in this (main) thread if the block runs longer than ``seconds``."""

    def expire(signum: int, frame: Any) -> None:
        raise InputHang()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def feed(target: FuzzTarget, data: bytes, *, case: FuzzCase | None = None, hang_s: float | None = None) -> str:
    """Run ``target`` on ``data``: ``accepted``, ``refused``, or ``FuzzCrash``."""
    try:
        if hang_s is None:
            verdict = target.check(data)
        else:
            with hang_bound(hang_s):
                verdict = target.check(data)
        return verdict or "accepted"
    except target.allowed:
        return "refused"
    except InputHang:
        raise FuzzCrash(_record(target, data, case, f"hang: no verdict within {hang_s}s", "")) from None
    except Finding as finding:
        raise FuzzCrash(_record(target, data, case, f"finding: {finding}", "")) from None
    except Exception as error:  # noqa: BLE001 - every other exception is what the fuzz looks for
        where = traceback.extract_tb(error.__traceback__)[-1]
        raise FuzzCrash(_record(
            target, data, case, f"{type(error).__name__}: {str(error)[:300]}", f"{where.filename}:{where.lineno}",
        )) from None


def _record(target: FuzzTarget, data: bytes, case: FuzzCase | None, error: str, location: str) -> dict[str, Any]:
    return {
        "target": target.name,
        "error": error,
        "location": location,
        "input_bytes": len(data),
        "input_hex": data[:2048].hex(),
        "case": None if case is None else {"mode": case.mode, "seed_index": case.seed_index,
                                           "byte_operations": case.byte_operations,
                                           "json_operations": case.json_operations,
                                           "random_bytes": case.random_bytes.hex()},
    }

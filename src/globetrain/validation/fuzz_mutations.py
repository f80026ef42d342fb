"""Mutations of valid messages: the input generator of the fuzz, shared by the long run and the suite.

A mutation is a short list of operations, each a triple of integers ``(opcode, a, b)``:
the opcode picks what to do, ``a`` and ``b`` where and with what. Keeping operations as
plain integers lets the same code be driven two ways:

- the long run (``globetrain.validation.fuzz``) draws the triples from a seeded
  ``random.Random``: millions of inputs, reproducible from (seed, target, index);
- the suite draws them with hypothesis (``mutation_operations()``), which shrinks a failing
  input to the fewest, smallest operations.

Two families of operations:

- bytes (``mutate_bytes``): bit flips, interesting byte and integer values (0, -1, 2**31,
  2**63, ... in every width and byte order, where length fields and counters live),
  insertions, deletions, truncation, duplicated slices, appended garbage, and splices
  with another valid message;
- JSON (``mutate_json``): the same message parsed, one node replaced by a value of
  another type or a hostile one (NaN, infinity, huge integers, long strings, lone
  surrogates, deeply nested arrays), keys removed or added, then serialised again, so the
  parser's field checks are exercised and not only its JSON syntax errors.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

Operation = tuple[int, int, int]

MAX_OPERATIONS = 6
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x40, 0x3F)
INTERESTING_INTEGERS = (
    0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 0x7FFFFFFFFFFFFFFF, 1 << 63, (1 << 64) - 1,
)
_WIDTHS = (1, 2, 4, 8)
BYTE_OPCODES = 9
JSON_OPCODES = 5
DEEP_PLACEHOLDER = "\x00deep\x00"


def random_operations(rng: random.Random, opcodes: int) -> list[Operation]:
    """1..MAX_OPERATIONS operations drawn from ``rng`` (the long run)."""
    count = 1 + min(int(rng.expovariate(0.7)), MAX_OPERATIONS - 1)
    return [(rng.randrange(opcodes), rng.getrandbits(32), rng.getrandbits(32)) for _ in range(count)]


def mutation_operations(opcodes: int) -> st.SearchStrategy[list[Operation]]:
    """The same operations as a hypothesis strategy (the suite)."""
    operation = st.tuples(st.integers(0, opcodes - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
    return st.lists(operation, min_size=1, max_size=MAX_OPERATIONS)


# ------------------------------------------------------------------------------------------
# bytes


def _pseudo_random_bytes(seed: int, count: int) -> bytes:
    return random.Random(seed).randbytes(count)


def _interesting_integer(choice: int) -> bytes:
    value = INTERESTING_INTEGERS[choice % len(INTERESTING_INTEGERS)]
    width = _WIDTHS[(choice >> 8) % len(_WIDTHS)]
    order = "big" if (choice >> 12) & 1 else "little"
    if (choice >> 13) & 1:
        value = -value  # two's complement of the width: -1 is all ones
    return (value % (1 << (8 * width))).to_bytes(width, order)


def mutate_bytes(data: bytes, operations: Sequence[Operation], pool: Sequence[bytes] = ()) -> bytes:
    """Apply byte-level ``operations`` to ``data``; ``pool`` holds other valid messages to splice with."""
    out = bytearray(data)
    for opcode, a, b in operations:
        length = len(out)
        opcode %= BYTE_OPCODES
        if opcode == 0 and length:
            out[a % length] ^= 1 << (b % 8)
        elif opcode == 1 and length:
            out[a % length] = INTERESTING_BYTES[b % len(INTERESTING_BYTES)] if b & 0x100 else b & 0xFF
        elif opcode == 2:
            position = a % (length + 1)
            out[position:position] = _pseudo_random_bytes(b, 1 + b % 16)
        elif opcode == 3 and length:
            position = a % length
            del out[position : position + 1 + b % 16]
        elif opcode == 4:
            del out[a % (length + 1) :]
        elif opcode == 5:
            chunk = _interesting_integer(b)
            position = a % (length + 1)
            out[position : position + len(chunk)] = chunk
        elif opcode == 6 and length:
            start = a % length
            piece = out[start : start + 1 + (b >> 16) % 64]
            target = b % (length + 1)
            out[target:target] = piece
        elif opcode == 7:
            out.extend(_pseudo_random_bytes(a, b % 64 + 1))
        elif opcode == 8 and pool:
            other = pool[b % len(pool)]
            cut = a % (min(length, len(other)) + 1)
            out = out[:cut] + bytearray(other[cut:])
    return bytes(out)


# ------------------------------------------------------------------------------------------
# JSON


def _hostile_value(choice: int) -> Any:
    values: tuple[Any, ...] = (
        None, True, False, 0, -1, 1 << 62, 1 << 63, 1 << 64, -(1 << 63), 10**40, 10**400,
        float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 0.5, 1e-320,
        "", "x" * 100, "x" * 5000, "\ud800", "\u0000", "é" * 40, "/ip4/127.0.0.1/tcp/1",
        [], {}, [1, 2, 3], ["a"] * 100, [None], {"": None}, [[[]]], {"a": {"b": {"c": []}}},
        DEEP_PLACEHOLDER,
    )
    return values[choice % len(values)]


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a parsed JSON value (the root is ``()``)."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_nodes(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_nodes(item, (*path, index)))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
        copy[head] = _replace(value[head], rest, new)
        return copy
    copy_list = list(value)
    copy_list[head] = _replace(value[head], rest, new)
    return copy_list


def _dumps(value: Any, depth: int) -> bytes:
    text = json.dumps(value, allow_nan=True, ensure_ascii=bool(depth & 1))
    # Deep nesting is spliced in as text: the encoder itself would refuse to build it.
    nested = "[" * depth + "]" * depth
    text = text.replace(json.dumps(DEEP_PLACEHOLDER), nested)
    return text.encode("utf-8", "surrogatepass")


def mutate_json(data: bytes, operations: Sequence[Operation]) -> bytes:
    """Parse ``data`` as JSON, apply structured ``operations``, serialise again.

    Opcodes: 0 replace a node by a hostile value, 1 delete a key or item, 2 add an
    unexpected key, 3 swap the root for another container type, 4 nest a node deeply.
    Data that is not JSON is returned unchanged (the byte mutations cover it).
    """
    try:
        value = json.loads(data)
    except ValueError:
        return data
    depth = 0
    for opcode, a, b in operations:
        paths = _nodes(value)
        path = paths[a % len(paths)]
        opcode %= JSON_OPCODES
        if opcode == 0:
            value = _replace(value, path, _hostile_value(b))
        elif opcode == 1 and path:
            parent = _get(value, path[:-1])
            if isinstance(parent, dict):
                trimmed: Any = {k: v for k, v in parent.items() if k != path[-1]}
            else:
                trimmed = [v for i, v in enumerate(parent) if i != path[-1]]
            value = _replace(value, path[:-1], trimmed)
        elif opcode == 2:
            target = _get(value, path)
            if isinstance(target, dict):
                value = _replace(value, path, {**target, f"extra{b % 7}": _hostile_value(b >> 8)})
        elif opcode == 3:
            value = list(value.values()) if isinstance(value, dict) else {str(i): v for i, v in enumerate(value)} if isinstance(value, list) else [value]
        elif opcode == 4:
            value = _replace(value, path, DEEP_PLACEHOLDER)
            depth = max(depth, 100 + b % 5000)
    return _dumps(value, depth)


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


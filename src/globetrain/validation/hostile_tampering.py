"""What a rogue holding the run key sends: bad envelopes, bad updates, a poisoned state.

Every function returns bytes together with the ``kind/reason`` the receiving peer must
count for it (``RejectionLog`` keys), so the hostile run can check that each attack was
refused, counted and attributed to the rogue's peer id.

Envelope layout offsets (``globetrain.fleet.envelope``): magic 0-3, version 4, kind 5,
flags 6-7, run id 8-23; the tag is the last 16 bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from globetrain.compression import Codec
from globetrain.fleet.envelope import MessageKind, seal
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.state import PreparedState, StateSnapshot, prepare_state
from globetrain.validation.fuzz_targets import nan_payload

HUGE_FACTOR = 1000.0
CLAIMED_SAMPLES = 10**9


@dataclasses.dataclass(frozen=True)
class Attack:
    name: str
    message: bytes
    expected: str
    """``kind/reason`` the receiver counts, e.g. ``contribution/non-finite``."""


@dataclasses.dataclass(frozen=True)
class Sealer:
    """Seals messages as the rogue (its own peer id and name) for one run."""

    keys: RunKeys
    sender: str
    name: str

    def __call__(self, kind: MessageKind, payload: bytes, *, round_index: int, samples: int = 0,
                 sender: str | None = None) -> bytes:
        return seal(self.keys, kind, payload, sender=sender or self.sender, name=self.name,
                    round_index=round_index, samples=samples)


def _with_byte(data: bytes, position: int, value: int) -> bytes:
    changed = bytearray(data)
    changed[position] = value
    return bytes(changed)


def envelope_attacks(sealer: Sealer, payload: bytes, round_index: int, *, other_peer: str) -> list[Attack]:
    """A valid-looking contribution broken in each envelope field a receiver checks."""
    good = sealer(MessageKind.CONTRIBUTION, payload, round_index=round_index, samples=8)
    return [
        Attack("bad-tag", good[:-1] + bytes([good[-1] ^ 0x01]), "contribution/bad-tag"),
        Attack("bad-flags", _with_byte(good, 7, 0x01), "contribution/bad-flags"),
        Attack("wrong-run", _with_byte(good, 8, good[8] ^ 0xFF), "contribution/wrong-run"),
        Attack("bad-version", _with_byte(good, 4, 2), "contribution/bad-version"),
        Attack("bad-magic", b"XXXX" + good[4:], "contribution/bad-magic"),
        Attack("truncated", good[:40], "contribution/truncated"),
        Attack("length-mismatch", good + b"\x00", "contribution/length-mismatch"),
        Attack("wrong-kind", sealer(MessageKind.ROSTER, payload, round_index=round_index), "contribution/wrong-kind"),
        Attack("sender-mismatch", sealer(MessageKind.CONTRIBUTION, payload, round_index=round_index, samples=8,
                                         sender=other_peer), "contribution/sender-mismatch"),
        Attack("ping-bad-tag", _flip_tag(sealer(MessageKind.PING, b"", round_index=round_index)), "ping/bad-tag"),
    ]


def _flip_tag(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x80])


def payload_attacks(
    sealer: Sealer, shapes: Sequence[tuple[int, ...]], base: list[torch.Tensor] | None, round_index: int
) -> list[Attack]:
    """Well-sealed contributions whose content must be refused (one admission per round each).

    ``base`` is a plausible update (the fleet's last aggregate); without one, the attacks
    that need an honest scale (huge, samples) are left out.
    """
    valid = Codec(0.05, 8).encode(base, seed=round_index) if base is not None else None
    attacks = [
        Attack("nan", sealer(MessageKind.CONTRIBUTION, nan_payload(shapes), round_index=round_index, samples=8),
               "contribution/non-finite"),
    ]
    if base is not None and valid is not None:
        huge = Codec(0.05, 8).encode([t * HUGE_FACTOR for t in base], seed=round_index)
        attacks.append(Attack("huge", sealer(MessageKind.CONTRIBUTION, huge, round_index=round_index, samples=8),
                              "contribution/norm-bound"))
        attacks.append(Attack("truncated-payload", sealer(MessageKind.CONTRIBUTION, valid[: len(valid) // 2],
                                                          round_index=round_index, samples=8), "contribution/corrupt"))
        flipped = bytearray(valid)
        flipped[len(flipped) // 2] ^= 0x10
        attacks.append(Attack("bit-flipped-payload", sealer(MessageKind.CONTRIBUTION, bytes(flipped),
                                                            round_index=round_index, samples=8), "contribution/corrupt"))
        attacks.append(Attack("claimed-samples", sealer(MessageKind.CONTRIBUTION, valid, round_index=round_index,
                                                        samples=CLAIMED_SAMPLES), "contribution/samples-bound"))
    wrong_shapes = Codec(0.5, 8).encode([torch.ones(3, 5)], seed=round_index)
    attacks.append(Attack("shape-mismatch", sealer(MessageKind.CONTRIBUTION, wrong_shapes, round_index=round_index,
                                                   samples=8), "contribution/shape-mismatch"))
    return attacks


def round_attacks(sealer: Sealer, payload: bytes, round_index: int) -> list[Attack]:
    """Contributions for rounds the leader is not collecting (they never count as arrived)."""
    return [
        Attack("stale-round", sealer(MessageKind.CONTRIBUTION, payload, round_index=max(round_index - 3, 0), samples=8),
               "contribution/stale-round"),
        Attack("future-round", sealer(MessageKind.CONTRIBUTION, payload, round_index=round_index + 6, samples=8),
               "contribution/future-round"),
    ]


def request_attacks(sealer: Sealer, round_index: int) -> list[tuple[str, Attack]]:
    """(service, attack) pairs for the archive and state services."""
    return [
        ("aggregate", Attack("aggregate-request-bad-tag",
                             _flip_tag(sealer(MessageKind.AGGREGATE_REQUEST, b"", round_index=round_index)),
                             "aggregate-request/bad-tag")),
        ("state", Attack("state-request-not-json",
                         sealer(MessageKind.STATE_REQUEST, b"{not json", round_index=round_index),
                         "state-request/malformed")),
        ("state", Attack("state-request-bad-round",
                         sealer(MessageKind.STATE_REQUEST, b'{"what": "manifest", "round": "latest"}',
                                round_index=round_index), "state-request/malformed")),
        ("state", Attack("state-request-bad-tag",
                         _flip_tag(sealer(MessageKind.STATE_REQUEST, b'{"what": "manifest", "round": null}',
                                          round_index=round_index)), "state-request/bad-tag")),
    ]


def poisoned_state(shapes: Sequence[tuple[int, ...]], *, next_round: int, config_digest: str, chunk_bytes: int,
                   fill: Callable[[tuple[int, ...]], torch.Tensor] | None = None) -> PreparedState:
    """A state whose chunks match its manifest but whose values are NaN (refused when decoded)."""
    make = fill or (lambda shape: torch.full(shape, float("nan")))
    params = [make(tuple(shape)) for shape in shapes]
    snapshot = StateSnapshot(
        next_round=next_round, global_params=params, outer_lr=0.7, outer_momentum=0.9, outer_nesterov=True,
        outer_steps=next_round, momentum_buffers=None, global_samples=1, config_digest=config_digest,
    )
    return prepare_state(snapshot, chunk_bytes)

"""Run keys and envelopes: derivation, parsing, sealing, and every way an envelope is refused."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from globetrain.errors import ConfigError, CorruptPayload
from globetrain.fleet.envelope import (
    HEADER_FIXED_BYTES,
    EnvelopeRejected,
    MessageKind,
    open_envelope,
    peek_sender,
    seal,
)
from globetrain.fleet.keys import RunKeys, new_run_key, parse_run_key

KEY = bytes(range(32))
KEYS = RunKeys.from_run_key(KEY)
SENDER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
KINDS = list(MessageKind)


def sealed_example(payload: bytes = b"the update", kind: MessageKind = MessageKind.CONTRIBUTION) -> bytes:
    return seal(KEYS, kind, payload, sender=SENDER, name="pi-kitchen", round_index=7, samples=96)


# -- keys --------------------------------------------------------------------------------------


def test_run_key_text_forms_all_parse_to_the_same_bytes() -> None:
    text = new_run_key()
    raw = bytes.fromhex(text)
    assert len(raw) == 32
    assert parse_run_key(text) == raw
    assert parse_run_key(text.upper()) == raw
    assert parse_run_key(base64.b64encode(raw).decode()) == raw
    assert parse_run_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert parse_run_key(f"  {text}\n") == raw


@pytest.mark.parametrize("text", ["", "abc", "00" * 31, "zz" * 32, base64.b64encode(b"x" * 31).decode()])
def test_malformed_run_keys_are_refused_with_the_fix(text: str) -> None:
    with pytest.raises(ConfigError, match="run key"):
        parse_run_key(text)


def test_derivation_is_deterministic_and_separates_keys_and_kinds() -> None:
    again = RunKeys.from_run_key(KEY)
    other = RunKeys.from_run_key(bytes(reversed(range(32))))
    assert again.run_id == KEYS.run_id and len(KEYS.run_id) == 16
    assert other.run_id != KEYS.run_id
    nonce = bytes(12)
    # Different kinds use different keys: the same plaintext encrypts differently.
    ciphertexts = {KEYS.cipher(kind.label).encrypt(nonce, b"x", None) for kind in MessageKind}
    assert len(ciphertexts) == len(MessageKind)
    assert again.cipher("roster").encrypt(nonce, b"x", None) == KEYS.cipher("roster").encrypt(nonce, b"x", None)


# -- envelopes ---------------------------------------------------------------------------------


@given(
    kind=st.sampled_from(KINDS),
    payload=st.binary(max_size=2048),
    round_index=st.integers(0, 2**63 - 1),
    samples=st.integers(0, 2**63 - 1),
    name=st.text(max_size=40),
)
def test_seal_open_round_trip(kind: MessageKind, payload: bytes, round_index: int, samples: int, name: str) -> None:
    sealed = seal(KEYS, kind, payload, sender=SENDER, name=name, round_index=round_index, samples=samples)
    opened = open_envelope(KEYS, sealed, kinds=KINDS, max_payload_bytes=4096)
    assert (opened.kind, opened.payload, opened.round, opened.samples, opened.sender) == (
        kind, payload, round_index, samples, SENDER,
    )
    assert opened.name == name.encode()[:64].decode("utf-8", "ignore")
    assert opened.wire_bytes == len(sealed)
    assert len(payload) < 16 or payload not in sealed  # the payload travels encrypted


@given(position=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_any_changed_byte_is_refused(position: int, flip: int) -> None:
    sealed = bytearray(sealed_example())
    position %= len(sealed)
    sealed[position] ^= flip
    with pytest.raises(EnvelopeRejected) as caught:
        open_envelope(KEYS, bytes(sealed), kinds=KINDS, max_payload_bytes=4096)
    assert isinstance(caught.value, CorruptPayload)
    assert caught.value.reason  # a slug for the counters


@given(cut=st.integers(1, 200), extra=st.binary(min_size=1, max_size=64))
def test_truncated_or_extended_envelopes_are_refused(cut: int, extra: bytes) -> None:
    sealed = sealed_example()
    with pytest.raises(EnvelopeRejected):
        open_envelope(KEYS, sealed[: max(len(sealed) - cut, 0)], kinds=KINDS, max_payload_bytes=4096)
    with pytest.raises(EnvelopeRejected, match="length-mismatch"):
        open_envelope(KEYS, sealed + extra, kinds=KINDS, max_payload_bytes=4096)


def test_each_refusal_names_its_reason() -> None:
    sealed = sealed_example()

    def reason(data: bytes, keys: RunKeys = KEYS, kinds=KINDS, bound: int = 4096) -> str:
        with pytest.raises(EnvelopeRejected) as caught:
            open_envelope(keys, data, kinds=kinds, max_payload_bytes=bound)
        return caught.value.reason

    assert reason(b"XXXX" + sealed[4:]) == "bad-magic"
    assert reason(sealed[:4] + bytes([9]) + sealed[5:]) == "bad-version"
    assert reason(sealed[:5] + bytes([99]) + sealed[6:]) == "bad-kind"
    assert reason(sealed, kinds=(MessageKind.AGGREGATE,)) == "wrong-kind"
    assert reason(sealed[:6] + b"\x00\x01" + sealed[8:]) == "bad-flags"
    assert reason(sealed, keys=RunKeys.from_run_key(os.urandom(32))) == "wrong-run"
    assert reason(sealed, bound=3) == "too-large"
    # Same run id, another key: the tag does not verify.
    impostor = RunKeys(run_id=KEYS.run_id, _run_key=os.urandom(32))
    forged = seal(impostor, MessageKind.CONTRIBUTION, b"evil", sender=SENDER, round_index=7)
    assert reason(forged) == "bad-tag"
    # A header re-labelled as another kind is opened with that kind's key: refused.
    relabelled = sealed[:5] + bytes([int(MessageKind.AGGREGATE)]) + sealed[6:]
    assert reason(relabelled) == "bad-tag"
    assert reason(b"") == "truncated"


def test_payload_bound_is_checked_before_decrypting() -> None:
    huge = seal(KEYS, MessageKind.CONTRIBUTION, b"x" * 10_000, sender=SENDER)
    with pytest.raises(EnvelopeRejected, match="too-large"):
        open_envelope(KEYS, huge[: HEADER_FIXED_BYTES + len(SENDER) + 1 + 16], kinds=KINDS, max_payload_bytes=100)


def test_sender_of_a_refused_envelope_is_known_for_the_log() -> None:
    sealed = bytearray(sealed_example())
    sealed[-1] ^= 1
    with pytest.raises(EnvelopeRejected) as caught:
        open_envelope(KEYS, bytes(sealed), kinds=KINDS, max_payload_bytes=4096)
    assert caught.value.reason == "bad-tag"
    assert (caught.value.sender, caught.value.name) == (SENDER, "pi-kitchen")
    assert peek_sender(b"garbage") == ("", "")


def test_seal_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(ValueError):
        seal(KEYS, MessageKind.PING, b"", sender="")
    with pytest.raises(ValueError):
        seal(KEYS, MessageKind.PING, b"", sender=SENDER, round_index=-1)

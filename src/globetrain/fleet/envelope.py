"""Envelopes: every message of the fleet is ``header || AEAD(payload)``.

The header is sent in the clear (a receiver must know the kind, run and sender before it
can pick a key and decide whether to bother) but it is authenticated: the whole header is
the AEAD's associated data, so changing any byte of it breaks the tag. Layout, big-endian::

    size  field
    4     magic b"GTFE"
    1     version (1)
    1     kind (MessageKind)
    2     flags, reserved: must be 0
    16    run_id (derived from the run key)
    8     round
    8     samples (training samples behind a contribution or an aggregate; else 0)
    1     sender length S (1..64): the sender's libp2p peer id, base58
    1     name length N (0..64): the sender's human-readable name, UTF-8
    4     payload length P (plaintext bytes)
    12    nonce (random per message)
    S     sender
    N     name
    P+16  ChaCha20-Poly1305 ciphertext and tag, keyed per kind (see ``keys``)

``open_envelope`` checks every field in that order, refuses a payload length beyond the
caller's bound before decrypting anything, and raises ``EnvelopeRejected`` (a
``CorruptPayload``) whose ``reason`` is a short slug that counters and logs use.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import struct
from collections.abc import Collection

from cryptography.exceptions import InvalidTag

from globetrain.errors import CorruptPayload
from globetrain.fleet.keys import RUN_ID_BYTES, RunKeys

MAGIC = b"GTFE"
VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_SENDER_BYTES = 64
MAX_NAME_BYTES = 64
MAX_ROUND = (1 << 63) - 1
_FIXED = struct.Struct(">4sBBH16sQQBBI12s")
HEADER_FIXED_BYTES = _FIXED.size


class MessageKind(enum.IntEnum):
    """What an envelope carries; each kind has its own AEAD key."""

    RUN_CONFIG = 1
    ROSTER = 2
    CONTRIBUTION = 3
    REPLY = 4
    """Small status answers: pong, ack, not found, refused (JSON payload)."""
    AGGREGATE = 5
    AGGREGATE_REQUEST = 6
    STATE_REQUEST = 7
    STATE_MANIFEST = 8
    STATE_CHUNK = 9
    PING = 10

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class EnvelopeRejected(CorruptPayload):
    """An envelope failed a check; ``reason`` is a slug such as ``bad-tag`` or ``wrong-run``."""

    def __init__(self, reason: str, detail: str, *, sender: str = "", name: str = "") -> None:
        who = f" from {name or '?'} ({sender})" if sender else ""
        super().__init__(f"envelope{who} rejected ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.sender = sender
        self.name = name


@dataclasses.dataclass(frozen=True)
class Envelope:
    """An opened envelope: authenticated header fields and the decrypted payload."""

    kind: MessageKind
    round: int
    samples: int
    sender: str
    name: str
    payload: bytes
    wire_bytes: int
    """Size of the sealed envelope, as it travelled."""


def _header(
    keys: RunKeys, kind: MessageKind, round_index: int, samples: int, sender: bytes, name: bytes, size: int, nonce: bytes
) -> bytes:
    fixed = _FIXED.pack(MAGIC, VERSION, int(kind), 0, keys.run_id, round_index, samples, len(sender), len(name), size, nonce)
    return fixed + sender + name


def seal(
    keys: RunKeys,
    kind: MessageKind,
    payload: bytes,
    *,
    sender: str,
    name: str = "",
    round_index: int = 0,
    samples: int = 0,
) -> bytes:
    """Encrypt ``payload`` for ``kind`` and prepend the authenticated header."""
    sender_bytes = sender.encode("ascii")
    # Names are cut to 64 bytes at a character boundary (they only label log lines).
    name_bytes = name.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", "ignore").encode("utf-8")
    if not 1 <= len(sender_bytes) <= MAX_SENDER_BYTES:
        raise ValueError(f"sender peer id must be 1..{MAX_SENDER_BYTES} ASCII bytes, got {sender!r}")
    if not 0 <= round_index <= MAX_ROUND or not 0 <= samples <= MAX_ROUND:
        raise ValueError(f"round and samples must be in [0, 2**63), got {round_index}, {samples}")
    if len(payload) > 0xFFFFFFFF - TAG_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes is too large for one envelope")
    nonce = os.urandom(NONCE_BYTES)
    header = _header(keys, kind, round_index, samples, sender_bytes, name_bytes, len(payload), nonce)
    return header + keys.cipher(kind.label).encrypt(nonce, bytes(payload), header)


def peek_sender(data: bytes) -> tuple[str, str]:
    """Best-effort (sender, name) of an envelope that may be invalid, for logging who sent it."""
    try:
        fixed = _FIXED.unpack_from(data, 0)
        sender_length, name_length = fixed[7], fixed[8]
        start = HEADER_FIXED_BYTES
        sender = bytes(data[start : start + min(sender_length, MAX_SENDER_BYTES)]).decode("ascii", "replace")
        start += sender_length
        name = bytes(data[start : start + min(name_length, MAX_NAME_BYTES)]).decode("utf-8", "replace")
        return sender, name
    except (struct.error, TypeError, ValueError):
        return "", ""


def open_envelope(
    keys: RunKeys, data: bytes, *, kinds: Collection[MessageKind], max_payload_bytes: int
) -> Envelope:
    """Check and decrypt ``data``; raise ``EnvelopeRejected`` saying why it is refused."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EnvelopeRejected("malformed", f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_FIXED_BYTES + 1 + TAG_BYTES:
        raise EnvelopeRejected("truncated", f"{len(data)} bytes is shorter than the smallest envelope")
    magic, version, kind_value, flags, run_id, round_index, samples, sender_length, name_length, size, nonce = (
        _FIXED.unpack_from(data, 0)
    )
    if magic != MAGIC:
        raise EnvelopeRejected("bad-magic", f"magic {magic!r} is not {MAGIC!r}: not a globetrain fleet message")
    if version != VERSION:
        raise EnvelopeRejected("bad-version", f"protocol version {version}, this build speaks {VERSION}")
    sender, name = peek_sender(data)
    if kind_value not in MessageKind._value2member_map_:
        raise EnvelopeRejected("bad-kind", f"unknown message kind {kind_value}", sender=sender, name=name)
    kind = MessageKind(kind_value)
    if kind not in kinds:
        expected = ", ".join(sorted(k.label for k in kinds))
        raise EnvelopeRejected("wrong-kind", f"a {kind.label} message where {expected} was expected", sender=sender, name=name)
    if flags != 0:
        raise EnvelopeRejected("bad-flags", f"reserved flags {flags:#06x} are set", sender=sender, name=name)
    if len(run_id) != RUN_ID_BYTES or run_id != keys.run_id:
        raise EnvelopeRejected(
            "wrong-run", f"run id {run_id.hex()} is not this run's ({keys.run_id_hex})", sender=sender, name=name
        )
    if not 1 <= sender_length <= MAX_SENDER_BYTES or name_length > MAX_NAME_BYTES:
        raise EnvelopeRejected(
            "bad-sender", f"sender/name lengths {sender_length}/{name_length} out of range", sender=sender, name=name
        )
    if round_index > MAX_ROUND or samples > MAX_ROUND:
        raise EnvelopeRejected("bad-round", f"round {round_index} or samples {samples} out of range", sender=sender, name=name)
    if size > max_payload_bytes:
        raise EnvelopeRejected(
            "too-large", f"payload of {size} bytes exceeds the bound of {max_payload_bytes}", sender=sender, name=name
        )
    header_end = HEADER_FIXED_BYTES + sender_length + name_length
    expected_total = header_end + size + TAG_BYTES
    if len(data) != expected_total:
        raise EnvelopeRejected(
            "length-mismatch",
            f"{len(data)} bytes where the header announces {expected_total}",
            sender=sender,
            name=name,
        )
    sender_raw = data[HEADER_FIXED_BYTES : HEADER_FIXED_BYTES + sender_length]
    name_raw = data[HEADER_FIXED_BYTES + sender_length : header_end]
    try:
        sender = sender_raw.decode("ascii")
        name = name_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeRejected("bad-sender", "sender or name is not valid text", sender=sender, name=name) from None
    try:
        payload = keys.cipher(kind.label).decrypt(nonce, data[header_end:], data[:header_end])
    except InvalidTag:
        raise EnvelopeRejected(
            "bad-tag",
            "authentication failed: sealed with another run key, or changed on the way",
            sender=sender,
            name=name,
        ) from None
    return Envelope(kind, round_index, samples, sender, name, payload, len(data))

"""The run key: one shared secret from which a run's public id and message keys derive.

A run key is 32 random bytes, handed to every device of the run (``GLOBETRAIN_RUN_KEY``)
as 64 hex digits or as base64. Nothing else is secret. With HKDF-SHA256 it yields

- ``run_id``: 16 public bytes naming the run in the DHT. A peer with another key derives
  another id and simply finds no run, which is how a wrong key is told apart from a
  wrong address;
- one ChaCha20-Poly1305 key per message kind: an envelope sealed for one purpose (say a
  roster heartbeat) cannot be replayed as another (a contribution), even by a peer that
  recorded it, because it would be opened with another key.

HKDF's ``info`` separates the outputs; its ``salt`` is a fixed protocol label so that the
same run key used by some other software derives unrelated keys.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from globetrain.errors import ConfigError

RUN_KEY_BYTES = 32
RUN_ID_BYTES = 16
AEAD_KEY_BYTES = 32
RUN_KEY_ENV = "GLOBETRAIN_RUN_KEY"
_HKDF_SALT = b"globetrain fleet protocol v1"


def new_run_key() -> str:
    """A fresh run key as 64 hex digits (give it to every device of the run)."""
    return secrets.token_hex(RUN_KEY_BYTES)


def parse_run_key(text: str) -> bytes:
    """The 32 key bytes from 64 hex digits or base64 (standard or URL-safe, padded or not)."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            f"the run key is empty: set {RUN_KEY_ENV} to the key the bootstrap printed "
            "(64 hex digits), or create one with `globetrain bootstrap`"
        )
    cleaned = text.strip()
    candidates: list[bytes] = []
    if len(cleaned) == 2 * RUN_KEY_BYTES:
        try:
            candidates.append(bytes.fromhex(cleaned))
        except ValueError:
            pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decode(cleaned + "=" * (-len(cleaned) % 4)))
        except (binascii.Error, ValueError):
            pass
    for key in candidates:
        if len(key) == RUN_KEY_BYTES:
            return key
    raise ConfigError(
        f"the run key is not {RUN_KEY_BYTES} bytes as 64 hex digits or base64 "
        f"(got {len(cleaned)} characters): copy it again from the bootstrap's output ({RUN_KEY_ENV})"
    )


def run_key_from_environment(explicit: str | None = None) -> bytes:
    """``explicit`` if given, else ``$GLOBETRAIN_RUN_KEY``; the explicit value wins."""
    text = explicit if explicit else os.environ.get(RUN_KEY_ENV, "")
    if not text:
        raise ConfigError(f"no run key: pass --run-key or set {RUN_KEY_ENV} to the key the bootstrap printed")
    return parse_run_key(text)


def _derive(run_key: bytes, label: str, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_HKDF_SALT, info=label.encode()).derive(run_key)


@dataclasses.dataclass(frozen=True, eq=False)
class RunKeys:
    """What a run key derives: the public run id, and one AEAD cipher per message kind."""

    run_id: bytes
    _run_key: bytes = dataclasses.field(repr=False)
    _ciphers: dict[str, ChaCha20Poly1305] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_run_key(cls, run_key: bytes) -> RunKeys:
        if not isinstance(run_key, (bytes, bytearray)) or len(run_key) != RUN_KEY_BYTES:
            raise ConfigError(f"a run key is {RUN_KEY_BYTES} bytes; parse its text form with parse_run_key")
        key = bytes(run_key)
        return cls(_derive(key, "run-id", RUN_ID_BYTES), key)

    @classmethod
    def from_text(cls, text: str) -> RunKeys:
        return cls.from_run_key(parse_run_key(text))

    @property
    def run_id_hex(self) -> str:
        return self.run_id.hex()

    def cipher(self, kind_label: str) -> ChaCha20Poly1305:
        """The AEAD of one message kind (``info = "aead/<kind_label>"``), derived on first use."""
        cipher = self._ciphers.get(kind_label)
        if cipher is None:
            cipher = ChaCha20Poly1305(_derive(self._run_key, f"aead/{kind_label}", AEAD_KEY_BYTES))
            self._ciphers[kind_label] = cipher
        return cipher

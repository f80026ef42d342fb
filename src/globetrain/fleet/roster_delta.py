"""The roster read's messages: a digest of what a reader holds, and the entries it lacks.

``FleetPeer.roster_read`` asks the key's nearest nodes on ``/globetrain/dht-delta/1`` with
a digest (16 bytes an entry); each answers with the entries the reader lacks or holds an
older version of, so a read costs about one copy of the roster, not one per node. These
are pure functions of bytes: a peer's answer is checked here before the roster sees it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from collections.abc import Iterable
from typing import Any

ROSTER_READ_NODES = 5
"""Nodes a roster read merges: the 3 a record is stored on and 2 more, so that a writer and a
reader whose routing tables disagree on up to 2 of the key's nearest nodes still meet."""
ROSTER_DELTA_PROTOCOL = "/globetrain/dht-delta/1"
"""The roster read's stream protocol (every fleet peer serves it; see ``FleetPeer.roster_read``)."""

# ------------------------------------------------------------------------------------------
# the roster read's messages
#
# request: version (1 byte) | flags (1; bit 0: name your nearest nodes to the key) | key id
#          (20) | reader's DHT node id (20) | per entry the reader holds: fingerprint of
#          the subkey (8) | expiration time (big-endian float64, 8)
# answer:  msgpack [version, answering node's DHT id (20 bytes),
#                   [[subkey, value, expiration], ...], [[node id, peer id], ...]]
#          with the entries whose subkey the digest lacks or whose expiration is later,
#          and (if asked) the ROSTER_READ_NODES nodes nearest to the key it knows.

DeltaItem = tuple[Any, bytes, float]
DELTA_VERSION = 1
WANT_NODES = 1
DHT_ID_BYTES = 20
DELTA_REQUEST_HEAD = 2 + 2 * DHT_ID_BYTES
DIGEST_ENTRY = struct.Struct(">8sd")
MAX_DIGEST_ENTRIES = 1 << 16
MAX_DELTA_REQUEST_BYTES = DELTA_REQUEST_HEAD + DIGEST_ENTRY.size * MAX_DIGEST_ENTRIES
MAX_DELTA_ANSWER_BYTES = 16 << 20
MAX_PEER_ID_BYTES = 128


def DHTID_from_bytes(raw: bytes) -> Any:  # noqa: N802 - a constructor of hivemind's DHTID, imported late
    from hivemind.dht.routing import DHTID

    return DHTID.from_bytes(raw)


def PeerID_from_bytes(raw: bytes) -> Any:  # noqa: N802 - a constructor of hivemind's PeerID, imported late
    from hivemind.p2p import PeerID

    return PeerID(raw)


def subkey_fingerprint(subkey: Any) -> bytes:
    """8 bytes that name a subkey in a digest (its msgpack form, hashed)."""
    from hivemind.utils.serializer import MSGPackSerializer

    return hashlib.sha256(MSGPackSerializer.dumps(subkey)).digest()[:8]


def encode_delta_request(
    key_id: bytes, reader: bytes, entries: dict[Any, tuple[bytes, float]], *, want_nodes: bool = False
) -> bytes:
    if len(key_id) != DHT_ID_BYTES or len(reader) != DHT_ID_BYTES:
        raise ValueError("DHT ids are 20 bytes")
    held = list(entries.items())[:MAX_DIGEST_ENTRIES]
    return b"".join(
        [bytes([DELTA_VERSION, WANT_NODES if want_nodes else 0]), key_id, reader]
        + [DIGEST_ENTRY.pack(subkey_fingerprint(subkey), expiration) for subkey, (_, expiration) in held]
    )


def decode_delta_request(data: bytes) -> tuple[bytes, bytes, bool, dict[bytes, float]]:
    """(key id, reader's node id, whether it wants nodes, fingerprint -> expiration); ValueError if malformed."""
    if len(data) < DELTA_REQUEST_HEAD or data[0] != DELTA_VERSION or data[1] & ~WANT_NODES:
        raise ValueError(f"malformed roster read request ({len(data)} bytes)")
    if (len(data) - DELTA_REQUEST_HEAD) % DIGEST_ENTRY.size:
        raise ValueError("roster read request with a partial digest entry")
    if (len(data) - DELTA_REQUEST_HEAD) // DIGEST_ENTRY.size > MAX_DIGEST_ENTRIES:
        raise ValueError("roster read request with too many entries")
    digest: dict[bytes, float] = {}
    for fingerprint, expiration in DIGEST_ENTRY.iter_unpack(data[DELTA_REQUEST_HEAD:]):
        if math.isnan(expiration):
            continue
        digest[fingerprint] = max(expiration, digest.get(fingerprint, -math.inf))
    key_id = data[2 : 2 + DHT_ID_BYTES]
    reader = data[2 + DHT_ID_BYTES : DELTA_REQUEST_HEAD]
    return key_id, reader, bool(data[1] & WANT_NODES), digest


def encode_delta_answer(responder: bytes, items: list[DeltaItem], nodes: list[tuple[bytes, bytes]] = ()) -> bytes:
    from hivemind.utils.serializer import MSGPackSerializer

    return MSGPackSerializer.dumps(
        [DELTA_VERSION, responder, [list(item) for item in items], [list(node) for node in nodes]]
    )


def decode_delta_answer(data: bytes) -> tuple[bytes, list[DeltaItem], list[tuple[bytes, bytes]]]:
    """(answering node's id, entries, nodes it named); ValueError if malformed.

    Entries whose subkey is not hashable or whose value is not bytes are dropped, named
    nodes beyond ROSTER_READ_NODES or with malformed ids too; what is left is the roster's
    to check (``Roster._open`` counts bad entries).
    """
    from hivemind.utils.serializer import MSGPackSerializer

    try:
        raw = MSGPackSerializer.loads(data)
    except Exception as error:  # noqa: BLE001 - msgpack raises several types on bad bytes
        raise ValueError(f"roster read answer is not msgpack: {_short(error)}") from None
    if not (isinstance(raw, list) and len(raw) == 4 and raw[0] == DELTA_VERSION):
        raise ValueError("malformed roster read answer")
    responder, raw_items, raw_nodes = raw[1], raw[2], raw[3]
    if not isinstance(responder, bytes) or len(responder) != DHT_ID_BYTES:
        raise ValueError("roster read answer without a node id")
    if not isinstance(raw_items, list) or not isinstance(raw_nodes, list):
        raise ValueError("malformed roster read answer")
    items: list[DeltaItem] = []
    for item in raw_items:
        if not (isinstance(item, list) and len(item) == 3):
            continue
        subkey, value, expiration = item
        if isinstance(subkey, (list, dict)) or not isinstance(value, bytes):
            continue
        if isinstance(expiration, bool) or not isinstance(expiration, (int, float)) or not math.isfinite(expiration):
            continue
        items.append((subkey, value, float(expiration)))
    nodes = [
        (node[0], node[1])
        for node in raw_nodes[:ROSTER_READ_NODES]
        if isinstance(node, list) and len(node) == 2
        and isinstance(node[0], bytes) and len(node[0]) == DHT_ID_BYTES
        and isinstance(node[1], bytes) and 0 < len(node[1]) <= MAX_PEER_ID_BYTES
    ]
    return responder, items, nodes


def entries_newer_than(stored: Iterable[DeltaItem], digest: dict[bytes, float]) -> list[DeltaItem]:
    """The stored entries a reader with ``digest`` lacks, or holds with an earlier expiration."""
    return [
        (subkey, value, expiration)
        for subkey, value, expiration in stored
        if expiration > digest.get(subkey_fingerprint(subkey), -math.inf)
    ]


def merge_entries(entries: dict[Any, tuple[bytes, float]], items: Iterable[DeltaItem]) -> None:
    """Add ``items`` to ``entries`` (subkey -> (value, expiration)); of two versions the later one stays."""
    for subkey, value, expiration in items:
        if subkey not in entries or expiration > entries[subkey][1]:
            entries[subkey] = (value, expiration)


@dataclasses.dataclass
class RosterReadStats:
    """What this peer's roster reads cost in requests (their bytes: ``FleetPeer.roster_read_bytes``)."""

    reads: int = 0
    nodes_asked: int = 0
    most_nodes_asked: int = 0
    answers: int = 0
    fallbacks: int = 0
    """Nodes that do not serve the delta read, asked with hivemind's find instead."""
    failures: int = 0
    last_asked: tuple[str, ...] = ()
    """Peer ids the last read asked, in order."""

    def record(self, *, asked: list[str], answered: int) -> None:
        self.reads += 1
        self.nodes_asked += len(asked)
        self.most_nodes_asked = max(self.most_nodes_asked, len(asked))
        self.answers += answered
        self.last_asked = tuple(asked)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]

"""The roster read's pieces: its messages, the merge, and which nodes it stores to and reads."""

from __future__ import annotations

import math
import random
import types

import pytest
from hivemind.dht.routing import DHTID, RoutingTable
from hivemind.p2p import PeerID
from hypothesis import given
from hypothesis import strategies as st

from globetrain.fleet.peer import ROSTER_REPLICAS, FleetPeer
from globetrain.fleet.roster_delta import (
    DIGEST_ENTRY,
    ROSTER_READ_NODES,
    decode_delta_answer,
    decode_delta_request,
    encode_delta_answer,
    encode_delta_request,
    entries_newer_than,
    merge_entries,
)

KEY_ID = DHTID.generate(source="globetrain/0123/roster")
READER = DHTID.generate(source="reader")

# -- messages ----------------------------------------------------------------------------------


def test_request_round_trip_carries_one_fingerprint_per_entry() -> None:
    entries = {"PeerA": (b"a", 100.5), "PeerB": (b"b", 200.25)}
    request = encode_delta_request(KEY_ID.to_bytes(), READER.to_bytes(), entries, want_nodes=True)
    key_id, reader, want_nodes, digest = decode_delta_request(request)
    assert (key_id, reader, want_nodes) == (KEY_ID.to_bytes(), READER.to_bytes(), True)
    assert sorted(digest.values()) == [100.5, 200.25]
    assert len(request) == 2 + 40 + 2 * DIGEST_ENTRY.size


@pytest.mark.parametrize(
    "request_bytes",
    [b"", b"\x01", b"\x02" + bytes(41), b"\x01\x02" + bytes(40), b"\x01\x00" + bytes(40) + b"\x00" * 15],
)
def test_malformed_requests_are_refused(request_bytes: bytes) -> None:
    with pytest.raises(ValueError):
        decode_delta_request(request_bytes)


@given(st.binary(max_size=300))
def test_any_request_bytes_decode_or_raise_value_error(data: bytes) -> None:
    try:
        decode_delta_request(data)
    except ValueError:
        pass


@given(st.binary(max_size=300))
def test_any_answer_bytes_decode_or_raise_value_error(data: bytes) -> None:
    try:
        decode_delta_answer(data)
    except ValueError:
        pass


def test_answers_drop_unusable_entries_and_bound_the_nodes_they_name() -> None:
    responder = DHTID.generate(source="responder").to_bytes()
    items = [
        ("PeerA", b"sealed", 10.0),
        (["not", "hashable"], b"x", 10.0),
        ("PeerB", "not bytes", 10.0),
        ("PeerC", b"x", math.inf),
        (7, b"a number as subkey: the roster counts it", 12.0),
    ]
    nodes = [(DHTID.generate().to_bytes(), b"peer-%d" % i) for i in range(3 * ROSTER_READ_NODES)]
    nodes.append((b"short", b"peer"))
    got_responder, got_items, got_nodes = decode_delta_answer(encode_delta_answer(responder, items, nodes))
    assert got_responder == responder
    assert got_items == [("PeerA", b"sealed", 10.0), (7, b"a number as subkey: the roster counts it", 12.0)]
    assert got_nodes == nodes[:ROSTER_READ_NODES]


# -- the merge -----------------------------------------------------------------------------------

entry_sets = st.lists(
    st.dictionaries(
        st.sampled_from([f"Peer{i}" for i in range(8)]),
        st.tuples(st.binary(min_size=1, max_size=4), st.integers(100, 110).map(float)),
        max_size=8,
    ),
    min_size=1,
    max_size=6,
)


@given(own=st.dictionaries(st.sampled_from([f"Peer{i}" for i in range(8)]),
                           st.tuples(st.binary(min_size=1, max_size=4), st.integers(100, 110).map(float))),
       nodes=entry_sets)
def test_the_delta_read_yields_the_union_of_all_copies(own, nodes) -> None:
    # What merging every node's whole copy gives: per subkey, the entry that expires last.
    union: dict = {}
    for copy in [own, *nodes]:
        merge_entries(union, ((s, v, e) for s, (v, e) in copy.items()))
    # The read: its own copy, then the first node, then all others with one digest.
    entries: dict = {}
    merge_entries(entries, ((s, v, e) for s, (v, e) in own.items()))
    for wave in ([nodes[0]], nodes[1:]):
        request = encode_delta_request(KEY_ID.to_bytes(), READER.to_bytes(), entries)
        _, _, _, digest = decode_delta_request(request)
        for copy in wave:
            newer = entries_newer_than(((s, v, e) for s, (v, e) in copy.items()), digest)
            _, answered, _ = decode_delta_answer(encode_delta_answer(bytes(20), newer))
            merge_entries(entries, answered)
    assert {s: e for s, (_, e) in entries.items()} == {s: e for s, (_, e) in union.items()}


def test_nodes_that_hold_what_the_reader_holds_send_nothing() -> None:
    copy = [(f"Peer{i}", b"record", 100.0 + i) for i in range(20)]
    entries: dict = {}
    merge_entries(entries, copy)
    _, _, _, digest = decode_delta_request(encode_delta_request(KEY_ID.to_bytes(), READER.to_bytes(), entries))
    assert entries_newer_than(copy, digest) == []
    newer = [("Peer3", b"record", 200.0)]
    assert entries_newer_than(copy[:3] + newer, digest) == newer


# -- which nodes a store and a read go to -----------------------------------------------------------

NODES = [DHTID.generate(source=f"node{i}") for i in range(14)]
PEER_IDS = {node: PeerID(b"peer-" + node.to_bytes()) for node in NODES}
BY_DISTANCE = sorted(NODES, key=KEY_ID.xor_distance)


def peer_knowing(me: DHTID, unknown: set[DHTID]) -> FleetPeer:
    """A FleetPeer (not started) whose routing table knows every node but ``unknown``."""
    table = RoutingTable(me, bucket_size=20, depth_modulo=5)
    for node in NODES:
        if node != me and node not in unknown:
            table.add_or_update_node(node, PEER_IDS[node])
    peer = FleetPeer(name="unit")
    peer._dht = types.SimpleNamespace(node_id=me, protocol=types.SimpleNamespace(routing_table=table))
    return peer


def store_set(peer: FleetPeer) -> set[DHTID]:
    return {node for node, _ in peer._nearest("globetrain/0123/roster", ROSTER_REPLICAS)[1]}


def read_set(peer: FleetPeer) -> set[DHTID]:
    return {node for node, _ in peer._nearest("globetrain/0123/roster", ROSTER_READ_NODES)[1]}


def test_with_agreeing_tables_a_read_covers_the_store_set() -> None:
    writer, reader = peer_knowing(BY_DISTANCE[-1], set()), peer_knowing(BY_DISTANCE[-2], set())
    assert store_set(writer) == set(BY_DISTANCE[:ROSTER_REPLICAS])
    assert read_set(reader) == set(BY_DISTANCE[:ROSTER_READ_NODES])


@pytest.mark.parametrize("seed", range(40))
def test_store_and_read_sets_meet_when_tables_disagree_on_two_nodes_each(seed: int) -> None:
    rng = random.Random(seed)
    writer_node, reader_node = rng.sample(BY_DISTANCE[ROSTER_READ_NODES:], 2)
    top = BY_DISTANCE[:ROSTER_READ_NODES]
    writer = peer_knowing(writer_node, set(rng.sample(top, 2)))
    reader = peer_knowing(reader_node, set(rng.sample(top, 2)))
    assert store_set(writer) & read_set(reader)


@pytest.mark.parametrize("missing", range(ROSTER_READ_NODES))
def test_a_reader_finds_a_writer_that_lacks_up_to_four_of_the_nearest_nodes(missing: int) -> None:
    # A late joiner's table may know little: its records must still land where others read.
    writer = peer_knowing(BY_DISTANCE[-1], set(BY_DISTANCE[:missing]))
    reader = peer_knowing(BY_DISTANCE[-2], set())
    assert store_set(writer) & read_set(reader)


def test_nodes_learned_in_reads_count_for_stores_and_reads() -> None:
    ignorant = peer_knowing(BY_DISTANCE[-1], set(BY_DISTANCE[:4]))
    assert not store_set(ignorant) & set(BY_DISTANCE[:ROSTER_REPLICAS])
    ignorant._learn(KEY_ID, [(node, PEER_IDS[node]) for node in BY_DISTANCE[:4]])
    assert store_set(ignorant) == set(BY_DISTANCE[:ROSTER_REPLICAS])
    assert read_set(ignorant) == set(BY_DISTANCE[:ROSTER_READ_NODES])
    # Only the nearest are kept.
    ignorant._learn(KEY_ID, [(node, PEER_IDS[node]) for node in NODES])
    assert len(ignorant._learned[KEY_ID]) == 2 * ROSTER_READ_NODES

"""Bytes on the wire of the leader-based exchange, measured with the fleet's own message code.

A simulated two-step round moves what the real fleet moves: a ping and its reply (the
RTT the QoS scheduler uses), the contribution envelope and its ack, then the aggregate
message (the leader's JSON facts, contributor list included, plus the codec payload) in
an envelope. Their sizes are taken once from ``globetrain.fleet.envelope.seal`` and
``globetrain.fleet.aggregate.pack_aggregate`` with a peer id as long as libp2p's, so the
simulator's byte counts follow the fleet's format if it changes.
"""

from __future__ import annotations

import dataclasses
import json

from globetrain.fleet.aggregate import AggregateInfo, pack_aggregate
from globetrain.fleet.envelope import MessageKind, seal
from globetrain.fleet.keys import RunKeys, new_run_key

# libp2p peer ids of Ed25519 keys in base58 ("12D3KooW..."): 52 characters.
PEER_ID_LENGTH = 52
DEVICE_NAME = "d00000-raspberry-pi-4"


@dataclasses.dataclass(frozen=True)
class WireSizes:
    envelope_overhead: int
    """Bytes a sealed envelope adds to its payload (header, sender, name, AEAD tag)."""
    ping_round_trip: int
    """Ping envelope out plus its reply back."""
    ack: int
    """The leader's acknowledgement of a contribution."""
    aggregate_info_fixed: int
    """Length prefix and JSON facts of an aggregate with no contributors listed."""
    per_contributor: int
    """JSON bytes each listed contributor adds to the aggregate's facts."""

    def contribution(self, payload_bytes: int) -> int:
        return payload_bytes + self.envelope_overhead

    def aggregate(self, payload_bytes: int, contributors: int) -> int:
        return payload_bytes + self.envelope_overhead + self.aggregate_info_fixed + contributors * self.per_contributor


def measure_wire_sizes() -> WireSizes:
    keys = RunKeys.from_text(new_run_key())
    sender = "1" * PEER_ID_LENGTH
    empty = len(seal(keys, MessageKind.CONTRIBUTION, b"", sender=sender, name=DEVICE_NAME, round_index=1234))
    ping = len(seal(keys, MessageKind.PING, b"", sender=sender, name=DEVICE_NAME, round_index=1234))
    pong = len(seal(keys, MessageKind.REPLY, json.dumps({"pong": True}).encode(), sender=sender, name=DEVICE_NAME))
    ack_content = {"accepted": True, "reason": "", "listening": False}
    ack = len(seal(keys, MessageKind.REPLY, json.dumps(ack_content).encode(), sender=sender, name=DEVICE_NAME, round_index=1234))
    digest = "0" * 64

    def info_bytes(contributors: int) -> int:
        info = AggregateInfo(
            status="ok", leader=sender, contributors=tuple(sender for _ in range(contributors)), listeners=3,
            base_round=1233, base_digest=digest, density=0.01, bits=8,
        )
        return len(pack_aggregate(info, b""))

    fixed = info_bytes(0)
    per_contributor = (info_bytes(10) - fixed) // 10
    return WireSizes(
        envelope_overhead=empty,
        ping_round_trip=ping + pong,
        ack=ack,
        aggregate_info_fixed=fixed,
        per_contributor=per_contributor,
    )

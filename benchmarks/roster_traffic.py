"""Roster traffic: what a roster read costs on the wire, old read against new, in one run.

Starts N real ``FleetPeer``s (a libp2p daemon and a hivemind DHT node each) on loopback
with the project's network defaults (127.0.0.1 only, no NAT port mapping, no AutoNAT, no
relays), gives each a ``Roster``, and runs heartbeats (store the peer's record, read the
roster) in ticks: every peer heartbeats once per tick, all at once. The read is switched
per phase, phases interleaved over several cycles:

- ``walk``: hivemind's ``DHTNode.get(key, latest=True)``, the read before this change (a
  traversal with beam_size = bucket_size = 20: every node of a small fleet is asked);
- ``walk-beam-5``: the same traversal bounded to 5 nodes (``beam_size=5``);
- ``delta``: ``FleetPeer.roster_read``, the new read (the 5 nearest nodes, merged; nodes
  after the first send only the entries the reader lacks);
- ``store-only``: heartbeats without a read, the baseline subtracted to get the read's share.

Per phase it counts: every byte the daemons' TCP sockets sent (kernel counters through
``wire_traffic.WireTraffic``; on loopback each byte is sent by one daemon and received by
another, so the sum of ``sent`` is the traffic), a read's request and answer payloads
(serialized protobuf messages of hivemind's find; frames of the delta read), the nodes a
read asked, and whether every view held every record after each tick. Then late joiners
come in (each through one peer), and it counts the ticks until every view (old peers' and
joiners') holds every record, and measures the phases again with them.

Per device per second = bytes per heartbeat / (heartbeat_interval x T), T the round period.

Writes ``benchmarks/results/roster_traffic.json``.

    .venv/bin/python benchmarks/roster_traffic.py [--fleet 9x8 --fleet 5x4] [--late-joiners 2] [--cycles 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from globetrain.fleet.checks import RejectionLog
from globetrain.fleet.config import FleetConfig, FleetNetworkConfig
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.peer import FleetPeer
from globetrain.fleet.roster import Roster
from globetrain.fleet.roster_delta import ROSTER_READ_NODES
from globetrain.fleet.run import RoundClock

READS = ("walk", "walk-beam-5", "delta")
PHASES = ("store-only", *READS)
TICK_PAUSE_S = 0.3
"""Pause between ticks, so that one tick's stores have landed before the next one's reads."""


class Fleet:
    """N peers with rosters; each peer's roster read can be switched to another kind."""

    def __init__(self, period: float) -> None:
        self.keys = RunKeys.from_run_key(bytes(range(32)))
        self.fleet = FleetConfig(round_period_s=period)
        self.clock = RoundClock(start_time=time.time(), fleet=self.fleet)
        self.peers: list[FleetPeer] = []
        self.rosters: list[Roster] = []
        self.find_bytes: Counter[str] = Counter()
        """Per reader name: bytes of hivemind find answers and requests, and find calls."""

    def add_peer(self, name: str, join_through: FleetPeer | None) -> FleetPeer:
        network = FleetNetworkConfig(initial_peers=(join_through.addresses[0],) if join_through else ())
        peer = FleetPeer(network, name=name)
        self.peers.append(peer)
        peer.start()
        self._count_finds(peer)
        self.rosters.append(Roster(peer, self.keys, self.clock, role="device", rejections=RejectionLog(name)))
        return peer

    def _count_finds(self, peer: FleetPeer) -> None:
        # The size of every find answer this peer receives, as serialized on the stream.
        protocol = peer._dht.protocol
        get_stub = protocol.get_stub
        counts = self.find_bytes

        class CountingStub:
            def __init__(self, stub: Any) -> None:
                self.stub = stub

            def __getattr__(self, name: str) -> Any:
                return getattr(self.stub, name)

            async def rpc_find(self, request: Any, timeout: float | None = None) -> Any:
                response = await self.stub.rpc_find(request, timeout=timeout)
                counts[f"{peer.name}/answer"] += response.ByteSize()
                counts[f"{peer.name}/request"] += request.ByteSize()
                counts[f"{peer.name}/calls"] += 1
                return response

        protocol.get_stub = lambda remote: CountingStub(get_stub(remote))

    def use_read(self, kind: str) -> None:
        for peer in self.peers:
            peer.roster_read = _reader(peer, kind)  # type: ignore[method-assign]

    def tick(self, *, read: bool) -> None:
        """Every peer heartbeats once, all at the same time."""
        futures = [
            peer.spawn(roster.heartbeat_once() if read else _store_only(roster))
            for peer, roster in zip(self.peers, self.rosters)
        ]
        for future in futures:
            future.result(timeout=60)
        time.sleep(TICK_PAUSE_S)

    def incomplete_views(self) -> int:
        everyone = {peer.peer_id for peer in self.peers}
        return sum({record.peer_id for record in roster.snapshot()} != everyone for roster in self.rosters)

    def wire_sent(self) -> list[int]:
        totals = [peer.wire.totals() if peer.wire else None for peer in self.peers]
        if any(total is None for total in totals):
            raise SystemExit("wire counters unavailable (needs Linux and ss): " + str(self.peers[0].wire.problem))
        return [total.sent for total in totals]  # type: ignore[union-attr]

    def read_bytes(self) -> list[int]:
        """Per peer: answer and request payloads of its reads so far (find and delta)."""
        return [
            self.find_bytes[f"{peer.name}/answer"] + self.find_bytes[f"{peer.name}/request"]
            + peer.roster_read_bytes.total("received") + peer.roster_read_bytes.total("sent")
            for peer in self.peers
        ]

    def nodes_asked(self) -> list[int]:
        return [self.find_bytes[f"{peer.name}/calls"] + peer.roster_reads.nodes_asked for peer in self.peers]

    def stop(self) -> None:
        for peer in self.peers:
            peer.stop()


def _reader(peer: FleetPeer, kind: str) -> Callable[[str], Any]:
    original = type(peer).roster_read

    async def walk(key: str, beam_size: int | None) -> Any:
        found = await peer._dht.get(key, latest=True, beam_size=beam_size)
        if found is None or not isinstance(found.value, dict):
            return None
        return {subkey: item.value for subkey, item in found.value.items()}

    if kind == "walk":
        return lambda key: walk(key, None)
    if kind == "walk-beam-5":
        return lambda key: walk(key, ROSTER_READ_NODES)
    return lambda key: original(peer, key)


async def _store_only(roster: Roster) -> None:
    # heartbeat_once without its read.
    refresh = roster.refresh

    async def nothing() -> None:
        return None

    roster.refresh = nothing  # type: ignore[method-assign]
    try:
        await roster.heartbeat_once()
    finally:
        roster.refresh = refresh  # type: ignore[method-assign]


def measure(fleet: Fleet, cycles: int, ticks: int) -> dict[str, Any]:
    """Per phase: bytes per heartbeat per device (wire), read payloads, nodes asked, views."""
    samples: dict[str, dict[str, list[float]]] = {phase: {} for phase in PHASES}
    n = len(fleet.peers)
    for cycle in range(cycles):
        order = PHASES[cycle % len(PHASES):] + PHASES[: cycle % len(PHASES)]
        for phase in order:
            fleet.use_read(phase if phase in READS else "delta")
            wire_before, read_before, asked_before = fleet.wire_sent(), fleet.read_bytes(), fleet.nodes_asked()
            incomplete = 0
            for _ in range(ticks):
                fleet.tick(read=phase != "store-only")
                incomplete += fleet.incomplete_views()
            wire = [after - before for after, before in zip(fleet.wire_sent(), wire_before)]
            reads = [after - before for after, before in zip(fleet.read_bytes(), read_before)]
            asked = [after - before for after, before in zip(fleet.nodes_asked(), asked_before)]
            record = samples[phase]
            record.setdefault("wire_bytes_per_heartbeat_per_device", []).append(sum(wire) / (n * ticks))
            record.setdefault("wire_bytes_per_heartbeat_busiest_device", []).append(max(wire) / ticks)
            record.setdefault("read_payload_bytes_per_read", []).append(sum(reads) / (n * ticks))
            record.setdefault("nodes_asked_per_read", []).append(sum(asked) / (n * ticks))
            record.setdefault("incomplete_views_after_ticks", []).append(incomplete)
    result: dict[str, Any] = {}
    for phase, record in samples.items():
        result[phase] = {
            name: (sum(values) if name == "incomplete_views_after_ticks" else statistics.median(values))
            for name, values in record.items()
        }
    store = result["store-only"]["wire_bytes_per_heartbeat_per_device"]
    for kind in READS:
        result[kind]["wire_bytes_per_read"] = result[kind]["wire_bytes_per_heartbeat_per_device"] - store
    return result


def per_second(bytes_per_heartbeat: float, fleet: FleetConfig) -> float:
    return bytes_per_heartbeat / fleet.seconds(fleet.heartbeat_interval)


def summarize(label: str, result: dict[str, Any], fleet: FleetConfig) -> dict[str, Any]:
    walk, delta, beam = result["walk"], result["delta"], result["walk-beam-5"]
    ratios = {
        "wire_per_read_walk_over_delta": walk["wire_bytes_per_read"] / max(delta["wire_bytes_per_read"], 1.0),
        "wire_per_read_walk_over_walk_beam_5": walk["wire_bytes_per_read"] / max(beam["wire_bytes_per_read"], 1.0),
        "wire_per_heartbeat_walk_over_delta": (
            walk["wire_bytes_per_heartbeat_per_device"] / delta["wire_bytes_per_heartbeat_per_device"]
        ),
        "busiest_device_walk_over_delta": (
            walk["wire_bytes_per_heartbeat_busiest_device"] / delta["wire_bytes_per_heartbeat_busiest_device"]
        ),
        "read_payload_walk_over_delta": walk["read_payload_bytes_per_read"] / delta["read_payload_bytes_per_read"],
    }
    per_device_per_s = {
        kind: {
            "roster_total_sent": per_second(result[kind]["wire_bytes_per_heartbeat_per_device"], fleet),
            "roster_total_sent_busiest_device": per_second(result[kind]["wire_bytes_per_heartbeat_busiest_device"], fleet),
            "read_only_sent": per_second(result[kind]["wire_bytes_per_read"], fleet),
        }
        for kind in READS
    }
    print(f"\n{label}")
    print(f"  {'read':<12} {'wire B/heartbeat/dev':>21} {'busiest dev':>12} {'read share':>11} "
          f"{'payload B/read':>15} {'nodes/read':>11} {'B/s/dev':>9} {'incomplete':>11}")
    for kind in PHASES:
        row = result[kind]
        share = row.get("wire_bytes_per_read", 0.0)
        print(f"  {kind:<12} {row['wire_bytes_per_heartbeat_per_device']:>21.0f} "
              f"{row['wire_bytes_per_heartbeat_busiest_device']:>12.0f} {share:>11.0f} "
              f"{row['read_payload_bytes_per_read']:>15.0f} {row['nodes_asked_per_read']:>11.2f} "
              f"{per_second(row['wire_bytes_per_heartbeat_per_device'], fleet):>9.0f} "
              f"{row['incomplete_views_after_ticks']:>11}")
    for name, value in ratios.items():
        print(f"  {name}: {value:.2f}x")
    return {"phases": result, "ratios": ratios, "bytes_per_device_per_second": per_device_per_s}


def late_join(fleet: Fleet, joiners: int, max_ticks: int) -> dict[str, Any]:
    """Add ``joiners`` peers (each through a different old peer); ticks until every view is complete."""
    fleet.use_read("delta")
    for index in range(joiners):
        through = fleet.peers[(index * 3 + 1) % len(fleet.peers)]
        fleet.add_peer(f"late{index}", through)
    fleet.use_read("delta")
    history = []
    for tick in range(1, max_ticks + 1):
        fleet.tick(read=True)
        incomplete = fleet.incomplete_views()
        history.append(incomplete)
        if incomplete == 0:
            return {"joiners": joiners, "ticks_until_complete": tick, "incomplete_views_per_tick": history}
    return {"joiners": joiners, "ticks_until_complete": None, "incomplete_views_per_tick": history}


def run_fleet(peers: int, period: float, args: argparse.Namespace) -> dict[str, Any]:
    fleet = Fleet(period)
    started = time.monotonic()
    try:
        first = fleet.add_peer("p0", None)
        for index in range(1, peers):
            fleet.add_peer(f"p{index}", first)
        fleet.use_read("delta")
        for _ in range(2):
            fleet.tick(read=True)
        if fleet.incomplete_views():
            print("warning: views incomplete after the warm-up", file=sys.stderr)
        steady = summarize(f"{peers} peers, T = {period:g} s", measure(fleet, args.cycles, args.ticks), fleet.fleet)
        joined = late_join(fleet, args.late_joiners, max_ticks=20)
        print(f"\nlate joiners: {joined['joiners']}, ticks until every view held every record: "
              f"{joined['ticks_until_complete']} (incomplete views per tick: {joined['incomplete_views_per_tick']})")
        after = summarize(f"{len(fleet.peers)} peers after the late joins, T = {period:g} s",
                          measure(fleet, args.cycles, args.ticks), fleet.fleet)
        stats = {peer.name: vars(peer.roster_reads) for peer in fleet.peers}
    finally:
        fleet.stop()
    return {
        "peers": peers,
        "round_period_s": period,
        "heartbeat_interval_s": fleet.fleet.seconds(fleet.fleet.heartbeat_interval),
        "steady": steady,
        "late_join": joined,
        "after_late_join": after,
        "delta_read_stats_per_peer": stats,
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleet", action="append", default=None, metavar="PEERSxPERIOD",
                        help="a fleet to measure: peers x round period T in seconds (repeatable; "
                             "default 9x8 and 5x4)")
    parser.add_argument("--late-joiners", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=3, help="times each phase runs, interleaved")
    parser.add_argument("--ticks", type=int, default=4, help="heartbeats of every peer per phase")
    parser.add_argument("--out", default="benchmarks/results/roster_traffic.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    fleets = []
    for spec in args.fleet or ["9x8", "5x4"]:
        peers, _, period = spec.partition("x")
        fleets.append(run_fleet(int(peers), float(period), args))
    report = {
        "what": "roster heartbeat traffic: hivemind walk (old), walk bounded to 5, delta read of the 5 nearest (new)",
        "cycles": args.cycles,
        "ticks_per_phase": args.ticks,
        "fleets": fleets,
        "machine": platform.platform(),
        "command": " ".join(sys.argv),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

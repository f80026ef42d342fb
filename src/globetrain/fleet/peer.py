"""A fleet peer's network: hivemind's libp2p daemon and DHT node in one background thread.

``FleetPeer`` starts hivemind's ``P2P`` (which runs the ``p2pd`` daemon as a child
process) and a ``DHTNode`` on an asyncio loop in a daemon thread of this process, not in
hivemind.DHT's extra Python process, so that shutdown and Ctrl+C stay in our hands: the
training thread calls in with bounded waits and ``stop()`` ends the DHT, the daemon and
the thread within ``shutdown_timeout_s``, killing the daemon if it does not leave.

Safe defaults (``FleetNetworkConfig``): listen on 127.0.0.1 only, no NAT port mapping, no
AutoNAT, no relays. A real deployment opts in per setting.

Joining: the peer dials ``initial_peers`` and every address remembered in its peers file
(``PeerBook``), each with ``connect_timeout_s``, and bootstraps its DHT through those that
answered. Addresses of peers seen later are added to the peers file, so that a device can
rejoin through any of them once the bootstrap is gone.

The roster's DHT calls skip hivemind's walk: ``roster_store`` sends a record to the key's 3
nearest nodes, ``roster_read`` merges the entries of the 5 nearest, which every peer
serves from its DHT storage on ``/globetrain/dht-delta/1`` and which send only the entries
the reader lacks (about one copy of the roster per read; see "the roster's direct DHT calls").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from globetrain.errors import GlobetrainError
from globetrain.fleet.config import FleetNetworkConfig
from globetrain.fleet.roster_delta import (
    MAX_DELTA_ANSWER_BYTES,
    MAX_DELTA_REQUEST_BYTES,
    ROSTER_DELTA_PROTOCOL,
    ROSTER_READ_NODES,
    DeltaItem,
    DHTID_from_bytes,
    PeerID_from_bytes,
    RosterReadStats,
    decode_delta_answer,
    decode_delta_request,
    encode_delta_request,
    encode_delta_answer,
    entries_newer_than,
    merge_entries,
)
from globetrain.fleet.transport import ByteCounter, Conversation, TransportError
from globetrain.fleet.wire_traffic import WireTraffic

log = logging.getLogger(__name__)

T = TypeVar("T")
ROSTER_REPLICAS = 3
"""Nodes that keep each roster record (heartbeats: cheap, rewritten every half round)."""
DHT_REPLICAS = 5
"""Nodes that keep other keys (the run config: written rarely, it must outlive dead peers)."""
Handler = Callable[[Conversation], Awaitable[None]]


class PeerStartError(GlobetrainError):
    """The peer's network could not start or could not reach any peer of the run."""


# ------------------------------------------------------------------------------------------
# remembered addresses


class PeerBook:
    """Addresses (``/ip4/.../tcp/.../p2p/<id>``) of peers seen in the run, kept in a JSON file."""

    def __init__(self, path: str | Path | None, *, limit: int = 64) -> None:
        self.path = Path(path) if path else None
        self.limit = limit
        self._lock = threading.Lock()

    def load(self) -> list[str]:
        if self.path is None or not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
            addresses = data.get("addresses", []) if isinstance(data, dict) else []
            return [a for a in addresses if isinstance(a, str) and "/p2p/" in a]
        except (OSError, ValueError) as error:
            log.warning("peers file %s is unreadable (%s); ignoring it", self.path, error)
            return []

    def remember(self, addresses: Iterable[str]) -> None:
        """Put ``addresses`` first (most recently seen), keep ``limit``; written atomically."""
        if self.path is None:
            return
        with self._lock:
            fresh = [a for a in addresses if "/p2p/" in a]
            merged = list(dict.fromkeys(fresh + self.load()))[: self.limit]
            if merged == self.load():
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".peers-")
            try:
                with os.fdopen(handle, "w") as stream:
                    json.dump({"addresses": merged}, stream, indent=1)
                os.replace(temporary, self.path)
            except OSError as error:
                log.warning("could not write peers file %s: %s", self.path, error)
                with contextlib.suppress(OSError):
                    os.unlink(temporary)


def split_peer_address(address: str) -> tuple[str, str]:
    """``/ip4/1.2.3.4/tcp/5/p2p/Qm..`` -> (``/ip4/1.2.3.4/tcp/5``, ``Qm..``)."""
    head, separator, peer_id = address.rpartition("/p2p/")
    if not separator or not peer_id or "/" in peer_id:
        raise ValueError(f"{address!r} is not a peer address ending in /p2p/<peer id>")
    return head, peer_id


def is_loopback_address(address: str) -> bool:
    """Whether a multiaddr's host part is a loopback address (127.0.0.0/8 or ::1)."""
    parts = address.split("/")
    if len(parts) > 2 and parts[1] == "ip4":
        return parts[2].startswith("127.")
    if len(parts) > 2 and parts[1] == "ip6":
        return parts[2] in ("::1", "0:0:0:0:0:0:0:1")
    return False


# ------------------------------------------------------------------------------------------
# the peer


class FleetPeer:
    """hivemind P2P + DHTNode on a background event loop, with bounded calls from any thread."""

    def __init__(self, network: FleetNetworkConfig | None = None, *, name: str = "") -> None:
        self.network = network or FleetNetworkConfig()
        self.name = name
        self.counter = ByteCounter()
        self.roster_read_bytes = ByteCounter()
        """Frames of this peer's roster reads (requests sent, answers received); not in ``counter``."""
        self.roster_answer_bytes = ByteCounter()
        """Frames of the roster reads this peer answered for others."""
        self.roster_reads = RosterReadStats()
        self._learned: dict[Any, dict[Any, Any]] = {}
        """Per DHT key read: nodes near it that other nodes named (see ``roster_read``)."""
        self.book = PeerBook(self.network.peers_file or None)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._p2p: Any = None
        self._dht: Any = None
        self._handlers: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.peer_id = ""
        self.addresses: list[str] = []
        self.daemon_pid: int | None = None
        self.wire: WireTraffic | None = None
        """Kernel counters of the daemon's TCP sockets: all traffic, DHT and libp2p included."""
        self.joined_through: list[str] = []
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FleetPeer:
        """Start the daemon and the DHT; join through initial peers / the peers file if any.

        Raises ``PeerStartError`` (with the addresses tried) when peers were given and none
        answered, or when the daemon does not start within ``startup_timeout_s``.
        """
        _quiet_hivemind_logging()
        ready = threading.Event()

        def run_loop() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.set_exception_handler(self._on_loop_exception)
            self.loop = loop
            ready.set()
            loop.run_forever()
            # Whatever is left (cancelled tasks) gets a chance to finish before closing.
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

        self._thread = threading.Thread(target=run_loop, name=f"fleet-net-{self.name or 'peer'}", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            with _sigint_ignored_by_children():
                self.call(self._start_daemon(), timeout=self.network.startup_timeout_s + 5)
            self.call(self._join(), timeout=2 * self.network.connect_timeout_s + self.network.dht_rpc_timeout_s + 10)
        except BaseException:
            self.stop()
            raise
        return self

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # hivemind's daemon client leaves tasks whose connection breaks when the daemon
        # goes away (shutdown, a crash); report them as one line, not as a traceback.
        error = context.get("exception")
        log.debug("[%s] network loop: %s%s", self.name, context.get("message", ""), f" ({_short(error)})" if error else "")

    async def _start_daemon(self) -> None:
        from hivemind.p2p import P2P
        from hivemind.p2p.p2p_daemon_bindings.utils import P2PDaemonError

        network = self.network
        try:
            self._p2p = await P2P.create(
                host_maddrs=list(network.host_maddrs),
                announce_maddrs=list(network.announce_maddrs) or None,
                identity_path=network.identity_path or None,
                nat_port_map=network.nat_port_map,
                auto_nat=network.auto_nat,
                use_relay=network.use_relay,
                use_auto_relay=network.use_auto_relay,
                startup_timeout=network.startup_timeout_s,
            )
        except (P2PDaemonError, OSError, asyncio.TimeoutError) as error:
            raise PeerStartError(f"the libp2p daemon did not start: {error}") from None
        child = getattr(self._p2p, "_child", None)
        self.daemon_pid = getattr(child, "pid", None)
        self.wire = WireTraffic(self.daemon_pid).start()
        if self.wire.problem:
            log.info("[%s] reporting fleet streams only, not all traffic: %s", self.name, self.wire.problem)
        self.peer_id = self._p2p.peer_id.to_base58()
        self.addresses = [str(address) for address in await self._p2p.get_visible_maddrs()]

    async def _join(self) -> None:
        from hivemind.dht.node import DHTNode

        network = self.network
        candidates = list(dict.fromkeys(list(network.initial_peers) + self.book.load()))
        candidates = [c for c in candidates if not c.endswith("/p2p/" + self.peer_id)]
        reachable = await self._dial_all(candidates)
        if candidates and not reachable:
            raise PeerStartError(
                f"could not reach any peer of the run at {', '.join(candidates[:8])}"
                f"{' ...' if len(candidates) > 8 else ''} within {network.connect_timeout_s:.0f}s each: "
                "check the --join address and that the bootstrap or another device is running"
            )
        self.joined_through = reachable
        self._dht = await DHTNode.create(
            p2p=self._p2p,
            initial_peers=reachable or None,
            wait_timeout=network.dht_rpc_timeout_s,
            ensure_bootstrap_success=False,
            num_replicas=DHT_REPLICAS,
            # No caching of found values: hivemind would re-store them to other nodes and
            # refresh them in the background, traffic the roster (refreshed on its own) never needs.
            cache_locally=False,
            cache_nearest=0,
            cache_refresh_before_expiry=0,
        )
        await self.serve(ROSTER_DELTA_PROTOCOL, self._answer_delta, counter=self.roster_answer_bytes)
        log.info("[%s] peer %s listening on %s", self.name, self.peer_id, ", ".join(self.addresses))

    async def _dial_all(self, candidates: list[str]) -> list[str]:
        async def dial(address: str) -> str | None:
            try:
                await asyncio.wait_for(self._connect(address), timeout=self.network.connect_timeout_s)
                return address
            except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
                log.info("[%s] could not reach %s: %s", self.name, address, _short(error))
                return None

        results = await asyncio.gather(*(dial(address) for address in candidates))
        return [address for address in results if address]

    async def _connect(self, address: str) -> None:
        from hivemind.p2p import PeerID
        from hivemind.utils.multiaddr import Multiaddr

        host, peer_id = split_peer_address(address)
        # hivemind 1.1.12 has no public "connect" on P2P; the daemon client's CONNECT request
        # is what P2P.create's bootstrap uses, here with our own timeout per address.
        await self._p2p._client.connect(PeerID.from_base58(peer_id), [Multiaddr(host)])

    def stop(self) -> None:
        """Shut the DHT, the daemon and the thread down; bounded by ``shutdown_timeout_s``."""
        if self._stopped:
            return
        self._stopped = True
        if self.wire is not None:
            self.wire.stop()
        budget = self.network.shutdown_timeout_s
        deadline = time.monotonic() + budget
        loop = self.loop
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout=budget)
            except BaseException as error:  # noqa: BLE001 - shutdown goes on whatever happened
                log.debug("[%s] clean network shutdown incomplete: %s", self.name, _short(error))
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=max(deadline - time.monotonic(), 0.5))
        self._end_daemon(deadline)

    async def _stop(self) -> None:
        # The daemon reports connections it drops while going down as errors; they are expected now.
        logging.getLogger("hivemind").setLevel(logging.CRITICAL)
        for task in list(self._tasks):
            task.cancel()
        if self._dht is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._dht.shutdown(), timeout=self.network.shutdown_timeout_s / 2)
        if self._p2p is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._p2p.shutdown(), timeout=self.network.shutdown_timeout_s / 2)

    def _end_daemon(self, deadline: float) -> None:
        """Make sure p2pd is gone: it was asked to terminate; kill it if it is still there."""
        pid = self.daemon_pid
        if pid is None:
            return
        while time.monotonic() < deadline:
            if not _process_alive(pid):
                return
            time.sleep(0.05)
        log.warning("[%s] the libp2p daemon (pid %d) did not exit in time; killing it", self.name, pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> FleetPeer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- calls from other threads -------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coroutine`` on the network loop; returns at once."""
        if self.loop is None or self._stopped:
            coroutine.close()
            raise GlobetrainError("the fleet peer is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, coroutine: Coroutine[Any, Any, T], *, timeout: float) -> T:
        """Run ``coroutine`` on the network loop and wait for it, at most ``timeout`` seconds."""
        future = self.spawn(coroutine)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TransportError(f"network operation did not finish within {timeout:.1f}s") from None

    def background(self, coroutine: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Start a task on the network loop (from the loop's thread) that ``stop`` cancels."""
        task = asyncio.get_running_loop().create_task(self._guarded(coroutine, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guarded(self, coroutine: Coroutine[Any, Any, Any], what: str) -> None:
        try:
            await coroutine
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a background job must not kill the loop
            log.error("[%s] %s stopped: %s", self.name, what, _short(error), exc_info=log.isEnabledFor(logging.DEBUG))

    # -- streams ------------------------------------------------------------------------------

    async def serve(self, protocol: str, handler: Handler, *, counter: ByteCounter | None = None) -> None:
        """Answer streams of ``protocol`` with ``handler``; its errors are logged, never raised.

        Bytes count in ``counter`` (default: ``self.counter``, the fleet streams).
        """
        counted = counter or self.counter

        async def on_stream(info: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conversation = Conversation(reader, writer, info.peer_id.to_base58(), counted)
            try:
                await handler(conversation)
            except (TransportError, asyncio.IncompleteReadError, ConnectionError) as error:
                log.debug("[%s] %s stream from %s ended: %s", self.name, protocol, conversation.remote_peer_id, error)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - another peer's bytes must not crash us
                log.warning(
                    "[%s] %s handler failed on a stream from %s: %s",
                    self.name, protocol, conversation.remote_peer_id, _short(error),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            finally:
                conversation.close()

        await self._p2p.add_binary_stream_handler(protocol, on_stream)
        self._handlers.append(protocol)

    async def converse(
        self, peer_id: str, protocol: str, *, timeout: float, addresses: Iterable[str] = ()
    ) -> Conversation:
        """Open a stream of ``protocol`` to ``peer_id``, dialling ``addresses`` if the first try fails.

        The daemon usually knows how to reach a peer of the run (it learns addresses from
        the connections it has); the roster's announced addresses are the fallback.
        """
        started = time.monotonic()
        try:
            return await self._open_stream(peer_id, protocol, timeout=timeout)
        except TransportError:
            known = [a for a in addresses if a.endswith("/p2p/" + peer_id)]
            remaining = timeout - (time.monotonic() - started)
            if not known or remaining <= 0:
                raise
        for address in known:
            await self.connect(address, timeout=max(timeout - (time.monotonic() - started), 0.01))
        return await self._open_stream(peer_id, protocol, timeout=max(timeout - (time.monotonic() - started), 0.01))

    async def _open_stream(
        self, peer_id: str, protocol: str, *, timeout: float, counter: ByteCounter | None = None
    ) -> Conversation:
        from hivemind.p2p import PeerID

        try:
            _, reader, writer = await asyncio.wait_for(
                self._p2p.call_binary_stream_handler(PeerID.from_base58(peer_id), protocol), timeout=max(timeout, 0.01)
            )
        except asyncio.TimeoutError:
            raise TransportError(f"could not open a stream to {peer_id} within {timeout:.1f}s") from None
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - daemon errors come in several types
            raise TransportError(f"could not open a stream to {peer_id}: {_short(error)}") from None
        return Conversation(reader, writer, peer_id, counter or self.counter)

    async def connect(self, address: str, *, timeout: float) -> bool:
        """Dial a peer address (with /p2p/); True if it answered."""
        try:
            await asyncio.wait_for(self._connect(address), timeout=timeout)
            return True
        except Exception as error:  # noqa: BLE001
            log.debug("[%s] dial %s failed: %s", self.name, address, _short(error))
            return False

    async def connected_peers(self) -> list[str]:
        return [info.peer_id.to_base58() for info in await self._p2p.list_peers()]

    # -- DHT ----------------------------------------------------------------------------------

    async def dht_store(self, key: str, subkey: str | None, value: bytes, expiration_time: float) -> bool:
        """Store ``value`` under ``key`` (and ``subkey``) until ``expiration_time`` (DHT time)."""
        try:
            return bool(await self._dht.store(key, value, expiration_time, subkey=subkey))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a lost DHT request is a failed store
            log.debug("[%s] DHT store of %s failed: %s", self.name, key, _short(error))
            return False

    async def dht_get(self, key: str) -> Any:
        """The freshest value under ``key`` (a dict subkey -> value for dictionary keys), or None."""
        try:
            found = await self._dht.get(key, latest=True)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001
            log.debug("[%s] DHT get of %s failed: %s", self.name, key, _short(error))
            return None
        if found is None:
            return None
        value = found.value
        if isinstance(value, dict):
            return {subkey: item.value for subkey, item in value.items()}
        return value

    # -- the roster's direct DHT calls ----------------------------------------------------------
    #
    # hivemind's store and get walk the DHT towards the key, asking up to bucket_size (20)
    # nodes: every node of a small fleet. Each node on the way that holds the roster answers
    # a get with all of it, and with its 20 nearest nodes. The roster's calls go straight to
    # the key's nearest nodes this peer knows instead:
    #
    # - a store sends one record to the ROSTER_REPLICAS (3) nearest;
    # - a read merges this peer's own entries with those of the ROSTER_READ_NODES (5)
    #   nearest: the union a walk over those nodes would give. It asks one of the 3 nearest
    #   first, with a digest of what it holds (16 bytes an entry): that node answers with
    #   the entries the reader lacks or holds an older version of (nearly the whole roster
    #   when the reader holds nothing) and names the 5 nodes it knows nearest to the key.
    #   Then it asks the 5 nearest of all it now knows, at once, with the digest of what it
    #   holds now: they answer with what the first node lacked (usually nothing). A read
    #   costs about one copy of the roster, not one per node that holds it.
    #
    # The read also asks the nodes the first one named that are nearer than those this peer
    # knows; once they answered, they count as known for the next stores and reads of that
    # key. So a peer whose routing table lacks the key's nearest nodes (a full bucket in a
    # fleet beyond 20 peers, nodes that joined since) reads and stores where the others do,
    # as a walk would find them. A read asks at most 5 nodes when this peer's table already
    # knows the key's nearest ones (the usual case), up to 1 + 5 + 5 when it learns of new ones.
    #
    # A writer's 3 nodes and a reader's 5 share one unless the reader knows of none of the
    # writer's 3 or of 5 nodes nearer to the key than all of them; both may, for example,
    # lack any two of the key's 5 nearest nodes. Reading one replica (tried before) missed
    # records as soon as writer and reader disagreed on one node.

    def _known_near(self, key_id: Any, count: int, *, exclude: Any = None) -> list[tuple[Any, Any]]:
        """The ``count`` nodes nearest to ``key_id`` this peer knows (its routing table and the
        nodes learned in reads of that key), nearest first; not this one, nor ``exclude``."""
        protocol = self._dht.protocol
        known = dict(protocol.routing_table.get_nearest_neighbors(key_id, count + 1, exclude=self._dht.node_id))
        known.update(self._learned.get(key_id, {}))
        known.pop(self._dht.node_id, None)
        known.pop(exclude, None)
        return sorted(known.items(), key=lambda node: key_id.xor_distance(node[0]))[:count]

    def _nearest(self, key: str, count: int) -> tuple[Any, list[tuple[Any, Any]]]:
        """(key id, the ``count`` nodes nearest to it, nearest first; this one included as (id, None))."""
        from hivemind.dht.routing import DHTID

        key_id = DHTID.generate(source=key)
        nodes = sorted(
            [*self._known_near(key_id, count), (self._dht.node_id, None)], key=lambda node: key_id.xor_distance(node[0])
        )
        return key_id, nodes[:count]

    def _replicas(self, key: str) -> tuple[Any, list[tuple[Any, Any]]]:
        """(key id, the ROSTER_REPLICAS nodes nearest to it, this one included as (id, None))."""
        return self._nearest(key, ROSTER_REPLICAS)

    def _learn(self, key_id: Any, nodes: Iterable[tuple[Any, Any]]) -> None:
        """Remember nodes that answered a read of ``key_id`` (the nearest 10)."""
        learned = self._learned.setdefault(key_id, {})
        learned.update((node_id, peer_id) for node_id, peer_id in nodes if node_id != self._dht.node_id)
        # Only the nearest matter here (they are where the key's records are).
        for node_id in sorted(learned, key=key_id.xor_distance)[2 * ROSTER_READ_NODES :]:
            del learned[node_id]

    async def roster_store(self, key: str, subkey: str, value: bytes, expiration_time: float) -> int:
        """Store a dictionary entry on the key's nearest nodes; returns how many took it."""
        try:
            key_id, nodes = self._replicas(key)
            protocol = self._dht.protocol
            value_bytes = protocol.serializer.dumps(value)
            stored = 0
            calls = []
            for _, peer_id in nodes:
                if peer_id is None:
                    stored += bool(protocol.storage.store_subkey(key_id, subkey, value_bytes, expiration_time))
                else:
                    calls.append(protocol.call_store(peer_id, keys=[key_id], values=[value_bytes],
                                                     expiration_time=[expiration_time], subkeys=[subkey]))
            for result in await asyncio.gather(*calls, return_exceptions=True):
                stored += isinstance(result, (list, tuple)) and bool(result) and bool(result[0])
            return stored
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a lost DHT request is a failed store
            log.debug("[%s] roster store failed: %s", self.name, _short(error))
            return 0

    async def roster_read(self, key: str) -> dict[Any, Any] | None:
        """A dictionary key's entries (subkey -> value), merged from this peer's own and those
        of the key's ROSTER_READ_NODES nearest nodes; None when none of those answered."""
        from hivemind.dht.storage import DictionaryDHTValue

        try:
            key_id, nodes = self._nearest(key, ROSTER_READ_NODES)
            protocol = self._dht.protocol
            entries: dict[Any, tuple[bytes, float]] = {}
            own = protocol.storage.get(key_id)
            if own is not None and isinstance(own.value, DictionaryDHTValue):
                merge_entries(entries, ((s, v, e) for s, (v, e) in own.value.items()))
            # The first node is one of the 3 nearest, at random, so that the whole copies
            # they send are spread over them.
            nearest = [node for node in nodes[:ROSTER_REPLICAS] if node[1] is not None]
            nearest = nearest or [node for node in nodes if node[1] is not None][:1]
            asked: list[tuple[Any, Any]] = []
            named: list[tuple[Any, Any]] = []
            answered = 0
            for wave in range(2):
                if wave == 0:
                    targets = [random.choice(nearest)] if nearest else []
                else:
                    # The 5 nearest this peer knows (nodes that answered before included), and
                    # those of the nodes the first one named that are nearer still: a named
                    # node counts as known once it has answered, so that made-up names cannot
                    # crowd out the nodes this peer knows.
                    _, nodes = self._nearest(key, ROSTER_READ_NODES)
                    closer = sorted(dict([*nodes, *named]).items(), key=lambda node: key_id.xor_distance(node[0]))
                    targets = list(dict.fromkeys(
                        node for node in [*nodes, *closer[:ROSTER_READ_NODES]]
                        if node[1] is not None and node[0] != self._dht.node_id and node not in asked
                    ))
                if not targets:
                    continue
                asked += targets
                request = encode_delta_request(
                    key_id.to_bytes(), self._dht.node_id.to_bytes(), entries, want_nodes=wave == 0
                )
                for answer in await asyncio.gather(*(self._ask_delta(key_id, node, request) for node in targets)):
                    if answer is not None:
                        answered += 1
                        merge_entries(entries, answer[0])
                        named += answer[1]
            self.roster_reads.record(asked=[peer_id.to_base58() for _, peer_id in asked], answered=answered)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a lost DHT request is an empty read
            log.debug("[%s] roster read failed: %s", self.name, _short(error))
            return None
        if asked and not answered:
            # Cut off from the key's nodes: keep the last view (its records expire by
            # themselves) rather than shrink it to this peer's own copy.
            return None
        out: dict[Any, Any] = {}
        for subkey, (value_bytes, _) in entries.items():
            try:
                out[subkey] = protocol.serializer.loads(value_bytes)
            except Exception:  # noqa: BLE001 - the roster refuses (and counts) what does not decode
                out[subkey] = value_bytes
        return out

    async def _ask_delta(
        self, key_id: Any, node: tuple[Any, Any], request: bytes
    ) -> tuple[list[DeltaItem], list[tuple[Any, Any]]] | None:
        """A node's entries newer than the request's digest, and the nodes it named; None if
        it did not answer."""
        node_id, peer_id = node
        protocol = self._dht.protocol
        timeout = self.network.dht_rpc_timeout_s
        try:
            conversation = await self._open_stream(
                peer_id.to_base58(), ROSTER_DELTA_PROTOCOL, timeout=timeout, counter=self.roster_read_bytes
            )
        except TransportError as error:
            if "not supported" in str(error):
                # A DHT node that is not a fleet peer of this version: it still answers
                # hivemind's find, with the whole value.
                return await self._find_entries(key_id, node)
            return await self._lost(key_id, node, error)
        try:
            await conversation.send(request, timeout=timeout)
            answer = await conversation.receive(max_bytes=MAX_DELTA_ANSWER_BYTES, timeout=timeout)
            responder, items, named = decode_delta_answer(answer)
        except (TransportError, ValueError) as error:
            return await self._lost(key_id, node, error)
        finally:
            conversation.close()
        # As hivemind does after a find: a node that answered stays in (or joins) the routing
        # table. Where the table has no room for it (a full bucket), the node is kept as one
        # known near this key.
        responder_id = DHTID_from_bytes(responder)
        await protocol.update_routing_table(responder_id, peer_id, responded=True)
        self._learn(key_id, [(responder_id, peer_id)])
        return items, [(DHTID_from_bytes(n), PeerID_from_bytes(p)) for n, p in named]

    async def _lost(self, key_id: Any, node: tuple[Any, Any], error: BaseException) -> None:
        """Count a node that did not answer and forget it (it is asked again once named or met again)."""
        node_id, peer_id = node
        log.debug("[%s] roster read from %s failed: %s", self.name, peer_id, _short(error))
        self.roster_reads.failures += 1
        self._learned.get(key_id, {}).pop(node_id, None)
        # As hivemind does after a find without an answer: the node leaves the routing table.
        await self._dht.protocol.update_routing_table(node_id, peer_id, responded=False)
        return None

    async def _find_entries(
        self, key_id: Any, node: tuple[Any, Any]
    ) -> tuple[list[DeltaItem], list[tuple[Any, Any]]] | None:
        from hivemind.dht.storage import DictionaryDHTValue

        self.roster_reads.fallbacks += 1
        answer = await self._dht.protocol.call_find(node[1], [key_id])
        if not answer or key_id not in answer:
            self.roster_reads.failures += 1
            self._learned.get(key_id, {}).pop(node[0], None)
            return None
        found = answer[key_id][0]
        if found is None or not isinstance(found.value, DictionaryDHTValue):
            return [], []
        return [(subkey, value, expiration) for subkey, (value, expiration) in found.value.items()], []

    async def _answer_delta(self, conversation: Conversation) -> None:
        """Answer a roster read: the entries of the key this node holds that the reader lacks."""
        from hivemind.dht.storage import DictionaryDHTValue
        from hivemind.p2p import PeerID

        timeout = self.network.dht_rpc_timeout_s
        request = await conversation.receive(max_bytes=MAX_DELTA_REQUEST_BYTES, timeout=timeout)
        try:
            key_bytes, reader, want_nodes, digest = decode_delta_request(request)
        except ValueError as error:
            log.debug("[%s] refused a roster read from %s: %s", self.name, conversation.remote_peer_id, error)
            return
        protocol = self._dht.protocol
        key_id, reader_id = DHTID_from_bytes(key_bytes), DHTID_from_bytes(reader)
        if reader_id != self._dht.node_id:
            # As hivemind does for a find: the reader (its peer id authenticated by libp2p)
            # joins the routing table.
            await protocol.update_routing_table(
                reader_id, PeerID.from_base58(conversation.remote_peer_id), responded=True
            )
        found = protocol.storage.get(key_id)
        items: list[DeltaItem] = []
        if found is not None and isinstance(found.value, DictionaryDHTValue):
            items = entries_newer_than(((s, v, e) for s, (v, e) in found.value.items()), digest)
        named = self._known_near(key_id, ROSTER_READ_NODES, exclude=reader_id) if want_nodes else []
        answer = encode_delta_answer(
            self._dht.node_id.to_bytes(), items, [(n.to_bytes(), p.to_bytes()) for n, p in named]
        )
        await conversation.send(answer, timeout=timeout)


@contextlib.contextmanager
def _sigint_ignored_by_children() -> Iterator[None]:
    """Start p2pd with SIGINT ignored, so a Ctrl+C reaches only us and we end it in order.

    A terminal's Ctrl+C goes to the whole process group. A Go program started with SIGINT
    ignored keeps ignoring it; p2pd then lives until our shutdown terminates it, instead
    of vanishing under a shutdown in progress. (It still ends with its parent process.)
    Signal dispositions can only be changed from the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def dht_time() -> float:
    """Wall-clock time as the DHT counts expirations."""
    from hivemind.utils.timed_storage import get_dht_time

    return float(get_dht_time())


def _process_alive(pid: int) -> bool:
    # No waitpid here: asyncio's child watcher reaps p2pd; a zombie counts as gone.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


_logging_configured = False


def _quiet_hivemind_logging() -> None:
    """Route hivemind's loggers through ours and keep their tracebacks out of a device's stderr."""
    global _logging_configured
    if _logging_configured:
        return
    _logging_configured = True
    from hivemind.utils.logging import use_hivemind_log_handler

    use_hivemind_log_handler("nowhere")
    # hivemind logs expected network trouble (a peer that left) as warnings with tracebacks;
    # our own log lines report what matters, with the device and round.
    level = os.environ.get("GLOBETRAIN_HIVEMIND_LOG_LEVEL", "ERROR").upper()
    logging.getLogger("hivemind").setLevel(getattr(logging, level, logging.ERROR))

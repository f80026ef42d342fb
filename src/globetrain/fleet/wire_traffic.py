"""Everything a peer puts on the wire, read from the kernel's counters of its daemon's sockets.

The fleet streams count what the protocol sends (updates, aggregates, state). A device
also sends what it does not write itself: DHT requests and answers, libp2p's own
handshakes, pings and framing, TCP acknowledgements. All of it leaves through the TCP
sockets of the peer's libp2p daemon, and Linux keeps per-socket counters for them
(``tcp_info``). ``WireTraffic`` reads them with ``ss`` (iproute2) for the sockets the
daemon holds (``/proc/PID/fd``), every ``poll_every_s``, and keeps running totals per
socket, so a connection that closes loses at most one polling interval of traffic.

What counts as sent: the bytes the peer acknowledged plus TCP's retransmissions
(``bytes_acked`` + ``bytes_retrans``), not ``bytes_sent``. ``bytes_sent`` also counts
every attempt that the device's own queue refused: when a shaper or a full router
buffer on the device drops a segment locally, TCP hands it to the queue again later and
counts it again, though it never reached the link. Measured in a namespace behind a
100 kbit/s htb with a 16-frame FIFO (BBR, 300 KB): ``bytes_sent`` 6.9 MB, the interface
310 KB, ``bytes_acked`` 300 KB; in the shaped validation devices on 0.1 and 1 Mbit/s
reported up to 1.26x what their interface sent (runs H, I, M, N; run O: 0.997-1.037).
Segments likewise: those delivered plus the pure ACKs (``delivered`` + ``segs_out`` -
``data_segs_out``; ``segs_out`` on kernels before 4.18, which lack ``delivered``).

The frame estimate adds, per TCP segment, what an Ethernet/IPv4/TCP frame carries beyond
the payload (14 + 20 + 32 bytes: the TCP header with the timestamp option Linux uses by
default), which is what interface counters (``/sys/class/net/*/statistics``) count.

Where the counters are unavailable (not Linux, no ``ss``, the daemon gone) ``totals``
returns ``None`` and the reason is logged once: the per-stream counts still stand.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import threading

log = logging.getLogger(__name__)

FRAME_OVERHEAD_BYTES = 14 + 20 + 32
"""Ethernet header, IPv4 header and TCP header with timestamps, per segment."""
SS_TIMEOUT_S = 5.0
_SOCKET_LINK = re.compile(r"socket:\[(\d+)\]")
_FIELD = re.compile(
    r"\b(ino|bytes_acked|bytes_retrans|bytes_received|segs_out|segs_in|data_segs_out|delivered):(\d+)"
)


@dataclasses.dataclass(frozen=True)
class SocketCounters:
    """Cumulative TCP counters: of one socket, or summed over a process's sockets."""

    sent: int = 0
    received: int = 0
    segments_out: int = 0
    segments_in: int = 0

    def __add__(self, other: SocketCounters) -> SocketCounters:
        return SocketCounters(
            self.sent + other.sent, self.received + other.received,
            self.segments_out + other.segments_out, self.segments_in + other.segments_in,
        )

    @property
    def frames_sent(self) -> int:
        """Payload plus the headers of every segment: what an interface counter sees."""
        return self.sent + FRAME_OVERHEAD_BYTES * self.segments_out

    @property
    def frames_received(self) -> int:
        return self.received + FRAME_OVERHEAD_BYTES * self.segments_in


def parse_ss(text: str) -> dict[int, SocketCounters]:
    """Counters by socket inode from ``ss -tinHe`` output (one socket may span two lines)."""
    sockets: dict[int, SocketCounters] = {}
    fields: dict[str, int] = {}

    def flush() -> None:
        if "ino" in fields and fields["ino"] != 0:
            sockets[fields["ino"]] = SocketCounters(
                sent=_sent(fields),
                received=fields.get("bytes_received", 0),
                segments_out=_segments_out(fields),
                segments_in=fields.get("segs_in", 0),
            )

    for line in text.splitlines():
        if line and not line[0].isspace():  # a new socket's first line
            flush()
            fields = {}
        for name, value in _FIELD.findall(line):
            fields[name] = int(value)
    flush()
    return sockets


def _sent(fields: dict[str, int]) -> int:
    # ss prints a counter only when it is not 0. Bytes in flight count once acknowledged,
    # so the total never goes down. bytes_acked counts the SYN as one byte.
    return max(fields.get("bytes_acked", 0) - 1, 0) + fields.get("bytes_retrans", 0)


def _segments_out(fields: dict[str, int]) -> int:
    segments = fields.get("segs_out", 0)
    if "delivered" in fields:
        # Data segments handed to the queue but never delivered were refused locally.
        segments -= max(fields.get("data_segs_out", 0) - fields["delivered"], 0)
    return max(segments, 0)


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds (empty when it is gone)."""
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            match = _SOCKET_LINK.fullmatch(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue
        if match:
            inodes.add(int(match.group(1)))
    return inodes


class WireTraffic:
    """Running totals of the TCP traffic of one process (a peer's libp2p daemon)."""

    def __init__(self, pid: int | None, *, poll_every_s: float = 1.0) -> None:
        self.pid = pid
        self.poll_every_s = poll_every_s
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        """One poll at a time: an older listing applied after a newer one would count twice."""
        self._last: dict[int, SocketCounters] = {}
        self._closed = SocketCounters()
        self._problem: str | None = self._check()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _check(self) -> str | None:
        if self.pid is None:
            return "the daemon's process id is unknown"
        if not os.path.isdir(f"/proc/{self.pid}/fd"):
            return f"/proc/{self.pid}/fd is not readable (not Linux?)"
        if shutil.which("ss") is None:
            return "the ss tool (iproute2) is not installed"
        return None

    @property
    def problem(self) -> str | None:
        """Why the counters are unavailable, or None."""
        return self._problem

    def start(self) -> WireTraffic:
        """Poll in a daemon thread until ``stop`` (so short-lived connections count too)."""
        if self._problem is None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wire-traffic", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_every_s):
            self.poll()

    def poll(self) -> None:
        with self._poll_lock:
            self._poll()

    def _poll(self) -> None:
        if self._problem is not None or self.pid is None:
            return
        inodes = socket_inodes(self.pid)
        try:
            listing = subprocess.run(
                ["ss", "-tinHe"], capture_output=True, text=True, timeout=SS_TIMEOUT_S, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as error:
            self._problem = f"ss failed: {error}"
            log.info("wire traffic counters unavailable: %s", self._problem)
            return
        current = {inode: counters for inode, counters in parse_ss(listing).items() if inode in inodes}
        with self._lock:
            # A socket gone since the last poll keeps the counts it had then.
            for inode, counters in self._last.items():
                if inode not in current:
                    self._closed += counters
            self._last = current

    def totals(self) -> SocketCounters | None:
        """Totals so far (after a fresh poll), or None when the counters are unavailable."""
        self.poll()
        if self._problem is not None:
            return None
        with self._lock:
            return sum(self._last.values(), self._closed)


"""The kernel socket counters a device reports as its wire traffic (``globetrain.fleet.wire_traffic``)."""

from __future__ import annotations

import os
import shutil
import socket
import time

import pytest

from globetrain.fleet.wire_traffic import FRAME_OVERHEAD_BYTES, SocketCounters, WireTraffic, parse_ss, socket_inodes

SS_SAMPLE = """\
ESTAB 0      0      127.0.0.1:50514 127.0.0.1:48653 ino:554720 sk:1 cgroup:/ <->
\t ts sack bbr wscale:10,10 rto:204 mss:47616 cwnd:13 bytes_sent:100000 bytes_acked:100001 segs_out:5 segs_in:3 data_segs_out:3
ESTAB 0      0      127.0.0.1:48653 127.0.0.1:50514 ino:554721 sk:2 cgroup:/ <->
\t ts sack bbr rto:200 mss:32768 cwnd:10 bytes_received:100000 segs_out:2 segs_in:5 data_segs_in:3
ESTAB 0      0      10.0.0.1:4000 10.0.0.2:4001 ino:77 sk:3 <->
\t ts sack cubic bytes_acked:1001 bytes_received:20 segs_out:4 segs_in:6
ESTAB 0      0      10.250.0.2:57532 10.250.0.1:9999 ino:78 sk:5 <->
\t bbr wscale:10,10 rto:936 mss:1448 cwnd:160 bytes_sent:6946072 bytes_retrans:2896 bytes_acked:300001 segs_out:4817 segs_in:137 data_segs_out:4815 delivered:209
TIME-WAIT 0 0 10.0.0.1:4002 10.0.0.2:4003 ino:0 sk:4
"""


def test_parse_ss_reads_each_sockets_counters_across_its_two_lines() -> None:
    sockets = parse_ss(SS_SAMPLE)
    assert sockets == {
        554720: SocketCounters(sent=100_000, received=0, segments_out=5, segments_in=3),
        554721: SocketCounters(sent=0, received=100_000, segments_out=2, segments_in=5),
        # Without delivered (kernels before 4.18) the segments are all of segs_out.
        77: SocketCounters(sent=1_000, received=20, segments_out=4, segments_in=6),
        # Behind a 100 kbit/s shaper on the sender's own interface (measured): bytes_sent
        # counts 23x the data, every attempt the local queue refused; what left is what
        # was acknowledged (the SYN is one byte of it) plus retransmissions, in the
        # delivered segments and the pure ACKs.
        78: SocketCounters(sent=300_000 + 2_896, received=0, segments_out=209 + 2, segments_in=137),
    }  # a socket without an inode (TIME-WAIT) belongs to no process


def test_unavailable_counters_say_why_and_report_nothing() -> None:
    traffic = WireTraffic(None)
    assert traffic.problem is not None and "unknown" in traffic.problem
    assert traffic.totals() is None
    assert WireTraffic(2**22 + 12345).totals() is None  # no such process


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd") or shutil.which("ss") is None, reason="needs Linux and ss")
def test_counts_this_process_traffic_and_keeps_closed_connections() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    traffic = WireTraffic(os.getpid())
    before = traffic.totals()
    assert before is not None
    client.sendall(b"x" * 50_000)
    received = 0
    while received < 50_000:
        received += len(server.recv(65536))
    assert os.fstat(client.fileno()).st_ino in socket_inodes(os.getpid())
    # Sent bytes count once acknowledged, and the receiver may delay its ACK (40 ms+).
    deadline = time.monotonic() + 10
    during = traffic.totals()
    while during is not None and during.sent - before.sent < 50_000 and time.monotonic() < deadline:
        time.sleep(0.05)
        during = traffic.totals()
    assert during is not None
    # Both ends are this process: 50,000 bytes out of one socket and into the other.
    assert during.sent - before.sent >= 50_000
    assert during.received - before.received >= 50_000
    assert during.frames_sent - during.sent == FRAME_OVERHEAD_BYTES * during.segments_out
    for end in (client, server, listener):
        end.close()
    after = traffic.totals()
    assert after is not None and after.sent >= during.sent  # closed sockets keep their counts

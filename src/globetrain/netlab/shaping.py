"""Real kernel rate shaping of one interface's egress with `tc htb`.

Why htb with a byte FIFO under it:
- htb enforces a rate on everything leaving an interface, whatever the packet size, and
  its rate can be changed in place (`tc class replace`) while connections run, which is
  how a device's uplink "drops tenfold" mid-run without resetting its connections.
- The FIFO under it is the device's router buffer. Its size is ``queue_ms`` worth of
  the rate: a home router buffers some hundreds of milliseconds (bufferbloat), and
  without a bound a 1 Mbit/s uplink would queue the kernel's default 1000 packets
  (12 s). fq_codel would be the modern answer but this kernel lacks it (as netem).
- The lab sets ``gso_max_segs 1`` on its interfaces (see lab.py) so every queued packet
  is one wire-sized segment: the FIFO limit and htb's accounting then mean what they say.
"""

from __future__ import annotations

import math
import re

from globetrain.netlab.commands import run_command, run_json, tool_path
from globetrain.netlab.errors import LabError

# At least this many full-size frames fit in the buffer, so even a 1 Mbit/s link can
# hold a TCP burst of a few segments instead of dropping every second packet.
MIN_QUEUE_FRAMES = 16
FRAME_BYTES = 1514
ROOT_HANDLE = "1:"
RATE_CLASS = "1:1"
QUEUE_HANDLE = "10:"


def _tc() -> str:
    return tool_path("tc") or "tc"


def queue_limit_bytes(rate_bits_per_s: int, queue_ms: float) -> int:
    return max(MIN_QUEUE_FRAMES * FRAME_BYTES, math.ceil(rate_bits_per_s / 8 * queue_ms / 1000))


def check_rate(mbit: float | None, what: str) -> int | None:
    """``mbit`` as whole bits per second (None: unshaped); ``LabError`` if it is not a rate."""
    if mbit is None:
        return None
    if isinstance(mbit, bool) or not isinstance(mbit, (int, float)) or not math.isfinite(mbit) or mbit <= 0:
        raise LabError(f"{what} = {mbit!r} is invalid: expected a rate in Mbit/s > 0, or None for unshaped")
    bits = round(mbit * 1_000_000)
    if bits < 8_000:
        raise LabError(f"{what} = {mbit!r} Mbit/s is below the 0.008 Mbit/s (8 kbit/s) that htb shapes reliably")
    return bits


def set_egress_rate(namespace: str, device: str, rate_bits_per_s: int | None, *, queue_ms: float) -> None:
    """Shape ``device``'s egress in ``namespace`` to ``rate_bits_per_s`` (None removes shaping)."""
    tc = _tc()
    if rate_bits_per_s is None:
        if _has_htb_root(namespace, device):
            run_command([tc, "-n", namespace, "qdisc", "delete", "dev", device, "root"])
        return
    rate = f"{rate_bits_per_s}bit"
    # The htb root is made once; after that `class replace` and `qdisc replace` retune it
    # in place, so in-flight connections survive a rate change.
    if not _has_htb_root(namespace, device):
        run_command([tc, "-n", namespace, "qdisc", "replace", "dev", device, "root", "handle", ROOT_HANDLE,
                     "htb", "default", RATE_CLASS.split(":")[1]])
    # quantum only matters between sibling classes; a fixed MTU-sized one avoids htb's
    # "quantum is big" warning at high rates.
    run_command([tc, "-n", namespace, "class", "replace", "dev", device, "parent", ROOT_HANDLE,
                 "classid", RATE_CLASS, "htb", "rate", rate, "ceil", rate, "quantum", str(FRAME_BYTES)])
    limit = queue_limit_bytes(rate_bits_per_s, queue_ms)
    run_command([tc, "-n", namespace, "qdisc", "replace", "dev", device, "parent", RATE_CLASS,
                 "handle", QUEUE_HANDLE, "bfifo", "limit", str(limit)])


def _has_htb_root(namespace: str, device: str) -> bool:
    qdiscs = run_json([_tc(), "-n", namespace, "-json", "qdisc", "show", "dev", device])
    return any(item.get("root") and item.get("kind") == "htb" and item.get("handle") == ROOT_HANDLE
               for item in qdiscs)


def egress_rate(namespace: str, device: str) -> int | None:
    """The htb rate (bits/s) now shaping ``device``'s egress, or None if it is unshaped.

    Read back from the kernel, for checks. iproute2 6.1 prints htb classes only as text
    and rounds the rate to whole units ("1234Kbit" for 1234567 bit/s): the value is
    exact to 0.1 %.
    """
    output = run_command([_tc(), "-n", namespace, "class", "show", "dev", device])
    for line in output.splitlines():
        match = _HTB_CLASS_RATE.search(line)
        if match and line.startswith(f"class htb {RATE_CLASS} "):
            return round(float(match.group("value")) * _RATE_UNITS[match.group("unit")])
    return None


_RATE_UNITS = {"bit": 1, "Kbit": 1_000, "Mbit": 1_000_000, "Gbit": 1_000_000_000, "Tbit": 1_000_000_000_000}
_HTB_CLASS_RATE = re.compile(r" rate (?P<value>[0-9.]+)(?P<unit>bit|Kbit|Mbit|Gbit|Tbit) ")

"""Resident memory and open file descriptors of every process of a local fleet, and their trends.

``sample`` reads, for every process in the process group of each child the demo started
(the Python process and everything it started: its libp2p daemon ``p2pd`` above all),
``VmRSS`` from ``/proc/PID/status`` and the entries of ``/proc/PID/fd``. A process that
exits between listing and reading is skipped for that sample.

``trend`` fits a least-squares line to one process's samples after the warm-up and says
whether it is flat: memory grows by less than ``max_growth_percent`` over the window or
less than ``max_mb_per_minute`` (whichever is looser: a 30 MB daemon may wobble by 5%, a
600 MB Python process may not grow 1 MB a minute); descriptors are bounded when their
median over the last minute is at most ``max_fd_rise`` above their median over the first
minute after the warm-up and their slope is below ``max_fd_per_minute``.

Why medians and not the peak: every exchange opens libp2p streams (a socket each in the
daemon, and one in the Python process per stream), so counts spike by 10-20 for a few
seconds around round boundaries on a busy fleet and fall back. The first 16-device soak
judged the peak (at most 8 above the count at the end of the warm-up) and failed 19 of
34 processes on such spikes while every baseline ended where it started; the peak is
still reported (``fd_peak_rise``, ``fd_peak_within_rise``).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Sequence
from typing import Any

from globetrain.fleet.app.processes import ChildProcess, processes_in_group


@dataclasses.dataclass(frozen=True)
class ProcessSample:
    t: float
    key: str
    """Stable name of the process: the child's name, ``/p2pd`` for its daemon, ``/<comm>:<pid>`` for others."""
    pid: int
    rss_kb: int
    fds: int


def _status_field(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def read_process(pid: int) -> tuple[str, int, int] | None:
    """(command name, resident kB, open descriptors) of ``pid``, or None if it is gone or a zombie."""
    rss = _status_field(pid, "VmRSS")
    comm = _status_field(pid, "Name")
    if rss is None or comm is None:
        return None  # gone, or a zombie (no VmRSS)
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    return comm, int(rss.split()[0]), fds


def sample(children: Sequence[ChildProcess], now: float) -> list[ProcessSample]:
    rows = []
    for child in children:
        for pid in processes_in_group(child.pid):
            read = read_process(pid)
            if read is None:
                continue
            comm, rss_kb, fds = read
            if pid == child.pid:
                key = child.name
            elif comm.startswith("p2pd"):
                key = f"{child.name}/p2pd"
            else:
                key = f"{child.name}/{comm}:{pid}"
            rows.append(ProcessSample(now, key, pid, rss_kb, fds))
    return rows


@dataclasses.dataclass(frozen=True)
class FlatnessRule:
    max_growth_percent: float = 5.0
    max_mb_per_minute: float = 1.0
    max_fd_rise: int = 4
    """Of the last minute's median descriptor count over the first minute's (after the warm-up)."""
    max_fd_per_minute: float = 1.0
    max_fd_peak_rise: int = 8
    """Reported only: the peak above the count at the end of the warm-up."""


def _slope(times: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope (value per second); 0 with fewer than two distinct times."""
    if len(times) < 2:
        return 0.0
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values)) / spread


def trend(rows: Sequence[ProcessSample], *, warmup_end: float, rule: FlatnessRule) -> dict[str, Any]:
    """Slopes, growth and the flatness verdict of one process after ``warmup_end``."""
    after = [row for row in rows if row.t >= warmup_end]
    if len(after) < 3:
        return {"samples_after_warmup": len(after), "flat": None, "reason": "too few samples after the warm-up"}
    times = [row.t for row in after]
    rss_mb = [row.rss_kb / 1024 for row in after]
    fds = [row.fds for row in after]
    window_minutes = (times[-1] - times[0]) / 60
    slope_mb_per_minute = _slope(times, rss_mb) * 60
    fitted_start = statistics.fmean(rss_mb) - slope_mb_per_minute * ((statistics.fmean(times) - times[0]) / 60)
    growth_mb = slope_mb_per_minute * window_minutes
    growth_percent = 100 * growth_mb / fitted_start if fitted_start > 0 else 0.0
    fd_start = fds[0]
    fd_peak_rise = max(fds) - fd_start
    fd_first_minute = statistics.median(f for t, f in zip(times, fds) if t < times[0] + 60)
    fd_last_minute = statistics.median(f for t, f in zip(times, fds) if t > times[-1] - 60)
    fd_slope_per_minute = _slope(times, fds) * 60
    memory_flat = growth_percent < rule.max_growth_percent or slope_mb_per_minute < rule.max_mb_per_minute
    fds_bounded = fd_last_minute - fd_first_minute <= rule.max_fd_rise and fd_slope_per_minute < rule.max_fd_per_minute
    return {
        "samples_after_warmup": len(after),
        "window_minutes": round(window_minutes, 2),
        "rss_mb_at_warmup_end": round(rss_mb[0], 1),
        "rss_mb_last": round(rss_mb[-1], 1),
        "rss_mb_max": round(max(rss_mb), 1),
        "rss_slope_mb_per_minute": round(slope_mb_per_minute, 3),
        "rss_growth_percent_over_window": round(growth_percent, 2),
        "fds_at_warmup_end": fd_start,
        "fds_min": min(fds),
        "fds_max": max(fds),
        "fds_last": fds[-1],
        "fd_median_first_minute": fd_first_minute,
        "fd_median_last_minute": fd_last_minute,
        "fd_rise": fd_last_minute - fd_first_minute,
        "fd_slope_per_minute": round(fd_slope_per_minute, 3),
        "fd_peak_rise": fd_peak_rise,
        "fd_peak_within_rise": fd_peak_rise <= rule.max_fd_peak_rise,
        "memory_flat": memory_flat,
        "fds_bounded": fds_bounded,
        "flat": memory_flat and fds_bounded,
    }

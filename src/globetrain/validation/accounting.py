"""The numbers a validation run reports, computed from what the run recorded (pure functions).

Nothing here touches processes or the network, so every number of the reports can be
checked against hand-made inputs (tests/unit/validation):

- ``time_to_target``: when the global model's evaluation curve first reached a target;
- ``CounterSeries`` / ``compare_bytes``: a host's interface byte counters sampled over time,
  read over exactly the window the device's own metrics lines cover, next to what the
  device reported sending in that window;
- ``adaptation_after``: which rounds of one device came after a network change, and how
  many rounds it took until its QoS choice of density and bits moved;
- ``progress_rates``: the fleet's global sample rate before and after a change.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from globetrain.fleet.app.qos import UNCONFIRMED


def time_to_target(evaluations: Iterable[Mapping[str, Any]], *, start_time: float, target: float) -> float | None:
    """Seconds from ``start_time`` to the first evaluation whose ``val_accuracy`` >= ``target``.

    Evaluations are taken in time order whatever order they come in (the bootstrap
    writes them from a background thread); None when the curve never reached the target.
    """
    ordered = sorted((e for e in evaluations if e.get("val_accuracy") is not None), key=lambda e: float(e["t"]))
    for evaluation in ordered:
        if float(evaluation["val_accuracy"]) >= target:
            return round(float(evaluation["t"]) - start_time, 3)
    return None


def ratio_or_none(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclasses.dataclass
class CounterSeries:
    """Samples ``(time, tx_bytes, rx_bytes)`` of one interface, in time order."""

    times: list[float] = dataclasses.field(default_factory=list)
    tx: list[int] = dataclasses.field(default_factory=list)
    rx: list[int] = dataclasses.field(default_factory=list)

    def add(self, time: float, tx_bytes: int, rx_bytes: int) -> None:
        if self.times and time < self.times[-1]:
            raise ValueError(f"counter samples must come in time order: {time} after {self.times[-1]}")
        self.times.append(time)
        self.tx.append(tx_bytes)
        self.rx.append(rx_bytes)

    def at(self, time: float, *, direction: str = "tx") -> float:
        """The counter at ``time``, linearly interpolated between the samples around it.

        Outside the sampled span the nearest sample is used: a counter is only known
        where it was read, and guessing a trend beyond would invent traffic.
        """
        values = self.tx if direction == "tx" else self.rx
        if not self.times:
            raise ValueError("no counter samples")
        index = bisect.bisect_left(self.times, time)
        if index <= 0:
            return float(values[0])
        if index >= len(self.times):
            return float(values[-1])
        before, after = self.times[index - 1], self.times[index]
        share = (time - before) / (after - before) if after > before else 1.0
        return values[index - 1] + share * (values[index] - values[index - 1])

    def between(self, start: float, end: float, *, direction: str = "tx") -> float:
        return self.at(end, direction=direction) - self.at(start, direction=direction)

    def covers(self, start: float, end: float) -> bool:
        return bool(self.times) and self.times[0] <= start and end <= self.times[-1]


@dataclasses.dataclass(frozen=True)
class ByteComparison:
    """One device: bytes its interface sent vs bytes it reported sending, over one window."""

    device: str
    window_start: float
    window_end: float
    reported_sent: int
    counter_sent: float
    reported_received: int
    counter_received: float
    reported_from: str = "streams"
    """What the device reported: ``wire`` (its daemon's kernel socket counters: all of its
    traffic, headers included) or ``streams`` (fleet protocol streams only, where the
    kernel counters were unavailable)."""
    streams_sent: int = 0
    """Bytes of the fleet protocol's streams (updates, aggregates, state) in the window."""

    @property
    def sent_ratio(self) -> float | None:
        """Interface counter / reported (frames with headers over application bytes: ~1.05 expected)."""
        return ratio_or_none(self.counter_sent, self.reported_sent)

    @property
    def received_ratio(self) -> float | None:
        return ratio_or_none(self.counter_received, self.reported_received)

    @property
    def unreported_sent_per_s(self) -> float:
        """Bytes per second the interface sent beyond what the device reported (headers, DHT, libp2p)."""
        window = self.window_end - self.window_start
        return (self.counter_sent - self.reported_sent) / window if window > 0 else 0.0

    def within(self, tolerance: float) -> bool:
        """Whether the sent bytes agree within ``tolerance`` (0.10: within 10 %)."""
        ratio = self.sent_ratio
        return ratio is not None and abs(ratio - 1.0) <= tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "window_s": round(self.window_end - self.window_start, 3),
            "reported_sent": self.reported_sent, "counter_sent": int(self.counter_sent),
            "sent_ratio": _rounded(self.sent_ratio), "reported_received": self.reported_received,
            "counter_received": int(self.counter_received), "received_ratio": _rounded(self.received_ratio),
            "unreported_sent_per_s": round(self.unreported_sent_per_s, 1),
            "reported_from": self.reported_from, "streams_sent": self.streams_sent,
        }


def compare_bytes(device: str, rounds: Sequence[Mapping[str, Any]], counters: CounterSeries) -> ByteComparison | None:
    """Compare a device's reported bytes with its interface counters over the same window.

    A round line carries the bytes moved since the previous line, so the window runs
    from the first line's time to the last line's time, and the reported bytes are the
    sums over the lines after the first. None with fewer than two lines (no window) or
    when the counters were not sampled over the whole window. The device's report is its
    wire bytes where every line has them, its stream bytes otherwise.
    """
    ordered = sorted(rounds, key=lambda line: float(line["t"]))
    if len(ordered) < 2:
        return None
    start, end = float(ordered[0]["t"]), float(ordered[-1]["t"])
    if not counters.covers(start, end):
        return None
    lines = ordered[1:]
    wire = all(line.get("wire_bytes_sent") is not None and line.get("wire_bytes_received") is not None for line in lines)
    sent_field, received_field = ("wire_bytes_sent", "wire_bytes_received") if wire else ("bytes_sent", "bytes_received")
    return ByteComparison(
        device=device, window_start=start, window_end=end,
        reported_sent=sum(int(line[sent_field]) for line in lines),
        counter_sent=counters.between(start, end, direction="tx"),
        reported_received=sum(int(line[received_field]) for line in lines),
        counter_received=counters.between(start, end, direction="rx"),
        reported_from="wire" if wire else "streams",
        streams_sent=sum(int(line["bytes_sent"]) for line in lines),
    )


def qos_choice(line: Mapping[str, Any]) -> tuple[int, float, int]:
    """What the device's QoS chose for a round: (H, density, bits)."""
    return int(line.get("qos_inner_steps", 0)), float(line.get("density", 0.0)), int(line.get("bits", 0))


def payload_choice(line: Mapping[str, Any]) -> tuple[float, int]:
    """What decides the bytes of a round's exchange: (density, bits).

    H (the round's inner steps) is not part of it: it follows the compute time of each
    round and moves every round on a shared machine, so it cannot show an adaptation.
    """
    return float(line.get("density", 0.0)), int(line.get("bits", 0))


@dataclasses.dataclass(frozen=True)
class Adaptation:
    """How one device's QoS responded to a network change at ``change_time``."""

    change_time: float
    before: tuple[float, int] | None
    """(density, bits) of the last round that ended before the change."""
    rounds_until_change: int | None
    """Rounds started after the change until the first one with a leaner choice (1 = the first); None: never."""
    first_changed: tuple[float, int] | None
    rounds_after: int

    def adapted_within(self, rounds: int) -> bool:
        return self.rounds_until_change is not None and self.rounds_until_change <= rounds

    def to_dict(self) -> dict[str, Any]:
        return {
            "change_time": self.change_time, "before": self.before, "rounds_until_change": self.rounds_until_change,
            "first_changed": self.first_changed, "rounds_after": self.rounds_after,
        }


def adaptation_after(rounds: Sequence[Mapping[str, Any]], change_time: float) -> Adaptation:
    """Rounds (one device's round lines) until its (density, bits) got leaner after ``change_time``.

    Leaner: fewer bits per value of the model (density x bits), i.e. a smaller payload.
    A rate drop asks for a smaller payload; a richer choice after it (a device whose
    settings swung before the drop, swinging back) is not an adaptation to it.
    Rounds without a QoS choice (H 0: catching up, stopped) neither count as the
    baseline nor as a change, and neither does a round made leaner by one slow exchange alone.
    """
    chosen = [line for line in sorted(rounds, key=lambda line: float(line["t"])) if qos_choice(line)[0] > 0]
    # The baseline is what the device settled on: a round made leaner by one slow exchange
    # alone just before the change (run W: device-0's exchange through a stalled leader)
    # is an outlier, and comparing with it would hide the adaptation to the change.
    before = [line for line in chosen if float(line["t"]) < change_time and UNCONFIRMED not in str(line.get("qos_reason", ""))]
    after = [line for line in chosen if _started_at_or_after(line, change_time)]
    baseline = payload_choice(before[-1]) if before else None
    for index, line in enumerate(after, start=1):
        if baseline is not None and _leaner(payload_choice(line), baseline):
            return Adaptation(change_time, baseline, index, payload_choice(line), len(after))
    return Adaptation(change_time, baseline, None, None, len(after))


def _leaner(choice: tuple[float, int], baseline: tuple[float, int]) -> bool:
    return choice[0] * choice[1] < baseline[0] * baseline[1]


def _started_at_or_after(line: Mapping[str, Any], change_time: float) -> bool:
    """Whether a round line's round began at or after ``change_time``.

    A line is written at its round's end (``t``) and says how long the round took
    (``round_s``). The round in progress at the change had its settings chosen before
    it, so it is neither the baseline nor a round after the change. Lines without
    ``round_s`` count from their end.
    """
    start = float(line["t"]) - float(line.get("round_s") or 0.0)
    return start >= change_time


def change_was_needed(rounds: Sequence[Mapping[str, Any]], change_time: float, *, within: int = 2) -> bool:
    """Whether, in the first ``within`` rounds after the change, the old choice stopped fitting.

    The QoS keeps the richest payload whose exchange fits in the round's compute (its
    reason then reads ``exchange Xs fits Ys of compute``). While that holds after a rate
    drop there is nothing to adapt, and "adapted within 2 rounds" can be neither met nor
    failed; any other reason (``leanest setting ...``) or a leaner choice means it had to act.
    """
    after = [line for line in sorted(rounds, key=lambda line: float(line["t"]))
             if _started_at_or_after(line, change_time) and qos_choice(line)[0] > 0][:within]
    adaptation = adaptation_after(rounds, change_time)
    changed = adaptation.rounds_until_change is not None and adaptation.rounds_until_change <= within
    return changed or any(" fits " not in str(line.get("qos_reason", "")) for line in after)


def progress_rates(
    fleet_lines: Sequence[Mapping[str, Any]], *, change_time: float, settle_s: float, window_s: float
) -> dict[str, float | None]:
    """The fleet's global samples per second in ``window_s`` before a change and after it settled.

    ``fleet_lines`` are the bootstrap's ``fleet`` lines (``t``, ``global_samples``); the
    "after" window starts ``settle_s`` after the change. ``recovered`` is after / before.
    """
    points = sorted((float(line["t"]), int(line["global_samples"])) for line in fleet_lines)

    def rate(start: float, end: float) -> float | None:
        inside = [point for point in points if start <= point[0] <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    before = rate(change_time - window_s, change_time)
    after = rate(change_time + settle_s, change_time + settle_s + window_s)
    return {"before": before, "after": after, "recovered": ratio_or_none(after, before)}


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)

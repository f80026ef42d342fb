"""Reading a hostile run back: who refused what from whom, and whether anything broke.

Everything comes from what the processes wrote as they ran: every peer's log (a refusal
is logged once, as ``[<peer> round R] rejected <kind> from <name> (<peer id>): <reason>``
by ``RejectionLog``), the devices' per-round metrics, the rogue's and the attacker's
status lines (what they sent, and which ``kind/reason`` each must produce), and the exit
codes. ``analyse`` turns them into the report's verdicts.
"""

from __future__ import annotations

import collections
import json
import math
import re
from pathlib import Path
from typing import Any

REJECTION_LINE = re.compile(
    r"\[(?P<receiver>[^\]]*?)(?: round (?P<round>\d+))?\] rejected (?P<kind>[\w-]+) from (?P<name>.*?) "
    r"\((?P<sender>[^()\s]*)\): (?P<reason>[\w-]+)"
)
TIMING_REASONS = ("stale-round", "future-round", "duplicate", "group-full", "unknown-round")
"""Refusals an honest device earns by being late on a loaded machine, not by what it sent."""
CRASH_MARKERS = ("Traceback (most recent call last)", "handler failed on a stream", "exchange error:")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by SIGKILL
    return rows


def rejections_in_log(path: Path) -> list[dict[str, str]]:
    """Every refusal a peer logged, with the receiver, sender id and name, kind and reason."""
    if not path.is_file():
        return []
    return [match.groupdict() for match in REJECTION_LINE.finditer(path.read_text(errors="replace"))]


def crash_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line[:300] for line in path.read_text(errors="replace").splitlines() if any(m in line for m in CRASH_MARKERS)]


def counts_by_sender(rejections: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for row in rejections:
        table[row["sender"]][f"{row['kind']}/{row['reason']}"] += 1
    return {sender: dict(sorted(counter.items())) for sender, counter in table.items()}


def analyse(
    *,
    honest_logs: dict[str, Path],
    honest_metrics: dict[str, Path],
    rogue_status: Path,
    rogue_log: Path,
    attacker_status: Path,
    stranger_log: Path,
    exit_codes: dict[str, int | None],
) -> dict[str, Any]:
    """The hostile run's findings and verdicts (see ``globetrain.validation.hostile``)."""
    rogue_rows = read_jsonl(rogue_status)
    rogue_id = next((r["peer_id"] for r in rogue_rows if r.get("event") == "started"), "")
    attacks = [r for r in rogue_rows if r.get("event") == "attack"]
    served = [r for r in rogue_rows if r.get("event") == "served-state"]
    attacker_rows = read_jsonl(attacker_status)
    attacker_id = next((r["peer_id"] for r in attacker_rows if r.get("event") == "started"), "")
    attacker_report = next((r for r in attacker_rows if r.get("event") == "attack"), None)

    rejections = [row for path in honest_logs.values() for row in rejections_in_log(path)]
    by_sender = counts_by_sender(rejections)
    rogue_counts = by_sender.get(rogue_id, {})
    attacker_counts = by_sender.get(attacker_id, {})
    expected = collections.Counter(a["expected"] for a in attacks)
    if served:
        # Whoever downloaded from the rogue must have counted its bad state.
        expected["state/corrupt"] += len(served)
    missing = sorted(kind for kind in expected if _count_family(rogue_counts, kind) == 0)
    honest_ids = {row.get("peer_id") for path in honest_metrics.values() for row in read_jsonl(path) if row.get("peer_id")}
    honest_refused = {sender: reasons for sender, reasons in by_sender.items() if sender in honest_ids}
    honest_refused_for_content = {
        sender: {key: n for key, n in reasons.items() if key.rsplit("/", 1)[-1] not in TIMING_REASONS}
        for sender, reasons in honest_refused.items()
    }
    honest_refused_for_content = {sender: reasons for sender, reasons in honest_refused_for_content.items() if reasons}
    unattributed = {sender: reasons for sender, reasons in by_sender.items()
                    if sender not in honest_ids | {rogue_id, attacker_id}}

    crashes = {name: crash_lines(path) for name, path in honest_logs.items()}
    crashes = {name: lines for name, lines in crashes.items() if lines}
    rounds = [row for path in honest_metrics.values() for row in read_jsonl(path) if row.get("event") == "round"]
    applied = [a for row in rounds for a in row.get("applied", []) if a.get("status") == "applied"]
    most_contributors = max((int(a.get("contributors", 0)) for a in applied), default=0)
    losses = [row["loss"] for row in rounds if row.get("loss") is not None]
    downloads = {name: [r for r in read_jsonl(path) if r.get("event") == "state-download"]
                 for name, path in honest_metrics.items()}
    stranger_text = stranger_log.read_text(errors="replace") if stranger_log.is_file() else ""

    honest_exit = {name: code for name, code in exit_codes.items() if name not in ("rogue", "attacker", "stranger")}
    return {
        "rogue": {
            "peer_id": rogue_id,
            "attacks_sent": len(attacks),
            "attacks_by_expected_reason": dict(sorted(expected.items())),
            "refusals_counted_by_reason": rogue_counts,
            "expected_reasons_never_counted": missing,
            "state_answers_served": len(served),
            "state_modes_served": dict(collections.Counter(r["mode"] for r in served)),
            "acks_accepted": sum(1 for a in attacks if ((a.get("answer") or {}).get("reply") or {}).get("accepted")),
            "log_crashes": crash_lines(rogue_log),
        },
        "wrong_key": {
            "stranger_exit_code": exit_codes.get("stranger"),
            "stranger_found_no_run": "no run found for this run key" in stranger_text,
            "attacker_peer_id": attacker_id,
            "attacker_report": attacker_report,
            "attacker_refusals_counted_by_reason": attacker_counts,
        },
        "honest": {
            "exit_codes": honest_exit,
            "crash_lines": crashes,
            "refusals_of_honest_senders": honest_refused,
            "refusals_of_honest_senders_for_content": honest_refused_for_content,
            "refusals_of_unknown_senders": unattributed,
            "rounds_recorded": len(rounds),
            "rounds_applied": len(applied),
            "most_contributors_in_a_round": most_contributors,
            "losses_finite": all(math.isfinite(v) for v in losses),
            "state_downloads": {name: len(rows) for name, rows in downloads.items() if rows},
        },
        "rejections_logged": len(rejections),
    }


def _count_family(counts: dict[str, int], expected: str) -> int:
    """Counts of ``expected``; ``state/corrupt`` stands for any ``state/<reason>`` (bad tag, corrupt...)."""
    if expected == "state/corrupt":
        return sum(count for key, count in counts.items() if key.startswith("state/"))
    return counts.get(expected, 0)

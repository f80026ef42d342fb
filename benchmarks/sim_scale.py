"""Can the simulator hold 10,000 devices in 8 GB? A few rounds of two-step at that size.

    .venv/bin/python benchmarks/sim_scale.py [--devices 10000] [--seconds 95]

Runs `globetrain simulate` in a child process for a few simulated rounds (not to the
target: this measures memory and the cost of a round, not accuracy) and reports the
child's peak resident memory next to the simulator's own up-front estimate, and wall
seconds per simulated round. Writes sim_scale.json to --out.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=95.0, help="simulated seconds (3 rounds of 30 s)")
    parser.add_argument("--fleet", default="global-iot")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    folder = args.out / "sim_scale_run"
    command = [
        sys.executable, "-m", "globetrain", "simulate", "--devices", str(args.devices), "--fleet", args.fleet,
        "--method", "two-step", "--max-hours", str(args.seconds / 3600), "--keep-going", "--out", str(folder),
        "--no-progress",
    ]
    started = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - started
    if completed.returncode != 0:
        print(completed.stderr[-3000:])
        return completed.returncode
    summary = json.loads((folder / "summary.json").read_text())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    rounds = summary["simulated_seconds"] / summary["config"]["round_period_s"]
    report = {
        "devices": args.devices,
        "simulated_seconds": summary["simulated_seconds"],
        "rounds": rounds,
        "global_steps": summary["steps"],
        "peak_rss_bytes": peak,
        "memory_estimate_bytes": summary["memory_estimate_bytes"],
        "within_8_GB": peak <= 8e9,
        "process_wall_seconds": round(wall, 1),
        "simulation_wall_seconds": summary["wall_seconds"],
        "wall_seconds_per_round": round(summary["wall_seconds"] / max(rounds, 1e-9), 1),
        "proxy_model": summary["proxy_model"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sim_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["within_8_GB"] else 1


if __name__ == "__main__":
    sys.exit(main())

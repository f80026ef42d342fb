"""The paper-style figures: time to accuracy and scaling efficiency against N, tolerance curves.

    .venv/bin/python benchmarks/sim_sweep.py [--sizes 1,4,16,64,256,1024,4096] [--out DIR]

A thin wrapper of `globetrain simulate sweep` with this project's defaults for a 2-core
machine; resumable (rerun the same command to continue). Writes results.jsonl,
figures.json, scaling.png and tolerance.png under --out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4,16,64,256,1024")
    parser.add_argument("--methods", default="dense-sync,fp16-average,dgc,diloco,two-step")
    parser.add_argument("--tolerance", default="bandwidth,latency,churn")
    parser.add_argument("--tolerance-devices", default="64")
    parser.add_argument("--factors", default="0.1,1,10")
    parser.add_argument("--max-hours", default="4")
    parser.add_argument("--max-wall-minutes", default="10")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sim_sweep")
    args = parser.parse_args()
    command = [
        sys.executable, "-m", "globetrain", "simulate", "sweep", "--out", str(args.out), "--sizes", args.sizes,
        "--methods", args.methods, "--tolerance", args.tolerance, "--tolerance-devices", args.tolerance_devices,
        "--factors", args.factors, "--max-hours", args.max_hours, "--max-wall-minutes", args.max_wall_minutes,
    ]
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())

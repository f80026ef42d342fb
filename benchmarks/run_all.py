"""Run the project's benchmarks one after the other (they share the 2 cores, never in parallel).

    .venv/bin/python benchmarks/run_all.py            # the ones that take minutes
    .venv/bin/python benchmarks/run_all.py --all      # also the simulator's hour-long runs
    .venv/bin/python benchmarks/run_all.py --only codec_benchmark,video_models

Each benchmark writes its JSON (and PNG) to benchmarks/results/ and prints its ratios; this
script only sequences them and reports which failed, so one failure does not hide the rest.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Minutes each, on a quiet 2-core machine.
QUICK: tuple[tuple[str, ...], ...] = (
    ("codec_benchmark.py", "--repetitions", "11"),
    ("convergence.py",),
    ("video_models.py",),
    ("video_loading.py",),
    ("video_accuracy.py",),
    ("sim_scale.py",),
    ("roster_traffic.py",),
)
# Up to an hour or more each: nine video fleets in one process, every method at 1000 devices,
# the sweep, two real demo runs.
LONG: tuple[tuple[str, ...], ...] = (
    ("outer_lr_scaling.py",),
    ("sim_targets.py",),
    ("sim_calibration.py", "--run-demo"),
    ("sim_sweep.py",),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="also run the long simulator benchmarks")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (without .py)")
    args = parser.parse_args()
    plan = list(QUICK) + (list(LONG) if args.all else [])
    if args.only:
        wanted = {name.strip().removesuffix(".py") for name in args.only.split(",") if name.strip()}
        known = {entry[0].removesuffix(".py") for entry in QUICK + LONG}
        unknown = sorted(wanted - known)
        if unknown:
            print(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}", file=sys.stderr)
            return 2
        plan = [entry for entry in QUICK + LONG if entry[0].removesuffix(".py") in wanted]
    failed = []
    for script, *options in plan:
        print(f"== {script} {' '.join(options)}", flush=True)
        started = time.monotonic()
        code = subprocess.run([sys.executable, str(HERE / script), *options]).returncode
        print(f"== {script}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Calibration against reality: fit the simulator to one real demo run, predict another.

    .venv/bin/python benchmarks/sim_calibration.py --fit RUN_A --predict RUN_B
    .venv/bin/python benchmarks/sim_calibration.py --run-demo [--fit-devices 2] [--predict-devices 4]
                                                   [--demo-args "--max-rounds 20"]

With ``--run-demo`` it first runs `globetrain demo` twice (different N), writing the run
folders under --out, then fits the simulator's per-device compute speed to the first and
predicts the second's training time (``globetrain simulate calibrate``). The target: the
prediction within 25% of the measured time. Writes sim_calibration.json to --out.

Until `globetrain demo` exists the script says so, writes that status, and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path


def demo_available() -> bool:
    probe = subprocess.run([sys.executable, "-m", "globetrain", "demo", "--help"], capture_output=True, timeout=120)
    return probe.returncode == 0


def run_demo(devices: int, folder: Path, extra: str) -> None:
    command = [sys.executable, "-m", "globetrain", "demo", "--devices", str(devices), "--out", str(folder), *shlex.split(extra)]
    print("running", " ".join(command), flush=True)
    subprocess.run(command, check=True, timeout=3 * 3600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", type=Path, default=None, help="demo run folder to fit to")
    parser.add_argument("--predict", type=Path, default=None, help="demo run folder to predict")
    parser.add_argument("--run-demo", action="store_true", help="run the two demo runs first")
    parser.add_argument("--fit-devices", type=int, default=2)
    parser.add_argument("--predict-devices", type=int, default=4)
    parser.add_argument("--demo-args", default="", help="extra arguments for both `globetrain demo` runs")
    parser.add_argument("--cores", type=int, default=None, help="cores the demo ran on (default: this machine's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result_path = args.out / "sim_calibration.json"
    if args.run_demo:
        if not demo_available():
            status = {"status": "`globetrain demo` is not available yet; nothing was measured"}
            result_path.write_text(json.dumps(status, indent=2) + "\n")
            print(status["status"])
            return 2
        args.fit = args.out / "sim_calibration_runs" / f"demo-{args.fit_devices}"
        args.predict = args.out / "sim_calibration_runs" / f"demo-{args.predict_devices}"
        run_demo(args.fit_devices, args.fit, args.demo_args)
        run_demo(args.predict_devices, args.predict, args.demo_args)
    if args.fit is None or args.predict is None:
        parser.error("give --fit and --predict run folders, or --run-demo")

    from globetrain.sim.calibration import calibrate_and_predict

    report = calibrate_and_predict(args.fit, args.predict, cores=args.cores)
    error = report["prediction"]["error"]
    report["within_25_percent"] = error is not None and abs(error) <= 0.25
    result_path.write_text(json.dumps(report, indent=2) + "\n")
    prediction = report["prediction"]
    print(
        f"predicted {prediction['predicted_training_seconds']:.1f}s vs measured "
        f"{prediction['measured_training_seconds']:.1f}s ({100 * error:+.1f}%) for {prediction['devices']} devices"
    )
    return 0 if report["within_25_percent"] else 1


if __name__ == "__main__":
    sys.exit(main())

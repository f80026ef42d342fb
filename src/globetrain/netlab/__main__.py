"""``python -m globetrain.netlab``: check, list, clean up, show profiles, calibrate."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from globetrain.errors import GlobetrainError


def _check(args: argparse.Namespace) -> int:
    from globetrain.netlab.lab import support_problem

    problem = support_problem()
    print(problem or "ok: network namespaces, veth, bridge and tc htb work here")
    return 1 if problem else 0


def _list(args: argparse.Namespace) -> int:
    from globetrain.netlab.state import list_namespaces

    for name in list_namespaces(args.prefix):
        print(name)
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from globetrain.netlab.state import cleanup_stale

    removed = cleanup_stale()
    print(f"removed {len(removed)} leftover namespace(s)" + (": " + " ".join(removed) if removed else ""))
    return 0


def _profile(args: argparse.Namespace) -> int:
    from globetrain.netlab.profile import resolve_profile
    from globetrain.netlab.schedule import plan_actions

    profile = resolve_profile(args.profile)
    print(json.dumps(profile.to_dict(), indent=2))
    if args.plan:
        for action in plan_actions(profile):
            print(action, file=sys.stderr)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from globetrain.netlab.calibrate import RELAY_DELAYS_MS, UPLINK_RATES_MBIT, calibrate, write_report

    steps = len(UPLINK_RATES_MBIT) + 3 + len(RELAY_DELAYS_MS)
    with Progress() as progress:
        task = progress.add_task("calibrating", total=steps)

        def advance(step: str) -> None:
            progress.update(task, description=step, advance=1)

        result = calibrate(args.seconds, progress=advance)
    json_path, png_path = write_report(result, args.out)
    for row in result["rows"]:
        extra = "".join(f"  {key}={row[key]:.3f}" for key in ("counter_ratio", "relay_forwarded_ratio") if key in row)
        print(f"{row['measurement']:>22} {row['configured']:>6g} {row['unit']:<6} measured {row['measured']:8.3f}"
              f"  ratio {row['ratio']:.3f}{extra}")
    print(f"wrote {json_path} and {png_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m globetrain.netlab", description="the globetrain network lab")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="say whether labs can run here (root, iproute2, htb)").set_defaults(run=_check)
    listing = commands.add_parser("list", help="list lab namespaces on this machine")
    listing.add_argument("--prefix", default="gt", help="only names starting with this (default: gt)")
    listing.set_defaults(run=_list)
    commands.add_parser("cleanup", help="remove leftovers of lab runs whose owner died").set_defaults(run=_cleanup)
    profile = commands.add_parser("profile", help="print a network profile (built-in name or file) as JSON")
    profile.add_argument("profile", nargs="?", default="validation")
    profile.add_argument("--plan", action="store_true", help="also print its timed actions (stderr)")
    profile.set_defaults(run=_profile)
    calibrate = commands.add_parser("calibrate", help="measure rates, delays and counters of a fresh lab")
    calibrate.add_argument("--out", type=Path, required=True, help="folder for calibration.json and .png")
    calibrate.add_argument("--seconds", type=float, default=3.0, help="length of each rate transfer (default 3)")
    calibrate.set_defaults(run=_calibrate)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except GlobetrainError as error:
        print(f"netlab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

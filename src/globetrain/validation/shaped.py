"""``python -m globetrain.validation.shaped``: the fleet under real network shaping (issue 6, item 1).

A bootstrap and N devices (default 8), each in its own network namespace of a lab
(``globetrain.netlab``), with the validation profile's uplink rates (1-10 Mbit/s for
the first 8 devices) enforced by tc htb, delay, jitter, a stall and dropped connections
injected by a relay in front of each peer, and mid-run changes (the rates of dev3 and dev0 drop tenfold
at 60 s, every latency doubles at 90 s). It trains the demo's recipe with ``two-step`` and
with the ``dense`` baseline, each shaped and unshaped (same lab, same processes, nothing
in the way), and reports:

- time-to-target accuracy (the bootstrap's evaluations of the global model) and the
  shaped/unshaped ratio per method (target for two-step: <= 1.25x);
- bytes per device from the interfaces' kernel counters next to what the devices report,
  over the same window (target: within 10 %);
- the compute fraction of both methods;
- the affected device's H, density and bits per round around the rate drop (target:
  adapts within 2 rounds) and the fleet's sample rate before and after it.

Writes ``shaped.json`` and ``shaped.png`` to ``--out`` (the runs' own folders go to
``--runs-dir``). Each case is capped by ``--budget``; a case that does not reach the
target says so. Every namespace, link and process is removed after each case, also on
Ctrl+C (which ends the case in progress and skips the rest). Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console

from globetrain.errors import ConfigError, GlobetrainError
from globetrain.fleet.app.signals import EXIT_INTERRUPTED, StopSignals
from globetrain.netlab import support_problem
from globetrain.validation.round_curve import evaluate_rounds, write_round_curve
from globetrain.validation.shaped_case import Case, ShapedSettings, analyze_case, recording_from_report, run_case
from globetrain.validation.shaped_report import headline, plot_shaped

DEFAULT_OUT = "benchmarks/results/validation"
DEFAULT_RUNS = "runs/validation/shaped"
QUICK = {"devices": 2, "preset": "debug", "time_budget_s": 30.0, "min_training_s": 0.0, "target_accuracy": 0.5}
"""``--quick``: two devices on the debug recipe; checks the harness end to end in ~3 minutes."""


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m globetrain.validation.shaped",
        description="Train a fleet in a shaped network lab (two-step and dense, shaped and unshaped) and report "
                    "time-to-target, bytes from interface counters, compute fraction and QoS adaptation.",
    )
    defaults = ShapedSettings()
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for shaped.json and shaped.png (default %(default)s)")
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS, help="folder for each case's run (default %(default)s)")
    parser.add_argument("--devices", type=int, default=None, help=f"devices (default {defaults.devices})")
    parser.add_argument("--methods", default="two-step,dense", help="comma-separated sync methods (default %(default)s)")
    parser.add_argument("--only", choices=("both", "shaped", "unshaped"), default="both",
                        help="run the shaped cases, the unshaped ones, or both (default)")
    parser.add_argument("--profile", default=None, help=f"network profile (default {defaults.profile})")
    parser.add_argument("--preset", default=None, help=f"the demo's recipe (default {defaults.preset})")
    parser.add_argument("--target", type=float, default=None, help=f"target accuracy (default {defaults.target_accuracy})")
    parser.add_argument("--budget", type=float, default=None, help=f"seconds per case at most (default {defaults.time_budget_s:g})")
    parser.add_argument("--min-training", type=float, default=None,
                        help=f"shaped cases run at least this long (default {defaults.min_training_s:g})")
    parser.add_argument("--seed", type=int, default=None, help="seed of data, model and jitter (default 0)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="a run setting on top of the recipe's, for every case (e.g. --set training.restricted_softmax=true)")
    parser.add_argument("--round-models", action="store_true",
                        help="keep every round's global model and evaluate each case round by round afterwards "
                             "(RUNS/CASE/round_curve.json and .png; a diagnostic of falls between evaluations)")
    parser.add_argument("--quick", action="store_true",
                        help="2 devices on the debug recipe, 30 s per case: a check of the harness, not a result")
    parser.add_argument("--replot", action="store_true", help="only redraw OUT/shaped.png from OUT/shaped.json")
    parser.add_argument("--reanalyze", action="store_true",
                        help="recompute OUT/shaped.json's numbers and plot from it and the runs in --runs-dir (no new runs); "
                             "byte comparisons are kept where the report holds no counter samples; cases with a round "
                             "curve are evaluated round by round again")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> ShapedSettings:
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for flag, name in (("devices", "devices"), ("profile", "profile"), ("preset", "preset"), ("target", "target_accuracy"),
                       ("budget", "time_budget_s"), ("min_training", "min_training_s"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            values[name] = getattr(args, flag)
    if args.round_models:
        values["round_models"] = True
    if args.set:
        values["run_settings"] = tuple(args.set)
    return ShapedSettings(**values)


def cases_from(args: argparse.Namespace) -> list[Case]:
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    if not methods:
        raise ConfigError("--methods names no method; e.g. --methods two-step,dense")
    shaped = {"both": (True, False), "shaped": (True,), "unshaped": (False,)}[args.only]
    return [Case(method, flag) for method in methods for flag in shaped]


def write_report(out: Path, settings: ShapedSettings, cases: dict[str, dict[str, Any]], methods: list[str],
                 *, started: float, interrupted: bool) -> dict[str, Any]:
    report = {
        "benchmark": "validation-shaped",
        "command": " ".join(["python -m globetrain.validation.shaped", *sys.argv[1:]]),
        "settings": settings.to_dict(),
        "interrupted": interrupted,
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": {"cpus": os.cpu_count(), "note": "one shared 2-core machine: every process of every peer on it"},
        **headline(cases, methods=methods, byte_tolerance=settings.byte_tolerance),
        "cases": cases,
    }
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / ".shaped.json.tmp"
    temporary.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(temporary, out / "shaped.json")
    plot_shaped(cases, out / "shaped.png", target_accuracy=settings.target_accuracy)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    console = Console(stderr=True)
    if args.reanalyze or args.replot:
        earlier = earlier_report(Path(args.out), console)
        if earlier is None:
            return 2
        if args.reanalyze:
            return reanalyze(Path(args.out), Path(args.runs_dir), console, earlier)
        plot_shaped(earlier["cases"], Path(args.out) / "shaped.png", target_accuracy=earlier["settings"]["target_accuracy"])
        return 0
    try:
        settings = settings_from(args)
        cases = cases_from(args)
    except ConfigError as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    problem = support_problem()
    if problem is not None:
        console.print(f"[red]cannot run the shaped validation:[/] {problem}")
        return 2
    out, runs = Path(args.out), Path(args.runs_dir)
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    methods = sorted({case.method for case in cases}, key=[c.method for c in cases].index)
    with StopSignals() as signals:
        for number, case in enumerate(cases, start=1):
            if signals.stopped:
                break
            console.rule(f"case {number}/{len(cases)}: {case.name} ({settings.devices} devices, {settings.preset} recipe)")
            try:
                recording = run_case(case, settings, runs, signals=signals, console=console)
                results[case.name] = analyze_case(case, recording, settings)
                if settings.round_models and not signals.stopped:
                    results[case.name]["round_curve"] = round_curve_of(recording.out, console)
            except Exception as error:  # noqa: BLE001 - one failed case is reported; the others still run
                detail = str(error) if isinstance(error, GlobetrainError) else traceback.format_exc()
                results[case.name] = {"case": case.name, "method": case.method, "shaped": case.shaped, "error": detail}
                console.print(f"[red]{case.name} failed:[/] {type(error).__name__}: {error}")
                continue
            _print_case(console, results[case.name])
    report = write_report(out, settings, results, methods, started=started, interrupted=signals.stopped)
    _print_headline(console, report)
    console.print(f"report: {out / 'shaped.json'}, {out / 'shaped.png'}")
    return EXIT_INTERRUPTED if signals.stopped else 0


def round_curve_of(run: Path, console: Console) -> dict[str, Any]:
    """The case evaluated round by round (``round_curve``): its largest falls, and where its file is."""
    try:
        report = evaluate_rounds(run, None, console)
    except Exception as error:  # noqa: BLE001 - the case's own numbers stand without its round curve
        return {"error": f"{type(error).__name__}: {error}"}
    written = write_round_curve(run, report)
    return {key: report[key] for key in ("largest_fall_in_one_round", "largest_fall_within_two_rounds")} | {
        "file": str(written),
        "rounds_lacking_a_device": sum(
            1 for point in report["rounds"] if point["listened_in_those"] or point.get("contributions_left_out")
        ),
    }


def earlier_report(out: Path, console: Console) -> dict[str, Any] | None:
    """OUT/shaped.json of an earlier run, or None after saying why there is none to use."""
    path = out / "shaped.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        console.print(f"[red]no {path}[/]: --reanalyze and --replot redo an earlier run's report; run without them first, with the same --out")
        return None
    except (OSError, json.JSONDecodeError) as error:
        console.print(f"[red]cannot read {path}[/] ({error}): run again without --reanalyze/--replot to write a new one")
        return None
    if not isinstance(report, dict) or not isinstance(report.get("cases"), dict) or "settings" not in report:
        console.print(f"[red]{path} is not a report of this harness[/] (no cases or settings): run again without --reanalyze/--replot")
        return None
    return report


def reanalyze(out: Path, runs: Path, console: Console, report: dict[str, Any]) -> int:
    settings = ShapedSettings.from_dict(report["settings"])
    for name, case in report["cases"].items():
        if "profile" not in case:
            continue  # a case that failed before running: nothing to analyze
        recording = recording_from_report(case, runs)
        fresh = analyze_case(Case(case["method"], case["shaped"]), recording, settings)
        if not recording.counters:
            for kept in ("bytes", "bytes_all_within_tolerance", "bytes_ratio_range"):
                fresh[kept] = case.get(kept)
        if case.get("round_curve") is not None:
            # Evaluated again from the kept round models: the curve's bookkeeping may be newer than the run.
            fresh["round_curve"] = round_curve_of(recording.out, console)
        report["cases"][name] = fresh
    methods = list(report["methods"])
    report.update(headline(report["cases"], methods=methods, byte_tolerance=settings.byte_tolerance))
    report["reanalyzed"] = True
    temporary = out / ".shaped.json.tmp"
    temporary.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(temporary, out / "shaped.json")
    plot_shaped(report["cases"], out / "shaped.png", target_accuracy=settings.target_accuracy)
    _print_headline(console, report)
    return 0


def _print_case(console: Console, case: dict[str, Any]) -> None:
    reached = f"{case['time_to_target_s']:.0f} s" if case.get("time_to_target_s") is not None else "not reached"
    ratios = case.get("bytes_ratio_range")
    console.print(
        f"{case['case']}: target {reached}; final val accuracy {case.get('final_val_accuracy')}; compute fraction "
        f"{case.get('compute_fraction')}; interface/reported bytes {ratios}"
    )


def _print_headline(console: Console, report: dict[str, Any]) -> None:
    for method, numbers in report["methods"].items():
        ratio = numbers["shaped_over_unshaped"]
        console.print(
            f"[bold]{method}[/]: time-to-target shaped {numbers['time_to_target_shaped_s']} s, unshaped "
            f"{numbers['time_to_target_unshaped_s']} s, ratio {ratio if ratio is not None else 'n/a'}"
        )
    console.print(f"targets: {report['targets']}")


if __name__ == "__main__":
    sys.exit(main())

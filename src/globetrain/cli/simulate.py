"""``globetrain simulate``: thousands of IoT devices across the world, in simulated time.

    globetrain simulate --devices 1000 --fleet global-iot --method two-step --out runs/sim
    globetrain simulate sweep --out runs/sweep            # paper-style figures (resumable)
    globetrain simulate calibrate --run runs/demo-a --predict runs/demo-b
    globetrain simulate fleets [--show global-iot]        # the built-in fleets (a template for your own)
    globetrain simulate measure [--model tsm-small]       # re-measure this machine's speed anchor

Every simulated device runs the real sync loop and codec through a simulated exchange;
the math runs on a small proxy model, and every transfer is sized and timed with the
real video model's payloads on each device's own links. See docs/simulator.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from globetrain.errors import ConfigError
from globetrain.sim.config import SimulationConfig

DEFAULTS = SimulationConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a fleet of thousands of IoT devices and compare sync methods on it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser, with_out=True)
    parser.set_defaults(handler=run_one)
    commands = parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")

    sweep = commands.add_parser(
        "sweep", help="time-to-accuracy and scaling efficiency against N, tolerance to bandwidth, latency and churn",
        description="Run a grid of simulations (resumable: finished runs are kept) and draw the paper-style figures.",
    )
    add_run_arguments(sweep, with_out=False, for_sweep=True)
    sweep.add_argument("--out", type=Path, required=True, help="sweep folder (results.jsonl, runs/, figures)")
    sweep.add_argument("--methods", default="dense-sync,fp16-average,dgc,diloco,two-step",
                       help="comma-separated methods (default: all five)")
    sweep.add_argument("--sizes", default="1,4,16,64,256,1024,4096", help="comma-separated N (default 1..4096)")
    sweep.add_argument("--tolerance", default="bandwidth,latency,churn",
                       help="comma-separated tolerance sweeps: bandwidth, latency, churn ('' for none)")
    sweep.add_argument("--tolerance-devices", type=int, default=64, help="N of the tolerance sweeps (default 64)")
    sweep.add_argument("--factors", default="0.1,0.3,1,3,10",
                       help="multipliers of the fleet's bandwidth, latency and churn rate (default 0.1,0.3,1,3,10)")
    sweep.set_defaults(handler=run_sweep)

    calibrate = commands.add_parser(
        "calibrate", help="fit device speed to a real `globetrain demo` run and predict another run's time",
        description="Fit the simulator's compute speed from one demo run's metrics, optionally predict another run.",
    )
    calibrate.add_argument("--run", type=Path, required=True, help="demo run folder (metrics.jsonl, summary.json)")
    calibrate.add_argument("--predict", type=Path, default=None, help="another demo run folder to predict")
    calibrate.add_argument("--out", type=Path, default=None, help="write the calibration JSON here")
    calibrate.add_argument("--cores", type=int, default=None, help="CPU cores the demo ran on (default: this machine's)")
    calibrate.set_defaults(handler=run_calibrate)

    fleets = commands.add_parser("fleets", help="list the built-in fleets, or print one as JSON")
    fleets.add_argument("--show", default=None, metavar="NAME", help="print this fleet as JSON (a template for --fleet FILE)")
    fleets.set_defaults(handler=run_fleets)

    measure = commands.add_parser("measure", help="measure this machine's training speed of a model (the speed anchor)")
    measure.add_argument("--model", default=DEFAULTS.model, help=f"registered video model (default {DEFAULTS.model})")
    measure.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    measure.add_argument("--reference", type=Path, default=None, help="reference file to update (default: the cache)")
    measure.set_defaults(handler=run_measure)


def add_run_arguments(parser: argparse.ArgumentParser, *, with_out: bool, for_sweep: bool = False) -> None:
    if not for_sweep:
        parser.add_argument("--devices", type=int, default=DEFAULTS.devices, help=f"N (default {DEFAULTS.devices})")
        parser.add_argument("--method", default=DEFAULTS.method,
                            help="dense-sync, fp16-average, dgc, diloco or two-step (default two-step)")
    parser.add_argument("--fleet", default=DEFAULTS.fleet,
                        help="global-iot (default), campus-lan, cellular-edge, or a JSON/TOML fleet file")
    if with_out:
        parser.add_argument("--out", type=Path, default=None, help="run folder (summary.json, curve.csv, plots)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--model", default=DEFAULTS.model, help="real model sizing transfers and step times")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="clips per inner step")
    parser.add_argument("--round-period", type=float, default=DEFAULTS.round_period_s, help="two-step round period T (s)")
    parser.add_argument("--inner-steps", type=int, default=DEFAULTS.inner_steps, help="H of diloco")
    parser.add_argument("--group-size", type=int, default=DEFAULTS.group_size, help="devices per two-step leader")
    parser.add_argument("--target", type=float, default=DEFAULTS.target_accuracy, help="target validation accuracy")
    parser.add_argument("--max-hours", type=float, default=DEFAULTS.max_sim_seconds / 3600, help="simulated-time cap (h)")
    parser.add_argument("--max-wall-minutes", type=float, default=DEFAULTS.max_wall_seconds / 60,
                        help="wall-time guard per run (min)")
    parser.add_argument("--memory-budget-gb", type=float, default=DEFAULTS.memory_budget_gb)
    parser.add_argument("--partition", choices=["iid", "by-class"], default=DEFAULTS.partition)
    parser.add_argument("--proxy-hidden", type=int, default=DEFAULTS.proxy.hidden, help="width of the proxy MLP")
    parser.add_argument("--proxy-train-samples", type=int, default=DEFAULTS.proxy.train_samples,
                        help="proxy training samples at least (each device also gets --samples-per-device)")
    parser.add_argument("--samples-per-device", type=int, default=DEFAULTS.samples_per_device,
                        help="proxy training samples of each device's shard at least")
    parser.add_argument("--qos-max-density", type=float, default=DEFAULTS.qos_max_density,
                        help="two-step: richest top-k fraction QoS may pick")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at the target; run to the cap")
    parser.add_argument("--reference", type=Path, default=None, help="machine reference JSON (default: the cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, **overrides: object) -> SimulationConfig:
    values = dict(
        devices=getattr(args, "devices", DEFAULTS.devices),
        fleet=args.fleet,
        method=getattr(args, "method", DEFAULTS.method),
        seed=args.seed,
        model=args.model,
        batch_size=args.batch_size,
        round_period_s=args.round_period,
        inner_steps=args.inner_steps,
        group_size=args.group_size,
        target_accuracy=args.target,
        max_sim_seconds=args.max_hours * 3600,
        max_wall_seconds=args.max_wall_minutes * 60,
        stop_at_target=not args.keep_going,
        memory_budget_gb=args.memory_budget_gb,
        partition=args.partition,
        proxy=DEFAULTS.proxy.replace(hidden=args.proxy_hidden, train_samples=args.proxy_train_samples),
        samples_per_device=args.samples_per_device,
        qos_max_density=args.qos_max_density,
    )
    values.update(overrides)
    return SimulationConfig(**values)  # type: ignore[arg-type]


def run_one(args: argparse.Namespace) -> int:
    from globetrain.sim.fleets import load_fleet
    from globetrain.sim.methods import sim_method

    config = config_from_args(args)
    # Refuse bad names and files before the heavy imports.
    sim_method(config.method)
    load_fleet(config.fleet)
    from globetrain.sim.engine import Simulation
    from globetrain.sim.report import format_summary, write_run

    simulation = Simulation(config, reference_path=args.reference)
    console = Console(stderr=True)
    if args.no_progress:
        result = simulation.run()
    else:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task(f"{config.method} x {config.devices}", total=config.max_sim_seconds, status="")

            def update(now: float, accuracy: float, cap: float) -> None:
                progress.update(bar, completed=now, status=f"{now / 3600:.2f}/{cap / 3600:.1f} h, accuracy {accuracy:.3f}")

            result = simulation.run(on_progress=update)
            progress.update(bar, completed=config.max_sim_seconds)
    if args.out is not None:
        write_run(result, args.out)
        console.print(f"wrote {args.out}/summary.json, curve.csv, devices.csv, accuracy.png")
    Console().print(format_summary(result.summary))
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from globetrain.sim.sweep import Sweep, SweepPlan

    methods = _names(args.methods)
    sizes = [int(value) for value in _names(args.sizes)]
    factors = [float(value) for value in _names(args.factors)]
    tolerance = _names(args.tolerance)
    base = config_from_args(args)
    plan = SweepPlan(methods=methods, sizes=sizes, tolerance=tolerance, tolerance_devices=args.tolerance_devices,
                     factors=factors, base=base)
    Sweep(plan, args.out, reference_path=args.reference).run(progress=not args.no_progress)
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from globetrain.sim.calibration import calibrate_and_predict

    report = calibrate_and_predict(args.run, args.predict, cores=args.cores)
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


def run_fleets(args: argparse.Namespace) -> int:
    from globetrain.sim.fleets import NAMED_FLEETS, load_fleet

    if args.show:
        print(load_fleet(args.show).to_json(), end="")
        return 0
    for name, fleet in NAMED_FLEETS.items():
        print(f"{name:15} {fleet.description}")
    return 0


def run_measure(args: argparse.Namespace) -> int:
    from globetrain.sim.reference import default_reference_path, load_or_measure

    path = args.reference or default_reference_path()
    if path.exists():
        # Re-measure: drop the model's entry so load_or_measure takes a fresh measurement.
        data = json.loads(path.read_text())
        data.get("models", {}).pop(args.model, None)
        path.write_text(json.dumps(data, indent=2) + "\n")
    reference = load_or_measure(args.model, batch_size=args.batch_size, path=path)
    model = reference.model(args.model)
    print(
        f"{args.model}: {model.clips_per_s:.1f} clips/s and {model.gemm_gflops:.1f} GEMM Gflop/s on one thread "
        f"({model.clips_per_gemm_gflop:.3f} clips/s per Gflop/s); written to {path}"
    )
    return 0


def _names(text: str) -> list[str]:
    names = [item.strip() for item in text.split(",") if item.strip()]
    if not names and text.strip():
        raise ConfigError(f"expected a comma-separated list, got {text!r}")
    return names

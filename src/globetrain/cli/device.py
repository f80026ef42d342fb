"""``globetrain device``: join a fleet run and train on this device's videos
(see ``globetrain.fleet.app.device``)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from globetrain.errors import ConfigError
from globetrain.fleet.app.device import DeviceConfig, DeviceRuntime
from globetrain.fleet.app.network_options import add_network_arguments, network_config
from globetrain.fleet.app.overrides import parse_overrides
from globetrain.fleet.app.run_keys import device_run_keys
from globetrain.fleet.app.signals import StopSignals
from globetrain.sync.config import QoSConfig

DEFAULTS_EVERY = DeviceConfig.__dataclass_fields__["checkpoint_every_rounds"].default


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "device",
        help="join a fleet run and train on this device's videos",
        description=(
            "Join a run through any of its peers, check that this device can take part (software version, model, "
            "classes, a unique name), train the run's model on this device's videos with the run's method, keep a "
            "checkpoint of the global model in the run folder, and leave cleanly on Ctrl+C. The run key comes from "
            "GLOBETRAIN_RUN_KEY or --run-key-file, never from the command line."
        ),
    )
    parser.add_argument("--join", nargs="+", default=[], metavar="ADDR",
                        help="multiaddr(s) of running peers, /ip4/HOST/tcp/PORT/p2p/PEER_ID (optional with --resume "
                             "or a peers file: the device rejoins through peers it saw before)")
    parser.add_argument("--join-file", default=None,
                        help="read the join addresses from this file (waits for it to appear; the demo uses it)")
    parser.add_argument("--data", required=True, help="folder of this device's videos")
    parser.add_argument("--name", default="", help="this device's name in the run (default: the host name)")
    parser.add_argument("--shard", default="", metavar="i/N", help="train on part i of N of a dataset shared by N devices")
    parser.add_argument("--run-dir", default="", help="folder for checkpoint, metrics, identity, peers (default runs/device-NAME)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in the run folder")
    parser.add_argument("--run-key-file", default=None, help="file holding the run key (default: $GLOBETRAIN_RUN_KEY)")
    parser.add_argument("--checkpoint-every", type=int, default=DEFAULTS_EVERY, help="rounds between checkpoints (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--cache-dir", default="", help="clip cache folder (default ~/.cache/globetrain/clips)")
    parser.add_argument("--no-cache", action="store_true", help="decode every clip every time")
    parser.add_argument("--join-timeout", type=float, default=30.0, help="seconds to find the run (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no per-round log lines")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="a network or QoS setting of this device, e.g. --set network.connect_timeout_s=10 "
                             "--set qos.min_density=0.001 (sections network, qos)")
    add_network_arguments(parser)
    parser.set_defaults(handler=run)


def wait_for_join_file(path: Path, timeout: float) -> tuple[str, ...]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            addresses = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        except FileNotFoundError:
            addresses = ()
        if addresses:
            return addresses
        time.sleep(0.1)
    raise ConfigError(f"--join-file {path} did not appear within {timeout:.0f}s: is the bootstrap starting?")


def run(args: argparse.Namespace) -> int:
    if not args.quiet:
        logging.getLogger("globetrain.fleet.app").setLevel(logging.INFO)
    config = DeviceConfig(
        data=args.data, name=args.name, shard=args.shard, run_dir=args.run_dir, resume=args.resume,
        checkpoint_every_rounds=args.checkpoint_every, join_timeout_s=args.join_timeout, threads=args.threads,
        cache=not args.no_cache, cache_dir=args.cache_dir,
    )
    keys = device_run_keys(args.run_key_file)
    overrides = parse_overrides(args.set, ("network", "qos"))
    qos = QoSConfig.from_dict(overrides["qos"])
    with StopSignals() as signals:
        join = tuple(args.join)
        if args.join_file:
            with signals.blocking():
                join += wait_for_join_file(Path(args.join_file), args.join_timeout)
        network = network_config(args, initial_peers=join, run_dir=config.resolved_run_dir, overrides=overrides["network"])
        return DeviceRuntime(config, network, keys, signals, qos=qos).run()

"""``globetrain bootstrap``: the first peer of a run. Not a master.

It publishes the run's config (model, method, hyperparameters, data layout, software
version) for devices to pick up, prints the addresses they join with, and then follows
the global model as a listener: it applies every round's aggregate like a device does
(without contributing), keeps serving the run's config and state to joiners, evaluates
the global model on a validation split now and then, and shows the fleet view. It does
not lead rounds by default, and devices keep the run's config and state themselves: if
the bootstrap dies, the devices go on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from globetrain.config import ConfigSection, field, require
from globetrain.fleet.app.checkpoints import CHECKPOINT_NAME, FleetCheckpointer
from globetrain.fleet.app.evaluator import GlobalModelEvaluator, spread_subset
from globetrain.fleet.app.fleet_view import FleetView, take_snapshot
from globetrain.fleet.app.round_metrics import RoundRecorder
from globetrain.fleet.app.round_models import ROUND_MODELS_DIR, RoundModels
from globetrain.fleet.app.signals import StopSignals
from globetrain.fleet.app.spec import IncompatibleRun, VideoRunSpec, label_map
from globetrain.fleet.config import FleetNetworkConfig
from globetrain.fleet.driver import RoundDriver
from globetrain.fleet.keys import RUN_KEY_ENV, RunKeys
from globetrain.fleet.node import FleetNode
from globetrain.fleet.run import RunConfig
from globetrain.report.metrics import MetricsWriter
from globetrain.sync.loop import SyncLoop
from globetrain.video.config import DataConfig
from globetrain.video.dataset import VideoSample, load_dataset
from globetrain.video.frame_source import open_frame_source

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BootstrapConfig(ConfigSection):
    """The bootstrap peer's own settings (the run's settings are published in the run config)."""

    run_dir: str = field("runs/bootstrap", help="folder for the run key (if created), metrics, checkpoint and addresses")
    start_delay_s: float = field(20.0, help="seconds from now until round 0 starts (time for devices to join)")
    eval_data: str = field("", help="dataset whose validation split the global model is evaluated on ('' = none)")
    eval_every_s: float = field(20.0, help="evaluate the global model at most this often (seconds)")
    eval_clips: int = field(0, help="evaluate on at most this many validation clips, spread over the classes (0 = all)")
    address_file: str = field("", help="also write the addresses devices join with to this file ('' = RUN_DIR/addresses)")
    checkpoint_every_rounds: int = field(10, help="rounds between two checkpoints of the global model")
    threads: int = field(1, help="torch threads (evaluation); 1 leaves the cores to devices on the same machine")
    live: bool = field(True, help="a live fleet table when the output is a terminal (else a line per round)")
    cache_dir: str = field("", help="clip cache folder for the evaluation data (default: ~/.cache/globetrain/clips)")
    round_models: bool = field(
        False,
        help=(
            f"keep the global model after every round in RUN_DIR/{ROUND_MODELS_DIR} (4 bytes a parameter each), "
            "for a per-round accuracy curve: python -m globetrain.validation.round_curve"
        ),
    )

    def __post_init__(self) -> None:
        name = "bootstrap"
        require(self.start_delay_s >= 0, name, "start_delay_s", self.start_delay_s, "seconds >= 0")
        require(self.eval_every_s >= 0, name, "eval_every_s", self.eval_every_s, "seconds >= 0")
        require(self.eval_clips >= 0, name, "eval_clips", self.eval_clips, "an integer >= 0")
        require(self.checkpoint_every_rounds >= 1, name, "checkpoint_every_rounds", self.checkpoint_every_rounds, "an integer >= 1")
        require(self.threads >= 1, name, "threads", self.threads, "an integer >= 1")

    @property
    def address_path(self) -> Path:
        return Path(self.address_file) if self.address_file else Path(self.run_dir) / "addresses"


def write_addresses(path: Path, addresses: list[str]) -> None:
    """One multiaddr per line, written atomically (a reader never sees a partial list)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text("\n".join(addresses) + "\n")
    os.replace(temporary, path)


class BootstrapRuntime:
    def __init__(
        self,
        config: BootstrapConfig,
        spec: VideoRunSpec,
        run_config: RunConfig,
        network: FleetNetworkConfig,
        keys: RunKeys,
        signals: StopSignals,
        *,
        console: Console,
        created_key_file: Path | None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.run_config = run_config
        self.network = network
        self.keys = keys
        self.signals = signals
        self.console = console
        self.created_key_file = created_key_file
        self.run_dir = Path(config.run_dir)

    def _validation_samples(self) -> list[VideoSample]:
        dataset = load_dataset(self.config.eval_data)
        mapping = label_map(dataset.class_names, self.spec.class_names, data_root=self.config.eval_data)
        samples = [VideoSample(sample.path, mapping[sample.label]) for sample in dataset.split("val")]
        if not samples:
            raise IncompatibleRun(f"{self.config.eval_data} has no validation split to evaluate on (val.txt or held-out clips)")
        return spread_subset(samples, self.config.eval_clips)

    def run(self) -> int:
        config = self.config
        torch.set_num_threads(config.threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        validation = self._validation_samples() if config.eval_data else None
        with MetricsWriter(self.run_dir / "metrics.jsonl") as metrics:
            with self.signals.blocking():
                node = FleetNode.create_run(self.keys, self.run_config, self.network, name="bootstrap")
            try:
                return self._follow(node, metrics, validation)
            finally:
                node.close()

    def _announce(self, node: FleetNode) -> None:
        write_addresses(self.config.address_path, node.peer.addresses)
        period = self.run_config.fleet.round_period_s
        starts_in = max(self.run_config.start_time - time.time(), 0.0)
        key = f"$(cat {self.created_key_file})" if self.created_key_file else "<the run key you gave this bootstrap>"
        print(f"run {self.keys.run_id_hex} created: {self.spec.model.name}, method {self.run_config.method}, "
              f"round period {period:g} s, round 0 starts in {starts_in:.0f} s", flush=True)
        if self.created_key_file:
            print(f"new run key written to {self.created_key_file} (readable by you only); "
                  f"devices need it as {RUN_KEY_ENV}", flush=True)
        print("devices join with:", flush=True)
        for address in node.peer.addresses:
            print(f"  {RUN_KEY_ENV}={key} globetrain device --join {address} --data DIR --name NAME", flush=True)
        print(f"(addresses also in {self.config.address_path})", flush=True)

    def _follow(self, node: FleetNode, metrics: MetricsWriter, validation: list[VideoSample] | None) -> int:
        config = self.config
        self._announce(node)
        model = self.spec.build_model()
        shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        loop = SyncLoop(model, None, node.make_exchange(shapes), self.run_config.sync, name="bootstrap")
        node.attach(loop)
        metrics.write({"event": "started", "t": time.time(), "peer_id": node.peer.peer_id, "addresses": node.peer.addresses,
                       "pid": os.getpid(), "daemon_pid": node.peer.daemon_pid, "run_id": self.keys.run_id_hex,
                       "start_time": self.run_config.start_time, "parameters": parameters,
                       "run_config": self.run_config.to_dict()})
        evaluator = None
        if validation is not None:
            source = open_frame_source(
                DataConfig(root=config.eval_data, cache_dir=config.cache_dir, max_cached_frames=self.spec.layout.max_cached_frames),
                self.spec.model,
            )
            evaluator = GlobalModelEvaluator(self.spec, validation, source, every_s=config.eval_every_s, writer=metrics)
        checkpointer = FleetCheckpointer(
            self.run_dir / CHECKPOINT_NAME, spec=self.spec, run_config=self.run_config, run_id=self.keys.run_id_hex,
            data_root=config.eval_data or "devices' own data", name="bootstrap",
        )
        round_models = RoundModels(self.run_dir / ROUND_MODELS_DIR) if config.round_models else None
        # The bootstrap writes ``fleet`` lines; its recorder keeps byte counts and its roster record.
        recorder = RoundRecorder(name="bootstrap", node=node, writer=None, trainer=None)
        driver: RoundDriver
        view = FleetView(self.console, title=f"globetrain run {self.keys.run_id_hex[:12]}", live=config.live)

        def on_round(report: dict[str, Any]) -> None:
            recorder.record(report)
            round_index = int(report["round"])
            if evaluator is not None and report["note"] != "catch-up":
                evaluator.maybe_start(loop, round_index=round_index, global_samples=driver.global_samples)
            snapshot = take_snapshot(node, round_index=round_index, global_samples=driver.global_samples,
                                     parameters=parameters, evaluation=evaluator.latest if evaluator else None)
            metrics.write({"event": "fleet", "t": round(time.time(), 3), **dataclasses.asdict(snapshot),
                           "compression": snapshot.compression, "applied": report["applied"]})
            view.update(snapshot)
            if round_models is not None:
                round_models.keep(round_index, loop.global_params)
            if round_index % config.checkpoint_every_rounds == 0:
                checkpointer.save_in_background(checkpointer.snapshot(loop, global_samples=driver.global_samples, local_state=None))

        driver = RoundDriver(node, loop, train_step=None, stop=self.signals.event, on_round=on_round)
        try:
            with view:
                driver.join()
                driver.run()
        finally:
            if evaluator is not None:
                evaluator.wait(timeout=30)
            checkpointer.flush()
            checkpointer.save(checkpointer.snapshot(loop, global_samples=driver.global_samples, local_state=None))
            metrics.write({"event": "finished", "t": time.time(), "round": loop.round, "status": node.status(),
                           "checkpoint_round": checkpointer.saved_round})
        return self.signals.exit_code()


"""``globetrain device``: one device of a fleet, training the run's model on its own videos.

What ``DeviceRuntime.run`` does, top to bottom:

1. read the device's dataset (a clear error when the folder holds no videos);
2. join the run through ``--join`` addresses or the peers remembered in its run folder,
   and read the run's config (a wrong run key finds no run: a clear error);
3. refuse what cannot work: another globetrain version, a model this globetrain builds
   differently, classes the run does not train, a name another device already uses;
4. build the run's model (the same initial weights everywhere), its data (its own
   videos, or shard i of N of a shared dataset, by the run's layout), the inner
   optimizer and the sync loop of the run's method, with adaptive QoS;
5. get in step: wait for round 0, or download the fleet's state and catch up; with
   ``--resume``, start from its own checkpoint and catch up from there;
6. train round after round (``RoundDriver``), writing one metrics line per round and a
   checkpoint of the global model every few rounds, until Ctrl+C or SIGTERM;
7. save a last checkpoint, leave the run (finishing a round it leads), exit.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import zlib
from pathlib import Path
from typing import Any

import torch

from globetrain.config import ConfigSection, field, require
from globetrain.errors import ConfigError
from globetrain.fleet.app.checkpoints import CHECKPOINT_NAME, FleetCheckpointer, load_resume_checkpoint
from globetrain.fleet.app.local_training import LocalTrainer
from globetrain.fleet.app.names import refuse_taken_name, yield_shared_name
from globetrain.fleet.app.qos import RoundPeriodSchedule
from globetrain.fleet.app.round_metrics import RoundRecorder
from globetrain.fleet.app.signals import StopSignals
from globetrain.fleet.app.spec import VideoRunSpec, check_model, check_software, label_map
from globetrain.fleet.config import FleetNetworkConfig
from globetrain.fleet.driver import RoundDriver
from globetrain.fleet.keys import RunKeys
from globetrain.fleet.node import FleetNode
from globetrain.report.metrics import MetricsWriter
from globetrain.sync.config import QoSConfig
from globetrain.sync.loop import SyncLoop
from globetrain.sync.methods import get_method
from globetrain.sync.schedule import make_payload_estimator
from globetrain.video.config import DataConfig
from globetrain.video.dataset import DatasetError, VideoDataset, VideoSample, load_dataset
from globetrain.video.frame_source import open_frame_source
from globetrain.video.loader import ClipLoader
from globetrain.video.sharding import shard

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int] | None:
    """``"i/N"`` -> (i, N); ``""`` -> None (the device trains on all of its data)."""
    if not text:
        return None
    index, slash, count = text.partition("/")
    try:
        parsed = (int(index), int(count))
    except ValueError:
        parsed = (-1, 0)
    if not slash or parsed[1] < 1 or not 0 <= parsed[0] < parsed[1]:
        raise ConfigError(f"--shard {text!r} is invalid: expected i/N with 0 <= i < N, e.g. 0/4")
    return parsed


@dataclasses.dataclass(frozen=True)
class DeviceConfig(ConfigSection):
    """One device's own settings (everything else comes from the run)."""

    data: str = field(help="folder of this device's videos (folder-per-class or split files)")
    name: str = field("", help="this device's name in the run (default: the host name); unique per run")
    shard: str = field("", help="i/N: train on part i of N of a dataset shared by N devices, split by the run's layout")
    run_dir: str = field("", help="folder for checkpoint, metrics, identity and peers file (default: runs/device-NAME)")
    resume: bool = field(False, help="continue from the checkpoint in the run folder, then catch up with the fleet")
    checkpoint_every_rounds: int = field(5, help="rounds between two checkpoints (one is always written at exit)")
    join_timeout_s: float = field(30.0, help="longest wait for the run's config when joining")
    threads: int = field(1, help="torch threads (1: devices sharing a machine do not oversubscribe its cores)")
    prefetch_batches: int = field(2, help="batches prepared ahead in the background")
    cache: bool = field(True, help="decode each video once into the clip cache")
    cache_dir: str = field("", help="clip cache folder (default: ~/.cache/globetrain/clips)")

    def __post_init__(self) -> None:
        name = "device"
        require(isinstance(self.data, str) and bool(self.data), name, "data", self.data, "a folder of videos (--data)")
        require(len(self.resolved_name) <= 64, name, "name", self.name, "at most 64 characters")
        parse_shard(self.shard)
        require(self.checkpoint_every_rounds >= 1, name, "checkpoint_every_rounds", self.checkpoint_every_rounds, "an integer >= 1")
        require(self.join_timeout_s > 0, name, "join_timeout_s", self.join_timeout_s, "a number > 0")
        require(self.threads >= 1, name, "threads", self.threads, "an integer >= 1")

    @property
    def resolved_name(self) -> str:
        return self.name or socket.gethostname()

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / f"device-{self.resolved_name}"


class DeviceRuntime:
    """Runs one device until stopped; ``run`` returns the exit code."""

    def __init__(
        self,
        config: DeviceConfig,
        network: FleetNetworkConfig,
        keys: RunKeys,
        signals: StopSignals,
        *,
        qos: QoSConfig | None = None,
    ) -> None:
        self.config = config
        self.qos = qos or QoSConfig()
        self.network = network
        self.keys = keys
        self.signals = signals
        self.name = config.resolved_name
        self.run_dir = config.resolved_run_dir

    def run(self) -> int:
        config = self.config
        torch.set_num_threads(config.threads)
        dataset = load_dataset(config.data)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with MetricsWriter(self.run_dir / "metrics.jsonl") as metrics:
            with self.signals.blocking():
                node = FleetNode.join(self.keys, self.network, name=self.name, timeout=config.join_timeout_s)
            try:
                return self._take_part(node, dataset, metrics)
            finally:
                node.close()

    # -- before taking part ---------------------------------------------------------------------

    def _training_samples(self, dataset: VideoDataset, spec: VideoRunSpec) -> list[VideoSample]:
        mapping = label_map(dataset.class_names, spec.class_names, data_root=self.config.data)
        samples = [VideoSample(sample.path, mapping[sample.label]) for sample in dataset.split("train")]
        shard_of = parse_shard(self.config.shard)
        if shard_of is not None:
            index, count = shard_of
            layout = spec.layout
            samples = shard(
                samples, index, count, layout.sharding, num_classes=len(spec.class_names), seed=layout.shard_seed,
                classes_per_device=layout.classes_per_device or None,
            )
        if not samples:
            where = f"shard {self.config.shard} of " if shard_of else ""
            raise DatasetError(
                f"{where}{self.config.data} holds no training videos of the run's classes {list(spec.class_names)}: "
                "check --data (and --shard)"
            )
        return samples

    def _check_run(self, node: FleetNode) -> tuple[VideoRunSpec, torch.nn.Module]:
        run_config = node.run_config
        check_software(run_config)
        spec = VideoRunSpec.from_run_config(run_config)
        model = spec.build_model()
        check_model(spec, run_config, model)
        if run_config.model.get("torch_version") != str(torch.__version__):
            log.warning(
                "[%s] the run's bootstrap uses torch %s, this device %s: global models stay bit-identical only with "
                "the same torch build everywhere (a difference shows as 'diverged' rounds and state downloads)",
                self.name, run_config.model.get("torch_version"), torch.__version__,
            )
        return spec, model

    # -- taking part ------------------------------------------------------------------------------

    def _take_part(self, node: FleetNode, dataset: VideoDataset, metrics: MetricsWriter) -> int:
        config = self.config
        run_config = node.run_config
        spec, model = self._check_run(node)
        samples = self._training_samples(dataset, spec)
        with self.signals.blocking():
            refuse_taken_name(node, timeout=node.network.request_timeout_s + 5)

        shard_of = parse_shard(config.shard)
        device_index = shard_of[0] if shard_of else zlib.crc32(self.name.encode()) & 0xFFFF
        source = open_frame_source(
            DataConfig(root=config.data, cache=config.cache, cache_dir=config.cache_dir,
                       max_cached_frames=spec.layout.max_cached_frames),
            spec.model,
        )
        loader = ClipLoader(
            samples, source, frames=spec.model.frames, batch_size=spec.training.batch_size, training=True,
            seed=zlib.crc32(f"{spec.training.seed}/{self.name}".encode()), prefetch_batches=config.prefetch_batches,
        )
        trainer = LocalTrainer(model, loader.endless(), spec.training, global_samples=lambda: driver.global_samples,
                               local_classes={sample.label for sample in samples})

        method = get_method(run_config.method)
        shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
        schedule = None
        if method.adaptive:
            schedule = RoundPeriodSchedule.for_run(run_config.sync, run_config.fleet, make_payload_estimator(shapes), self.qos)
        loop = SyncLoop(model, trainer.optimizer, node.make_exchange(shapes), run_config.sync, schedule=schedule,
                        name=self.name, device_index=device_index)
        checkpointer = FleetCheckpointer(
            self.run_dir / CHECKPOINT_NAME, spec=spec, run_config=run_config, run_id=self.keys.run_id_hex,
            data_root=config.data, name=self.name,
        )
        resumed = self._resume(loop, trainer, run_config) if config.resume else None
        node.attach(loop)
        yield_shared_name(node, timeout=node.network.request_timeout_s + 5)

        recorder = RoundRecorder(name=self.name, node=node, writer=metrics, trainer=trainer)
        driver: RoundDriver

        def on_round(report: dict[str, Any]) -> None:
            line = recorder.record(report)
            if schedule is not None:
                schedule.note_round_steps(line["inner_steps"])
            if line["round"] % config.checkpoint_every_rounds == 0 and line["note"] != "catch-up":
                checkpointer.save_in_background(
                    checkpointer.snapshot(loop, global_samples=driver.global_samples, local_state=trainer.state_dict(),
                                          buffers_from=model)
                )

        driver = RoundDriver(
            node, loop, train_step=trainer.step, stop=self.signals.event, on_round=on_round,
            max_steps_per_round=None if method.adaptive else run_config.sync.inner_steps,
            submit_lead=None if schedule is None else (lambda: schedule.submit_lead_s),
        )
        if resumed is not None:
            driver.global_samples = resumed["global_samples"]
        metrics.write({
            "event": "joined", "t": time.time(), "device": self.name, "peer_id": node.peer.peer_id,
            "addresses": node.peer.addresses, "daemon_pid": node.peer.daemon_pid, "pid": os.getpid(),
            "run_id": self.keys.run_id_hex, "clips": len(samples), "run_config": run_config.to_dict(),
            "resumed_round": None if resumed is None else resumed["round"],
        })
        with self.signals.blocking():
            download = self._get_in_step(driver, resumed)
        if download is not None:
            metrics.write({"event": "state-download", "t": time.time(), "device": self.name, **dataclasses.asdict(download)})
        recorder.start(time.time())
        trainer.take_counters()  # steps before this point (none) are not a round's work
        log.info("[%s round %d] training on %d clips", self.name, loop.round, len(samples))

        try:
            driver.run()
        finally:
            checkpointer.flush()
            checkpointer.save(
                checkpointer.snapshot(loop, global_samples=driver.global_samples, local_state=trainer.state_dict(),
                                      buffers_from=model)
            )
            metrics.write({
                "event": "finished", "t": time.time(), "device": self.name, "round": loop.round,
                "checkpoint_round": checkpointer.saved_round, "checkpoint_failures": checkpointer.failures,
                "resyncs": driver.resyncs, "loading": source.stats.to_dict(),
            })
        return self.signals.exit_code()

    def _resume(self, loop: SyncLoop, trainer: LocalTrainer, run_config: Any) -> dict[str, Any] | None:
        path = self.run_dir / CHECKPOINT_NAME
        if not path.exists():
            log.warning("[%s] --resume: no checkpoint in %s yet; joining the run from its current state", self.name, self.run_dir)
            return None
        checkpoint = load_resume_checkpoint(path, run_id=self.keys.run_id_hex, run_config=run_config)
        loop.load_state_dict(checkpoint.extra["sync_state"])
        local = checkpoint.extra.get("local")
        if local:
            trainer.load_state_dict(local)
        resumed_round = int(checkpoint.extra["fleet"]["round"])
        log.warning("[%s round %d] resumed from %s", self.name, resumed_round, path)
        return {"round": resumed_round, "global_samples": int(checkpoint.extra.get("global_samples", 0))}

    def _get_in_step(self, driver: RoundDriver, resumed: dict[str, Any] | None) -> Any:
        """Round 0, a state download, or (resuming) catching up from the checkpoint's round."""
        clock = driver.clock
        current = clock.round_at(time.time())
        if resumed is None or current <= 0:
            return driver.join()
        behind = current - driver.loop.round
        kept = driver.node.run_config.fleet.aggregates_kept
        if 0 <= behind < kept:
            # The rounds since the checkpoint are still in the fleet's archives: replay them.
            driver.node.publish_state(driver.global_samples)
            driver.catch_up()
            return None
        log.warning(
            "[%s] the checkpoint's round %d is %d rounds behind the fleet (archives keep %d): downloading the state",
            self.name, driver.loop.round, behind, kept,
        )
        return driver.resync()

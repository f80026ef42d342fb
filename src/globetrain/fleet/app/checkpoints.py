"""Checkpoints of a fleet peer: the GLOBAL model and the sync state, in its run folder.

The file is the format every part of globetrain reads (``globetrain.checkpoint``):
``globetrain classify --checkpoint`` takes it as it takes one of ``globetrain train``.
Its config is the single-machine ``VideoConfig`` equivalent of the run (``classify``
rebuilds the model from it); ``extra`` holds what resuming needs:

- ``fleet``: run id, run config digest and the whole run config, the device's name;
- ``sync_state``: ``SyncLoop.state_dict`` with ``round`` = the first round not yet
  applied to the global model, so a resumed device listens from there and applies
  exactly the aggregates the others applied (rounds in flight at save time included);
- ``local``: the inner optimizer and the device's own step count (its warm-up);
- ``global_samples``: the fleet's sample count at that round.

Writes are atomic (a SIGKILL mid-write leaves the previous file) and run on a
background thread from tensors cloned on the training thread, so a boundary does not
wait for the disk. A full or unwritable folder is warned about (once per reason) and
training goes on.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from torch import nn

from globetrain.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from globetrain.fleet.app.spec import IncompatibleRun, VideoRunSpec
from globetrain.fleet.run import RunConfig
from globetrain.sync.loop import SyncLoop

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


class FleetCheckpointer:
    """Writes ``checkpoint.pt`` of one peer; at most one write in flight, the newest wins."""

    def __init__(
        self,
        path: Path,
        *,
        spec: VideoRunSpec,
        run_config: RunConfig,
        run_id: str,
        data_root: str,
        name: str,
    ) -> None:
        self.path = Path(path)
        self.spec = spec
        self.run_config = run_config
        self.run_id = run_id
        self.config = spec.video_config(data_root).to_dict()
        self.name = name
        self.template: nn.Module = spec.build_model()
        self.saved_round: int | None = None
        self.failures = 0
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._pending: Checkpoint | None = None
        self._writer: threading.Thread | None = None
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        # A process killed mid-write leaves its temporary file; the checkpoint itself is intact.
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass

    def snapshot(
        self,
        loop: SyncLoop,
        *,
        global_samples: int,
        local_state: dict[str, Any] | None,
        buffers_from: nn.Module | None = None,
    ) -> Checkpoint:
        """A checkpoint of ``loop``'s global model and state (call on the training thread).

        ``buffers_from``: the training model, whose buffers (batch-norm statistics, which
        the fleet does not average) go with the global weights.
        """
        next_round = int(loop.round) - len(loop.in_flight)
        loop.load_global_into(self.template)
        if buffers_from is not None:
            for target, source in zip(self.template.buffers(), buffers_from.buffers()):
                target.copy_(source)
        sync_state = loop.state_dict()
        sync_state["round"] = next_round
        return Checkpoint(
            model_name=self.spec.model.name,
            class_names=self.spec.class_names,
            model_state={key: value.detach().clone() for key, value in self.template.state_dict().items()},
            config=self.config,
            extra={
                "fleet": {
                    "run_id": self.run_id,
                    "config_digest": self.run_config.digest,
                    "run_config": self.run_config.to_dict(),
                    "device": self.name,
                    "round": next_round,
                },
                "sync_state": sync_state,
                "local": local_state,
                "global_samples": int(global_samples),
            },
        )

    def save(self, checkpoint: Checkpoint) -> bool:
        """Write now; False (after a warning) if the folder cannot take it."""
        try:
            save_checkpoint(self.path, checkpoint)
        except CheckpointError as error:
            self.failures += 1
            reason = str(error)
            if reason not in self._warned:
                self._warned.add(reason)
                log.warning("[%s] %s; training goes on (free space or fix the run folder)", self.name, reason)
            return False
        self.saved_round = int(checkpoint.extra["fleet"]["round"])
        return True

    def save_in_background(self, checkpoint: Checkpoint) -> None:
        """Queue ``checkpoint`` for the writer thread; a newer one replaces one not yet started."""
        with self._lock:
            self._pending = checkpoint
            if self._writer is not None and self._writer.is_alive():
                return
            self._writer = threading.Thread(target=self._write_pending, name="checkpoint-writer", daemon=True)
            self._writer.start()

    def _write_pending(self) -> None:
        while True:
            with self._lock:
                checkpoint, self._pending = self._pending, None
                if checkpoint is None:
                    return
            self.save(checkpoint)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for a background write to finish (before the final, synchronous save)."""
        writer = self._writer
        if writer is not None:
            writer.join(timeout)


def load_resume_checkpoint(path: Path, *, run_id: str, run_config: RunConfig) -> Checkpoint:
    """The checkpoint to resume from; refuses one of another run or run config."""
    checkpoint = load_checkpoint(path)
    fleet = checkpoint.extra.get("fleet")
    if not isinstance(fleet, dict) or "sync_state" not in checkpoint.extra:
        raise IncompatibleRun(
            f"{path} is not a fleet checkpoint (it has no sync state; was it written by `globetrain train`?): "
            "start the device without --resume, or point --run-dir at the device's own folder"
        )
    if fleet.get("run_id") != run_id:
        raise IncompatibleRun(
            f"{path} belongs to another run (run id {fleet.get('run_id')}, this run is {run_id}): "
            "start without --resume to join this run from its current state, or use another --run-dir"
        )
    if fleet.get("config_digest") != run_config.digest:
        raise IncompatibleRun(
            f"{path} was written under another config of this run (the bootstrap restarted with new settings): "
            "start without --resume to join the run from its current state"
        )
    return checkpoint

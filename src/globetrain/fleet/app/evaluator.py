"""The bootstrap's evaluation of the global model on a validation split, kept cheap.

The bootstrap shares the machine's cores with the devices in a local fleet, so an
evaluation runs on one background thread (the round loop never waits for it), at most
every ``every_s`` seconds, optionally on a fixed, class-balanced subset of the split;
the global model is copied into the evaluation model on the round loop's thread first,
so the copy is one consistent global model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from globetrain.fleet.app.spec import VideoRunSpec
from globetrain.report.metrics import MetricsWriter, finite_or_none
from globetrain.sync.loop import SyncLoop
from globetrain.video.dataset import VideoSample
from globetrain.video.evaluation import evaluate
from globetrain.video.frame_source import FrameSource
from globetrain.video.loader import ClipLoader

log = logging.getLogger(__name__)


def spread_subset(samples: Sequence[VideoSample], limit: int) -> list[VideoSample]:
    """At most ``limit`` samples taken evenly across the (class-sorted) split; all if limit is 0."""
    if limit <= 0 or limit >= len(samples):
        return list(samples)
    stride = len(samples) / limit
    return [samples[int(index * stride)] for index in range(limit)]


class GlobalModelEvaluator:
    """Evaluates the global model now and then; writes ``event: evaluation`` metrics lines."""

    def __init__(
        self,
        spec: VideoRunSpec,
        samples: Sequence[VideoSample],
        source: FrameSource,
        *,
        every_s: float,
        writer: MetricsWriter,
        batch_size: int = 32,
    ) -> None:
        self.model = spec.build_model()
        self.loader = ClipLoader(samples, source, frames=spec.model.frames, batch_size=batch_size,
                                 training=False, prefetch_batches=0)
        self.every_s = every_s
        self.writer = writer
        self.clips = len(samples)
        self.latest: dict[str, Any] | None = None
        self._last_started = -float("inf")
        self._worker: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def maybe_start(self, loop: SyncLoop, *, round_index: int, global_samples: int, force: bool = False) -> bool:
        """Start an evaluation of ``loop``'s global model if one is due and none is running."""
        if self.busy or (not force and time.monotonic() - self._last_started < self.every_s):
            return False
        self._last_started = time.monotonic()
        loop.load_global_into(self.model)
        context = {"round": round_index, "global_samples": global_samples}
        self._worker = threading.Thread(target=self._evaluate, args=(context,), name="evaluation", daemon=True)
        self._worker.start()
        return True

    def _evaluate(self, context: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            result = evaluate(self.model, self.loader)
        except Exception as error:  # noqa: BLE001 - a failed evaluation must not end the bootstrap
            log.warning("[bootstrap] evaluation of the global model failed: %s: %s", type(error).__name__, error)
            return
        record = {
            "event": "evaluation",
            "t": round(time.time(), 3),
            "round": context["round"],
            "global_samples": context["global_samples"],
            "val_accuracy": finite_or_none(result.accuracy),
            "val_loss": finite_or_none(result.loss),
            "clips": result.clips,
            "seconds": round(time.perf_counter() - started, 3),
        }
        self.latest = record
        self.writer.write(record)
        log.info("[bootstrap round %d] validation accuracy %.1f%% on %d clips", context["round"], 100 * result.accuracy, result.clips)

    def wait(self, timeout: float) -> None:
        if self._worker is not None:
            self._worker.join(timeout)

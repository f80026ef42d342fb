"""The demo's presets: the main job's recipe, and the tiny debug fleet that is also a test.

A preset fixes the dataset the demo generates, the run's settings (published by the
bootstrap: round period, compression, local training, model, data layout), the
bootstrap's evaluation cadence, and the default target and time budget. Flags of
``globetrain demo`` override the target, budget, method and seed; any run setting can
still be changed with ``--set``.

- ``default``: ``globetrain demo``: TSM-small (the default model) on the synthetic
  actions, non-IID: with N devices each sees a window of classes (4 of 8 with the
  default 4 devices: at most 50% alone, so no device can pass the target by itself);
- ``debug``: a handful of clips, a tiny model and 2-second rounds: a 3-device fleet
  that runs to completion in well under a minute (``tests/integration/demo``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from globetrain.fleet.app.demo_data import SynthSettings
from globetrain.video.sharding import default_classes_per_device


@dataclasses.dataclass(frozen=True)
class DemoPreset:
    name: str
    synth: SynthSettings
    run: dict[str, dict[str, Any]]
    """``--set``-style overrides of the bootstrap's run settings, by section."""
    target_accuracy: float
    time_budget_s: float
    start_delay_s: float
    """Seconds from the bootstrap's start to round 0 (devices start meanwhile)."""
    eval_every_s: float
    eval_clips: int
    """Validation clips the bootstrap evaluates now and then (0 = all); the final number uses all."""
    classes_per_device: int
    """Classes each device sees (non-IID); 0 = the fewest that still cover every class."""
    reference_devices: int = 4
    """The fleet size the recipe is tuned for (see ``scale``)."""
    max_time_budget_s: float = 480.0

    def scale(self, devices: int) -> float:
        """How much longer rounds and the budget get for a larger local fleet.

        All devices of a local fleet share this machine's cores: with twice the devices
        each computes half as fast, so the same round period would halve H per round while
        the bytes per round stay (the compression ratio would halve) and the fleet would
        need twice the time for the same progress. Rounds, the time budget and the
        learning-rate decay (in global samples) therefore grow with devices / reference.
        """
        return max(1.0, devices / self.reference_devices)

    def time_budget_for(self, devices: int) -> float:
        return min(self.time_budget_s * self.scale(devices), max(self.time_budget_s, self.max_time_budget_s))

    def run_overrides(self, devices: int) -> dict[str, dict[str, Any]]:
        sections = {name: dict(values) for name, values in self.run.items()}
        scale = self.scale(devices)
        fleet = sections.setdefault("fleet", {})
        if "round_period_s" in fleet:
            fleet["round_period_s"] = round(fleet["round_period_s"] * scale, 3)
        training = sections.setdefault("training", {})
        if training.get("decay_samples"):
            training["decay_samples"] = int(training["decay_samples"] * scale)
        data = sections.setdefault("data", {})
        data.setdefault("sharding", "by-class")
        if self.classes_per_device:
            # Never fewer than every class needs to be seen by some device (one device: all).
            fewest = default_classes_per_device(devices, len(self.synth.classes))
            data.setdefault("classes_per_device", max(min(self.classes_per_device, len(self.synth.classes)), fewest))
        return sections


DEFAULT = DemoPreset(
    name="default",
    synth=SynthSettings(clips_per_class=200, seed=0, frames=16, size=32),
    run={
        # Rounds of 4 s: ~40 inner steps of 4 clips per device on a shared 2-core machine,
        # so an exchange of tens of KB hides behind compute and a dense all-reduce of the
        # same steps would move over 1000x more; short enough that non-IID devices do not
        # drift apart (measured: 5 s rounds stopped at 75-80%, 3 s rounds cost 1.4x bytes).
        "fleet": {"round_period_s": 4.0},
        # 3% of the values at 8 bits: at 1% the error feedback holds back too much of the
        # update for a run of ~50 rounds (measured: stuck at chance for 400 steps).
        # The outer step is sqrt(K) x the average of K devices: small-batch Adam moves each
        # device about as far per round as one device alone would, so a plain average gave
        # 4 non-IID devices less than one device alone on every class (measured, 30k clips:
        # val 0.881 vs 0.926; 0.978 with the sqrt(K) step; benchmarks/outer_lr_scaling.py).
        # Capped at 2 (sync.outer_lr_max_scale): sqrt(8) swung 8 devices by up to 57 points.
        "sync": {"density": 0.03, "bits": 8, "outer_lr_scaling": "sqrt-contributors"},
        # Small batches: a device makes 4x the steps of batch 16 for the same compute, and
        # the average over devices brings the noise back down. The learning rate follows
        # the fleet's sample count: cosine decay over the ~45k clips a 220 s budget trains
        # (~210 clips/s for 4 devices on this machine; measured: decaying over 30k left the
        # last 80 s at the floor, plateaued at 86-87%).
        # Plain cross-entropy, not training.restricted_softmax: with it one device skipping
        # rounds no longer tilts the global model (plain lost 29 points within two rounds of
        # one absent device in the lab), but the middle of training is slower (easy classes
        # outscore the rest until every device's classes are told apart: 8 devices in the lab
        # reached 80 % after 284-300 s vs 172-253 s plain; 93 % with 4 devices after 198 s
        # vs 166 s; docs/validation.md, runs P-R).
        "training": {"optimizer": "adamw", "learning_rate": 4e-3, "batch_size": 4, "warmup_steps": 50,
                     "decay_samples": 45000, "min_lr_fraction": 0.05},
    },
    # Single-machine training on the same clips (`globetrain train`) reaches 95% validation:
    # the fleet stops once it is within 2 points of it.
    target_accuracy=0.93,
    time_budget_s=220.0,
    start_delay_s=15.0,
    eval_every_s=15.0,
    eval_clips=0,
    classes_per_device=4,
)

DEBUG = DemoPreset(
    name="debug",
    synth=SynthSettings(clips_per_class=6, seed=0, frames=8, size=32),
    run={
        "fleet": {"round_period_s": 2.0},
        "sync": {"density": 0.05, "bits": 8, "outer_lr_scaling": "sqrt-contributors"},
        "training": {"batch_size": 4, "warmup_steps": 2},
        "model": {"width": 8, "frames": 4},
    },
    target_accuracy=0.90,
    time_budget_s=12.0,
    start_delay_s=8.0,
    eval_every_s=2.0,
    eval_clips=0,
    classes_per_device=0,
)

PRESETS = {preset.name: preset for preset in (DEFAULT, DEBUG)}

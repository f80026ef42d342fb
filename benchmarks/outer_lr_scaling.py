"""Why the demo scales its outer step by sqrt(K): K devices in one process, the demo's recipe.

Runs the demo's fleet algorithm without a network: K devices (default 4), each with the
demo's model, local training (AdamW, batch 4, ~40 inner steps a round) and non-IID shard
of the demo's synthetic videos, synchronised by the real ``SyncLoop`` (top-k 3 %, 8 bits,
error feedback, one round of delay) through an ``InProcessGroup``. Variants, each for the
same number of clips of the whole fleet, every one measured in this run:

- ``none``: the global model moves by the sample-weighted average of the K updates;
- ``sqrt-contributors``: by sqrt(K) x that average, uncapped;
- ``sqrt-contributors max 2``: by min(sqrt(K), 2) x that average (``sync.outer_lr_scaling``
  with ``sync.outer_lr_max_scale``, the demo's);
- ``sqrt-contributors max 2 re-encoded``: the same, with the average re-encoded
  as the fleet's leader does (``ReencodingGroup``);
- ``one device alone``: one device on every class for 1/K of the clips, i.e. the same
  inner steps as each fleet device makes.

Small-batch Adam moves a device about the same distance per step whatever the others do,
so averaging K such rounds keeps at best one device's progress (with less noise) instead
of adding up K devices' work; on non-IID shards it keeps less. The average of K updates
has 1/sqrt(K) of one update's noise, so a sqrt(K) step keeps one device's noise and
covers sqrt(K) times the ground.

Measured (3 seeds, 30,000 clips, benchmarks/results/outer_lr_scaling.json): validation
0.881 with the plain average, 0.926 for one device alone, 0.978 with the sqrt(K) step,
which alone passed 93 % in every seed.

With 8 devices (``--devices 8 --clips 40000 --seeds 0 --eval-every 2000 --out
benchmarks/results/outer_lr_scaling_devices8``, one seed): val 0.871 with the sqrt(K)
step, 0.892 with the plain average, 0.846 alone. The sqrt(8) step learns sooner (60 %
after 12k clips, plain: 16k) but swings: 0.60 at 16k clips, 0.29 at 19k, 0.74 at 23k,
0.60 at 24k, where the plain average rises steadily. A step of sqrt(K) assumes the K
updates' disagreement is noise; with 8 non-IID shards part of it is not.

Capped at 2 (``--devices 8 --clips 40000 --seeds 0,1 --eval-every 2000 --variants
'none,sqrt-contributors,sqrt-contributors max 2'``, benchmarks/results/outer_lr_scaling_devices8_cap2,
the seed-0 curves of the first two are the ones above, bit for bit): validation 0.917 mean
(0.912, 0.921) vs 0.894 uncapped and 0.871 plain; the largest fall between two
evaluations 0.07-0.08 vs 0.30-0.57 uncapped (0.03-0.07 plain); 60 % after 14k and 13k
clips (uncapped 23k and 13k, plain 17k and 13k). At 4 devices sqrt(4) = 2: the cap
changes nothing there.

With the fleet leader's re-encoding of the average (``--devices 8 --clips 40000 --seeds 0,1
--eval-every 2000 --variants 'sqrt-contributors max 2,sqrt-contributors max 2 re-encoded'``,
benchmarks/results/outer_lr_scaling_devices8_reencoded): validation 0.892 mean (0.896,
0.887) vs 0.917 without it; the largest falls between evaluations 0.03 and 0.10.

With a device that skips rounds (``--rare-every 4``: device 0 contributes every 4th round
and listens in between, as the fleet's QoS makes a device on a slow or far link do), 8
devices, 32,000 clips, one evaluation a round (``--devices 8 --clips 32000 --seeds 0,1
--eval-every 1280 --target 0.8 --rare-every 4 --variants 'sqrt-contributors max
2,sqrt-contributors max 2 restricted softmax'``, benchmarks/results/outer_lr_scaling_rare_device/):
plain cross-entropy falls 0.15 and 0.24 between two rounds (0.72 -> 0.47 within two) while
device 0 is away and recovers when it returns; with the restricted softmax
(``training.restricted_softmax``: each device's loss covers only its own classes) the
largest falls are 0.02 and 0.04, 80 % after 24.3k and 20.5k clips (plain: 25.6k, 28.2k),
final validation 0.900 / 0.871 (plain 0.867 / 0.908). With every device in every round
(``--rare-every 1 --seeds 0``, ``.../every_round/``): largest fall 0.05 both, 80 % after
28.2k clips restricted vs 25.6k plain (a plateau at 0.52-0.57 in between), final 0.871 vs
0.829. FedRS's softer variant, the missing classes' logits scaled by 0.5 instead of left
out, stalled at 0.62-0.70 in the seed-0 run (final 0.625; AdamW takes full-size steps on
the scaled logits all the same): not offered.

Results are counted in clips, not seconds (runs go two at a time in separate processes).
Writes benchmarks/results/outer_lr_scaling.json and .png.

    .venv/bin/python benchmarks/outer_lr_scaling.py [--devices 4] [--clips 30000] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from globetrain.fleet.aggregate import returned_values  # noqa: E402
from globetrain.fleet.app.demo_data import data_cache_root, ensure_dataset  # noqa: E402
from globetrain.fleet.app.demo_presets import DEFAULT  # noqa: E402
from globetrain.fleet.app.local_training import LocalTrainer  # noqa: E402
from globetrain.fleet.app.spec import DataLayoutConfig, LocalTrainingConfig, VideoRunSpec  # noqa: E402
from globetrain.fleet.config import FleetConfig  # noqa: E402
from globetrain.sim.aggregation import aggregate  # noqa: E402
from globetrain.sync import InProcessGroup, SyncConfig, SyncLoop  # noqa: E402
from globetrain.video.config import DataConfig, ModelConfig  # noqa: E402
from globetrain.video.dataset import load_dataset  # noqa: E402
from globetrain.video.evaluation import evaluate  # noqa: E402
from globetrain.video.frame_source import open_frame_source  # noqa: E402
from globetrain.video.loader import ClipLoader  # noqa: E402
from globetrain.video.sharding import shard  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ALONE = "one device alone"
CAPPED = "sqrt-contributors max 2"
REENCODED = "sqrt-contributors max 2 re-encoded"
RESTRICTED = "sqrt-contributors max 2 restricted softmax"
VARIANTS = {
    # name: (sync.outer_lr_scaling, sync.outer_lr_max_scale, training.restricted_softmax)
    "none": ("none", 1.0, False),
    "sqrt-contributors": ("sqrt-contributors", float("inf"), False),
    CAPPED: ("sqrt-contributors", 2.0, False),
    REENCODED: ("sqrt-contributors", 2.0, False),
    RESTRICTED: ("sqrt-contributors", 2.0, True),
    ALONE: ("none", 1.0, False),
}


class ReencodingGroup(InProcessGroup):
    """The fleet leader's aggregation in one process (``sim.aggregation.aggregate``).

    The average is re-encoded at ``aggregate_density_factor`` x the densest contribution's
    density and the run's bits; what it does not carry of each contribution goes back to
    that device's error feedback, as ``ExchangeOutcome.returned`` does in the fleet.
    """

    def __init__(self, size: int, *, bits: int) -> None:
        super().__init__(size)
        self.bits = bits

    def _average(self, contributions):
        decoded = self._decode(list(contributions.values()))
        shapes = [tuple(part.shape) for part in decoded[0]]
        _, carried = aggregate(
            decoded, [c.samples for c in contributions.values()], shapes,
            density_factor=FleetConfig().aggregate_density_factor, bits=self.bits, run_id=b"outer_lr_scaling",
            round_index=self.rounds_resolved, decoder=self._decoder,
        )
        returned = {member: returned_values(own, carried) for member, own in zip(contributions, decoded)}
        return [part.to_dense() for part in carried], returned
STEPS_PER_ROUND = 40
"""Inner steps per round: what a 4 s demo round holds for 4 devices on this machine."""


def run_variant(data_root: str, variant: str, devices: int, clips: int, seed: int, eval_every: int,
                rare_every: int = 1) -> dict:
    """One fleet (or the lone device) trained for ``clips`` clips; its accuracy curve.

    With ``rare_every`` k > 1, device 0 contributes only every k-th round and listens in
    between, as the fleet's QoS makes a device on a slow or far link do.
    """
    torch.set_num_threads(1)
    overrides = DEFAULT.run_overrides(devices)
    training = LocalTrainingConfig.from_dict({**overrides["training"], "restricted_softmax": VARIANTS[variant][2]})
    spec = VideoRunSpec(model=ModelConfig(), layout=DataLayoutConfig(), training=training)
    dataset = load_dataset(data_root)
    source = open_frame_source(DataConfig(root=data_root), spec.model)
    alone = variant == ALONE
    members = 1 if alone else devices
    sync = SyncConfig(
        inner_steps=STEPS_PER_ROUND,
        density=overrides["sync"]["density"],
        bits=overrides["sync"]["bits"],
        outer_lr_scaling=VARIANTS[variant][0],
        outer_lr_max_scale=VARIANTS[variant][1],
        seed=seed,
    )
    group = ReencodingGroup(members, bits=sync.bits) if variant == REENCODED else InProcessGroup(members)
    fleet_clips = [0]
    devices_state = []
    for index in range(members):
        samples = dataset.split("train")
        if not alone:
            samples = shard(samples, index, devices, "by-class", num_classes=dataset.num_classes, seed=0,
                            classes_per_device=overrides["data"]["classes_per_device"])
        model = spec.build_model()
        loader = ClipLoader(samples, source, frames=spec.model.frames, batch_size=training.batch_size, training=True,
                            seed=1000 * seed + index, prefetch_batches=0)
        # The lone device's learning rate decays over its own (K times fewer) clips.
        clock = (lambda: fleet_clips[0] * devices) if alone else (lambda: fleet_clips[0])
        trainer = LocalTrainer(model, loader.endless(), training, global_samples=clock,
                               local_classes={sample.label for sample in samples})
        devices_state.append((trainer, SyncLoop(model, None, group.exchange(index), sync, device_index=index)))
    budget = clips // devices if alone else clips
    scale = devices if alone else 1
    evaluation_model = spec.build_model()
    val = ClipLoader(dataset.split("val"), source, frames=spec.model.frames, batch_size=32, training=False, prefetch_batches=0)
    test = ClipLoader(dataset.split("test"), source, frames=spec.model.frames, batch_size=32, training=False, prefetch_batches=0)
    history = []
    next_eval = eval_every
    round_index = 0
    while fleet_clips[0] < budget:
        for trainer, loop in devices_state:
            for _ in range(STEPS_PER_ROUND):
                count = trainer.step()
                loop.count_step(count)
                fleet_clips[0] += count
        for index, (_, loop) in enumerate(devices_state):
            rare = index == 0 and members > 1
            loop.submit_round(contribute=not rare or round_index % rare_every == rare_every - 1)
        round_index += 1
        for _, loop in devices_state:
            loop.apply_due(wait=True)
        if fleet_clips[0] * scale >= next_eval or fleet_clips[0] >= budget:
            next_eval += eval_every
            devices_state[0][1].load_global_into(evaluation_model)
            history.append({"clips": fleet_clips[0] * scale, "val_accuracy": evaluate(evaluation_model, val).accuracy})
    for _, loop in devices_state:
        loop.drain(wait=True)
    devices_state[0][1].load_global_into(evaluation_model)
    return {
        "variant": variant,
        "seed": seed,
        "rare_every": rare_every,
        "clips": fleet_clips[0],
        "history": history,
        "val_accuracy": evaluate(evaluation_model, val).accuracy,
        "test_accuracy": evaluate(evaluation_model, test).accuracy,
    }


def clips_to(history: list[dict], target: float) -> int | None:
    return next((point["clips"] for point in history if point["val_accuracy"] >= target), None)


def largest_fall(history: list[dict]) -> float:
    """The largest drop of validation accuracy between two consecutive evaluations."""
    values = [point["val_accuracy"] for point in history]
    return max((before - after for before, after in zip(values, values[1:])), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--clips", type=int, default=30000, help="clips of the whole fleet per run")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-every", type=int, default=2500, help="clips between evaluations")
    parser.add_argument("--target", type=float, default=DEFAULT.target_accuracy)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--variants", default=f"none,sqrt-contributors,{CAPPED},{ALONE}",
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--rare-every", type=int, default=1,
                        help="device 0 contributes only every k-th round (1: every round)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    root = data_cache_root() / DEFAULT.synth.folder_name(DEFAULT.synth)
    ensure_dataset(root, DEFAULT.synth, stop=threading.Event(), env=dict(os.environ))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=args.processes) as pool:
        futures = [
            pool.submit(run_variant, str(root), variant, args.devices, args.clips, seed, args.eval_every, args.rare_every)
            for seed in seeds for variant in variants
        ]
        runs = []
        for future in futures:
            run = future.result()
            runs.append(run)
            print(f"{run['variant']:<18} seed {run['seed']}: val {run['val_accuracy']:.3f}, test {run['test_accuracy']:.3f}, "
                  f"{args.target:.0%} after {clips_to(run['history'], args.target) or '-'} clips", flush=True)
    by_variant = {}
    for variant in variants:
        mine = [run for run in runs if run["variant"] == variant]
        reached = [clips_to(run["history"], args.target) for run in mine]
        by_variant[variant] = {
            "val_accuracy_mean": statistics.mean(run["val_accuracy"] for run in mine),
            "test_accuracy_mean": statistics.mean(run["test_accuracy"] for run in mine),
            "val_accuracy": [run["val_accuracy"] for run in mine],
            "clips_to_target": reached,
            "largest_fall": [largest_fall(run["history"]) for run in mine],
        }
    summary = {
        "command": f"python benchmarks/outer_lr_scaling.py --devices {args.devices} --clips {args.clips} "
        f"--seeds {args.seeds} --eval-every {args.eval_every} --target {args.target} --variants '{args.variants}'"
        f" --rare-every {args.rare_every}",
        "devices": args.devices,
        "clips_per_run": args.clips,
        "target": args.target,
        "steps_per_round": STEPS_PER_ROUND,
        "variants": by_variant,
        "variants_vs_none_val_points": {
            variant: 100 * (row["val_accuracy_mean"] - by_variant["none"]["val_accuracy_mean"])
            for variant, row in by_variant.items() if "none" in by_variant and variant != "none"
        },
        "wall_seconds": time.monotonic() - started,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "outer_lr_scaling.json").write_text(json.dumps(summary, indent=2))
    print()
    print(f"== {args.devices} devices, {args.clips} clips of the fleet, mean over seeds {seeds} (same run)")
    for variant, row in by_variant.items():
        print(f"  {variant:<18} val {row['val_accuracy_mean']:.3f}, test {row['test_accuracy_mean']:.3f}, "
              f"clips to {args.target:.0%}: {row['clips_to_target']}, largest falls {row['largest_fall']}")
    for variant, points in summary["variants_vs_none_val_points"].items():
        print(f"  {variant} vs the plain average: {points:+.1f} val points")
    colours = {"none": "tab:red", "sqrt-contributors": "tab:blue", CAPPED: "tab:green", REENCODED: "tab:olive",
               RESTRICTED: "tab:purple", ALONE: "tab:grey"}
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        label = run["variant"] if run["seed"] == seeds[0] else None
        axis.plot([p["clips"] for p in run["history"]], [p["val_accuracy"] for p in run["history"]],
                  color=colours[run["variant"]], alpha=0.8, label=label)
    axis.axhline(args.target, color="black", linestyle=":", linewidth=1, label=f"target {args.target:.0%}")
    axis.set_xlabel("clips trained by the whole fleet (lone device: K x its own)")
    axis.set_ylabel("validation accuracy of the global model")
    axis.set_title(f"{args.devices} non-IID devices, demo recipe, seeds {args.seeds}")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out / "outer_lr_scaling.png", dpi=120)
    print(f"wrote {args.out / 'outer_lr_scaling.json'} and {args.out / 'outer_lr_scaling.png'}")


if __name__ == "__main__":
    main()

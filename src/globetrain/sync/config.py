"""Settings of the temporal step (local steps, outer optimizer, delayed application)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from globetrain.config import ConfigSection, field, require, require_finite_positive

ALLOWED_BITS = (2, 4, 8, 16, 32)
OUTER_LR_SCALINGS = ("none", "sqrt-contributors")


@dataclasses.dataclass(frozen=True)
class SyncConfig(ConfigSection):
    """How a device trains locally and folds its peers' updates in."""

    inner_steps: int = field(16, help="H: inner optimizer steps per round (QoS may raise it on slow links)")
    apply_delay: Literal[0, 1] = field(
        1,
        help=(
            "rounds between submitting an update and applying the group's average: 1 = delayed "
            "update (the exchange runs while the next round computes), 0 = wait for it at once"
        ),
    )
    exchange_timeout_s: float = field(
        60.0,
        help=(
            "longest a round boundary waits for a due exchange; past it the round is abandoned: "
            "the device's own update goes back into error feedback and the global model stays"
        ),
    )
    # Plain outer SGD at lr 1: with error feedback and a one-round delay, DiLoCo's Nesterov
    # momentum 0.9 amplifies stale, sparse updates and diverged in the harness
    # (benchmarks/convergence.py); the residual already acts as momentum (SparseLoCo).
    outer_lr: float = field(1.0, help="outer (global) learning rate applied to the averaged pseudo-gradient")
    outer_lr_scaling: Literal["none", "sqrt-contributors"] = field(
        "none",
        help=(
            "scale the outer lr of each round by the number of devices averaged in it: sqrt-contributors "
            "multiplies it by sqrt(K) for an average of K updates (K devices running small-batch Adam each "
            "move about as far per round as one device does; the average of K has 1/sqrt(K) of one's noise, "
            "so a sqrt(K) step keeps one device's noise and covers sqrt(K) times the ground)"
        ),
    )
    # A cap, because sqrt(K) assumes the K updates disagree only by noise: with 8 non-IID
    # shards part of the disagreement is signal, and a step of sqrt(8) = 2.8x the average
    # made validation fall by up to 57 points between evaluations; capped at 2 the falls
    # were at most 8 points and the final accuracy the best (0.917 vs 0.894 uncapped, 0.871
    # plain; benchmarks/outer_lr_scaling.py --devices 8, 2 seeds). 4 devices: sqrt(4) = 2.
    outer_lr_max_scale: float = field(
        2.0, help="largest factor sqrt-contributors may multiply the outer lr by (inf: no cap)"
    )
    outer_momentum: float = field(0.0, help="outer momentum (0 disables it; DiLoCo uses 0.9 with Nesterov)")
    nesterov: bool = field(False, help="Nesterov momentum for the outer step (DiLoCo)")
    density: float = field(0.01, help="fraction of each tensor's values sent per round (top-k)")
    bits: Literal[2, 4, 8, 16, 32] = field(8, help="bits per sent value (16/32 = fp16/fp32 values)")
    error_feedback: bool = field(True, help="keep what was not sent and add it to the next round")
    dense_warmup_rounds: int = field(
        0, help="first rounds sent uncompressed (fp32, density 1), as PowerSGD's warm-up"
    )
    seed: int = field(0, help="seed of the stochastic rounding (combined with device and round)")

    def __post_init__(self) -> None:
        name = "sync"
        require(isinstance(self.inner_steps, int) and self.inner_steps >= 1, name, "inner_steps", self.inner_steps, "an integer >= 1")
        require(self.apply_delay in (0, 1), name, "apply_delay", self.apply_delay, "0 or 1")
        require_finite_positive(name, "exchange_timeout_s", self.exchange_timeout_s)
        require_finite_positive(name, "outer_lr", self.outer_lr)
        require(self.outer_lr_scaling in OUTER_LR_SCALINGS, name, "outer_lr_scaling", self.outer_lr_scaling,
                f"one of {list(OUTER_LR_SCALINGS)}")
        require(self.outer_lr_max_scale >= 1.0, name, "outer_lr_max_scale", self.outer_lr_max_scale,
                "a number >= 1 (inf for no cap)")
        require(0.0 <= self.outer_momentum < 1.0, name, "outer_momentum", self.outer_momentum, "a number in [0, 1)")
        require(0.0 < self.density <= 1.0, name, "density", self.density, "a number in (0, 1]")
        require(self.bits in ALLOWED_BITS, name, "bits", self.bits, f"one of {list(ALLOWED_BITS)}")
        require(self.dense_warmup_rounds >= 0, name, "dense_warmup_rounds", self.dense_warmup_rounds, "an integer >= 0")


@dataclasses.dataclass(frozen=True)
class QoSConfig(ConfigSection):
    """How a device adapts H, density and bits to its measured network (adaptive QoS)."""

    enabled: bool = field(True, help="adapt settings per round; off = the SyncConfig values every round")
    min_inner_steps: int = field(8, help="smallest H the scheduler may choose")
    max_inner_steps: int = field(256, help="largest H the scheduler may choose (a slow link raises H up to this)")
    min_density: float = field(0.0005, help="leanest top-k fraction the scheduler may choose")
    max_density: float = field(0.01, help="richest top-k fraction the scheduler may choose")
    bits_choices: tuple[int, ...] = field((8, 4, 2), help="value bit widths the scheduler may choose, richest first")
    fit_fraction: float = field(
        0.8, help="an exchange must fit in this fraction of the next round's compute time (headroom for jitter)"
    )
    upload_factor: float = field(
        1.1,
        help=(
            "bytes uploaded per round, in payloads: a member of a leader-based exchange sends its "
            "payload once (+ envelope); use ~2 for a butterfly all-reduce"
        ),
    )
    round_trips: float = field(4.0, help="network round trips per exchange (matchmaking + two phases)")
    smoothing: float = field(
        0.5, help="weight of the newest measurement in the moving estimates (drops are taken at once)"
    )

    def __post_init__(self) -> None:
        name = "qos"
        require(self.min_inner_steps >= 1, name, "min_inner_steps", self.min_inner_steps, "an integer >= 1")
        require(
            self.max_inner_steps >= self.min_inner_steps, name, "max_inner_steps", self.max_inner_steps,
            f">= min_inner_steps ({self.min_inner_steps})",
        )
        require(0 < self.min_density <= self.max_density <= 1, name, "min_density/max_density",
                (self.min_density, self.max_density), "0 < min_density <= max_density <= 1")
        require(
            len(self.bits_choices) > 0 and all(b in ALLOWED_BITS for b in self.bits_choices),
            name, "bits_choices", self.bits_choices, f"a non-empty list drawn from {list(ALLOWED_BITS)}",
        )
        require(0 < self.fit_fraction <= 1, name, "fit_fraction", self.fit_fraction, "a number in (0, 1]")
        require_finite_positive(name, "upload_factor", self.upload_factor)
        require(self.round_trips >= 0, name, "round_trips", self.round_trips, "a number >= 0")
        require(0 < self.smoothing <= 1, name, "smoothing", self.smoothing, "a number in (0, 1]")

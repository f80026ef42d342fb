"""This machine's reference measurements: the anchor that device speeds are scaled from.

For each registered video model the reference holds, measured side by side in one run:
its training throughput on one thread of this machine (clips/s) and this machine's
float64 GEMM rate on one thread (Gflop/s), plus the model's static facts (parameter
shapes, FLOPs per clip, an activation-memory estimate). Only the ratio clips/s per GEMM
Gflop/s is used for speeds (``devices``): both numbers drift together when the machine is
busy, their ratio much less.

Measuring takes a few seconds per model, so the result is cached in a JSON file
(``benchmarks/results/sim_machine_reference.json`` in a source checkout, or
``~/.cache/globetrain/``) and copied into every run folder; a run with the same cached
reference and seed is reproducible.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from globetrain.errors import ConfigError

REFERENCE_ENV = "GLOBETRAIN_SIM_REFERENCE"
REFERENCE_FILENAME = "sim_machine_reference.json"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ModelReference:
    """One model as measured on this machine."""

    name: str
    parameters: int
    shapes: tuple[tuple[int, ...], ...]
    flops_per_clip: int
    clips_per_s: float
    """Training clips/s on one thread of this machine (median of the measurements)."""
    gemm_gflops: float
    """float64 GEMM Gflop/s on one thread, measured interleaved with ``clips_per_s``."""
    clips_per_gemm_gflop: float
    """Median over the interleaved pairs of clips/s divided by GEMM Gflop/s."""
    batch_size: int
    activation_bytes_per_clip: int
    """Bytes of activations one training clip keeps for the backward pass (estimate)."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["shapes"] = [list(shape) for shape in self.shapes]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelReference:
        return cls(
            name=str(data["name"]),
            parameters=int(data["parameters"]),
            shapes=tuple(tuple(int(d) for d in shape) for shape in data["shapes"]),
            flops_per_clip=int(data["flops_per_clip"]),
            clips_per_s=float(data["clips_per_s"]),
            gemm_gflops=float(data["gemm_gflops"]),
            clips_per_gemm_gflop=float(data["clips_per_gemm_gflop"]),
            batch_size=int(data["batch_size"]),
            activation_bytes_per_clip=int(data["activation_bytes_per_clip"]),
        )


@dataclasses.dataclass(frozen=True)
class MachineReference:
    machine: str
    measured_at: str
    torch_version: str
    models: dict[str, ModelReference]

    def model(self, name: str) -> ModelReference:
        if name not in self.models:
            raise ConfigError(
                f"the machine reference has no measurement of model {name!r} (it has {sorted(self.models)}); "
                "run `globetrain simulate measure --model NAME` to add it"
            )
        return self.models[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "machine": self.machine,
            "measured_at": self.measured_at,
            "torch_version": self.torch_version,
            "models": {name: model.to_dict() for name, model in sorted(self.models.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineReference:
        if data.get("version") != FORMAT_VERSION:
            raise ConfigError(f"machine reference version {data.get('version')!r} is not {FORMAT_VERSION}; re-measure")
        return cls(
            machine=str(data["machine"]),
            measured_at=str(data["measured_at"]),
            torch_version=str(data["torch_version"]),
            models={name: ModelReference.from_dict(model) for name, model in data["models"].items()},
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> MachineReference:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"cannot read the machine reference {path}: {error}") from None


# ------------------------------------------------------------------------------------ where


def default_reference_path() -> Path:
    """Env override, else the source checkout's benchmarks/results, else the user cache."""
    override = os.environ.get(REFERENCE_ENV)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "benchmarks").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / "benchmarks" / "results" / REFERENCE_FILENAME
    return Path.home() / ".cache" / "globetrain" / REFERENCE_FILENAME


def load_or_measure(model: str, *, batch_size: int, path: Path | None = None) -> MachineReference:
    """The cached reference, measuring (and caching) ``model`` first if it is missing."""
    path = Path(path) if path is not None else default_reference_path()
    reference = MachineReference.load(path) if path.exists() else None
    if reference is not None and model in reference.models and reference.models[model].batch_size == batch_size:
        return reference
    measured = measure_model(model, batch_size=batch_size)
    models = dict(reference.models) if reference is not None else {}
    models[model] = measured
    reference = MachineReference(
        machine=_machine_name(), measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        torch_version=torch.__version__, models=models,
    )
    reference.save(path)
    return reference


# ---------------------------------------------------------------------------------- measure


def measure_model(name: str, *, batch_size: int, pairs: int = 3, seconds: float = 1.5) -> ModelReference:
    """Interleave GEMM and training-throughput measurements of ``name`` on one thread."""
    from globetrain.video.models import build_model, model_spec
    from globetrain.video.models.throughput import TrainingStepTimer

    spec = model_spec(name)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(name, 8)
        shapes = tuple(tuple(p.shape) for p in model.parameters() if p.requires_grad)
        activation = activation_bytes_per_clip(model)
        timer = TrainingStepTimer(model, num_classes=8, batch_size=batch_size)
        clips, gemms = [], []
        for index in range(pairs):
            gemms.append(gemm_gflops(seconds=seconds / 2))
            clips.append(timer.clips_per_second(seconds=seconds, warmup_steps=2 if index == 0 else 0))
    finally:
        torch.set_num_threads(previous_threads)
    return ModelReference(
        name=name,
        parameters=spec.parameters,
        shapes=shapes,
        flops_per_clip=spec.flops_per_clip,
        clips_per_s=statistics.median(clips),
        gemm_gflops=statistics.median(gemms),
        clips_per_gemm_gflop=statistics.median(c / g for c, g in zip(clips, gemms)),
        batch_size=batch_size,
        activation_bytes_per_clip=activation,
    )


def gemm_gflops(*, size: int = 768, seconds: float = 0.75) -> float:
    """float64 matrix-product rate of this thread: the same kind of work as HPL Linpack."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, dtype=torch.float64, generator=generator)
    b = torch.randn(size, size, dtype=torch.float64, generator=generator)
    a @ b  # first call allocates and picks kernels
    products = 0
    started = time.perf_counter()
    while products < 3 or time.perf_counter() - started < seconds:
        a @ b
        products += 1
    return products * 2 * size**3 / (time.perf_counter() - started) / 1e9


def activation_bytes_per_clip(model: torch.nn.Module) -> int:
    """Sum of every module output's size for one clip (what autograd keeps, roughly)."""
    total = 0

    def count(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *model.input_shape))  # type: ignore[misc]
    finally:
        for handle in handles:
            handle.remove()
    return int(total)


def _machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs"


def state_bytes(shapes: tuple[tuple[int, ...], ...]) -> int:
    """float32 bytes of one copy of a model's parameters."""
    return 4 * sum(math.prod(shape) for shape in shapes)

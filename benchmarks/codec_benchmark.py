"""Codec benchmark: a ResNet-50-sized update through ``globetrain.compression.Codec``.

What it measures, all side by side in one run (repetitions interleaved, medians):

- payload bytes, encode and decode time of a 25,557,032-value float32 vector (random
  normal) at density 0.001 with 8, 4 and 2 bits, and at density 0.01 with 8 bits;
- the same vector through a plain memory copy (``dst.copy_(src)`` into a preallocated
  tensor, and ``src.clone()``) and through ``torch.topk(src.abs(), k)``: the ratios are
  the result (this machine is shared; absolute times drift);
- the count sent against density x size;
- the top-k scope: one global top-k (what the codec does) against a per-tensor top-k
  with the same number of values, on the gradient of a small CNN: squared norm captured
  and tensors left with nothing;
- the per-call cost on a ~100k-parameter proxy model (what the simulator calls
  thousands of times per round).

Writes ``benchmarks/results/codec.json`` and ``codec.png`` next to it.

    .venv/bin/python benchmarks/codec_benchmark.py [--repetitions 9] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from globetrain.compression import Codec

RESNET50_PARAMETERS = 25_557_032
CONFIGS = [(0.001, 8), (0.001, 4), (0.001, 2), (0.01, 8)]
PAYLOAD_TARGET_BYTES = 64 * 1024
DGC_RESNET50_PAYLOAD_BYTES = 0.35e6  # Lin et al., Deep Gradient Compression (ICLR 2018), table 3
ENCODE_TARGET_COPY_RATIO = 3.0
PROXY_MODEL_SHAPES = [(32, 3, 3, 3), (32,), (32,), (64, 32, 3, 3), (64,), (64,), (96, 64, 3, 3), (96,), (96,),
                      (10, 96 * 4), (10,)]


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def interleaved(
    operations: dict[str, Callable[[], object]], repetitions: int, console: Console
) -> dict[str, list[float]]:
    """Seconds per call of each operation; one round runs every operation once, in turn."""
    timings: dict[str, list[float]] = {name: [] for name in operations}
    for operation in operations.values():  # warm-up: first-touch page faults, lazy imports
        operation()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("interleaved repetitions", total=repetitions)
        for _ in range(repetitions):
            for name, operation in operations.items():
                started = time.perf_counter()
                result = operation()
                timings[name].append(time.perf_counter() - started)
                del result
            progress.advance(task)
    return timings


def resnet50_sized(repetitions: int, console: Console) -> dict[str, Any]:
    source = torch.randn(RESNET50_PARAMETERS, generator=torch.Generator().manual_seed(0))
    destination = torch.empty_like(source)
    codecs = {config: Codec(*config) for config in CONFIGS}
    encoded = {config: codec.encode_with_sent([source], seed=0) for config, codec in codecs.items()}
    operations: dict[str, Callable[[], object]] = {
        "copy_": lambda: destination.copy_(source),
        "clone": lambda: source.clone(),
    }
    for k in sorted({codec.target_count(RESNET50_PARAMETERS) for codec in codecs.values()}):
        operations[f"topk k={k}"] = lambda k=k: torch.topk(source.abs(), k)
    for config, codec in codecs.items():
        payload = encoded[config].payload
        operations[f"encode {config}"] = lambda codec=codec: codec.encode([source], seed=1)
        operations[f"decode {config}"] = lambda codec=codec, payload=payload: codec.decode(payload)
        operations[f"decode_sparse {config}"] = lambda codec=codec, payload=payload: codec.decode_sparse(payload)
    timings = interleaved(operations, repetitions, console)
    medians = {name: median_ms(samples) for name, samples in timings.items()}
    rows = []
    for (density, bits), codec in codecs.items():
        key = (density, bits)
        update = encoded[key]
        target = density * RESNET50_PARAMETERS
        topk = medians[f"topk k={codec.target_count(RESNET50_PARAMETERS)}"]
        encode, decode = medians[f"encode {key}"], medians[f"decode {key}"]
        rows.append({
            "density": density,
            "bits": bits,
            "density_times_size": target,
            "count": update.sent[0].count,
            "count_over_target": update.sent[0].count / target,
            "index_coding": update.tensors[0].index_coding,
            "value_format": update.tensors[0].value_format,
            "payload_bytes": len(update.payload),
            "estimated_payload_bytes": codec.estimate_payload_bytes([(RESNET50_PARAMETERS,)]),
            "bits_per_sent_value": 8 * len(update.payload) / update.sent[0].count,
            "encode_ms": encode,
            "decode_ms": decode,
            "decode_sparse_ms": medians[f"decode_sparse {key}"],
            "encode_over_copy": encode / medians["copy_"],
            "encode_over_clone": encode / medians["clone"],
            "encode_over_topk": encode / topk,
            "decode_over_copy": decode / medians["copy_"],
            "decode_over_clone": decode / medians["clone"],
            "topk_ms": topk,
            "targets": {
                "payload_at_most_64KiB": len(update.payload) <= PAYLOAD_TARGET_BYTES,
                "encode_at_most_3x_copy_": encode <= ENCODE_TARGET_COPY_RATIO * medians["copy_"],
                "encode_faster_than_topk": encode < topk,
            },
        })
    return {
        "size": RESNET50_PARAMETERS,
        "distribution": "standard normal, float32",
        "repetitions": repetitions,
        "baseline_ms": {name: value for name, value in medians.items() if not name.startswith(("encode", "decode"))},
        "configs": rows,
        "raw_seconds": timings,
    }


class SmallCnn(torch.nn.Module):
    """A small convnet whose gradient has the layer structure of a real one (conv, BN, fc)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        channels = [3, 32, 64, 128, 256]
        for inputs, outputs in zip(channels, channels[1:]):
            layers += [torch.nn.Conv2d(inputs, outputs, 3, padding=1), torch.nn.BatchNorm2d(outputs),
                       torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(256 * 2 * 2, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


def topk_scope(console: Console) -> dict[str, Any]:
    """Per-tensor against global top-k on a CNN gradient after a few training steps."""
    torch.manual_seed(0)
    model = SmallCnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    for _ in range(10):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    gradients = [parameter.grad.detach().clone() for parameter in model.parameters()]
    total_energy = float(sum(g.double().square().sum() for g in gradients))
    flat = torch.cat([g.reshape(-1) for g in gradients])
    owner = torch.repeat_interleave(torch.arange(len(gradients)), torch.tensor([g.numel() for g in gradients]))
    rows = []
    for density in (0.001, 0.01, 0.1):
        # Both references by full sorts, with the same total number of values.
        shares = [max(1, round(density * g.numel())) for g in gradients]
        per_tensor = sum(float(torch.topk(g.reshape(-1).abs(), k).values.double().square().sum())
                         for g, k in zip(gradients, shares))
        global_top = torch.topk(flat.abs(), sum(shares)).indices
        global_energy = float(flat[global_top].double().square().sum())
        starved = len(gradients) - int(torch.unique(owner[global_top]).numel())
        sent = Codec(density, 32).encode_with_sent(gradients, seed=0).sent
        codec_energy = float(sum(s.values.double().square().sum() for s in sent))
        rows.append({
            "density": density,
            "values": sum(shares),
            "energy_captured_per_tensor": per_tensor / total_energy,
            "energy_captured_global": global_energy / total_energy,
            "energy_captured_by_codec": codec_energy / total_energy,
            "values_sent_by_codec": sum(s.count for s in sent),
            "tensors_starved_by_global": starved,
            "tensors": len(gradients),
        })
    console.print(f"[dim]top-k scope measured on a {flat.numel():,}-parameter CNN gradient[/dim]")
    return {"model_parameters": flat.numel(), "rows": rows}


def small_model_calls(console: Console) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(shape, generator=generator) for shape in PROXY_MODEL_SHAPES]
    parameters = sum(t.numel() for t in tensors)
    rows = []
    for density, bits in ((0.01, 8), (0.1, 4), (1.0, 32)):
        codec = Codec(density, bits)
        payload = codec.encode(tensors, seed=0)
        calls = 200
        started = time.perf_counter()
        for seed in range(calls):
            codec.encode_with_sent(tensors, seed=seed)
        encode_us = (time.perf_counter() - started) / calls * 1e6
        started = time.perf_counter()
        for _ in range(calls):
            codec.decode_sparse(payload)
        decode_us = (time.perf_counter() - started) / calls * 1e6
        rows.append({"density": density, "bits": bits, "payload_bytes": len(payload),
                     "encode_with_sent_us": encode_us, "decode_sparse_us": decode_us})
    console.print(f"[dim]per-call cost measured on a {parameters:,}-parameter proxy model[/dim]")
    return {"parameters": parameters, "tensors": len(tensors), "rows": rows}


def machine() -> dict[str, Any]:
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "load_average_1min": os.getloadavg()[0],
    }


def print_tables(console: Console, results: dict[str, Any]) -> None:
    big = results["resnet50_sized"]
    baseline = big["baseline_ms"]
    console.print(
        "baselines (median ms): " + ", ".join(f"{name} {value:.1f}" for name, value in baseline.items())
    )
    table = Table(title=f"{big['size']:,} float32 values, {big['repetitions']} interleaved repetitions (medians)")
    for column in ("density", "bits", "count / target", "payload B", "encode/copy_", "encode/clone",
                   "encode/topk", "decode/copy_", "decode/clone"):
        table.add_column(column, justify="right")
    for row in big["configs"]:
        table.add_row(
            f"{row['density']}", f"{row['bits']}", f"{row['count']:,} / {row['density_times_size']:,.0f}",
            f"{row['payload_bytes']:,}", f"{row['encode_over_copy']:.2f}", f"{row['encode_over_clone']:.2f}",
            f"{row['encode_over_topk']:.3f}", f"{row['decode_over_copy']:.2f}", f"{row['decode_over_clone']:.2f}",
        )
    console.print(table)
    scope = Table(title="top-k scope on a CNN gradient (fraction of squared norm captured)")
    for column in ("density", "per-tensor", "global", "codec (global)", "tensors starved by global"):
        scope.add_column(column, justify="right")
    for row in results["topk_scope"]["rows"]:
        scope.add_row(f"{row['density']}", f"{row['energy_captured_per_tensor']:.3f}",
                      f"{row['energy_captured_global']:.3f}", f"{row['energy_captured_by_codec']:.3f}",
                      f"{row['tensors_starved_by_global']} of {row['tensors']}")
    console.print(scope)
    small = results["small_model"]
    for row in small["rows"]:
        console.print(
            f"proxy model ({small['parameters']:,} parameters) density {row['density']} bits {row['bits']}: "
            f"{row['payload_bytes']:,} B, encode_with_sent {row['encode_with_sent_us']:.0f} us, "
            f"decode_sparse {row['decode_sparse_us']:.0f} us"
        )


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["resnet50_sized"]["configs"]
    labels = [f"d={row['density']}\n{row['bits']} bits" for row in rows]
    positions = np.arange(len(rows))
    figure, (times, sizes) = plt.subplots(1, 2, figsize=(11, 4.2))
    times.bar(positions - 0.2, [row["encode_over_copy"] for row in rows], 0.4, label="encode")
    times.bar(positions + 0.2, [row["decode_over_copy"] for row in rows], 0.4, label="decode")
    times.axhline(ENCODE_TARGET_COPY_RATIO, color="red", linestyle="--", label="target: 3x copy_")
    times.set_xticks(positions, labels)
    times.set_ylabel("time / dst.copy_(src) time")
    times.set_title("ResNet-50-sized vector: time relative to a memory copy")
    times.legend()
    sizes.bar(positions, [row["payload_bytes"] / 1024 for row in rows], 0.6)
    sizes.axhline(PAYLOAD_TARGET_BYTES / 1024, color="red", linestyle="--", label="target: 64 KiB")
    sizes.axhline(DGC_RESNET50_PAYLOAD_BYTES / 1024, color="gray", linestyle=":", label="DGC (published): 0.35 MB")
    sizes.set_yscale("log")
    sizes.set_xticks(positions, labels)
    sizes.set_ylabel("payload (KiB, log scale)")
    sizes.set_title("payload size")
    sizes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=9, help="interleaved repetitions (median taken)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="output folder")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=150)
    results = {"machine": machine()}
    results["resnet50_sized"] = resnet50_sized(args.repetitions, console)
    results["topk_scope"] = topk_scope(console)
    results["small_model"] = small_model_calls(console)
    results["machine"]["load_average_1min_after"] = os.getloadavg()[0]
    print_tables(console, results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "codec.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "codec.png")
    console.print(f"wrote {args.out / 'codec.json'} and {args.out / 'codec.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

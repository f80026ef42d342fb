"""Video loading benchmark: clips per second from video files against the clip cache.

Both paths run the loader exactly as training does (``ClipLoader``: TSN segment
sampling, normalisation, batches of 16) on the same synthetic clips (H.264 MP4, 16
frames of 64 x 64, resized to the model's 32 x 32), in one thread, no prefetch, so the
numbers are the loading work itself:

- decode: every clip decoded from its file every epoch (``FrameSource`` without cache);
- cache: decoded frames read back from the memory-mapped shards of the clip cache,
  after one warm-up epoch that filled it.

Epochs of the two alternate (this machine is shared; absolute times drift); the result
is the ratio of the medians. Writes ``benchmarks/results/video_loading.json`` and
``video_loading.png``.

    .venv/bin/python benchmarks/video_loading.py [--clips-per-class 25] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from globetrain.video.cache import ClipCache
from globetrain.video.config import DataConfig, ModelConfig
from globetrain.video.dataset import load_dataset
from globetrain.video.frame_source import FrameSource
from globetrain.video.loader import ClipLoader
from globetrain.video.plots import plot_bars
from globetrain.video.synth import generate

TARGET_RATIO = 10.0


def epoch_clips_per_second(loader: ClipLoader) -> float:
    started = time.perf_counter()
    clips = sum(len(batch.labels) for batch in loader)
    return clips / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips-per-class", type=int, default=25, help="synthetic clips per class (8 classes)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating epochs of each path")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON and PNG")
    args = parser.parse_args()
    console = Console()
    torch.set_num_threads(1)
    model, data = ModelConfig(), DataConfig()

    with tempfile.TemporaryDirectory(prefix="globetrain-video-loading-") as scratch:
        root = Path(scratch) / "data"
        info = generate(root, clips_per_class=args.clips_per_class, seed=0)
        samples = load_dataset(root).split("train") + load_dataset(root).split("val") + load_dataset(root).split("test")
        video_bytes = sum(sample.path.stat().st_size for sample in samples)
        console.print(f"{len(samples)} clips written in {info.seconds:.1f} s ({video_bytes / 2**20:.1f} MiB of MP4)")

        def loader(source: FrameSource) -> ClipLoader:
            return ClipLoader(
                samples, source, frames=model.frames, batch_size=data.batch_size, training=True, prefetch_batches=0
            )

        decoding = loader(FrameSource(frame_size=model.frame_size, max_frames=data.max_cached_frames))
        cache = ClipCache(Path(scratch) / "cache", max_bytes=2**30)
        cached = loader(FrameSource(frame_size=model.frame_size, max_frames=data.max_cached_frames, cache=cache))
        warm_up_rate = epoch_clips_per_second(cached)  # decodes and fills the cache
        epoch_clips_per_second(decoding)  # the same first-touch costs for the other path

        rates: dict[str, list[float]] = {"decode": [], "cache": []}
        for round_index in range(args.rounds):
            rates["decode"].append(epoch_clips_per_second(decoding))
            rates["cache"].append(epoch_clips_per_second(cached))
            console.print(
                f"round {round_index + 1}: decode {rates['decode'][-1]:.0f} clips/s, cache {rates['cache'][-1]:.0f} clips/s"
            )
        cache_bytes = cache.size_bytes()
        hits, decoded = cached.source.stats.cache_hits, cached.source.stats.decoded

    decode_rate = statistics.median(rates["decode"])
    cache_rate = statistics.median(rates["cache"])
    ratio = cache_rate / decode_rate
    result = {
        "benchmark": "video_loading",
        "what": "loader clips/s (segment sampling + normalisation + batching, 1 thread, no prefetch)",
        "clips": len(samples),
        "video": {"frames": info.settings["frames"], "size": info.settings["size"], "codec": "H.264 (libx264 veryfast crf 18)"},
        "model_input": {"frames": model.frames, "frame_size": model.frame_size},
        "decode_clips_per_second": round(decode_rate, 1),
        "cache_clips_per_second": round(cache_rate, 1),
        "cache_over_decode": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "first_epoch_filling_cache_clips_per_second": round(warm_up_rate, 1),
        "rounds": {name: [round(rate, 1) for rate in values] for name, values in rates.items()},
        "mp4_bytes": video_bytes,
        "cache_bytes": cache_bytes,
        "cache_hits": hits,
        "cache_path_decodes": decoded,
        "machine": {"platform": platform.platform(), "torch_threads": 1, "load_average_after": os.getloadavg()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "video_loading.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_bars(
        {"loader clips per second": {"decode from MP4": decode_rate, "clip cache": cache_rate}},
        out / "video_loading.png",
        title=f"clip cache vs decoding: {ratio:.1f}x (target {TARGET_RATIO:.0f}x)",
        value_format="{:.0f}",
    )
    console.print(
        f"decode {decode_rate:.0f} clips/s, cache {cache_rate:.0f} clips/s: {ratio:.1f}x "
        f"({'meets' if ratio >= TARGET_RATIO else 'misses'} the {TARGET_RATIO:.0f}x target); wrote {out / 'video_loading.json'}"
    )


if __name__ == "__main__":
    main()

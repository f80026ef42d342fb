"""Labels for video files from a trained model: what ``globetrain classify`` prints."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from globetrain.video.clips import clips_to_tensor, segment_indices
from globetrain.video.files import UnreadableVideo, read_video
from globetrain.video.trained_model import TrainedModel


@dataclasses.dataclass(frozen=True)
class Prediction:
    file: str
    label: str | None
    confidence: float | None
    """Softmax probability of ``label``, in [0, 1]."""
    error: str | None = None
    """Why the file could not be classified; None when fine."""

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def classify_files(trained: TrainedModel, files: Sequence[Path | str]) -> Iterator[Prediction]:
    """One prediction per file, in order; an unreadable file yields an error, not a raise.

    Frames are prepared exactly as in evaluation: the model's frame size, T centred
    segment samples.
    """
    model_config = trained.config.model
    for file in files:
        try:
            frames = read_video(
                file,
                frame_size=model_config.frame_size,
                max_frames=max(trained.config.data.max_cached_frames, model_config.frames),
            )
        except UnreadableVideo as error:
            yield Prediction(file=str(file), label=None, confidence=None, error=f"unreadable video: {error.reason}")
            continue
        chosen = segment_indices(len(frames), model_config.frames, training=False)
        clip = clips_to_tensor(np.ascontiguousarray(frames[chosen])[None])
        with torch.inference_mode():
            probabilities = torch.softmax(trained.model(clip), dim=1)[0]
        best = int(probabilities.argmax())
        yield Prediction(file=str(file), label=trained.class_names[best], confidence=float(probabilities[best]))

"""Reading and writing video files with PyAV (FFmpeg).

``read_video`` is the one place where a video file becomes pixels: every path (loader,
clip cache, classify) goes through it, so they all see exactly the same frames. It
resizes inside FFmpeg's scaler while converting to RGB, which costs next to nothing
compared with decoding, and it turns every way a file can be bad (not a video, no video
stream, truncated, zero frames) into one exception, ``UnreadableVideo``, whose message
names the file.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from globetrain.errors import GlobetrainError


VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4", ".avi", ".mkv", ".webm"})
"""File endings the dataset discovery treats as videos."""

# A container that declares N frames but yields clearly fewer was cut short (a copy that
# stopped, a full disk while recording). A little slack absorbs containers whose frame
# count is approximate (edit lists, a dropped leading B-frame).
_TRUNCATION_TOLERANCE = 0.9


class UnreadableVideo(GlobetrainError):
    """A file is not a decodable video (unreadable, truncated, no frames, no video stream)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def read_video(
    path: Path | str,
    *,
    frame_size: int,
    data: bytes | None = None,
    max_frames: int | None = None,
    decode_threads: int = 1,
) -> np.ndarray:
    """Decode a video into uint8 RGB frames of shape (frames, frame_size, frame_size, 3).

    Frames are resized so the shorter side is ``frame_size`` and centre-cropped to a
    square. With ``max_frames``, a longer video keeps that many frames, evenly spaced
    over its whole length (segment sampling later picks from these). With ``data``, the
    file's bytes already read, those are decoded and ``path`` only names the file.
    Raises ``UnreadableVideo`` for any file that does not decode into at least one frame.
    """
    path = Path(path)
    try:
        source = io.BytesIO(data) if data is not None else str(path)
        with av.open(source, mode="r") as container:
            if not container.streams.video:
                raise UnreadableVideo(path, "has no video stream")
            stream = container.streams.video[0]
            # One decoder thread by default: clips are small, and several device processes
            # share few cores; FFmpeg's frame threads would only add hand-offs.
            stream.codec_context.thread_count = max(1, decode_threads)
            declared_frames = int(stream.frames or 0)
            frames = [
                _to_square_rgb(frame, frame_size) for frame in container.decode(stream)
            ]
    except UnreadableVideo:
        raise
    except FileNotFoundError as error:
        raise UnreadableVideo(path, "file does not exist") from error
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        raise UnreadableVideo(path, f"cannot be decoded as a video ({error})") from error
    if not frames:
        raise UnreadableVideo(path, "contains no video frames")
    if declared_frames > 0 and len(frames) < _TRUNCATION_TOLERANCE * declared_frames:
        raise UnreadableVideo(
            path, f"is truncated: decoded {len(frames)} of the {declared_frames} frames it declares"
        )
    if max_frames is not None and len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames).round().astype(np.int64)
        frames = [frames[index] for index in keep]
    return np.stack(frames)


def _to_square_rgb(frame: av.VideoFrame, frame_size: int) -> np.ndarray:
    """Scale the shorter side to ``frame_size`` (area filter), then centre-crop a square."""
    width, height = frame.width, frame.height
    scale = frame_size / min(width, height)
    scaled_width = max(frame_size, round(width * scale))
    scaled_height = max(frame_size, round(height * scale))
    pixels = frame.to_ndarray(
        format="rgb24", width=scaled_width, height=scaled_height, interpolation="AREA"
    )
    top = (scaled_height - frame_size) // 2
    left = (scaled_width - frame_size) // 2
    return pixels[top : top + frame_size, left : left + frame_size]


def write_video(
    path: Path | str,
    frames: Sequence[np.ndarray] | np.ndarray,
    *,
    fps: int = 8,
    crf: int = 18,
    codec: str = "libx264",
    container_format: str = "mp4",
) -> None:
    """Encode uint8 RGB frames (each height x width x 3, even sizes) as an H.264 MP4.

    One encoder thread, x264's plain C code and our own colour conversion make the bytes a
    deterministic function of the frames, so a synthetic dataset is reproducible file for
    file. (FFmpeg's RGB to YUV conversion on the way into the encoder is not: measured
    here, 60 encodes of the same frames gave 4 different files.)
    """
    frames = list(frames)
    if not frames:
        raise ValueError(f"write_video({path}): no frames to write")
    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"write_video({path}): frames of {width} x {height}; H.264 in 4:2:0 needs even sizes")
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            # asm=0: x264's SIMD code reads a little uninitialised memory on small frames,
            # and the output then varies from run to run (measured: up to 7 different files
            # in 40 encodes of one 32 x 32 clip). Its C code is exact and still fast here.
            stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "asm=0"}
        for pixels in frames:
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420(pixels), format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def rgb_to_yuv420(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB (h, w, 3) -> planar YUV 4:2:0 (h * 3 / 2, w), BT.601 limited range.

    BT.601 is what FFmpeg assumes when decoding a stream that does not say, so a
    decoded frame comes back with the colours it was written with.
    """
    rgb = pixels.astype(np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 16.0 + 0.257 * red + 0.504 * green + 0.098 * blue
    # Chroma of each 2 x 2 block from the block's mean colour.
    height, width = luma.shape
    block = rgb.reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))
    blue_difference = 128.0 - 0.148 * block[..., 0] - 0.291 * block[..., 1] + 0.439 * block[..., 2]
    red_difference = 128.0 + 0.439 * block[..., 0] - 0.368 * block[..., 1] - 0.071 * block[..., 2]

    def to_bytes(plane: np.ndarray) -> np.ndarray:
        return np.clip(np.round(plane), 0, 255).astype(np.uint8)

    # PyAV reads the three planes back to back from the flattened array.
    planes = [to_bytes(luma).ravel(), to_bytes(blue_difference).ravel(), to_bytes(red_difference).ravel()]
    return np.concatenate(planes).reshape(height * 3 // 2, width)

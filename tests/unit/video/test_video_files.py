"""Reading video files: frames out, and every kind of bad file as UnreadableVideo."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from video_helpers import noise_frames

from globetrain.video.files import UnreadableVideo, read_video, write_video


def test_frames_come_back_resized_and_cropped_to_squares(tmp_path: Path):
    path = tmp_path / "wide.mp4"
    write_video(path, noise_frames(5, 32, 64))  # 2:1 frames
    frames = read_video(path, frame_size=16)
    assert frames.shape == (5, 16, 16, 3)
    assert frames.dtype == np.uint8


def test_a_flat_colour_survives_encoding_and_resizing(tmp_path: Path):
    path = tmp_path / "flat.mp4"
    write_video(path, np.full((4, 32, 32, 3), (200, 60, 30), dtype=np.uint8))
    frames = read_video(path, frame_size=8).astype(int)
    assert np.all(np.abs(frames - np.array([200, 60, 30])) <= 6)  # lossy codec, 4:2:0 chroma


def test_long_videos_keep_evenly_spaced_frames(tmp_path: Path):
    path = tmp_path / "long.mp4"
    # Frame i is a flat grey of brightness 8 * i, so a frame tells its own index.
    write_video(path, np.stack([np.full((16, 16, 3), 8 * index, dtype=np.uint8) for index in range(30)]))
    frames = read_video(path, frame_size=16, max_frames=4)
    brightness = frames.reshape(4, -1).mean(axis=1) / 8
    assert np.allclose(brightness, [0, 10, 19, 29], atol=1.0)


def test_bytes_already_read_decode_the_same_as_the_file(write_clip):
    path = write_clip()
    assert np.array_equal(read_video(path, frame_size=16), read_video(path, frame_size=16, data=path.read_bytes()))


def _zero_frame_avi(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _truncated(write_clip) -> Path:
    path = write_clip("cut.mp4")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp_path, write_clip: _write_text(tmp_path / "notes.mp4"), "cannot be decoded"),
        (lambda tmp_path, write_clip: _truncated(write_clip), "cannot be decoded|truncated"),
        (lambda tmp_path, write_clip: _zero_frame_avi(tmp_path / "empty.avi"), "no video frames"),
        (lambda tmp_path, write_clip: _audio_only(tmp_path / "sound.mkv"), "no video stream"),
        (lambda tmp_path, write_clip: tmp_path / "missing.mp4", "does not exist"),
    ],
    ids=["not-a-video", "truncated", "zero-frames", "audio-only", "missing"],
)
def test_bad_files_raise_unreadable_video_naming_the_file(tmp_path: Path, write_clip, make, reason):
    path = make(tmp_path, write_clip)
    with pytest.raises(UnreadableVideo, match=reason) as raised:
        read_video(path, frame_size=16)
    assert str(path) in str(raised.value)


def _write_text(path: Path) -> Path:
    path.write_text("this is a text file with a video's name\n")
    return path

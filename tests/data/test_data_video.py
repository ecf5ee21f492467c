"""Video reading (folders, mp4 via decord and PyAV), overlays and atomic H.264 writing."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from vidseg.data.io import DAVIS_PALETTE, write_image
from vidseg.data.video import (
    OverlayVideoWriter,
    VideoError,
    VideoWriter,
    count_frames,
    list_image_frames,
    overlay,
    read_video_frames,
    video_fps,
    write_video,
)


def gradient_frames(n: int, h: int = 32, w: int = 64) -> list[np.ndarray]:
    """Smooth frames (codec friendly) that differ from each other."""
    yy, xx = np.mgrid[0:h, 0:w]
    return [np.stack([(xx * 5 + 20 * i) % 256, (yy * 7) % 256, np.full_like(xx, 40 * i % 256)], -1)
            .astype(np.uint8) for i in range(n)]


def decode_with_av(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_read_folder_in_natural_order(tmp_path: Path) -> None:
    frames = gradient_frames(3)
    for i, name in enumerate(["f2.png", "f10.png", "f1.png"]):
        write_image(tmp_path / name, frames[i])
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [p.name for p in list_image_frames(tmp_path)] == ["f1.png", "f2.png", "f10.png"]
    read = list(read_video_frames(tmp_path))
    assert count_frames(tmp_path) == 3 and len(read) == 3
    np.testing.assert_array_equal(read[0], frames[2])  # f1.png
    assert read[0].dtype == np.uint8 and read[0].shape == (32, 64, 3)


@pytest.mark.parametrize("backend", ["decord", "av"])
def test_mp4_round_trip(tmp_path: Path, backend: str) -> None:
    frames = gradient_frames(11)
    path = write_video(tmp_path / "clip.mp4", frames, fps=12)
    assert count_frames(path, backend=backend) == 11
    read = list(read_video_frames(path, batch_size=4, backend=backend))  # batches of 4: 4 + 4 + 3
    assert len(read) == 11 and read[5].shape == (32, 64, 3) and read[5].dtype == np.uint8
    assert np.abs(read[5].astype(int) - frames[5]).mean() < 6  # lossy H.264, close to the input
    assert video_fps(path) == pytest.approx(12)


def test_decord_size_quirk_falls_back_to_pyav(tmp_path: Path) -> None:
    # decord 0.6 returns 4-channel or mis-copied frames for some sizes (48x32): PyAV takes over.
    frames = gradient_frames(5, h=32, w=48)
    path = write_video(tmp_path / "quirk.mp4", frames, fps=5)
    read = list(read_video_frames(path, batch_size=2, backend="decord"))
    assert len(read) == 5 and all(f.shape == (32, 48, 3) for f in read)
    assert np.abs(read[4].astype(int) - frames[4]).mean() < 6


def test_toy_video_fixture(toy_video_path: Path) -> None:
    assert count_frames(toy_video_path) == 8
    assert next(read_video_frames(toy_video_path)).shape == (64, 112, 3)


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    path = write_video(tmp_path / "odd.mp4", gradient_frames(2, h=31, w=45), fps=5)
    assert decode_with_av(path)[0].shape == (32, 46, 3)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video_frames(tmp_path / "missing.mp4")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(VideoError, match="no images"):
        read_video_frames(tmp_path / "empty_dir")
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    with pytest.raises(VideoError, match="zero.mp4: empty"):
        count_frames(zero)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for backend in ("decord", "av"):
        with pytest.raises(VideoError, match=r"corrupt.mp4: cannot read video.*corrupt"):
            list(read_video_frames(corrupt, backend=backend))
    with pytest.raises(VideoError, match="unsupported video type"):
        (tmp_path / "x.gif").write_bytes(b"GIF89a")
        read_video_frames(tmp_path / "x.gif")


def test_video_without_frames(tmp_path: Path) -> None:
    path = tmp_path / "no_frames.mp4"
    with av.open(str(path), mode="w", format="mp4") as container:  # a valid container, zero frames
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    for backend in ("decord", "av"):
        with pytest.raises(VideoError, match=r"no_frames.mp4: cannot read video: empty video"):
            count_frames(path, backend=backend)


def test_overlay_blends_objects_and_draws_contours() -> None:
    frame = np.full((20, 30, 3), 100, np.uint8)
    labels = np.zeros((20, 30), np.uint8)
    labels[5:15, 5:15] = 1
    out = overlay(frame, labels, alpha=0.5, contour_width=1)
    red = np.array(DAVIS_PALETTE[3:6])
    np.testing.assert_array_equal(out[0, 0], frame[0, 0])  # background untouched
    np.testing.assert_array_equal(out[10, 10], np.rint(0.5 * 100 + 0.5 * red))  # interior blended
    np.testing.assert_array_equal(out[5, 10], red)  # contour in the object's colour
    assert out.dtype == np.uint8 and out.shape == frame.shape
    with pytest.raises(ValueError):
        overlay(frame, labels[:10])


def test_overlay_writer_produces_readable_mp4(tmp_path: Path) -> None:
    frames = gradient_frames(5)
    labels = np.zeros((32, 64), np.uint8)
    labels[8:24, 10:30] = 2
    path = tmp_path / "out" / "overlay.mp4"
    with OverlayVideoWriter(path, fps=8, alpha=0.6) as writer:
        for frame in frames:
            writer.write(frame, labels)
        assert not path.exists()  # written to a temporary file until close
    decoded = decode_with_av(path)
    assert len(decoded) == 5 and decoded[0].shape == (32, 64, 3)
    assert count_frames(path) == 5
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"


def test_writer_is_atomic_and_checks_input(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(path, fps=5) as writer:
        writer.write(gradient_frames(1)[0])
        raise RuntimeError("boom")
    assert not path.exists() and os.listdir(tmp_path) == []  # no output, no temporary left
    with pytest.raises(ValueError, match="no frames"):
        write_video(path, [], fps=5)
    with pytest.raises(ValueError, match="differs"), VideoWriter(path, fps=5) as writer:
        writer.write(gradient_frames(1)[0])
        writer.write(gradient_frames(1, h=16)[0])
    assert os.listdir(tmp_path) == []

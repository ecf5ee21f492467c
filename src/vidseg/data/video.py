"""Video input (files or image folders, streamed) and H.264 output (plain or with mask overlays).

Reading uses decord where it is installed (Linux x86-64 wheels) and PyAV elsewhere; both stream frames
in small batches, so memory does not grow with the video length. Writing uses PyAV's bundled libx264
(yuv420p, browser-playable), to a temporary file renamed on close.

Frames are ``(H, W, 3) uint8`` RGB; label maps are ``(H, W)`` integer ids (0 background, 255 void).
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidseg.data.io import DAVIS_PALETTE, chmod_like_open, read_image
from vidseg.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class VideoError(DataError, OSError):
    """A video that cannot be read: missing, empty, corrupt, or a folder without images."""


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------


def _natural_key(path: Path) -> list:
    # "frame2" before "frame10": users' folders are not always zero-padded.
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def list_image_frames(folder: str | os.PathLike) -> list[Path]:
    """Image files of ``folder`` (jpg/jpeg/png) in natural order; an error if there are none."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise VideoError(f"{folder}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=_natural_key)


def frame_names(path: str | os.PathLike) -> list[str] | None:
    """The names per-frame outputs take: for a frame folder, each frame's file stem in reading order
    (:func:`list_image_frames`: ``shot_10.jpg`` -> ``shot_10``); None for a video file (outputs are numbered
    ``00000``, ``00001``...).

    Raises:
        VideoError: two frames with the same stem (``a.jpg`` and ``a.png``), whose outputs would collide.
    """
    path = Path(path)
    if not path.is_dir():
        return None
    frames = list_image_frames(path)
    first: dict[str, Path] = {}
    for frame in frames:
        if frame.stem in first:
            raise VideoError(f"{path}: frames {first[frame.stem].name} and {frame.name} have the same name "
                             f"{frame.stem!r}, so their outputs ({frame.stem}.png) would collide; keep one of them")
        first[frame.stem] = frame
    return [frame.stem for frame in frames]


def _check_source(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video not found: {path}")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            expected = ", ".join(VIDEO_SUFFIXES)
            raise VideoError(f"{path}: unsupported video type {path.suffix!r} (expected {expected})")
        if path.stat().st_size == 0:
            raise VideoError(f"{path}: empty video file (0 bytes)")
    return path


def _backend(name: str) -> str:
    if name not in ("auto", "decord", "av"):
        raise ValueError(f"backend must be 'auto', 'decord' or 'av', got {name!r}")
    if name == "auto":
        try:
            import decord  # noqa: F401
        except ImportError:
            return "av"
        return "decord"
    return name


def _diagnose(path: Path) -> str:
    """Why a video cannot be read, in words, by probing it with PyAV."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "empty video (no video stream)"
            stream = container.streams.video[0]
            for _ in container.decode(stream):
                return "the decoder failed on it"
            return "empty video (0 frames)"
    except (av.error.FFmpegError, OSError, ValueError) as err:
        return f"it is corrupt, truncated or not a video ({err})"


def _open_decord(path: Path):
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    except Exception as err:  # decord raises DECORDError / RuntimeError with C++ log text
        raise VideoError(f"{path}: cannot read video: {_diagnose(path)}") from err
    if len(reader) == 0:
        raise VideoError(f"{path}: cannot read video: empty video (0 frames)")
    return reader


def _av_frames(path: Path) -> Iterator[np.ndarray]:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{path}: cannot read video: {_diagnose(path)}") from err
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: cannot read video: empty video (no video stream)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                count += 1
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            raise VideoError(f"{path}: decoding failed after {count} frames ({err})") from err
        if count == 0:
            raise VideoError(f"{path}: cannot read video: empty video (0 frames)")


def _decord_frames(path: Path, batch_size: int) -> Iterator[np.ndarray]:
    reader = _open_decord(path)  # opened on first next(): readers must live in the process that uses them
    n = len(reader)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        try:
            batch = reader.get_batch(list(range(start, stop))).asnumpy()
        except Exception:  # decord's C++ errors: let PyAV decode (and diagnose) the rest
            batch = None
        if batch is None or batch.ndim != 4 or batch.shape[-1] != 3:
            # decord 0.6 mis-sizes some frame shapes (48x32 comes out with 4 channels or fails to copy).
            del reader
            yield from itertools.islice(_av_frames(path), start, None)
            return
        yield from batch
    del reader


def _folder_frames(files: list[Path]) -> Iterator[np.ndarray]:
    first_shape = None
    for path in files:
        image = read_image(path)
        if first_shape is None:
            first_shape = image.shape
        elif image.shape != first_shape:
            raise VideoError(f"{path}: size {image.shape[:2]} differs from {files[0]} {first_shape[:2]}")
        yield image


def read_video_frames(
    path: str | os.PathLike, *, batch_size: int = 8, backend: str = "auto"
) -> Iterator[np.ndarray]:
    """Stream the frames of a video file (mp4/avi/mov/mkv/webm) or an image folder.

    Yields ``(H, W, 3) uint8`` RGB frames. The path is checked now; the decoder is opened lazily, on the
    first ``next()``, and decodes ``batch_size`` frames at a time.

    Args:
        backend: "decord", "av" (PyAV) or "auto" (decord when installed).
    Raises:
        FileNotFoundError: missing path. VideoError: empty/corrupt video, no images in the folder
        (for videos, possibly raised on the first ``next()``).
    """
    path = _check_source(path)
    if path.is_dir():
        return _folder_frames(list_image_frames(path))
    if _backend(backend) == "decord":
        return _decord_frames(path, max(int(batch_size), 1))
    return _av_frames(path)


def count_frames(path: str | os.PathLike, *, backend: str = "auto") -> int:
    """Number of frames of a video file or image folder (the same errors as ``read_video_frames``)."""
    path = _check_source(path)
    if path.is_dir():
        return len(list_image_frames(path))
    if _backend(backend) == "decord":
        return len(_open_decord(path))
    return sum(1 for _ in _av_frames(path))  # container frame counts are unreliable: decode


def video_fps(path: str | os.PathLike, default: float = 10.0) -> float:
    """Average frame rate of a video file; ``default`` for image folders or when it is unknown."""
    path = _check_source(path)
    if path.is_dir():
        return default
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate if container.streams.video else None
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{path}: cannot read video: {_diagnose(path)}") from err
    return float(rate) if rate else default


# ----------------------------------------------------------------------------------------------------------
# Overlays
# ----------------------------------------------------------------------------------------------------------


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """``(H, W) bool``: pixels whose label differs from a 4-neighbour."""
    edge = np.zeros(labels.shape, dtype=bool)
    dy = labels[1:] != labels[:-1]
    dx = labels[:, 1:] != labels[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def overlay(
    frame: np.ndarray,
    labels: np.ndarray,
    alpha: float = 0.5,
    palette: list[int] = DAVIS_PALETTE,
    *,
    contour_width: int | None = None,
) -> np.ndarray:
    """Blend object colours over ``frame`` and draw object contours (a pure function).

    Args:
        frame: (H, W, 3) uint8 RGB. labels: (H, W) ids; 0 = background is left untouched.
        alpha: weight of the object colour inside objects.
        contour_width: contour thickness in px (default: 1 per 240 px of the short side, at least 1).
    Returns:
        (H, W, 3) uint8.
    """
    frame = np.asarray(frame)
    labels = np.asarray(labels)
    if frame.ndim != 3 or frame.shape[2] != 3 or labels.shape != frame.shape[:2]:
        raise ValueError(f"expected frame (H, W, 3) and labels (H, W), got {frame.shape} and {labels.shape}")
    colours = np.asarray(palette, dtype=np.float32).reshape(-1, 3)
    ids = labels.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(colours)):
        raise ValueError(f"label ids must be in [0, {len(colours) - 1}]")
    colour = colours[ids]
    fg = ids > 0
    out = frame.astype(np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * colour[fg]
    edge = _boundaries(ids) & fg
    width = contour_width if contour_width is not None else max(1, round(min(ids.shape) / 240))
    if width > 1:
        from scipy import ndimage

        # Thicken inwards only, so neighbouring objects keep their own contour colour.
        grown = ndimage.binary_dilation(edge, iterations=width - 1)
        edge = grown & fg
    out[edge] = colour[edge]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------


class VideoWriter:
    """Write ``(H, W, 3) uint8`` frames to an H.264 mp4 (libx264, yuv420p) with PyAV, atomically.

    The frame size is fixed by the first frame; odd sizes are padded by one edge pixel (yuv420p needs even
    sizes). Frames go to a hidden temporary file that is renamed onto ``path`` on a clean close; an error
    inside the ``with`` block leaves ``path`` untouched.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 10.0, *, crf: int = 20, preset: str = "medium"):
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = int(crf)
        self.preset = preset
        self.num_frames = 0
        self._container = None
        self._stream = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None  # (H, W) of the input frames
        self._closed = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open(self, height: int, width: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".mp4")
        os.close(fd)
        self._tmp = Path(tmp)
        # faststart puts the index first so browsers can play while downloading.
        self._container = av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"})
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width = width + width % 2
        stream.height = height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = stream
        self._size = (height, width)

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3) uint8`` RGB frame."""
        import av

        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        if self._container is None:
            self._open(*frame.shape[:2])
        elif frame.shape[:2] != self._size:
            raise ValueError(f"{self.path}: frame size {frame.shape[:2]} differs from the first {self._size}")
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.num_frames += 1

    def close(self) -> Path:
        """Flush, close and move the file into place. Returns the final path."""
        if self._closed:
            return self.path
        self._closed = True
        if self._container is None:
            raise ValueError(f"{self.path}: no frames written")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            chmod_like_open(self._tmp)  # the temporary came from mkstemp (0600)
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._container = None
        return self.path

    def abort(self) -> None:
        """Discard the output (the temporary file) without touching ``path``."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the file is being discarded; a failing flush does not matter
                pass
            self._container = None
        self._closed = True
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()


class OverlayVideoWriter(VideoWriter):
    """A VideoWriter whose ``write(frame, labels)`` draws the label map over the frame (see ``overlay``) and,
    with ``show_ids``, each object's id in a small dark box at its centre (:meth:`draw_ids`)."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 10.0,
        *,
        alpha: float = 0.5,
        palette: list[int] = DAVIS_PALETTE,
        crf: int = 20,
        show_ids: bool = True,
    ) -> None:
        super().__init__(path, fps, crf=crf)
        self.alpha = alpha
        self.palette = palette
        self.show_ids = show_ids

    def write(self, frame: np.ndarray, labels: np.ndarray) -> None:  # type: ignore[override]
        """frame: (H, W, 3) uint8 RGB; labels: (H, W) ids."""
        image = overlay(frame, labels, self.alpha, self.palette)
        super().write(self.draw_ids(image, labels) if self.show_ids else image)

    @staticmethod
    def draw_ids(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Write each object's id (white on a dark box) at the object pixel nearest its centroid.

        Args:
            image: (H, W, 3) uint8 RGB. labels: (H, W) ids; 0 (background) and 255 (void) get no label.
        Returns:
            (H, W, 3) uint8, a new array.
        """
        from PIL import Image, ImageDraw, ImageFont

        labels = np.asarray(labels)
        height, width = labels.shape
        # The text scales with the frame so ids stay readable on 480p and on small toy frames alike.
        font = ImageFont.load_default(size=max(9, round(min(height, width) / 18)))
        canvas = Image.fromarray(np.ascontiguousarray(image))
        draw = ImageDraw.Draw(canvas)
        for obj in np.unique(labels):
            if obj in (0, 255):
                continue
            ys, xs = np.nonzero(labels == obj)
            cy, cx = ys.mean(), xs.mean()
            # The centroid of a ring or a crescent is outside it: anchor on the object's pixel nearest to it.
            k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
            text = str(int(obj))
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            w, h = right - left + 2, bottom - top + 2
            x = int(np.clip(xs[k] - w // 2, 0, max(0, width - w)))
            y = int(np.clip(ys[k] - h // 2, 0, max(0, height - h)))
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=(0, 0, 0))
            draw.text((x + 1 - left, y + 1 - top), text, fill=(255, 255, 255), font=font)
        return np.asarray(canvas).copy()


def write_video(
    path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 10.0, *, crf: int = 20
) -> Path:
    """Write ``(H, W, 3) uint8`` frames to an H.264 mp4 at ``path`` (atomically) and return the path."""
    with VideoWriter(path, fps, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)

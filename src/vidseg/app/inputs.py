"""What the browser sends, checked and turned into what the predictors take.

Uploads arrive as files Gradio stored in its temporary folder; the app opens only those (never a path typed
in the page). Every refusal is a :class:`vidseg.errors.DataError` whose message the page shows as is.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidseg.data.io import DAVIS_PALETTE
from vidseg.data.video import VIDEO_SUFFIXES, read_video_frames, video_fps, write_video
from vidseg.errors import DataError

# Brush colours: object k is painted in DAVIS palette colour k, the colour its masks and overlay get.
MAX_PAINT_OBJECTS = 8
# A painted pixel counts where the layer is at least this opaque (stroke edges are antialiased).
PAINT_ALPHA_MIN = 128

# The bundled toy clips (vidseg.data.toy / toy_vps, rendered on request; nothing is read from disk).
TOY_VOS_CLIPS = {f"toy VOS clip {i}": i for i in range(3)}
TOY_VPS_CLIPS = {f"toy VPS clip {i}": i for i in range(2)}
TOY_VOS_SIZE = dict(frames=24, height=128, width=224, max_objects=3)


@dataclass(frozen=True)
class Limits:
    """Upload limits (from :class:`vidseg.app.config.AppConfig`)."""

    max_bytes: int
    max_frames: int
    max_seconds: float
    max_pixels: int


@dataclass(frozen=True)
class VideoInfo:
    """A checked video: its path (in the session folder or Gradio's upload folder), frame count, rate, size."""

    path: Path
    frames: int
    fps: float
    height: int
    width: int


def check_video(path: str | Path, limits: Limits) -> VideoInfo:
    """Check an uploaded video: a video type, not too large, decodable, not too long, frames not too big.

    Decodes at most ``limits.max_frames + 1`` frames (what it takes to know the video is too long).

    Raises:
        DataError: with a message for the page (what is wrong, the limit, what to do).
    """
    path = Path(path)
    name = path.name
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise DataError(f"{name}: not a video file (expected {', '.join(VIDEO_SUFFIXES)}); upload an mp4")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise DataError(f"{name}: {size / 2**20:.1f} MB is over this server's limit of "
                        f"{limits.max_bytes / 2**20:.0f} MB; cut or compress the video")
    try:
        frames = read_video_frames(path)
        first = next(frames)
        count = 1 + sum(1 for _ in itertools.islice(frames, limits.max_frames))
        fps = video_fps(path)
    except (DataError, OSError, StopIteration) as err:
        detail = _short(err, path).removeprefix(f"{name}: ")
        raise DataError(f"{name}: cannot read this video ({detail}); upload an mp4 (H.264)") from None
    height, width = first.shape[:2]
    if count > limits.max_frames:
        raise DataError(f"{name}: longer than this server's limit of {limits.max_frames} frames; cut the video")
    if count / fps > limits.max_seconds:
        raise DataError(f"{name}: {count / fps:.0f} s is longer than this server's limit of "
                        f"{limits.max_seconds:.0f} s; cut the video")
    if height * width > limits.max_pixels:
        raise DataError(f"{name}: frames of {width}x{height} are larger than this server's limit of "
                        f"{limits.max_pixels} pixels; downscale the video")
    return VideoInfo(path, count, fps, height, width)


def _short(err: BaseException, path: Path | None = None) -> str:
    """An error's message on one line, without the server's folders (the page sees file names only)."""
    text = " ".join(str(err).split()) or type(err).__name__
    if path is not None:
        text = text.replace(f"{path.parent}/", "")
    return text


def read_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` of a video: (H, W, 3) uint8 RGB (decodes from the start: videos are short here)."""
    frame = next(itertools.islice(read_video_frames(path), index, None), None)
    if frame is None:
        raise DataError(f"{path.name}: has no frame {index}")
    return frame


def write_toy_vos_clip(name: str, folder: Path) -> tuple[Path, np.ndarray]:
    """Render the bundled toy VOS clip ``name`` into ``folder/<slug>.mp4``; returns it and its (T, H, W)
    uint8 ground-truth ids (the same as ``vidseg.data.toy`` seed 0, val split)."""
    from vidseg.data.toy import render_toy_sequence

    if name not in TOY_VOS_CLIPS:
        raise DataError(f"{name!r}: not a bundled clip; choose one of {', '.join(TOY_VOS_CLIPS)}")
    images, labels = render_toy_sequence(seed=0, split="val", index=TOY_VOS_CLIPS[name], **TOY_VOS_SIZE)
    path = folder / f"toy_vos_{TOY_VOS_CLIPS[name]:d}.mp4"
    write_video(path, list(images), fps=10)
    return path, labels


def write_toy_vps_clip(name: str, folder: Path) -> Path:
    """Render the bundled toy VPS clip ``name`` (a toy Cityscapes-VPS val clip, the demo's size) into
    ``folder/<slug>.mp4``."""
    from vidseg.data.io import read_image
    from vidseg.data.toy_vps import generate_toy_vps

    if name not in TOY_VPS_CLIPS:
        raise DataError(f"{name!r}: not a bundled clip; choose one of {', '.join(TOY_VPS_CLIPS)}")
    index = TOY_VPS_CLIPS[name]
    root = generate_toy_vps(folder / "toy_vps", format="cityscapes_vps", seed=0, videos=1, val_videos=2,
                            height=128, width=256, max_objects=6)
    frames = sorted((root / "val" / "img_all").glob("*.png"))
    clips = sorted({f.name[:4] for f in frames})
    clip = [f for f in frames if f.name[:4] == clips[index]]
    return write_video(folder / f"toy_vps_{index:d}.mp4", [read_image(p) for p in clip], fps=10)


def object_colour(obj: int) -> tuple[int, int, int]:
    """The DAVIS palette colour of object id ``obj`` (its brush colour, mask PNG colour and overlay colour)."""
    return tuple(DAVIS_PALETTE[3 * obj: 3 * obj + 3])


def brush_colours(count: int = MAX_PAINT_OBJECTS) -> list[str]:
    """CSS colours of objects 1..count, for the editor's brush."""
    return ["#{:02x}{:02x}{:02x}".format(*object_colour(obj)) for obj in range(1, count + 1)]


def painted_mask(layers: list[np.ndarray], size: tuple[int, int], count: int = MAX_PAINT_OBJECTS) -> np.ndarray:
    """Brush strokes -> label map: each opaque pixel gets the object whose brush colour is nearest.

    Args:
        layers: the editor's layers, each (H, W, 4) uint8 RGBA (transparent where nothing is painted); later
            layers paint over earlier ones.
        size: the frame's (H, W); layers of another size (a resized canvas) are resampled to it (nearest).
    Returns:
        (H, W) uint8 ids: 0 = not painted, k = painted in object k's colour.
    """
    colours = np.asarray([object_colour(obj) for obj in range(1, count + 1)], dtype=np.int32)  # (K, 3)
    out = np.zeros(size, np.uint8)
    for layer in layers:
        layer = np.asarray(layer)
        if layer.ndim != 3 or layer.shape[2] != 4:
            raise DataError(f"painted layer has shape {layer.shape}, expected (H, W, 4) RGBA")
        if layer.shape[:2] != tuple(size):
            from PIL import Image

            layer = np.asarray(Image.fromarray(layer).resize((size[1], size[0]), Image.NEAREST))
        opaque = layer[..., 3] >= PAINT_ALPHA_MIN
        if not opaque.any():
            continue
        rgb = layer[opaque][:, :3].astype(np.int32)  # (N, 3)
        nearest = ((rgb[:, None, :] - colours[None]) ** 2).sum(-1).argmin(1)
        out[opaque] = (nearest + 1).astype(np.uint8)
    return out


def read_mask_upload(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """An uploaded mask PNG (indexed, value = object id, as ``vidseg.predict mask=`` takes) checked against the
    frame size; returns (H, W) uint8 ids.

    Raises:
        DataError: not an indexed PNG, wrong size, no object.
    """
    from vidseg.data.io import read_mask

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"{path.name}: a mask must be a PNG (indexed, pixel value = object id, 0 = background)")
    try:
        mask = read_mask(path)
    except (DataError, OSError) as err:
        raise DataError(_short(err, path)) from None
    if mask.shape != tuple(size):
        raise DataError(f"{path.name}: mask is {mask.shape[1]}x{mask.shape[0]} but the video is {size[1]}x{size[0]} "
                        "(WxH); give a mask at video size")
    if not ((mask > 0) & (mask < 255)).any():
        raise DataError(f"{path.name}: the mask contains no object (only background/void)")
    return mask


def describe_annotations(annotations: dict[int, np.ndarray]) -> str:
    """'frame 0: objects 1, 2; frame 12: object 3' for the page."""
    parts = []
    for index in sorted(annotations):
        ids = [int(i) for i in np.unique(annotations[index]) if 0 < i < 255]
        parts.append(f"frame {index}: object{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}")
    return "; ".join(parts) if parts else "no objects given yet"


def mask_layer(mask: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (H, W, 4) uint8 RGBA layer for the editor: each object in its colour, the rest transparent
    (the inverse of :func:`painted_mask`)."""
    ids = np.asarray(mask)
    if ids.max(initial=0) > MAX_PAINT_OBJECTS and (ids[ids < 255] > MAX_PAINT_OBJECTS).any():
        raise DataError(f"object ids above {MAX_PAINT_OBJECTS} cannot be shown or painted here; renumber the "
                        f"objects 1..{MAX_PAINT_OBJECTS} (or use python -m vidseg.predict)")
    palette = np.zeros((256, 4), np.uint8)
    for obj in range(1, MAX_PAINT_OBJECTS + 1):
        palette[obj] = (*object_colour(obj), 255)
    return palette[ids.astype(np.uint8)]


def store_upload(upload: str | Path, folder: Path, task: str, limits: Limits) -> VideoInfo:
    """Copy an uploaded video into the session's folder (under a name made here, not the browser's) and check
    it (:func:`check_video`); the copy is removed if it is refused. Gradio's own upload cache expires on its
    own clock, so runs read the session's copy."""
    import shutil

    upload = Path(upload)
    if upload.suffix.lower() not in VIDEO_SUFFIXES:
        raise DataError(f"{upload.name}: not a video file (expected {', '.join(VIDEO_SUFFIXES)}); upload an mp4")
    if upload.stat().st_size > limits.max_bytes:
        return check_video(upload, limits)  # refused with the size message, before any copy
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{task}-input{upload.suffix.lower()}"
    shutil.copyfile(upload, copy)
    try:
        return check_video(copy, limits)
    except DataError as err:
        copy.unlink(missing_ok=True)
        raise DataError(str(err).replace(copy.name, upload.name)) from None

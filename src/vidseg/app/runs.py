"""One run of a task's predictor over an uploaded video, for the page: the same predictors and writers as
``vidseg.predict`` (:class:`vidseg.inference.vos.VOSPredictor`, :class:`vidseg.inference.vps.VPSPredictor`,
DAVIS palette PNGs, COCO-panoptic PNGs + segments JSON, overlay videos), written into the session's folder.

Each run is a generator: it yields a :class:`RunProgress` after every frame and a result last, so the page
shows frames done and frames/s, and a cancelled run stops at the next frame (closing the generator aborts the
overlay video; the run's folder holds no zip then).
"""

from __future__ import annotations

import shutil
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vidseg.app.inputs import VideoInfo
from vidseg.data.io import write_json_atomic, write_mask
from vidseg.data.video import OverlayVideoWriter, read_video_frames

if TYPE_CHECKING:
    from vidseg.inference.vos import VOSPredictor
    from vidseg.inference.vps import VPSPredictor


@dataclass
class RunProgress:
    """Frames done of ``total`` after ``elapsed`` seconds."""

    done: int
    total: int
    elapsed: float

    @property
    def fps(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def text(self) -> str:
        return f"{self.done}/{self.total} frames, {self.fps:.1f} frames/s"


@dataclass
class VOSResult:
    """A finished VOS run: masks/<frame>.png, overlay.mp4 and masks.zip in ``folder``."""

    folder: Path
    frames: int
    object_ids: list[int]
    object_first_frames: dict[int, int]
    fps: float

    @property
    def overlay(self) -> Path:
        return self.folder / "overlay.mp4"

    @property
    def masks_zip(self) -> Path:
        return self.folder / "masks.zip"


@dataclass
class VPSResult:
    """A finished VPS run: panoptic/, segments/, overlay.mp4 and panoptic.zip in ``folder``; ``tracks``: one
    row per thing track (track id, class, first frame, last frame, frames, mean area in px)."""

    folder: Path
    frames: int
    fps: float
    tracks: list[list[Any]] = field(default_factory=list)
    classes: list[dict[str, Any]] = field(default_factory=list)  # the classes seen: {"id", "name", "color"}

    @property
    def overlay(self) -> Path:
        return self.folder / "overlay.mp4"

    @property
    def panoptic_zip(self) -> Path:
        return self.folder / "panoptic.zip"


def new_run_folder(session_folder: Path, task: str) -> Path:
    """A fresh ``<session>/<task>-run``; the previous run's outputs go (the page keeps only the latest)."""
    folder = session_folder / f"{task}-run"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def zip_folders(zip_path: Path, root: Path, names: list[str]) -> Path:
    """Zip ``root/<name>/*`` for each name (paths inside the zip: ``<name>/<file>``); PNGs are stored."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            for path in sorted((root / name).iterdir()):
                kind = zipfile.ZIP_STORED if path.suffix == ".png" else zipfile.ZIP_DEFLATED
                archive.write(path, f"{name}/{path.name}", compress_type=kind)
    return zip_path


class _Frames:
    """The video's frames, remembering the one last handed out (the overlay draws on it)."""

    def __init__(self, path: Path):
        self._frames, self.current = read_video_frames(path), None

    def __iter__(self):
        for frame in self._frames:
            self.current = frame
            yield frame


def run_vos(predictor: VOSPredictor, video: VideoInfo, annotations: Mapping[int, np.ndarray],
            folder: Path) -> Iterator[RunProgress | VOSResult]:
    """Track the objects of ``annotations`` (frame index -> (H, W) uint8 ids of the objects given there) through
    ``video``; writes ``folder/masks/<index:05d>.png`` (DAVIS palette), ``overlay.mp4`` and ``masks.zip``.

    Yields a :class:`RunProgress` per frame, then the :class:`VOSResult`. Objects given at a later frame are
    added there (:meth:`VOSPredictor.track`); ids already tracked are not re-given.
    """
    masks_dir = folder / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    frames = _Frames(video.path)
    started, count, ids, first_frames = time.perf_counter(), 0, (), {}
    with OverlayVideoWriter(folder / "overlay.mp4", fps=video.fps) as writer:
        for index, ids, mask in predictor.track(frames, masks=dict(annotations)):
            write_mask(masks_dir / f"{index:05d}.png", mask)
            writer.write(frames.current, mask)
            for obj in ids:
                first_frames.setdefault(int(obj), index)
            count = index + 1
            yield RunProgress(count, video.frames, time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    zip_folders(folder / "masks.zip", folder, ["masks"])
    yield VOSResult(folder, count, [int(i) for i in ids], first_frames, count / elapsed if elapsed else 0.0)


def run_vps(predictor: VPSPredictor, video: VideoInfo, folder: Path) -> Iterator[RunProgress | VPSResult]:
    """Segment ``video`` with VPSNet; writes ``folder/panoptic/<index:05d>.png`` (COCO-panoptic RGB),
    ``segments/<index:05d>.json``, ``overlay.mp4`` (each track its colour) and ``panoptic.zip`` (the two
    folders): the layout of ``vidseg.predict task=vps``.

    Yields a :class:`RunProgress` per frame, then the :class:`VPSResult`.
    """
    from vidseg.data.panoptic import write_panoptic_png
    from vidseg.data.video import VideoWriter
    from vidseg.tasks.vps_entry import panoptic_overlay
    from vidseg.tasks.vps_records import frame_segments_record

    names = {int(c["id"]): c.get("name") for c in predictor.categories}
    for sub in ("panoptic", "segments"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    session = predictor.start()
    started = time.perf_counter()
    tracks: dict[int, dict[str, Any]] = {}
    seen_classes: set[int] = set()
    with VideoWriter(folder / "overlay.mp4", fps=video.fps) as writer:
        for frame in read_video_frames(video.path):
            index, panoptic, segments = session.step(frame)
            name = f"{index:05d}"
            write_panoptic_png(folder / "panoptic" / f"{index:05d}.png", panoptic)
            write_json_atomic(folder / "segments" / f"{index:05d}.json",
                              frame_segments_record(index, name, segments, names))
            writer.write(panoptic_overlay(frame, panoptic, predictor.categories))
            for s in segments:
                seen_classes.add(int(s["category_id"]))
                if s["isthing"] and s["track_id"] is not None:
                    row = tracks.setdefault(int(s["track_id"]), {"class": int(s["category_id"]), "first": index,
                                                                 "frames": 0, "area": 0})
                    row["last"], row["frames"], row["area"] = index, row["frames"] + 1, row["area"] + int(s["area"])
            yield RunProgress(index + 1, video.frames, time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    zip_folders(folder / "panoptic.zip", folder, ["panoptic", "segments"])
    rows = [[track, names.get(row["class"]) or f"class_{row['class']}", row["first"], row["last"], row["frames"],
             round(row["area"] / row["frames"])] for track, row in sorted(tracks.items())]
    classes = [{"id": int(c["id"]), "name": c.get("name"), "isthing": bool(c.get("isthing")),
                "color": tuple(c["color"]) if c.get("color") else (128, 128, 128)}
               for c in predictor.categories if int(c["id"]) in seen_classes]
    yield VPSResult(folder, session.frame_index, session.frame_index / elapsed if elapsed else 0.0, rows, classes)


TRACK_COLUMNS = ["track", "class", "first frame", "last frame", "frames", "mean area (px)"]


def legend_html(result: VPSResult) -> str:
    """Class names with their overlay colours (stuff) and the tracks with theirs (things), as HTML."""
    from html import escape

    from vidseg.tasks.vps_entry import track_colour

    def swatch(colour, text):
        r, g, b = colour
        return (f'<span style="display:inline-block;margin:2px 10px 2px 0"><span style="display:inline-block;'
                f'width:12px;height:12px;background:rgb({r},{g},{b});border:1px solid #333;margin-right:4px">'
                f"</span>{escape(text)}</span>")

    stuff = [swatch(c["color"], c["name"] or f"class_{c['id']}") for c in result.classes if not c["isthing"]]
    things = [swatch(track_colour(row[0]), f"{row[1]} #{row[0]}") for row in result.tracks]
    return (f"<div><b>stuff</b>: {''.join(stuff) or 'none'}</div>"
            f"<div><b>tracks</b> (one colour each): {''.join(things) or 'none'}</div>")


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
from vidseg.data.io import read_mask, write_json_atomic, write_mask
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
    """A finished VOS run: masks/<frame>.png, overlay.mp4 and masks.zip in ``folder``; ``video`` and
    ``annotations`` are what it was given (a rerun resumes from it), ``reused`` the leading frames whose masks it
    took from the run before, ``fps`` the speed over the frames it segmented."""

    folder: Path
    frames: int
    object_ids: list[int]
    object_first_frames: dict[int, int]
    fps: float
    video: Path | None = None
    annotations: dict[int, np.ndarray] = field(default_factory=dict)
    reused: int = 0

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


def new_run_folder(session_folder: Path, task: str, keep: Path | None = None) -> Path:
    """A fresh ``<session>/<task>-run-<n>``. Earlier runs' folders go (the page keeps only the latest), except
    ``keep``: the run a rerun resumes from (:func:`run_vos` removes it when it is done with it)."""
    runs = [p for p in session_folder.glob(f"{task}-run-*") if p.name.rsplit("-", 1)[1].isdigit()]
    number = 1 + max((int(p.name.rsplit("-", 1)[1]) for p in runs), default=0)
    for old in runs:
        if keep is None or old != keep:
            shutil.rmtree(old, ignore_errors=True)
    folder = session_folder / f"{task}-run-{number}"
    folder.mkdir(parents=True)
    return folder


def reusable_frames(previous: Mapping[int, np.ndarray], current: Mapping[int, np.ndarray], frames: int) -> int:
    """How many leading frames of a rerun can take the previous run's masks: those before the first frame whose
    annotation was added, changed or removed since (tracking is causal: nothing earlier depends on it); all
    ``frames`` when nothing changed."""
    changed = [t for t in previous.keys() | current.keys()
               if t not in previous or t not in current or not np.array_equal(previous[t], current[t])]
    return min([*changed, frames])


class _SavedMasks(Mapping):
    """A finished run's ``masks/<index:05d>.png``, read when asked for (frame index -> (H, W) uint8 ids)."""

    def __init__(self, folder: Path, frames: int):
        self.folder, self.frames = folder, frames

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.frames:
            raise KeyError(index)
        return read_mask(self.folder / f"{index:05d}.png")

    def __iter__(self):
        return iter(range(self.frames))

    def __len__(self) -> int:
        return self.frames


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
            folder: Path, previous: VOSResult | None = None) -> Iterator[RunProgress | VOSResult]:
    """Track the objects of ``annotations`` (frame index -> (H, W) uint8 ids of the objects given there) through
    ``video``; writes ``folder/masks/<index:05d>.png`` (DAVIS palette), ``overlay.mp4`` and ``masks.zip``.

    Yields a :class:`RunProgress` per frame, then the :class:`VOSResult`. Objects given at a later frame are
    added there (:meth:`VOSPredictor.track`); ids already tracked are not re-given.

    ``previous``: the last finished run on this video (same predictor). The rerun resumes from the first frame
    whose annotation changed (e.g. an object added there): earlier frames take ``previous``'s masks
    (:meth:`VOSPredictor.track`'s ``known``), which a run from the start would give again. Its folder is removed
    once this run has finished.
    """
    known, known_until = None, 0
    if (previous is not None and previous.video == video.path and previous.frames == video.frames
            and (previous.folder / "masks").is_dir()):
        known_until = reusable_frames(previous.annotations, annotations, video.frames)
        known = _SavedMasks(previous.folder / "masks", previous.frames)
    masks_dir = folder / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    frames = _Frames(video.path)
    started, count, ids, first_frames = time.perf_counter(), 0, (), {}
    with OverlayVideoWriter(folder / "overlay.mp4", fps=video.fps) as writer:
        for index, ids, mask in predictor.track(frames, masks=dict(annotations), known=known,
                                                known_until=known_until):
            write_mask(masks_dir / f"{index:05d}.png", mask)
            writer.write(frames.current, mask)
            for obj in ids:
                first_frames.setdefault(int(obj), index)
            count = index + 1
            yield RunProgress(count, video.frames, time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    zip_folders(folder / "masks.zip", folder, ["masks"])
    if previous is not None and previous.folder != folder:
        shutil.rmtree(previous.folder, ignore_errors=True)
    segmented = count - min(known_until, count)
    yield VOSResult(folder, count, [int(i) for i in ids], first_frames, segmented / elapsed if elapsed else 0.0,
                    video=video.path, annotations=dict(annotations), reused=min(known_until, count))


def run_vps(predictor: VPSPredictor, video: VideoInfo, folder: Path) -> Iterator[RunProgress | VPSResult]:
    """Segment ``video`` with VPSNet; writes ``folder/panoptic/<index:05d>.png`` (COCO-panoptic RGB),
    ``segments/<index:05d>.json``, ``overlay.mp4`` (each track its colour) and ``panoptic.zip`` (the two
    folders): the layout of ``vidseg.predict task=vps``.

    Yields a :class:`RunProgress` per frame, then the :class:`VPSResult`.
    """
    from vidseg.data.panoptic import write_panoptic_png
    from vidseg.data.video import VideoWriter
    from vidseg.tasks.vps_entry import panoptic_overlay
    from vidseg.tasks.vps_records import category_table, frame_segments_record

    categories = category_table(predictor.categories)  # class id -> (the dataset's id, name)
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
                              frame_segments_record(index, name, segments, categories))
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
    rows = [[track, categories[row["class"]][1] or f"class_{row['class']}", row["first"], row["last"], row["frames"],
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


"""YouTube-VOS 2018/2019 file layout, its protocol for objects that appear later, and the submission (no torch).

    <root>/<split>/JPEGImages/<video>/<frame>.jpg    split = train | valid (| test); frame = 5-digit number
    <root>/<split>/Annotations/<video>/<frame>.png   palette PNG, value = object id; train: every frame,
                                                     valid: only the frames where objects first appear
                                                     (each file holds the objects that start there)
    <root>/<split>/meta.json                         {"videos": {<video>: {"objects": {<id>: {"category": ...,
                                                     "frames": [<frame>, ...]}}}}}

An object's *first frame* is the first of its ``frames`` in meta.json: its mask is given there and it is
segmented from there on. vidseg's own score (the server scores valid/test) is J&F per object over the frames
after its first frame, the video's last frame excluded (DAVIS excludes the first and the last frame; here the
"first" is each object's own), and means over all objects of all videos, as in DAVIS. It needs every frame
annotated: train, or a folder of full annotations (``ground_truth_dir``).

The submission is ``Annotations/<video>/<frame>.png`` for every frame of ``<split>/JPEGImages/<video>``
(palette PNGs with the given ids), zipped with ``Annotations/`` at the top (:func:`write_submission_zip`).

Kept free of torch and Lightning so that scoring a results folder imports only what it uses.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vidseg.data.io import atomic_path, read_mask, warn_user
from vidseg.data.names import check_name, checked_join
from vidseg.data.panoptic import read_json
from vidseg.errors import DatasetLayoutError, MaskFormatError

if TYPE_CHECKING:
    from vidseg.metrics.davis_eval import DavisResults

YOUTUBE_VOS_URL = "https://youtube-vos.org/dataset/vos/"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
# Where a folder of full annotations of <split> is looked for when none is given (the toy set writes it).
FULL_ANNOTATIONS_DIR = "{split}_full_annotations"


@dataclass
class YouTubeVOSVideo:
    """One video of a split.

    Attributes:
        name: the video id.
        frames: its frame files (``<split>/JPEGImages/<video>``), sorted by name.
        annotations: frame name (stem) -> annotation file, for the annotated frames.
        objects: object id -> its frame names from meta.json (the first one is where its mask is given).
        categories: object id -> category name.
    """

    name: str
    frames: list[Path]
    annotations: dict[str, Path]
    objects: dict[int, list[str]]
    categories: dict[int, str] = field(default_factory=dict)

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.frames]

    def first_frames(self) -> dict[int, int]:
        """Object id -> index (in :attr:`frames`) of its first frame."""
        index = {name: i for i, name in enumerate(self.frame_names)}
        return {obj: index[frames[0]] for obj, frames in self.objects.items()}

    def given_frames(self) -> dict[int, list[int]]:
        """Frame index -> ids of the objects whose first frame it is (their masks are given there)."""
        out: dict[int, list[int]] = {}
        for obj, first in sorted(self.first_frames().items()):
            out.setdefault(first, []).append(obj)
        return dict(sorted(out.items()))

    def read_given_mask(self, index: int) -> np.ndarray:
        """(H, W) uint8 mask of the objects that start at frame ``index``; 0 elsewhere.

        Other ids in the annotation file (objects that started earlier) are set to 0: each object's mask
        is given at its first frame only.

        Raises:
            DatasetLayoutError: the frame has no annotation, or the file lacks an object meta.json starts there.
        """
        stem = self.frames[index].stem
        ids = self.given_frames().get(index, [])
        path = self.annotations.get(stem)
        if path is None:
            expected = checked_join(self.frames[index].parents[2] / "Annotations", self.name, f"{stem}.png",
                                    source=self.frames[index], what="video id")
            raise DatasetLayoutError(
                f"{self.frames[index]}: meta.json says object(s) {ids} of video {self.name!r} first appear in frame "
                f"{stem}, but there is no annotation {expected}"
            )
        mask = read_mask(path)
        present = set(np.unique(mask).tolist())
        missing = [obj for obj in ids if obj not in present]
        if missing:
            raise DatasetLayoutError(
                f"{path}: meta.json says object(s) {missing} first appear in this frame, but the annotation has "
                f"ids {sorted(present - {0, 255})}; fix meta.json or the annotation"
            )
        return np.where(np.isin(mask, ids), mask, 0).astype(np.uint8)


def _listdir(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    # Hidden files are skipped: atomic writers leave ".name.xxx" temporaries while they run.
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith("."))


def _missing_root_message(root: Path, looked_for: Path) -> str:
    return (
        f"YouTube-VOS not found: {looked_for} does not exist. Download YouTube-VOS 2018 or 2019 from "
        f"{YOUTUBE_VOS_URL} and unzip it so that <root>/train and <root>/valid each hold JPEGImages, Annotations "
        "and meta.json, then set data.root=<that folder>. For a quick CPU run use the toy set: "
        "`python -m vidseg.data.toy --format youtube_vos --root data/toy_youtube_vos` and "
        "data.root=data/toy_youtube_vos."
    )


def read_meta(root: str | os.PathLike, split: str) -> dict[str, dict[int, dict]]:
    """``<root>/<split>/meta.json`` as ``video -> object id -> {"category": str, "frames": [frame names]}``.

    Video ids and frame names are checked (:func:`vidseg.data.names.check_name`) before they become paths.

    Raises:
        FileNotFoundError: no meta.json (the message says how to get YouTube-VOS or the toy set).
        DatasetLayoutError: a file that is not the meta.json layout (names the key).
    """
    path = checked_join(root, str(split), "meta.json", source="data.split", what="split")
    if not path.is_file():
        raise FileNotFoundError(_missing_root_message(Path(root), path))
    raw = read_json(path, what="YouTube-VOS meta.json")  # refuses a key given twice (a video listed twice)
    videos = raw.get("videos") if isinstance(raw, dict) else None
    if not isinstance(videos, dict):
        raise DatasetLayoutError(
            f'{path}: expected {{"videos": {{<video id>: {{"objects": ...}}}}}}, found no "videos" object'
        )
    out: dict[str, dict[int, dict]] = {}
    for video, entry in videos.items():
        check_name(video, source=path, what="video id")
        objects = entry.get("objects") if isinstance(entry, dict) else None
        if not isinstance(objects, dict):
            raise DatasetLayoutError(f'{path}: video {video!r} has no "objects" object')
        parsed: dict[int, dict] = {}
        for key, obj in objects.items():
            try:
                obj_id = int(key)
            except ValueError:
                obj_id = -1
            if not 1 <= obj_id <= 254:
                raise DatasetLayoutError(f"{path}: video {video!r} has object id {key!r}; ids must be 1..254")
            if obj_id in parsed:
                raise DatasetLayoutError(f"{path}: video {video!r} lists object {obj_id} twice (as {key!r} and "
                                         "another spelling of the same number); list each object once")
            frames = obj.get("frames") if isinstance(obj, dict) else None
            if not isinstance(frames, list) or not frames:
                raise DatasetLayoutError(f'{path}: object {key} of video {video!r} has no "frames" list')
            for name in frames:
                check_name(str(name), source=path, what="frame name")
            parsed[obj_id] = {"category": str(obj.get("category", "")), "frames": sorted(map(str, frames))}
        out[str(video)] = parsed
    return out


def list_videos(root: str | os.PathLike, split: str) -> list[str]:
    """Video ids of ``split`` (from its meta.json, sorted), checking their frame folders exist.

    Raises:
        FileNotFoundError: missing meta.json or JPEGImages folder. DatasetLayoutError: no videos.
    """
    split_dir = checked_join(root, str(split), source="data.split", what="split")
    meta = read_meta(root, split)
    if not meta:
        raise DatasetLayoutError(f"{split_dir / 'meta.json'} lists no videos")
    img_root = split_dir / "JPEGImages"
    if not img_root.is_dir():
        raise FileNotFoundError(f"folder not found: {img_root} (YouTube-VOS {split}/ needs JPEGImages/)")
    names = sorted(meta)
    missing = [v for v in names
               if not checked_join(img_root, v, source=split_dir / "meta.json", what="video id").is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} video(s) listed in {split_dir / 'meta.json'} have no frame folder in {img_root}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    return names


def load_video(root: str | os.PathLike, split: str, video: str,
               meta: Mapping[str, Mapping[int, dict]] | None = None) -> YouTubeVOSVideo:
    """The files and objects of one video (``meta``: :func:`read_meta`'s result, read if not given).

    Raises:
        FileNotFoundError: missing frame folder or no frames.
        DatasetLayoutError: an annotation or a meta.json frame without its frame file (names them).
    """
    split_dir = checked_join(root, str(split), source="data.split", what="split")
    check_name(video, source=split_dir / "meta.json", what="video id")
    meta = read_meta(root, split) if meta is None else meta
    if video not in meta:
        raise DatasetLayoutError(f"video {video!r} is not listed in {split_dir / 'meta.json'}")
    img_dir = checked_join(split_dir, "JPEGImages", video, source=split_dir / "meta.json", what="video id")
    ann_dir = checked_join(split_dir, "Annotations", video, source=split_dir / "meta.json", what="video id")
    if not img_dir.is_dir():
        raise FileNotFoundError(f"video folder not found: {img_dir}")
    frames = _listdir(img_dir, FRAME_SUFFIXES)
    if not frames:
        raise FileNotFoundError(f"no frames ({'/'.join(FRAME_SUFFIXES)}) in {img_dir}")
    stems = {p.stem for p in frames}
    annotations = {p.stem: p for p in _listdir(ann_dir, (".png",))} if ann_dir.is_dir() else {}
    orphans = sorted(set(annotations) - stems)
    if orphans:
        raise DatasetLayoutError(
            f"{len(orphans)} annotation(s) in {ann_dir} have no frame in {img_dir}: "
            f"{', '.join(o + '.png' for o in orphans[:5])}{' ...' if len(orphans) > 5 else ''}"
        )
    objects, categories = {}, {}
    for obj, entry in sorted(meta[video].items()):
        unknown = [f for f in entry["frames"] if f not in stems]
        if unknown:
            raise DatasetLayoutError(
                f"{split_dir / 'meta.json'}: object {obj} of video {video!r} lists frame(s) "
                f"{', '.join(unknown[:5])} that {img_dir} does not have"
            )
        objects[obj] = list(entry["frames"])
        categories[obj] = entry["category"]
    return YouTubeVOSVideo(video, frames, annotations, objects, categories)


def ground_truth_dir(root: str | os.PathLike, split: str, videos: Sequence[YouTubeVOSVideo],
                     given: str | os.PathLike | None = None) -> Path | None:
    """The folder ``<dir>/<video>/<frame>.png`` with every frame annotated, to score ``split`` locally.

    ``given`` if set (it must exist); else ``<root>/<split>/Annotations`` when it annotates every frame of
    every video (train); else ``<root>/<split>_full_annotations`` if it exists (the toy set writes it);
    else None (valid and test: only the server can score them).
    """
    if given is not None:
        path = Path(given)
        if not path.is_dir():
            raise FileNotFoundError(f"ground-truth folder not found: {path} (data.gt_annotations); expected "
                                    "<dir>/<video>/<frame>.png for every frame")
        return path
    if videos and all(len(v.annotations) == len(v.frames) for v in videos):
        return checked_join(root, str(split), "Annotations", source="data.split", what="split")
    full = checked_join(root, FULL_ANNOTATIONS_DIR.format(split=split), source="data.split", what="split")
    return full if full.is_dir() else None


def scored_objects(first_frames: Mapping[int, int], num_frames: int) -> dict[int, int]:
    """The objects vidseg scores and their first frame: those with at least one frame after their first
    frame other than the video's last (frames ``first + 1 .. num_frames - 2`` are scored)."""
    return {obj: first for obj, first in sorted(first_frames.items()) if first + 2 < num_frames}


def evaluate_video(gt: np.ndarray, pred: np.ndarray, first_frames: Mapping[int, int], *, video: str,
                   frame_ids: Sequence[str], bound_th: float = 0.008) -> list[dict]:
    """Score one video's objects, each over the frames after its first frame (the last frame excluded).

    Args:
        gt: (T, H, W) int ground truth of every frame (255 = void, counted as background as in DAVIS).
        pred: (T, H, W) int predictions.
        first_frames: object id -> index of its first frame.
        frame_ids: the T frame names.
    Returns:
        one dict per scored object (:func:`scored_objects`), ascending id: ``name`` ("<video>_<id>"),
        ``object`` id, ``first_frame`` name, ``frames`` (scored names), ``J``/``F`` (float64 lists),
        ``stats`` (6,) float64 in ``STAT_NAMES`` order.
    """
    from vidseg.metrics.j_and_f import evaluate_sequence

    rows = []
    for obj, first in scored_objects(first_frames, gt.shape[0]).items():
        # Binary maps from the object's first frame: evaluate_sequence drops that frame and the last one.
        result = evaluate_sequence((gt[first:] == obj).astype(np.uint8), (pred[first:] == obj).astype(np.uint8),
                                   1, sequence=video, frame_ids=list(frame_ids[first:]), bound_th=bound_th)
        rows.append({"name": f"{video}_{obj}", "object": obj, "first_frame": frame_ids[first],
                     "frames": result["frame_ids"], "J": result["J"][0].tolist(), "F": result["F"][0].tolist(),
                     "stats": result["stats"][0]})
    return rows


def evaluate_folder(videos: Sequence[YouTubeVOSVideo], results_dir: str | os.PathLike,
                    gt_dir: str | os.PathLike, *, bound_th: float = 0.008) -> tuple[DavisResults, list[str]]:
    """Score ``<results_dir>/<video>/<frame>.png`` against ``<gt_dir>/<video>/<frame>.png``.

    Every frame of a video needs a result and a ground-truth PNG from the first frame of its first object
    on. Returns the results (DAVIS tables: means over all scored objects of all videos; per-frame J and F on
    the video's frames, NaN before an object's first scored frame) and the names ("<video>_<id>") of objects
    not scored because they first appear in the last two frames.

    Raises:
        FileNotFoundError: a missing folder or PNG (named). MaskFormatError: a size other than the ground
            truth's, or a predicted id the video does not have.
    """
    from vidseg.metrics.davis_eval import DavisResults
    from vidseg.metrics.j_and_f import STAT_NAMES, summarize

    results_dir, gt_dir = Path(results_dir), Path(gt_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}; expected <results>/<video>/<frame>.png "
                                "(or a submission folder with Annotations/<video>/<frame>.png)")
    if not videos:
        raise DatasetLayoutError(f"no video to score against {results_dir}: the split lists no video")
    per_object, object_stats, per_frame, rows, skipped, unknown_files = [], {}, {}, [], [], []
    for video in videos:
        first_frames = video.first_frames()
        if not first_frames:
            raise DatasetLayoutError(f"video {video.name!r} has no object in meta.json; there is nothing to "
                                     "score in it: fix meta.json or leave the video out")
        video_dir = checked_join(results_dir, video.name, source=results_dir, what="video id")
        if video_dir.is_dir():  # a missing folder is reported below, with the first missing PNG
            known = set(video.frame_names)
            unknown_files += sorted(str(q) for q in video_dir.iterdir()
                            if q.suffix == ".png" and not q.name.startswith(".") and q.stem not in known)
        start = min(first_frames.values())
        names = video.frame_names
        gts, preds = [], []
        for name in names[start:]:
            gt_path = checked_join(gt_dir, video.name, f"{name}.png", source=gt_dir, what="video/frame name")
            pred_path = checked_join(results_dir, video.name, f"{name}.png", source=gt_dir, what="video/frame name")
            if not gt_path.is_file():
                raise FileNotFoundError(f"ground truth missing: {gt_path}; scoring needs every frame annotated")
            if not pred_path.is_file():
                raise FileNotFoundError(f"{pred_path}: prediction missing for frame {name} of video {video.name!r}; "
                                        "the results folder needs one indexed PNG per frame")
            gt, pred = read_mask(gt_path), read_mask(pred_path)
            if pred.shape != gt.shape:
                raise MaskFormatError(f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} (WxH) but "
                                      f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}; write masks at the frame size")
            extra = sorted(set(np.unique(pred).tolist()) - {0, *video.objects})
            if extra:
                raise MaskFormatError(f"{pred_path}: object id(s) {extra} that video {video.name!r} does not have "
                                      f"(its objects: {sorted(video.objects)} in meta.json)")
            gts.append(gt)
            preds.append(pred)
        shifted = {obj: first - start for obj, first in first_frames.items()}
        video_rows = evaluate_video(np.stack(gts), np.stack(preds), shifted, video=video.name,
                                    frame_ids=names[start:], bound_th=bound_th)
        scored = {row["object"] for row in video_rows}
        skipped += [f"{video.name}_{obj}" for obj in sorted(first_frames) if obj not in scored]
        # Per-frame values on the video's frames for every object (what per-sequence tables and plots expect):
        # NaN (JSON null) on the frames before an object's scored ones.
        video_frames = names[start + 1:-1]
        for row in video_rows:
            stats = {k: float(v) for k, v in zip(STAT_NAMES, row["stats"], strict=True)}
            per_object.append((row["name"], stats["J-Mean"], stats["F-Mean"]))
            object_stats[row["name"]] = stats
            pad = [float("nan")] * (len(video_frames) - len(row["frames"]))
            per_frame[row["name"]] = {"sequence": video.name, "object": row["object"], "frames": list(video_frames),
                                      "J": pad + row["J"], "F": pad + row["F"]}
            rows.append(row["stats"])
    if not rows:
        raise DatasetLayoutError(
            f"no object can be scored: every object first appears in the last two frames of its video "
            f"({', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}), which leaves it no scored frame; "
            "J&F would be NaN"
        )
    if unknown_files:
        warn_user(f"{len(unknown_files)} PNG(s) in {results_dir} are not frames of their video (not in JPEGImages) and "
                  f"are not scored; first: {unknown_files[0]}. Check that the results are named like the frames")
    stats = np.asarray(rows, dtype=np.float64).reshape(-1, len(STAT_NAMES))
    return DavisResults(summarize(stats), per_object, object_stats, per_frame), skipped


def write_submission_zip(annotations_dir: str | os.PathLike, zip_path: str | os.PathLike) -> Path:
    """Zip ``annotations_dir`` (``<video>/<frame>.png``) as ``Annotations/<video>/<frame>.png``, atomically.

    Hidden files (resume markers, temporaries) are left out; entries are sorted so the zip is reproducible.
    """
    annotations_dir, zip_path = Path(annotations_dir), Path(zip_path)
    files = sorted(p for p in annotations_dir.rglob("*.png")
                   if not any(part.startswith(".") for part in p.relative_to(annotations_dir).parts))
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in files:
            # PNGs are compressed already; a fixed date keeps the bytes a function of the masks only.
            info = zipfile.ZipInfo(f"Annotations/{path.relative_to(annotations_dir).as_posix()}", (1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return zip_path

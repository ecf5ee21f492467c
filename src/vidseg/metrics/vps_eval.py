"""Score a VPS submission folder (VPQ and STQ) and write the official result files.

A submission folder is the official ``tools/eval_vpq.py`` input (Cityscapes-VPS, VIPER)::

    <submission>/pred.json            {"annotations": [{"segments_info": [{"id", "category_id", ...}],
                                       optional "image_id"}]}: one entry per GT image, in the GT JSON's image
                                       order (or matched by "image_id" when every entry has one)
    <submission>/pan_pred/<id>.png    COCO-panoptic RGB PNG per GT image (id = the GT image "id")

or, for VIPSeg, the input of its ``eval_vpq_vspw.py`` / ``eval_stq_vspw.py`` (as ClipPanoFCN writes it)::

    <submission>/pred.json            {"annotations": [{"video_id", "annotations": [{"segments_info": [...],
                                       optional "image_id" / "file_name"}]}]}: per GT video, one entry per GT
                                       frame in the GT JSON's frame order (the official scripts pair by position)
    <submission>/pan_pred/<video_id>/<GT file_name>   COCO-panoptic RGB PNG per GT frame

The ground truth is a dataset's panoptic GT JSON + PNGs as laid out in :mod:`vidseg.data.vps_layout`
(:func:`load_ground_truth`). Scoring follows :mod:`vidseg.metrics.vpq` (VPQ, Cityscapes-VPS or VIPER
rules) and :mod:`vidseg.metrics.stq` (STQ, one sequence per video). Videos are scored in parallel worker
processes; each decodes its PNGs once and builds one pair table per frame, shared by every VPQ window and by
STQ; results merge as integer counts (and float64 IoU sums, added in video order, so the numbers do not
depend on the number of workers).

Differences from the official script, on purpose: frames are grouped into videos by name (its
``np.array_split`` assumes equal-length, contiguous videos, and pairs sorted GT files with unsorted
predictions); annotations are matched to images by ``image_id``; inconsistent input raises an error that
names the file instead of a ``KeyError``.

VIPSeg scoring equals ``eval_vpq_vspw.py`` (VPQ, windows of 1, 2, 4, 6, 8 frames, written as vpq-0/5/15/25/35.txt
as it writes them) and ``eval_stq_vspw.py`` (STQ with its crowd rule, :mod:`vidseg.metrics.stq`; the corrected
rule with :func:`with_stq_mode`). Where those scripts stop (a GT video missing from pred.json, a frame count that
differs, a PNG id not listed or listed without pixels, an unknown category, a missing PNG or one of another
size, GT frames of one video with two sizes, a window that counts no class among all, things or stuff: a
division by zero there, e.g. no video of 8 frames) vidseg refuses with one message naming the file. Refused
although the scripts score it, because the two scripts read it differently or the pairing is certainly wrong:
a segment id listed twice in one frame with two categories (VPQ keeps the first, STQ the last), a listed id 0
(void painted as a segment), a pred.json frame entry whose ``image_id`` / ``file_name`` names another frame
of the video than the one at its position. Scored as they score it, with a warning: a video listed twice in
pred.json (the last entry counts), a segment listed twice with one category (once), pred.json videos or
pan_pred folders that are not GT videos (ignored).

Nothing is scored until every field that could make a number silently wrong has been checked: the GT JSON
and pred.json field by field (:func:`vidseg.data.panoptic.check_panoptic_gt` / ``check_segments_info``: types,
NaN, duplicate image/segment/category ids, an empty GT), and each PNG's header (8-bit RGB only: PIL, and so
the official script, reads a 16-bit PNG's high bytes and gets other ids). What the official rules score but
what looks wrong (GT ids in the PNG but not the JSON, windows no video is long enough for, stray pan_pred
PNGs) is scored as they score it and said on stderr as ``vidseg: warning: ...``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidseg.data.io import warn_user, write_json_atomic, write_text_atomic
from vidseg.data.names import check_name, check_relative_path, checked_join
from vidseg.data.panoptic import (
    check_panoptic_gt,
    check_segments_info,
    json_get,
    json_id,
    json_list,
    json_object,
    read_json,
    read_panoptic_png,
)
from vidseg.data.vipseg_layout import frame_stem, read_panoptic_video_gt
from vidseg.data.vps_layout import LAYOUTS, VPSLayout
from vidseg.errors import DataError, SubmissionError
from vidseg.metrics.stq import STQCounts, summarize_stq, video_stq_counts
from vidseg.metrics.vpq import (
    CategoryTable,
    PQCounts,
    VPSProtocol,
    build_video_tables,
    get_protocol,
    pair_table,
    summarize_vpq,
    video_counts,
)


# ---------------------------------------------------------------------------------------- ground truth
@dataclass(frozen=True)
class GTFrame:
    """One annotated frame: ``image_id`` (also the pan_pred PNG stem; VIPSeg: unique within its video only),
    its GT PNG and segment list."""

    image_id: str
    file_name: str
    png_path: Path
    segments_info: list[dict]
    height: int | None = None
    width: int | None = None


@dataclass(frozen=True)
class GTVideo:
    name: str
    frames: tuple[GTFrame, ...]


@dataclass
class VPSGroundTruth:
    """A split's panoptic ground truth.

    Attributes:
        layout: dataset layout name ("cityscapes_vps", "viper" or "vipseg").
        json_path: the GT JSON.
        categories: ``{category id: category record}`` in JSON order.
        videos: videos in order of first appearance in the JSON's images; frames in JSON order.
        image_ids: every image id in the JSON's image order (the order of pred.json entries); VIPSeg:
            ``<video_id>/<image id>``.
    """

    layout: str
    json_path: Path
    categories: dict[int, dict]
    videos: list[GTVideo]
    image_ids: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return sum(len(v.frames) for v in self.videos)


def _layout(layout: str | VPSLayout) -> VPSLayout:
    if isinstance(layout, VPSLayout):
        return layout
    if layout not in LAYOUTS:
        raise ValueError(f"unknown VPS layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    return LAYOUTS[layout]


def load_ground_truth(layout: str | VPSLayout, root: str | os.PathLike, split: str) -> VPSGroundTruth:
    """Read a split's panoptic GT JSON, check every field scoring reads, and check that every GT PNG exists.

    Refused (one :class:`DataError` naming the file, the JSON path of the field and the fix), because each
    would make a number silently wrong or stop the official script: ``images``/``annotations``/``categories``
    that are not lists; an empty ``images`` list or no segment in any frame (nothing to score: the official
    script divides by zero); two images with one ``id`` or one ``file_name``; two categories with one id;
    an annotation whose ``image_id`` is not an image's, two annotations of one image, an image without one;
    wrong field types (:func:`vidseg.data.panoptic.check_panoptic_gt`).

    Raises:
        FileNotFoundError: GT JSON or a GT PNG missing (message names it).
        DataError: any of the above.
    """
    layout = _layout(layout)
    if layout.name == "vipseg":
        return _load_vipseg_ground_truth(layout, root, split)
    json_path = layout.panoptic_gt_json(root, split)
    gt = read_json(json_path, what=f"{layout.name} panoptic GT JSON")
    categories, checked = check_panoptic_gt(gt, json_path)
    png_dir = layout.panoptic_gt_dir(root, split)
    videos: dict[str, list[GTFrame]] = {}
    image_ids = []
    last_video = None
    for i, entry in enumerate(checked):
        image, ann, image_id = entry.image, entry.annotation, entry.image_id
        video = check_name(layout.video_of(image), source=json_path, what="video id")
        if video != last_video and video in videos:
            # Windows are consecutive frames of one video: a video whose frames are split by another video's
            # is two clips with one id (or a shuffled JSON), and its windows would join unrelated frames.
            raise DataError(f"{json_path}: images[{i}] ({image['file_name']}) belongs to video {video!r}, whose "
                            f"frames were interrupted by video {last_video!r}; list each video's frames together "
                            "and in frame order (two clips sharing one video id must get different ids)")
        _check_frame_order(json_path, i, image["file_name"], videos.get(video), layout)
        last_video = video
        png_name = ann.get("file_name") or layout.gt_png_name(image["file_name"])
        png = png_dir / check_relative_path(png_name, source=json_path, what="panoptic PNG name")
        if not png.is_file():
            raise FileNotFoundError(f"GT panoptic PNG not found: {png} (image {image_id!r} of {json_path}); "
                                    f"expected {png_dir}/<{layout.name} GT png name>, see vidseg.data.vps_layout")
        frame = GTFrame(image_id, image["file_name"], png, entry.segments, image.get("height"), image.get("width"))
        videos.setdefault(video, []).append(frame)
        image_ids.append(image_id)
    return VPSGroundTruth(layout.name, json_path, categories,
                          [GTVideo(name, tuple(frames)) for name, frames in videos.items()], image_ids)


def _load_vipseg_ground_truth(layout: VPSLayout, root: str | os.PathLike, split: str) -> VPSGroundTruth:
    """VIPSeg's nested GT JSON (checked by :func:`vidseg.data.vipseg_layout.read_panoptic_video_gt`); GT PNGs
    are ``panomasksRGB/<video_id>/<file_name>``, frames in the JSON's order (the official scripts' order)."""
    doc = read_panoptic_video_gt(layout.panoptic_gt_json(root, split))
    png_dir = layout.panoptic_gt_dir(root, split)
    videos = []
    for video in doc.videos:
        frames = []
        for f in video.frames:
            png = checked_join(png_dir, video.video_id, f.file_name, source=doc.json_path, what="panoptic PNG name")
            if not png.is_file():
                raise FileNotFoundError(f"GT panoptic PNG not found: {png} (video {video.video_id!r}, image "
                                        f"{f.image_id!r} of {doc.json_path}); expected {png_dir}/<video_id>/"
                                        "<file_name> (VIPSeg_720P/panomasksRGB of the official conversion)")
            frames.append(GTFrame(f.image_id, f.file_name, png, f.segments_info, f.height, f.width))
        videos.append(GTVideo(video.video_id, tuple(frames)))
    image_ids = [f"{v.name}/{f.image_id}" for v in videos for f in v.frames]
    return VPSGroundTruth(layout.name, doc.json_path, doc.categories, videos, image_ids)


def _check_frame_order(json_path: Path, index: int, file_name: str, earlier: list[GTFrame] | None,
                       layout: VPSLayout) -> None:
    """Refuse a frame listed after a later (or the same) frame of its video: windows follow the JSON order,
    and the official script pairs its sorted GT files with the JSON order, so an unsorted JSON scores wrong
    tubes in both. Names without a frame number (not the published layout) are not checked."""
    if not earlier:
        return
    try:
        this, previous = layout.frame_index_of(file_name), layout.frame_index_of(earlier[-1].file_name)
    except ValueError:
        return
    if this <= previous:
        raise DataError(f"{json_path}: images[{index}] ({file_name}) is frame {this} of its video but comes after "
                        f"frame {previous} ({earlier[-1].file_name}); list each video's frames once, in frame order")


# ---------------------------------------------------------------------------------------- submission
def _read_pred_json(gt: VPSGroundTruth, submission_dir: Path) -> dict[str, list[dict]]:
    """``image id -> segments_info`` from pred.json, every field checked, matched to the GT images."""
    path = submission_dir / "pred.json"
    if not path.is_file():
        raise FileNotFoundError(f"pred.json not found: {path}; a VPS submission folder holds pred.json and "
                                "pan_pred/<image id>.png (the official eval_vpq.py format)")
    pred = read_json(path, what="pred.json")
    fix = "write pred.json as {\"annotations\": [{\"image_id\", \"segments_info\": [{\"id\", \"category_id\"}]}]}"
    if not isinstance(pred, dict) or not isinstance(pred.get("annotations"), list):
        raise SubmissionError(f"{path}: expected {{\"annotations\": [...]}} with one entry per GT image")
    entries = pred["annotations"]
    for i, e in enumerate(entries):
        json_object(e, path, f"annotations[{i}]", fix, SubmissionError)
    n_gt = len(gt.image_ids)
    with_id = [e for e in entries if "image_id" in e]
    if with_id and len(with_id) != len(entries):
        raise SubmissionError(f"{path}: {len(with_id)} of {len(entries)} entries have an image_id; give every "
                              "entry an image_id, or none (then entries follow the GT JSON's image order)")
    if len(entries) != n_gt:
        raise SubmissionError(f"{path}: {len(entries)} annotations but the GT ({gt.json_path}) has {n_gt} "
                              "images; write one entry per GT image" +
                              ("" if with_id else ", in the GT JSON's image order"))
    for i, e in enumerate(entries):
        if not isinstance(e.get("segments_info"), list):
            raise SubmissionError(f"{path}: annotations[{i}] has no segments_info list")
    segments = [check_segments_info(e["segments_info"], path, f"annotations[{i}].segments_info", gt.categories,
                                    ground_truth=False, error=SubmissionError) for i, e in enumerate(entries)]
    if not with_id:
        return dict(zip(gt.image_ids, segments, strict=True))
    known = set(gt.image_ids)
    out: dict[str, list[dict]] = {}
    for i, (e, segs) in enumerate(zip(entries, segments, strict=True)):
        image_id = json_id(e["image_id"], path, f"annotations[{i}].image_id", fix, SubmissionError)
        if image_id not in known:
            raise SubmissionError(f"{path}: annotations[{i}].image_id: image_id {image_id!r} is not a GT image of "
                                  f"{gt.json_path}; use the GT images' ids (e.g. {gt.image_ids[0]!r})")
        if image_id in out:
            raise SubmissionError(f"{path}: annotations[{i}].image_id: image_id {image_id!r} appears more than "
                                  "once; one entry per image")
        out[image_id] = segs
    return out


def _read_vipseg_pred_json(gt: VPSGroundTruth, submission_dir: Path) -> dict[str, list[list[dict]]]:
    """``video id -> per GT frame segments_info`` from a VIPSeg pred.json, every field checked (see the module
    docstring for what is refused, warned about or ignored)."""
    path = submission_dir / "pred.json"
    if not path.is_file():
        raise FileNotFoundError(f"pred.json not found: {path}; a VIPSeg submission folder holds pred.json and "
                                "pan_pred/<video_id>/<frame>.png (the official eval_vpq_vspw.py format)")
    pred = read_json(path, what="pred.json")
    fix = ('write pred.json as {"annotations": [{"video_id", "annotations": [{"segments_info": [{"id", '
           '"category_id"}]}, ...one per GT frame]}]}')
    if not isinstance(pred, dict) or not isinstance(pred.get("annotations"), list):
        raise SubmissionError(f"{path}: expected {{\"annotations\": [...]}} with one entry per GT video; {fix}")
    entries: dict[str, tuple[int, list]] = {}
    repeated = []
    for i, e in enumerate(pred["annotations"]):
        at = f"annotations[{i}]"
        e = json_object(e, path, at, fix, SubmissionError)
        vid = json_id(json_get(e, "video_id", path, at, fix, SubmissionError), path, f"{at}.video_id", fix,
                      SubmissionError)
        if vid in entries:
            repeated.append(vid)
        entries[vid] = (i, json_list(json_get(e, "annotations", path, at, fix, SubmissionError), path,
                                     f"{at}.annotations", fix, SubmissionError))
    if repeated:
        warn_user(f"{path}: video(s) {sorted(set(repeated))[:5]} are listed more than once; the last entry of each "
                  "is scored, as the official scripts score it")
    out: dict[str, list[list[dict]]] = {}
    repeats: list[str] = []
    for video in gt.videos:
        if video.name not in entries:
            raise SubmissionError(f"{path}: GT video {video.name!r} has no entry in annotations (the official "
                                  f"scripts stop with a KeyError); {fix}")
        i, frames = entries[video.name]
        if len(frames) != len(video.frames):
            raise SubmissionError(f"{path}: annotations[{i}] (video {video.name!r}) has {len(frames)} frame entries "
                                  f"but the GT has {len(video.frames)} frames; write one per GT frame, in the GT "
                                  "JSON's order (the official scripts pair them by position)")
        stems = {frame_stem(f.file_name): j for j, f in enumerate(video.frames)}
        stems.update({f.image_id: j for j, f in enumerate(video.frames)})
        segments = []
        for j, (entry, gt_frame) in enumerate(zip(frames, video.frames, strict=True)):
            at = f"annotations[{i}].annotations[{j}]"
            entry = json_object(entry, path, at, fix, SubmissionError)
            for key in ("image_id", "file_name"):
                named = stems.get(frame_stem(entry[key])) if key in entry else None
                if named is not None and named != j:
                    raise SubmissionError(
                        f"{path}: {at}.{key} is {entry[key]!r}, frame {named} of video {video.name!r}, but entry {j} "
                        f"is scored against GT frame {j} ({gt_frame.file_name}): the official scripts pair by "
                        "position; list the frames in the GT JSON's order")
            listed = _drop_exact_repeats(json_list(json_get(entry, "segments_info", path, at, fix, SubmissionError),
                                                   path, f"{at}.segments_info", fix, SubmissionError), repeats)
            segments.append(check_segments_info(listed, path, f"{at}.segments_info", gt.categories,
                                                ground_truth=False, error=SubmissionError))
        out[video.name] = segments
    if repeats:
        warn_user(f"{path}: {len(repeats)} segment(s) are listed twice in one frame with the same category (e.g. "
                  f"{repeats[0]}); scored once, as the official scripts score them")
    extra = sorted(set(entries) - {v.name for v in gt.videos})
    if extra:
        warn_user(f"{path}: {len(extra)} video(s) are not in the GT ({gt.json_path}) and are not scored (e.g. "
                  f"{extra[0]!r}), as the official scripts ignore them")
    return out


def _drop_exact_repeats(segments: list, repeats: list[str]) -> list:
    """A frame's segments without entries that repeat an earlier one's id and category_id (the official scripts
    score such a frame as if each were listed once; one id with two categories stays, to be refused: their VPQ
    keeps the first category and their STQ the last). Appends ``"id <id>"`` to ``repeats`` per dropped entry."""
    seen: dict[Any, Any] = {}
    kept = []
    for seg in segments:
        if isinstance(seg, dict) and "id" in seg and isinstance(seg["id"], int) and not isinstance(seg["id"], bool):
            if seg["id"] in seen and seen[seg["id"]] == seg.get("category_id"):
                repeats.append(f"id {seg['id']}")
                continue
            seen.setdefault(seg["id"], seg.get("category_id"))
        kept.append(seg)
    return kept


def with_stq_mode(protocol: str | VPSProtocol, stq_mode: str) -> VPSProtocol:
    """The protocol with its official STQ crowd rule (``"official"``) or the corrected one (``"corrected"``:
    crowd = ``iscrowd`` segments, deeplab2's convention). Only VIPSeg's differ (see :mod:`vidseg.metrics.stq`)."""
    protocol = get_protocol(protocol)
    if stq_mode == "official":
        return protocol
    if stq_mode == "corrected":
        return replace(protocol, stq_crowd="iscrowd")
    raise DataError(f"stq_mode={stq_mode!r}: use stq_mode=official (the benchmark's own STQ script, the default) or "
                    "stq_mode=corrected (VIPSeg: every GT thing is a track; the official script drops each video's "
                    "first listed segment from AQ when it is a thing)")


@dataclass(frozen=True)
class _VideoJob:
    name: str
    gt_pngs: tuple[Path, ...]
    gt_sizes: tuple[tuple[int | None, int | None], ...]  # (height, width) from the GT JSON, None if not given
    gt_segments: tuple[list[dict], ...]
    pred_pngs: tuple[Path, ...]
    pred_segments: tuple[list[dict], ...]
    categories: CategoryTable
    protocol: VPSProtocol


def _read_prediction(path: Path, gt_path: Path, shape: tuple[int, int]):
    if not path.is_file():
        raise FileNotFoundError(f"prediction PNG not found: {path} (for GT {gt_path.name}); the submission "
                                f"needs pan_pred/<image id>.png for every GT image")
    pred = read_panoptic_png(path)  # MaskFormatError naming the file for palette/grayscale/truncated PNGs
    if pred.shape != shape:
        raise SubmissionError(f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} (WxH) but the GT "
                              f"{gt_path} is {shape[1]}x{shape[0]}; write predictions at the GT resolution")
    return pred


def _score_video(job: _VideoJob) -> tuple[PQCounts, STQCounts, list[str]]:
    """Worker: decode the video's PNGs once, build its pair tables, count VPQ and STQ.

    Also returns notes on GT that the official rules score but that look wrong (see :func:`_gt_notes`).
    """
    pairs = []
    first_shape = None
    for gt_png, (height, width), pred_png in zip(job.gt_pngs, job.gt_sizes, job.pred_pngs, strict=True):
        gt_ids = read_panoptic_png(gt_png)
        if (height is not None and gt_ids.shape[0] != height) or (width is not None and gt_ids.shape[1] != width):
            raise DataError(f"{gt_png}: GT PNG is {gt_ids.shape[1]}x{gt_ids.shape[0]} (WxH) but its image entry in "
                            f"the GT JSON says {width}x{height}; the PNG belongs to another frame or was resized")
        first_shape = first_shape or (gt_ids.shape, gt_png)
        if gt_ids.shape != first_shape[0]:
            # A window stacks its frames: the official scripts stop here (np.stack), and a tube has no meaning.
            raise DataError(f"{gt_png}: GT PNG is {gt_ids.shape[1]}x{gt_ids.shape[0]} (WxH) but {first_shape[1]} of "
                            f"the same video is {first_shape[0][1]}x{first_shape[0][0]}; every frame of a video has "
                            "one size (resize the video's PNGs together)")
        pairs.append(pair_table(gt_ids, _read_prediction(pred_png, gt_png, gt_ids.shape)))
    tables = build_video_tables(pairs, job.gt_segments, job.pred_segments, job.categories,
                                gt_names=[f"{p} (GT JSON entry)" for p in job.gt_pngs],
                                pred_names=[f"{p} (with its pred.json entry)" for p in job.pred_pngs])
    return (video_counts(tables, job.protocol, len(job.categories)),
            video_stq_counts(tables, job.categories.isthing, job.protocol.stq_crowd), _gt_notes(tables, job.gt_pngs))


def _gt_notes(tables, gt_pngs: Sequence[Path]) -> list[str]:
    """GT frames whose PNG and segments_info disagree. The official rules score them (ids only in the PNG
    take part in nothing; a listed segment without pixels is still a tube, an FN if unmatched), so vidseg
    does too, and says so."""
    notes = []
    painted = tables.gt_png_area > 0
    not_void = tables.gt_ids != 0
    for t, png in enumerate(gt_pngs):
        unlisted = tables.gt_ids[painted[t] & ~tables.gt_listed[t] & not_void]
        empty = tables.gt_ids[tables.gt_listed[t] & ~painted[t]]
        if unlisted.size:
            notes.append(f"{png}: segment ids {unlisted[:5].tolist()} are in the PNG but not in its GT JSON "
                         "segments_info (ignored)")
        if empty.size:
            notes.append(f"{png}: segments_info lists ids {empty[:5].tolist()} that have no pixel in the PNG "
                         "(scored from the JSON)")
    return notes


@dataclass
class VPSResults:
    """Numbers of one VPS evaluation; every value is a fraction in [0, 1] (the text files show percent).

    Attributes:
        protocol: the protocol's name.
        windows: ``k label -> {"nframes", "all"|"thing"|"stuff": {"pq","sq","rq","n"},
            "per_class": {category id: {"pq","sq","rq","iou","tp","fp","fn"}}}`` ("iou" = sum of TP IoUs).
        vpq: ``{"all", "thing", "stuff"}``: mean PQ over the window sizes (official vpq-final.txt / 100).
        stq: ``{"STQ", "AQ", "SQ"}``.
        num_videos, num_frames: what was scored.
        pq_counts, stq_counts: the accumulated counts (for merging or inspection).
        stq_crowd: the STQ crowd rule used ("iscrowd" or VIPSeg's official "first_segment").
    """

    protocol: str
    windows: dict[int, dict[str, Any]]
    vpq: dict[str, float]
    stq: dict[str, float]
    num_videos: int
    num_frames: int
    pq_counts: PQCounts | None = None
    stq_counts: STQCounts | None = None
    stq_crowd: str = "iscrowd"


def results_from_counts(pq: PQCounts, stq: STQCounts, categories: Mapping | Sequence,
                        protocol: str | VPSProtocol, *, num_videos: int = 0, num_frames: int = 0) -> VPSResults:
    """Summarise accumulated counts into :class:`VPSResults`."""
    protocol = get_protocol(protocol)
    summary = summarize_vpq(pq, categories, protocol)
    s = summarize_stq(stq)
    return VPSResults(protocol.name, summary["windows"], summary["vpq"],
                      {"STQ": s["STQ"], "AQ": s["AQ"], "SQ": s["SQ"]}, num_videos, num_frames, pq, stq,
                      protocol.stq_crowd)


def evaluate_submission(
    gt: VPSGroundTruth,
    submission_dir: str | os.PathLike,
    protocol: str | VPSProtocol | None = None,
    *,
    workers: int | None = None,
) -> VPSResults:
    """Score ``<submission_dir>/pred.json`` + ``pan_pred/*.png`` against ``gt``.

    Args:
        gt: :func:`load_ground_truth` output.
        protocol: "cityscapes_vps", "viper", "vipseg" or a :class:`VPSProtocol`; default: the one named like
            the layout (:func:`with_stq_mode` for VIPSeg's corrected STQ).
        workers: processes scoring videos in parallel; None = one per CPU (at most one per video), 0 or 1 =
            in this process.
    Raises:
        FileNotFoundError: pred.json or a pan_pred PNG missing.
        SubmissionError / MaskFormatError (a DataError): inconsistent pred.json or PNGs; the message names
            the file, what was expected and found, and the fix.
    """
    protocol = get_protocol(protocol if protocol is not None else gt.layout)
    submission_dir = Path(submission_dir)
    if not submission_dir.is_dir():
        raise FileNotFoundError(f"submission folder not found: {submission_dir}; expected pred.json and "
                                "pan_pred/<image id>.png in it")
    cats = CategoryTable.from_categories(gt.categories)
    if gt.layout == "vipseg":
        by_video = _read_vipseg_pred_json(gt, submission_dir)
        pred_pngs = [tuple(checked_join(submission_dir, "pan_pred", video.name, f.file_name, source=gt.json_path,
                                        what="video id / file name") for f in video.frames) for video in gt.videos]
        pred_segs = [tuple(by_video[video.name]) for video in gt.videos]
    else:
        pred_segments = _read_pred_json(gt, submission_dir)
        pred_pngs = [tuple(checked_join(submission_dir, "pan_pred", f"{f.image_id}.png", source=gt.json_path,
                                        what="image id") for f in video.frames) for video in gt.videos]
        pred_segs = [tuple(pred_segments[f.image_id] for f in video.frames) for video in gt.videos]
    jobs = [
        _VideoJob(
            video.name,
            tuple(f.png_path for f in video.frames),
            tuple((f.height, f.width) for f in video.frames),
            tuple(f.segments_info for f in video.frames),
            pngs,
            segs,
            cats,
            protocol,
        )
        for video, pngs, segs in zip(gt.videos, pred_pngs, pred_segs, strict=True)
    ]
    if workers is None:
        workers = os.cpu_count() or 1
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        outputs = [_score_video(job) for job in jobs]
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            outputs = pool.map(_score_video, jobs, chunksize=1)  # in video order
    pq = PQCounts.zeros(len(protocol.windows), len(cats))
    stq = STQCounts.zeros(len(cats))
    notes: list[str] = []
    for pq_video, stq_video, video_notes in outputs:
        pq, stq = pq + pq_video, stq + stq_video
        notes += video_notes
    if notes:
        warn_user(f"{len(notes)} GT frame(s) of {gt.json_path} disagree with their PNG; they are scored as the "
                  f"official script scores them, but check the ground truth. First: {notes[0]}")
    results = results_from_counts(pq, stq, cats, protocol, num_videos=len(jobs), num_frames=gt.num_frames)
    if gt.layout == "vipseg":
        _refuse_empty_averages(results, gt)
    empty = [k for k, entry in results.windows.items() if entry["all"]["n"] == 0]
    if empty:
        # Documented behaviour (the official script divides by zero here): say it, the final VPQ averages the 0s.
        warn_user(f"no class was counted for window(s) {empty} (no video of {gt.json_path} has that many "
                  "annotated frames, or nothing was scored there): their VPQ is 0 with n = 0 and the final VPQ, "
                  f"the mean over all {len(results.windows)} windows, includes these zeros")
    _warn_unused_predictions(submission_dir, gt)
    return results


def _refuse_empty_averages(results: VPSResults, gt: VPSGroundTruth) -> None:
    """VIPSeg: eval_vpq_vspw.py stops (ZeroDivisionError) when a window counts no class among all, things or
    stuff; its final VPQ does not exist there, so vidseg gives none either (Cityscapes-VPS/VIPER: a warning and
    0, the documented behaviour kept for them)."""
    empty = [f"{k} ({name})" for k, entry in results.windows.items() for name in ("all", "thing", "stuff")
             if entry[name]["n"] == 0]
    if empty:
        longest = max(len(v.frames) for v in gt.videos)
        raise DataError(f"{gt.json_path}: no category is counted in window(s) {', '.join(empty[:6])}, so the official "
                        "eval_vpq_vspw.py stops with a division by zero and has no VPQ for this split; VIPSeg VPQ "
                        f"needs a video of at least {results.windows[max(results.windows)]['nframes']} frames (the "
                        f"longest here has {longest}) and both thing and stuff segments (in the GT or the predictions)")


def _warn_unused_predictions(submission_dir: Path, gt: VPSGroundTruth) -> None:
    """Say when pan_pred/ holds PNGs that no GT image asks for (the official script ignores them too): the
    usual cause is predictions named by another id than the GT images' ``id``."""
    if gt.layout == "vipseg":
        known_videos = {v.name for v in gt.videos}
        try:
            extra = sorted(p.name for p in (submission_dir / "pan_pred").iterdir()
                           if not p.name.startswith(".") and p.name not in known_videos)
        except OSError:
            return
        if extra:
            warn_user(f"{len(extra)} entries of {submission_dir / 'pan_pred'} are not GT videos and are not scored "
                      f"(e.g. {extra[0]}); predictions are pan_pred/<video_id>/<frame>.png")
        return
    known = {f"{image_id}.png" for image_id in gt.image_ids}
    try:
        extra = sorted(p.name for p in (submission_dir / "pan_pred").iterdir()
                       if p.suffix == ".png" and not p.name.startswith(".") and p.name not in known)
    except OSError:
        return
    if extra:
        warn_user(f"{len(extra)} PNG(s) in {submission_dir / 'pan_pred'} are not named after a GT image id and are "
                  f"not scored (e.g. {extra[0]}); check that predictions are named <GT image id>.png")


# -------------------------------------------------------------------------------------------- writers
_ROWS = (("All", "all"), ("Things", "thing"), ("Stuff", "stuff"))


def _vpq_window_text(entry: Mapping[str, Any]) -> str:
    """A window's table in the layout of the official ``vpq-<k>.txt``."""
    # The official header pads "N\n" (2 characters) to 5, so N has 3 spaces before it, not 4: kept byte for byte.
    lines = ["================================================",
             "{:10s}| {:>5s}  {:>5s}  {:>5s} {:>4s}".format("", "PQ", "SQ", "RQ", "N"),
             "-" * (10 + 7 * 4)]
    for label, key in _ROWS:
        r = entry[key]
        lines.append(f"{label:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f} {r['n']:5d}")
    lines.append("{:4s}| {:>5s} {:>5s} {:>5s} {:>6s} {:>7s} {:>7s} {:>7s}".format(
        "IDX", "PQ", "SQ", "RQ", "IoU", "TP", "FP", "FN"))
    for cid, r in entry["per_class"].items():
        lines.append(f"{cid:4d} | {100 * r['pq']:5.1f} {100 * r['sq']:5.1f} {100 * r['rq']:5.1f} "
                     f"{r['iou']:6.1f} {r['tp']:7d} {r['fp']:7d} {r['fn']:7d}")
    return "\n".join(lines) + "\n"


def results_to_json(results: VPSResults, split: str | None = None) -> dict[str, Any]:
    """The full-precision JSON document of :func:`write_vps_results`."""
    return {
        "split": split,
        "protocol": results.protocol,
        "stq_crowd": results.stq_crowd,
        "units": "fractions in [0, 1]",
        "num_videos": results.num_videos,
        "num_frames": results.num_frames,
        "vpq": dict(results.vpq),
        "windows": {
            str(k): {"nframes": e["nframes"], **{key: dict(e[key]) for _, key in _ROWS},
                     "per_class": {str(c): dict(r) for c, r in e["per_class"].items()}}
            for k, e in results.windows.items()
        },
        "stq": dict(results.stq),
    }


def write_vps_results(results: VPSResults, output_dir: str | os.PathLike, split: str) -> dict[str, Path]:
    """Write ``vpq-<k>.txt`` per window size, ``vpq-final.txt`` and ``results-<split>.json``.

    ``vpq-final.txt`` has exactly the official lines ``vpq_all:%.4f``, ``vpq_thing:%.4f``,
    ``vpq_stuff:%.4f`` (percent). Every text is built before the first file is written, and each file is
    written atomically, so a failure leaves the files of an earlier run intact.

    Returns:
        ``{"vpq-<k>": path, ..., "final": path, "json": path}``.
    """
    out = Path(output_dir)
    texts: dict[str, tuple[Path, str]] = {}
    for k, entry in results.windows.items():
        texts[f"vpq-{k}"] = (out / f"vpq-{k}.txt", _vpq_window_text(entry))
    v = results.vpq
    # The official lines: "vpq_all:%.4f" etc. (the same digits as the format spec ".4f").
    texts["final"] = (out / "vpq-final.txt", f"vpq_all:{100 * v['all']:.4f}\nvpq_thing:{100 * v['thing']:.4f}\n"
                      f"vpq_stuff:{100 * v['stuff']:.4f}\n")
    doc = results_to_json(results, split)
    paths = {name: path for name, (path, _) in texts.items()}
    paths["json"] = checked_join(out, f"results-{split}.json", source="data.split", what="split")
    for path, text in texts.values():
        write_text_atomic(path, text)
    write_json_atomic(paths["json"], doc)
    return paths


def format_vps_table(results: VPSResults) -> str:
    """Human-readable summary: VPQ per window size (all/thing/stuff, percent), final VPQ and STQ/AQ/SQ."""
    unit = "frames" if results.protocol == "viper" else "k"
    header = f"{unit:>7s} | {'VPQ':>6s} {'thing':>6s} {'stuff':>6s} | {'SQ':>6s} {'RQ':>6s} {'n':>4s}"
    lines = [f"VPS results ({results.protocol}; {results.num_videos} videos, {results.num_frames} frames)",
             header, "-" * len(header)]
    for k, e in results.windows.items():
        lines.append(f"{k:>7d} | {100 * e['all']['pq']:6.2f} {100 * e['thing']['pq']:6.2f} "
                     f"{100 * e['stuff']['pq']:6.2f} | {100 * e['all']['sq']:6.2f} {100 * e['all']['rq']:6.2f} "
                     f"{e['all']['n']:4d}")
    v, s = results.vpq, results.stq
    lines += ["-" * len(header),
              f"{'VPQ':>7s} | {100 * v['all']:6.2f} {100 * v['thing']:6.2f} {100 * v['stuff']:6.2f} |",
              f"STQ {100 * s['STQ']:.2f}  AQ {100 * s['AQ']:.2f}  SQ {100 * s['SQ']:.2f}"]
    return "\n".join(lines) + "\n"

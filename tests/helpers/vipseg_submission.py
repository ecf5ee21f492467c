"""Tiny VIPSeg-layout ground truth and perturbed submissions, generated on the fly.

Videos come from :func:`tests.helpers.vps_submission.random_video` with VIPSeg's 124 categories (stuff bands +
moving things; predictions with id switches, class errors, extra segments, misses, void, a crowd GT thing) and
get VIPSeg-specific damage here: a frame without stuff at the start (the official STQ's crowd quirk), two
predicted ids swapped in a frame, a stuff segment missing from a frame. :func:`write_vipseg_gt` /
:func:`write_vipseg_submission` write the official 720p COCO-video layout (``vidseg.data.vipseg_layout``):
``VIPSeg_720P/panomasksRGB/<video>/<frame>.png`` + ``panoptic_gt_VIPSeg_<split>.json``, and
``pan_pred/<video>/<frame>.png`` + the nested ``pred.json``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from tests.helpers.vps_submission import VideoData, random_video, segments_from_ids
from vidseg.data.panoptic import write_panoptic_png
from vidseg.data.vipseg_layout import (
    VIPSEG_720P_LAYOUT,
    VIPSegFrame,
    VIPSegVideo,
    panoptic_video_json,
    vipseg_categories,
)

CATEGORIES = vipseg_categories()


def frame_names(num_frames: int, step: int = 5) -> list[str]:
    """Frame stems as in VIPSeg (zero-padded numbers, not consecutive)."""
    return [f"{step * (f + 1):08d}" for f in range(num_frames)]


def _category_of(segments) -> dict[int, int]:
    return {s["id"]: s["category_id"] for segs in segments for s in segs}


def things_first(video: VideoData) -> VideoData:
    """Frame 0 without stuff: its stuff pixels become void in GT, so the first listed GT segment is a thing.

    The official STQ then counts that thing as crowd (instance 0): it leaves AQ.
    """
    video = copy.deepcopy(video)
    stuff_ids = {s["id"] for s in video.gt_segments[0] if CATEGORIES[s["category_id"]]["isthing"] == 0}
    g = video.gt_ids[0]
    g[np.isin(g, list(stuff_ids))] = 0
    crowd = {s["id"] for segs in video.gt_segments for s in segs if s["iscrowd"]}
    video.gt_segments[0] = segments_from_ids(g, _category_of(video.gt_segments), crowd)
    return video


def swap_ids(video: VideoData, frame: int) -> VideoData:
    """Swap the two largest predicted thing ids in one frame (an identity switch both ways)."""
    video = copy.deepcopy(video)
    segs = [s for s in video.pred_segments[frame] if CATEGORIES[s["category_id"]]["isthing"]]
    if len(segs) < 2:
        return video
    a, b = sorted(segs, key=lambda s: -int(np.count_nonzero(video.pred_ids[frame] == s["id"])))[:2]
    p = video.pred_ids[frame]
    ma, mb = p == a["id"], p == b["id"]
    p[ma], p[mb] = b["id"], a["id"]
    cats = _category_of(video.pred_segments)
    video.pred_segments[frame] = segments_from_ids(p, cats)
    return video


def drop_segment(video: VideoData, frame: int) -> VideoData:
    """Paint the first predicted segment of a frame void (a missing segment)."""
    video = copy.deepcopy(video)
    if video.pred_segments[frame]:
        sid = video.pred_segments[frame][0]["id"]
        video.pred_ids[frame][video.pred_ids[frame] == sid] = 0
        video.pred_segments[frame] = [s for s in video.pred_segments[frame] if s["id"] != sid]
    return video


def make_videos(seed: int = 0, lengths=(3, 9, 6, 10, 1), *, height: int = 24, width: int = 40,
                crowd: bool = True) -> list[VideoData]:
    """Videos of different lengths with every kind of error (see the module docstring)."""
    rng = np.random.default_rng(seed)
    videos = []
    for i, n in enumerate(lengths):
        v = random_video(rng, f"{100 + i}_toy{i}", num_frames=n, height=height, width=width,
                         categories=CATEGORIES, num_things=3, id_switch=0.4, class_error=0.2,
                         false_positives=1, void=True, crowd=crowd and i % 2 == 0, small=True, jitter=2,
                         drop=0.15)
        if i % 2 == 1:
            v = things_first(v)
        if n > 2:
            v = swap_ids(v, n // 2)
            v = drop_segment(v, n - 1)
        videos.append(v)
    return videos


def as_official(videos: list[VideoData]):
    """The oracle's input: ``(gt_ids, gt_segments, pred_ids, pred_segments)`` per video."""
    return [(v.gt_ids, v.gt_segments, v.pred_ids, v.pred_segments) for v in videos]


def write_vipseg_gt(root: str | Path, split: str, videos: list[VideoData], categories=None) -> dict:
    """Write ``VIPSeg_720P/panomasksRGB/<video>/<frame>.png`` and the split's GT JSON; return the JSON."""
    root = Path(root)
    rgb_dir = VIPSEG_720P_LAYOUT.panoptic_rgb_dir(root)
    out = []
    for v in videos:
        frames = []
        for stem, ids, segs in zip(frame_names(v.num_frames), v.gt_ids, v.gt_segments, strict=True):
            write_panoptic_png(rgb_dir / v.name / f"{stem}.png", ids)
            frames.append(VIPSegFrame(stem, f"{stem}.png", ids.shape[0], ids.shape[1], copy.deepcopy(segs)))
        out.append(VIPSegVideo(v.name, tuple(frames)))
    doc = panoptic_video_json(out, categories if categories is not None else CATEGORIES)
    path = VIPSEG_720P_LAYOUT.panoptic_gt_json(root, split)
    path.write_text(json.dumps(doc))
    return doc


def write_vipseg_submission(submission_dir: str | Path, videos: list[VideoData], *,
                            file_names: bool = True) -> Path:
    """Write ``pan_pred/<video>/<frame>.png`` and the nested ``pred.json`` (as ClipPanoFCN writes it: per frame
    ``segments_info`` and the image ``file_name``, here ``.jpg``)."""
    out = Path(submission_dir)
    annotations = []
    for v in videos:
        frames = []
        for stem, ids, segs in zip(frame_names(v.num_frames), v.pred_ids, v.pred_segments, strict=True):
            write_panoptic_png(out / "pan_pred" / v.name / f"{stem}.png", ids)
            entry = {"segments_info": copy.deepcopy(segs)}
            if file_names:
                entry["file_name"] = f"{stem}.jpg"
            frames.append(entry)
        annotations.append({"video_id": v.name, "annotations": frames})
    (out / "pred.json").write_text(json.dumps({"annotations": annotations}))
    return out

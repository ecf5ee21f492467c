"""Tiny synthetic VPS ground truth and submissions (Cityscapes-VPS or VIPER format), generated on the fly.

A video is ``T`` frames of ``(H, W) int64`` COCO-panoptic ids plus per-frame ``segments_info`` lists, for the
ground truth and a prediction derived from it with controllable errors: identity switches (a predicted track
changes id mid-video), class errors, false-positive boxes, void in GT and prediction, crowd GT regions,
small objects and shifted boxes. :func:`write_dataset` / :func:`write_submission` write them in the
published file layout (``vidseg.data.vps_layout``) so the submission evaluator can read them.

Used by tests/metrics/test_vpq.py, test_stq.py, test_vps_eval.py and tools/make_vps_oracle.py.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidseg.data.panoptic import write_panoptic_png
from vidseg.data.vps_layout import CITYSCAPES_VPS, VIPER, VPSLayout

CITYSCAPES_CATEGORIES = [
    {"id": i, "name": n, "isthing": int(i >= 11), "color": [i * 10, 255 - i * 10, (i * 37) % 256]}
    for i, n in enumerate(["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                           "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                           "bus", "train", "motorcycle", "bicycle"])
]
VIPER_CATEGORIES = [
    {"id": i, "name": n, "isthing": int(i >= 13), "color": [i * 10, 255 - i * 10, (i * 37) % 256]}
    for i, n in enumerate(["sky", "road", "sidewalk", "terrain", "tree", "vegetation", "building",
                           "infrastructure", "fence", "billboard", "trafficsign", "mobilebarrier", "trash",
                           "trafficlight", "firehydrant", "chair", "trashcan", "person", "motorcycle", "car",
                           "van", "bus", "truck"])
]


@dataclass
class VideoData:
    """One video: ``gt_ids``/``pred_ids`` are lists of ``(H, W) int64``; segments are per-frame lists."""

    name: str
    gt_ids: list[np.ndarray]
    gt_segments: list[list[dict]]
    pred_ids: list[np.ndarray]
    pred_segments: list[list[dict]]
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.gt_ids)


def segments_from_ids(ids: np.ndarray, category_of: dict[int, int], crowd: set[int] = frozenset()) -> list[dict]:
    """``segments_info`` of an id map: every non-zero id present, area = pixel count, in id order."""
    uniq, counts = np.unique(ids, return_counts=True)
    return [{"id": int(u), "category_id": int(category_of[int(u)]), "iscrowd": int(int(u) in crowd),
             "area": int(c)} for u, c in zip(uniq, counts, strict=True) if u != 0]


def random_video(
    rng: np.random.Generator,
    name: str,
    *,
    num_frames: int = 4,
    height: int = 32,
    width: int = 64,
    categories: list[dict] = CITYSCAPES_CATEGORIES,
    num_things: int = 4,
    id_switch: float = 0.3,
    class_error: float = 0.15,
    false_positives: int = 1,
    void: bool = True,
    crowd: bool = True,
    small: bool = True,
    jitter: int = 2,
    drop: float = 0.1,
    stuff_class_error: float | None = None,
    fp_stuff_fraction: float = 0.3,
    pred_void: bool | None = None,
) -> VideoData:
    """A random toy scene (stuff bands + moving boxes) and an imperfect prediction of it.

    Args:
        id_switch: probability that a predicted track takes a new id from a random frame on.
        class_error: probability that a predicted segment has another category (per track).
        false_positives: extra predicted boxes per frame (random category, on anything).
        void, crowd, small: add a GT void patch / a crowd thing / a tiny thing (and pred void patches).
        jitter: predicted boxes are shifted by up to this many pixels per frame.
        drop: probability that a predicted thing is missing in a frame (FN, breaks tubes).
        stuff_class_error: probability that one stuff band is predicted as another stuff class
            (default: ``class_error``).
        fp_stuff_fraction: fraction of the false-positive boxes that have a stuff category.
        pred_void: add a void patch to the prediction (default: ``void``).
    """
    H, W, T = height, width, num_frames
    stuff = [c["id"] for c in categories if not c["isthing"]]
    things = [c["id"] for c in categories if c["isthing"]]
    # Stuff: 3 horizontal bands, ids are 1-based per band; categories random per video.
    band_cats = rng.choice(stuff, size=3, replace=False)
    cuts = np.sort(rng.choice(np.arange(2, H - 2), size=2, replace=False))
    rows = np.digitize(np.arange(H), cuts)  # 0, 1, 2
    gt_cat_of: dict[int, int] = {}
    stuff_ids = [1000 + int(rng.integers(0, 50)) * 3 + b for b in range(3)]
    for b in range(3):
        gt_cat_of[stuff_ids[b]] = int(band_cats[b])
    # Things: boxes with a velocity; GT id constant in the video.
    tracks = []
    n_things = num_things + int(crowd) + int(small)
    for j in range(n_things):
        kind = "crowd" if (crowd and j == num_things) else ("small" if (small and j == n_things - 1) else "thing")
        if kind == "small":
            bh, bw = 2, 3
        else:
            bh, bw = int(rng.integers(H // 6, H // 2)), int(rng.integers(W // 8, W // 3))
        y0, x0 = int(rng.integers(0, H - bh)), int(rng.integers(0, W - bw))
        vy, vx = int(rng.integers(-2, 3)), int(rng.integers(-3, 4))
        gid = 20000 + 17 * j + int(rng.integers(0, 10))
        tracks.append({"gid": gid, "cat": int(rng.choice(things)), "kind": kind, "box": (y0, x0, bh, bw),
                       "v": (vy, vx)})
        gt_cat_of[gid] = tracks[-1]["cat"]
    crowd_ids = {t["gid"] for t in tracks if t["kind"] == "crowd"}

    # Prediction ids: a different numbering from the GT's (nothing may depend on ids being equal).
    pred_stuff_id = {sid: 500 + 7 * b for b, sid in enumerate(stuff_ids)}
    pred_stuff_cat = {pred_stuff_id[s]: gt_cat_of[s] for s in stuff_ids}
    # A stuff band predicted as another stuff class.
    if rng.random() < (class_error if stuff_class_error is None else stuff_class_error):
        b = int(rng.integers(0, 3))
        pred_stuff_cat[pred_stuff_id[stuff_ids[b]]] = int(rng.choice(stuff))
    for t in tracks:
        t["pid"] = 3000 + 11 * tracks.index(t)
        t["pcat"] = t["cat"] if rng.random() >= class_error else int(rng.choice(things))
        t["switch_at"] = int(rng.integers(1, T)) if (T > 1 and rng.random() < id_switch) else None

    def clip_box(y0, x0, bh, bw):
        y0, x0 = int(np.clip(y0, 0, H - 1)), int(np.clip(x0, 0, W - 1))
        return y0, min(H, y0 + bh), x0, min(W, x0 + bw)

    gt_ids, gt_segs, pred_ids, pred_segs = [], [], [], []
    for f in range(T):
        g = np.array(stuff_ids, dtype=np.int64)[rows][:, None].repeat(W, axis=1)
        p = np.array([pred_stuff_id[s] for s in stuff_ids], dtype=np.int64)[rows][:, None].repeat(W, axis=1)
        p_cat_of = dict(pred_stuff_cat)
        for t in tracks:
            (y0, x0, bh, bw), (vy, vx) = t["box"], t["v"]
            ya, yb, xa, xb = clip_box(y0 + vy * f, x0 + vx * f, bh, bw)
            g[ya:yb, xa:xb] = t["gid"]
            if t["kind"] == "crowd" or rng.random() < drop:
                continue  # crowd regions are not predicted; dropped things are missed
            dy, dx = (int(rng.integers(-jitter, jitter + 1)) for _ in range(2)) if jitter else (0, 0)
            ya, yb, xa, xb = clip_box(y0 + vy * f + dy, x0 + vx * f + dx, bh, bw)
            pid = t["pid"] + (1 if t["switch_at"] is not None and f >= t["switch_at"] else 0)
            p[ya:yb, xa:xb] = pid
            p_cat_of[pid] = t["pcat"]
        if void:
            vy0, vx0 = int(rng.integers(0, H - 4)), int(rng.integers(0, W - 6))
            g[vy0:vy0 + 4, vx0:vx0 + 6] = 0
        if void if pred_void is None else pred_void:
            py0, px0 = int(rng.integers(0, H - 3)), int(rng.integers(0, W - 3))
            p[py0:py0 + 3, px0:px0 + 3] = 0
        for k in range(false_positives):
            fh, fw = int(rng.integers(2, max(3, H // 4))), int(rng.integers(2, max(3, W // 4)))
            fy, fx = int(rng.integers(0, H - fh)), int(rng.integers(0, W - fw))
            fid = 9000 + 100 * f + k
            p[fy:fy + fh, fx:fx + fw] = fid
            p_cat_of[fid] = int(rng.choice(things if rng.random() < 1 - fp_stuff_fraction else stuff))
        gt_ids.append(g)
        gt_segs.append(segments_from_ids(g, gt_cat_of, crowd_ids))
        pred_ids.append(p)
        pred_segs.append(segments_from_ids(p, p_cat_of))
    return VideoData(name, gt_ids, gt_segs, pred_ids, pred_segs, {"tracks": tracks})


def perfect_prediction(video: VideoData) -> VideoData:
    """The GT itself as the prediction (crowd flags dropped, as a model would output)."""
    pred_segs = [[{"id": s["id"], "category_id": s["category_id"]} for s in segs] for segs in video.gt_segments]
    return VideoData(video.name, video.gt_ids, video.gt_segments, [g.copy() for g in video.gt_ids], pred_segs)


# -------------------------------------------------------------------------------------------- writing
def frame_file_names(layout: VPSLayout, video_index: int, num_frames: int) -> list[str]:
    """Image ``file_name``s as the published GT JSONs list them."""
    if layout.name == "cityscapes_vps":
        # Annotated frames 5, 10, ...; the 4th (frame 20) is the original gtFine frame.
        return [f"{video_index:04d}_{5 * (f + 1):04d}_toycity_{video_index:06d}_{5 * (f + 1):06d}_"
                f"{'leftImg8bit' if f == 3 else 'newImg8bit'}.png" for f in range(num_frames)]
    return [f"{video_index:03d}/{video_index:03d}_{f:05d}.jpg" for f in range(num_frames)]


def write_dataset(root: str | Path, layout: VPSLayout, split: str, videos: list[VideoData],
                  categories: list[dict]) -> dict:
    """Write ``layout``'s GT JSON and panoptic PNGs for ``videos`` under ``root``; return the GT JSON."""
    root = Path(root)
    png_dir = layout.panoptic_gt_dir(root, split)
    images, annotations = [], []
    for v_index, video in enumerate(videos):
        for name, ids, segs in zip(frame_file_names(layout, v_index + 1, video.num_frames), video.gt_ids,
                                   video.gt_segments, strict=True):
            image_id = layout.image_id_of(name)
            H, W = ids.shape
            images.append({"id": image_id, "width": W, "height": H, "file_name": name})
            png = layout.gt_png_name(name)
            write_panoptic_png(png_dir / png, ids)
            annotations.append({"image_id": image_id, "file_name": png, "segments_info": copy.deepcopy(segs)})
    gt = {"images": images, "annotations": annotations, "categories": categories}
    path = layout.panoptic_gt_json(root, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(gt))
    return gt


def write_submission(submission_dir: str | Path, gt_json: dict, videos: list[VideoData], *,
                     with_image_id: bool = False) -> Path:
    """Write ``pred.json`` + ``pan_pred/<image id>.png`` in the GT JSON's image order."""
    out = Path(submission_dir)
    preds = [(ids, segs) for v in videos for ids, segs in zip(v.pred_ids, v.pred_segments, strict=True)]
    if len(preds) != len(gt_json["images"]):
        raise ValueError("videos do not match the GT images")
    annotations = []
    for image, (ids, segs) in zip(gt_json["images"], preds, strict=True):
        write_panoptic_png(out / "pan_pred" / f"{image['id']}.png", ids)
        entry = {"segments_info": copy.deepcopy(segs)}
        if with_image_id:
            entry["image_id"] = image["id"]
        annotations.append(entry)
    (out / "pred.json").write_text(json.dumps({"annotations": annotations}))
    return out


def layout_of(name: str) -> VPSLayout:
    return {"cityscapes_vps": CITYSCAPES_VPS, "viper": VIPER}[name]


def submission_from_ground_truth(root: str | Path, layout: VPSLayout, split: str, submission_dir: str | Path,
                                 *, transform=None) -> Path:
    """Write a submission that copies a dataset's panoptic ground truth (a perfect prediction).

    ``transform(frame_index, ids, segments) -> (ids, segments)``, applied per GT frame in the GT JSON's
    order, damages it (e.g. a shifted or stale map); crowd flags are dropped as a method would not give them.
    """
    from vidseg.data.panoptic import read_panoptic_png

    root, out = Path(root), Path(submission_dir)
    gt = json.loads(layout.panoptic_gt_json(root, split).read_text())
    by_image = {a["image_id"]: a for a in gt["annotations"]}
    annotations = []
    for index, image in enumerate(gt["images"]):
        ann = by_image[image["id"]]
        ids = read_panoptic_png(layout.panoptic_gt_dir(root, split) / layout.gt_png_name(image["file_name"]))
        segments = [{"id": s["id"], "category_id": s["category_id"]} for s in ann["segments_info"]]
        if transform is not None:
            ids, segments = transform(index, ids, segments)
        write_panoptic_png(out / "pan_pred" / f"{image['id']}.png", ids)
        annotations.append({"segments_info": segments})
    (out / "pred.json").write_text(json.dumps({"annotations": annotations}))
    return out

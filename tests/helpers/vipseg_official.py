"""A slow, loop-based statement of VIPSeg's official scoring rules, used only as the test oracle.

Written from reading ``ClipPanoFCN/eval_vpq_vspw.py`` and ``eval_stq_vspw.py`` (VIPSeg-Dataset) and deeplab2's
numpy STQuality; no code is shared with them or with vidseg.metrics. Every rule is spelled out one segment
or one pair at a time, so that a disagreement with the vectorised code points at a rule.

A video is ``(gt_ids, gt_segments, pred_ids, pred_segments)``: per frame an ``(H, W)`` integer id map (0 = void)
and its ``segments_info`` list (``id``, ``category_id``; GT also ``iscrowd`` and ``area``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

WINDOWS = (1, 2, 4, 6, 8)  # nframes; the official files are vpq-<(nframes - 1) * 5>.txt


# ------------------------------------------------------------------------------------------------- VPQ
def _window_stats(frames, stats: dict[int, list]) -> None:
    """Add the TP/FP/FN/IoU of one window (``frames`` = its (gt, gt segs, pred, pred segs)) to ``stats``."""
    gt_tubes: dict[int, dict] = {}
    pred_tubes: dict[int, dict] = {}
    overlap: Counter = Counter()
    for gt, gt_segs, pred, pred_segs in frames:
        # A tube takes its class and crowd flag from the first frame that lists it; GT areas add the JSON's.
        for seg in gt_segs:
            tube = gt_tubes.setdefault(seg["id"], {"cat": seg["category_id"], "crowd": seg.get("iscrowd", 0),
                                                   "area": 0})
            tube["area"] += seg["area"]
        # Predicted areas are pixel counts; every listed id has pixels (checked by the caller).
        for seg in pred_segs:
            tube = pred_tubes.setdefault(seg["id"], {"cat": seg["category_id"], "area": 0})
            tube["area"] += int(np.count_nonzero(pred == seg["id"]))
        for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist(), strict=True):
            overlap[(g, p)] += 1

    def stat(cat):
        return stats.setdefault(cat, [0.0, 0, 0, 0])  # iou, tp, fp, fn

    gt_hit, pred_hit = set(), set()
    for (g, p), inter in overlap.items():
        if g not in gt_tubes or p not in pred_tubes:
            continue
        if gt_tubes[g]["crowd"] == 1 or gt_tubes[g]["cat"] != pred_tubes[p]["cat"]:
            continue
        union = pred_tubes[p]["area"] + gt_tubes[g]["area"] - inter - overlap.get((0, p), 0)
        iou = inter / union
        if iou > 0.5:
            s = stat(gt_tubes[g]["cat"])
            s[0] += iou
            s[1] += 1
            gt_hit.add(g)
            pred_hit.add(p)
    crowd_of_class = {}
    for g, tube in gt_tubes.items():  # dict order: first appearance in the window
        if g in gt_hit:
            continue
        if tube["crowd"] == 1:
            crowd_of_class[tube["cat"]] = g  # a later crowd tube of the class replaces an earlier one
            continue
        stat(tube["cat"])[3] += 1
    for p, tube in pred_tubes.items():
        if p in pred_hit:
            continue
        ignored = overlap.get((0, p), 0)
        if tube["cat"] in crowd_of_class:
            ignored += overlap.get((crowd_of_class[tube["cat"]], p), 0)
        if ignored / tube["area"] > 0.5:
            continue
        stat(tube["cat"])[2] += 1


def vpq_stats(videos, windows=WINDOWS) -> dict[int, dict[int, list]]:
    """``{nframes: {category id: [iou sum, tp, fp, fn]}}`` over every window of every video."""
    out = {}
    for nframes in windows:
        stats: dict[int, list] = {}
        for gt_ids, gt_segs, pred_ids, pred_segs in videos:
            frames = list(zip(gt_ids, gt_segs, pred_ids, pred_segs, strict=True))
            for start in range(0, len(frames) - nframes + 1):
                _window_stats(frames[start:start + nframes], stats)
        out[nframes] = stats
    return out


def pq_summary(stats: dict[int, list], categories: list[dict]) -> dict[str, float]:
    """Official averaging: over the JSON's categories with TP + FP + FN > 0, split by ``isthing == 1``."""
    out = {}
    for name, want in (("all", None), ("thing", True), ("stuff", False)):
        total, n = 0.0, 0
        for cat in categories:
            if want is not None and (cat["isthing"] == 1) != want:
                continue
            iou, tp, fp, fn = stats.get(cat["id"], [0.0, 0, 0, 0])
            if tp + fp + fn == 0:
                continue
            n += 1
            total += iou / (tp + 0.5 * fp + 0.5 * fn)
        out[name] = total / n if n else 0.0
    return out


# ------------------------------------------------------------------------------------------------- STQ
IGNORE = 255
SHIFT = 16


def _numbering(frame_segments, corrected: bool) -> dict[int, int]:
    """Official: 0, 1, 2 ... in order of first listing in the video. Corrected: from 1, crowd things get 0."""
    order: dict[int, int] = {}
    for segs in frame_segments:
        for seg in segs:
            if seg["id"] not in order:
                order[seg["id"]] = len(order) + (1 if corrected else 0)
    if corrected:
        for segs in frame_segments:
            for seg in segs:
                if seg.get("iscrowd", 0) == 1:
                    order[seg["id"]] = 0
    return order


def _labels(ids: np.ndarray, segs, number: dict[int, int]) -> np.ndarray:
    semantic = np.full(ids.shape, IGNORE, dtype=np.int64)
    instance = np.full(ids.shape, IGNORE, dtype=np.int64)
    for seg in segs:
        semantic[ids == seg["id"]] = seg["category_id"]
        instance[ids == seg["id"]] = number[seg["id"]]
    return (semantic << SHIFT) + instance


def stq(videos, categories: list[dict], *, corrected: bool = False, num_classes: int = 124) -> dict[str, float]:
    """``{"STQ", "AQ", "SQ"}`` of the official eval_stq_vspw.py (or its corrected crowd rule)."""
    things = {c["id"] for c in categories if c["isthing"]}
    confusion = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    aq_total, tubes = 0.0, 0
    for gt_ids, gt_segs, pred_ids, pred_segs in videos:
        gt_number = _numbering(gt_segs, corrected)
        pred_number = _numbering(pred_segs, corrected)
        gt_size: Counter = Counter()
        pred_size: Counter = Counter()
        inter: Counter = Counter()
        for g_ids, g_segs, p_ids, p_segs in zip(gt_ids, gt_segs, pred_ids, pred_segs, strict=True):
            y = _labels(g_ids, g_segs, gt_number).ravel().tolist()
            x = _labels(p_ids, p_segs, pred_number).ravel().tolist()
            for gl, pl in zip(y, x, strict=True):
                gs, ps = gl >> SHIFT, pl >> SHIFT
                confusion[num_classes if gs == IGNORE else gs, num_classes if ps == IGNORE else ps] += 1
                g_thing, p_thing = gs in things, ps in things
                crowd = g_thing and (gl & 0xFFFF) == 0
                if g_thing and not crowd:
                    gt_size[gl] += 1
                if p_thing and not crowd:
                    pred_size[pl] += 1
                if g_thing and p_thing and not crowd:
                    inter[(gl, pl)] += 1
        for gl, g_area in gt_size.items():
            inner = 0.0
            for pl, p_area in pred_size.items():
                tpa = inter.get((gl, pl), 0)
                if tpa:
                    inner += tpa * (tpa / (p_area + g_area - tpa))
            aq_total += inner / g_area
        tubes += len(gt_size)
    confusion[num_classes, :] = 0  # GT ignore pixels do not count
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - np.diag(confusion)
    sq = float(np.sum(tp / np.maximum(union, 1e-15)) / np.count_nonzero(union))
    aq = aq_total / max(tubes, 1e-15)
    return {"STQ": float(np.sqrt(aq * sq)), "AQ": aq, "SQ": sq}

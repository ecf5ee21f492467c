#!/usr/bin/env python
"""Where does a VPS submission lose its points? Oracle substitution on a scored submission.

Each predicted thing segment is matched, frame by frame, to the ground-truth segment it overlaps most
(IoU > 0.5, any class; at most one prediction per GT segment, as the IoU threshold guarantees). The submission is
then rescored with one error type corrected at a time:

* ``class oracle``: matched predictions take their GT segment's class (what a perfect classifier would add);
* ``association oracle``: matched predictions take one id per GT track (what perfect tracking would add);
* ``class + association``: both.

It also counts the GT thing instance-frames that no prediction covers with IoU > 0.5 (detection or
segmentation misses, which no oracle here fixes) and those covered with the wrong class. Scores come from
vidseg's own evaluator (equal to the official eval_vpq.py / STQ), in percent.

    python tools/vps_oracle.py --data data/toy_cityscapes_vps --split val --predictions <dir with pred.json>

``--predictions`` is a submission folder (``pan_pred/`` + ``pred.json``), e.g. the ``predictions/`` folder that
``python -m vidseg.evaluate task=vps ckpt=...`` writes next to its results. Nothing in it is modified: the
substituted submissions are written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from vidseg.data.panoptic import read_panoptic_png, write_panoptic_png  # noqa: E402
from vidseg.metrics.vps_eval import (  # noqa: E402
    VPSGroundTruth,
    _read_pred_json,
    evaluate_submission,
    load_ground_truth,
)

MODES = ("as submitted", "class oracle", "association oracle", "class + association")


def _match(gt_ids: np.ndarray, gt_segments: list[dict], pred_ids: np.ndarray, pred_segments: list[dict],
           thing_classes: set[int]) -> dict[int, dict]:
    """``pred segment id -> matched GT segment`` for predicted things with IoU > 0.5 against a GT thing."""
    gt_things = {s["id"]: s for s in gt_segments if s["category_id"] in thing_classes and not s.get("iscrowd")}
    out = {}
    for seg in pred_segments:
        if seg["category_id"] not in thing_classes:
            continue
        mask = pred_ids == seg["id"]
        area = int(mask.sum())
        if area == 0:
            continue
        hit, counts = np.unique(gt_ids[mask], return_counts=True)
        for gid, inter in zip(hit.tolist(), counts.tolist(), strict=True):
            if gid not in gt_things:
                continue
            union = area + int((gt_ids == gid).sum()) - inter
            if inter / union > 0.5:
                out[seg["id"]] = gt_things[gid]
    return out


def substitute(gt: VPSGroundTruth, submission: Path, out_dirs: dict[str, Path]) -> dict[str, int]:
    """Write the three substituted submissions into ``out_dirs`` (mode -> folder); return miss counts."""
    pred_json = _read_pred_json(gt, submission)
    thing_classes = {c for c, rec in gt.categories.items() if rec.get("isthing")}
    stats = {"gt_things": 0, "covered": 0, "covered_right_class": 0}
    annotations = {mode: [] for mode in out_dirs}
    for d in out_dirs.values():
        (d / "pan_pred").mkdir(parents=True)
    for video in gt.videos:
        # Association oracle ids, per video: ("gt", GT segment id) for matched predictions (one per GT track), or
        # ("pred", predicted id) for the rest (kept apart, their own association kept) -> 1, 2, ...
        new_id: dict[tuple[str, int], int] = {}
        for frame in video.frames:
            gt_ids = read_panoptic_png(frame.png_path)
            pred_ids = read_panoptic_png(submission / "pan_pred" / f"{frame.image_id}.png")
            segments = pred_json[frame.image_id]
            matched = _match(gt_ids, frame.segments_info, pred_ids, segments, thing_classes)
            n_gt = sum(1 for s in frame.segments_info if s["category_id"] in thing_classes and not s.get("iscrowd"))
            stats["gt_things"] += n_gt
            stats["covered"] += len(matched)
            stats["covered_right_class"] += sum(
                1 for sid, g in matched.items()
                if g["category_id"] == next(s["category_id"] for s in segments if s["id"] == sid))
            for mode, d in out_dirs.items():
                fix_class = mode in ("class oracle", "class + association")
                fix_track = mode in ("association oracle", "class + association")
                new_ids = np.zeros_like(pred_ids) if fix_track else pred_ids
                new_segments = []
                for seg in segments:
                    seg = dict(seg)
                    g = matched.get(seg["id"])
                    if g is not None and fix_class:
                        seg["category_id"] = g["category_id"]
                    if fix_track:
                        key = ("gt", g["id"]) if g is not None else ("pred", seg["id"])
                        new = new_id.setdefault(key, len(new_id) + 1)
                        new_ids[pred_ids == seg["id"]] = new
                        seg["id"] = new
                    new_segments.append(seg)
                write_panoptic_png(d / "pan_pred" / f"{frame.image_id}.png", new_ids)
                annotations[mode].append({"image_id": frame.image_id, "segments_info": new_segments})
    for mode, d in out_dirs.items():
        (d / "pred.json").write_text(json.dumps({"annotations": annotations[mode]}))
    return stats


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset root (the GT)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--layout", default="cityscapes_vps", choices=("cityscapes_vps", "viper"))
    parser.add_argument("--predictions", required=True, help="submission folder: pan_pred/ + pred.json")
    args = parser.parse_args(argv)
    gt = load_ground_truth(args.layout, args.data, args.split)
    submission = Path(args.predictions)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {mode: Path(tmp) / str(i) for i, mode in enumerate(MODES[1:])}
        stats = substitute(gt, submission, dirs)
        for mode in MODES:
            res = evaluate_submission(gt, submission if mode == MODES[0] else dirs[mode], workers=0)
            rows[mode] = {"VPQ": res.vpq["all"], "thing": res.vpq["thing"], "stuff": res.vpq["stuff"],
                          "STQ": res.stq["STQ"], "AQ": res.stq["AQ"]}
    print("| submission | VPQ | thing | stuff | STQ | AQ |\n|---|---|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | " + " | ".join(f"{100 * r[k]:.2f}" for k in ("VPQ", "thing", "stuff", "STQ", "AQ")) + " |")
    n = max(stats["gt_things"], 1)
    print(f"\nGT thing instance-frames: {stats['gt_things']}; covered by a prediction with IoU > 0.5: "
          f"{stats['covered']} ({100 * stats['covered'] / n:.1f}%), with the right class: "
          f"{stats['covered_right_class']} ({100 * stats['covered_right_class'] / n:.1f}%)")
    rows["stats"] = stats
    return rows


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Regenerate tests/fixtures/jf_oracle: tiny DAVIS-style sequences scored by the official algorithm.

The fixture holds GT annotations and a results folder (indexed PNGs, 40x60) laid out like DAVIS, and
expected.json with the per-frame J/F, per-object statistics, global numbers and the CSV text that
davis2017-evaluation's evaluation_method.py would write for them. vidseg's tests compare against it.

Oracle. The DAVIS toolkit (davisvideochallenge/davis2017-evaluation) is not on PyPI, and its metrics.py no
longer imports under numpy >= 1.24 (np.bool). So the numbers come from:
  * the toolkit's own primitives from installed packages: ``vos_benchmark.utils._seg2bmap`` (vos-benchmark
    0.1.0 ships the toolkit's seg2bmap unchanged), ``cv2.dilate`` and ``skimage.morphology.disk`` - the
    exact calls the toolkit makes;
  * around them, a plain frame-by-frame restatement of the toolkit's pipeline (davis.py reading and void
    handling, results.py one-hot/zero padding, evaluation.py frames 1..T-2, utils.db_statistics with its
    uint8 bin indices, evaluation_method.py means and pandas CSV with float_format="%.3f"), written
    independently of vidseg's vectorised code;
  * a cross-check against vos-benchmark's own Evaluator (an independent reimplementation that reproduces
    the official J and F): per-frame J/F must agree for every object whose evaluation starts in the first
    evaluated frame (the Evaluator skips frames before an object first appears).

Run with an interpreter that has the oracle packages, kept out of vidseg's environment:
    python3 -m venv /tmp/oracle
    /tmp/oracle/bin/pip install vos-benchmark==0.1.0 opencv-python-headless scikit-image pandas
    /tmp/oracle/bin/python tools/make_jf_oracle.py [--out tests/fixtures/jf_oracle]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from vidseg.data.io import write_mask  # noqa: E402  (numpy + PIL only; no torch needed here)

H, W = 40, 60
WIDE_RADIUS = 5  # bound_th >= 1 is a radius in pixels
LARGE = (480, 854)  # DAVIS 480p: tolerance radius 8
SPLIT = "fixture"


# ----------------------------------------------------------------------------------------------------------
# Synthetic sequences
# ----------------------------------------------------------------------------------------------------------
def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[max(y0, 0) : y1, max(x0, 0) : x1] = True
    return m


def shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(m)
    ys, xs = np.nonzero(m)
    ys, xs = ys + dy, xs + dx
    ok = (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
    out[ys[ok], xs[ok]] = True
    return out


def grow(m: np.ndarray, steps: int = 1) -> np.ndarray:
    for _ in range(steps):
        m = m | shift(m, 1, 0) | shift(m, -1, 0) | shift(m, 0, 1) | shift(m, 0, -1)
    return m


def jitter(m: np.ndarray, rng: np.random.Generator, p: float = 0.35) -> np.ndarray:
    """Flip a random share of the pixels next to the mask's edge (a ragged prediction)."""
    edge = grow(m) & grow(~m)  # pixels within 1 px of the edge, both sides
    flip = edge & (rng.random(m.shape) < p)
    return m ^ flip


def paint(layers: list[tuple[int, np.ndarray]]) -> np.ndarray:
    lab = np.zeros((H, W), dtype=np.uint8)
    for obj, m in layers:
        lab[m] = obj
    return lab


def make_sequences(rng: np.random.Generator) -> dict[str, dict]:
    seqs: dict[str, dict] = {}

    # alpha: 2 objects; obj 2 sits in the bottom-right corner (touches both borders), vanishes from the GT
    # in frames 4-5 (prediction keeps a blob in 4 -> J=F=0, nothing in 5 -> J=F=1); obj 1's prediction is
    # empty in frame 3.
    gts, preds = [], []
    for t in range(8):
        o1 = ellipse(10 + 2 * t, 15 + 3 * t, 7, 10)
        o2 = rect(26 - t, H, 44 + t, W) if t not in (4, 5) else np.zeros((H, W), bool)
        gts.append(paint([(1, o1), (2, o2)]))
        p1 = jitter(shift(o1, 1, -1), rng) if t != 3 else np.zeros((H, W), bool)
        p2 = grow(o2) if t != 4 else rect(30, 36, 50, 56)
        preds.append(paint([(1, p1), (2, p2)]))
    seqs["alpha"] = {"gt": gts, "pred": preds, "pred_mode": "P", "skip_pred": ()}

    # beta: 3 objects, void (255) ring around obj 1 in the GT (toolkit: void -> background), obj 3 a thin
    # line along the top row and left column (seg2bmap's edge rows), never predicted (zero padding).
    gts, preds = [], []
    for t in range(7):
        o1 = ellipse(20, 20 + t, 8, 9)
        void = grow(o1, 2) & ~o1
        o2 = ellipse(28 - t, 45, 6, 8) | rect(H - 1, H, 30, W)  # plus the whole right part of the last row
        o3 = rect(0, 1, 0, 40 - 2 * t) | rect(0, 15, 0, 1)
        gt = paint([(1, o1), (2, o2), (3, o3)])
        gt[void & (gt == 0)] = 255
        gts.append(gt)
        p1 = grow(o1, t % 3) if t != 2 else jitter(o1, rng, 0.6)
        p2 = jitter(shift(o2, t % 2, 2), rng)
        preds.append(paint([(1, p1), (2, p2)]))
    seqs["beta"] = {"gt": gts, "pred": preds, "pred_mode": "P", "skip_pred": ()}

    # gamma: 1 object touching the top edge, predictions stored as grayscale "L" PNGs; frame 2 predicts
    # the whole image (a non-empty mask with no boundary: F=0), frame 6 predicts nothing; the first and
    # last frames have no result files (the toolkit never reads them).
    gts, preds = [], []
    for t in range(10):
        o1 = ellipse(3 + t, 30, 9, 12 - t / 2)
        gts.append(paint([(1, o1)]))
        if t == 2:
            p1 = np.ones((H, W), bool)
        elif t == 6:
            p1 = np.zeros((H, W), bool)
        else:
            p1 = jitter(shift(o1, -1 + t % 3, t % 2), rng, 0.25)
        preds.append(paint([(1, p1)]))
    seqs["gamma"] = {"gt": gts, "pred": preds, "pred_mode": "L", "skip_pred": (0, 9)}

    # delta: first-frame GT has ids {1, 3}: 3 objects, obj 2 absent from the GT (J=F=1 while also not
    # predicted, 0 where predicted); id 4 appears in a later GT frame and is not an object.
    gts, preds = [], []
    for t in range(6):
        o1 = rect(5 + t, 18 + t, 5, 20)
        o3 = ellipse(25, 40 - 2 * t, 7, 7)
        o4 = rect(30, 38, 5, 15) if t >= 3 else np.zeros((H, W), bool)
        gts.append(paint([(1, o1), (3, o3), (4, o4)]))
        p2 = rect(30, 34, 5, 9) if t == 2 else np.zeros((H, W), bool)
        preds.append(paint([(1, jitter(o1, rng)), (3, grow(o3, 1 + t % 2)), (2, p2)]))
    seqs["delta"] = {"gt": gts, "pred": preds, "pred_mode": "P", "skip_pred": ()}
    return seqs


def make_large_pairs(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """A few 480x854 (pred, gt) masks: the DAVIS 480p radius (8 px) on smooth shapes plus some specks."""
    h, w = LARGE
    y, x = np.mgrid[0:h, 0:w]

    def blob(cy, cx, ry, rx):
        return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0

    gt1 = blob(200, 300, 120, 180) | blob(420, 800, 90, 70)  # second blob crosses the bottom/right border
    pred1 = blob(205, 309, 118, 185) | blob(425, 790, 80, 80)
    pred1[rng.random((h, w)) < 2e-4] = True
    gt2 = blob(0, 0, 60, 200)  # a corner object
    pred2 = np.roll(gt2, (7, 5), axis=(0, 1))
    gt3 = blob(240, 427, 30, 30)
    pred3 = blob(240, 440, 40, 25) ^ blob(240, 440, 10, 10)  # a ring: inner boundary too
    return [(pred1, gt1), (pred2, gt2), (pred3, gt3)]


def write_fixture(out: Path, seqs: dict[str, dict], large: list[tuple[np.ndarray, np.ndarray]]) -> None:
    if (out / "large").exists():
        shutil.rmtree(out / "large")
    for k, (pred, gt) in enumerate(large):
        write_mask(out / "large" / f"pred_{k}.png", pred.astype(np.uint8))
        write_mask(out / "large" / f"gt_{k}.png", gt.astype(np.uint8))
    for sub in ("Annotations", "results"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    for name, seq in seqs.items():
        for t, (gt, pred) in enumerate(zip(seq["gt"], seq["pred"], strict=True)):
            write_mask(out / "Annotations" / name / f"{t:05d}.png", gt)
            if t in seq["skip_pred"]:
                continue
            path = out / "results" / name / f"{t:05d}.png"
            if seq["pred_mode"] == "L":
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pred, mode="L").save(path)
            else:
                write_mask(path, pred)
    (out / "sequences.txt").write_text("".join(f"{name}\n" for name in seqs))


# ----------------------------------------------------------------------------------------------------------
# The official algorithm, frame by frame, on the files
# ----------------------------------------------------------------------------------------------------------
def official_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """f_measure of davis2017/metrics.py for one (H, W) pair (no void, as in the semi-supervised task)."""
    import cv2
    from skimage.morphology import disk
    from vos_benchmark.utils import _seg2bmap

    radius = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape))
    se = disk(radius).astype(np.uint8)
    fg_b = _seg2bmap(pred)
    gt_b = _seg2bmap(gt)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), se)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), se)
    n_fg, n_gt = np.sum(fg_b), np.sum(gt_b)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_b * gt_dil) / float(n_fg)
        recall = np.sum(gt_b * fg_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def official_j(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """db_eval_iou of davis2017/metrics.py on (T, H, W) stacks."""
    inter = np.sum(pred & gt, axis=(-2, -1))
    union = np.sum(pred | gt, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    j[np.isclose(union, 0)] = 1
    return j


def official_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """utils.db_statistics, uint8 bin indices included (the fixture stays far below 256 frames)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.uint8)
        bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(mean), float(recall), float(decay)


def one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    return np.stack([labels == k for k in range(1, n + 1)]) if n else np.zeros((0, *labels.shape), bool)


def official_sequence(ann_dir: Path, res_dir: Path) -> dict:
    frames = sorted(p.stem for p in ann_dir.glob("*.png"))
    gt = np.stack([np.array(Image.open(ann_dir / f"{f}.png")) for f in frames]).astype(np.float64)
    gt[gt == 255] = 0  # davis.py: void -> background
    n_obj = int(np.max(gt[0]))
    gt, frames = gt[1:-1], frames[1:-1]  # semi-supervised: frames 1..T-2
    res = np.stack([np.array(Image.open(res_dir / f"{f}.png")) for f in frames]).astype(np.float64)
    n_res = int(np.max(res))
    if n_res > n_obj:
        raise SystemExit(f"{res_dir}: index higher than the number of objects")
    gt_masks = one_hot(gt, n_obj)
    res_masks = np.concatenate([one_hot(res, n_res), np.zeros((n_obj - n_res, *res.shape), bool)])
    j = np.stack([official_j(res_masks[k], gt_masks[k]) for k in range(n_obj)])
    f = np.array(
        [[official_f(res_masks[k, t], gt_masks[k, t]) for t in range(len(frames))] for k in range(n_obj)]
    )
    # The fixture's 40x60 frames give a tolerance radius of 1; F with a 5-pixel disk checks the disk's shape.
    f5 = np.array(
        [
            [official_f(res_masks[k, t], gt_masks[k, t], WIDE_RADIUS) for t in range(len(frames))]
            for k in range(n_obj)
        ]
    )
    return {"frames": frames, "num_objects": n_obj, "J": j, "F": f, "F_wide": f5}


def vos_benchmark_check(ann_dir: Path, res_dir: Path, seq: dict) -> tuple[int, float]:
    """Per-frame J/F of vos-benchmark's Evaluator vs ours-of-the-oracle, for objects it scores in full."""
    from vos_benchmark.evaluator import Evaluator

    ev = Evaluator()
    for f in seq["frames"]:
        gt = np.array(Image.open(ann_dir / f"{f}.png"))
        res = np.array(Image.open(res_dir / f"{f}.png"))
        ev.feed_frame(res, gt)
    compared, worst = 0, 0.0
    for k in range(1, seq["num_objects"] + 1):
        if len(ev.object_iou.get(k, [])) != len(seq["frames"]):
            continue  # object not present from the first evaluated frame on: the Evaluator skips frames
        worst = max(worst, float(np.max(np.abs(np.array(ev.object_iou[k]) - seq["J"][k - 1]))))
        worst = max(worst, float(np.max(np.abs(np.array(ev.boundary_f[k]) - seq["F"][k - 1]))))
        compared += 1
    return compared, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "jf_oracle")
    ap.add_argument("--seed", type=int, default=2017)
    args = ap.parse_args()
    import pandas as pd

    rng = np.random.default_rng(args.seed)
    seqs = make_sequences(rng)
    large = make_large_pairs(rng)
    write_fixture(args.out, seqs, large)
    large_expected = []
    for k in range(len(large)):
        pred = np.array(Image.open(args.out / "large" / f"pred_{k}.png")) > 0
        gt = np.array(Image.open(args.out / "large" / f"gt_{k}.png")) > 0
        large_expected.append(
            {
                "pred": f"large/pred_{k}.png",
                "gt": f"large/gt_{k}.png",
                "J": float(official_j(pred[None], gt[None])[0]),
                "F": official_f(pred, gt),
            }
        )

    per_object, stats_rows, compared, worst = {}, [], 0, 0.0
    for name in seqs:
        ann_dir, res_dir = args.out / "Annotations" / name, args.out / "results" / name
        res = official_sequence(ann_dir, res_dir)
        n, w = vos_benchmark_check(ann_dir, res_dir, res)
        compared, worst = compared + n, max(worst, w)
        for k in range(res["num_objects"]):
            stats = official_statistics(res["J"][k]) + official_statistics(res["F"][k])
            stats_rows.append(stats)
            per_object[f"{name}_{k + 1}"] = {
                "sequence": name,
                "frames": res["frames"],
                "J": res["J"][k].tolist(),
                "F": res["F"][k].tolist(),
                f"F_radius{WIDE_RADIUS}": res["F_wide"][k].tolist(),
                **dict(
                    zip(
                        ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"), stats, strict=True
                    )
                ),
            }
    if worst > 1e-12:
        raise SystemExit(f"oracle and vos-benchmark disagree by {worst}")

    # evaluation_method.py: plain means over all objects, pandas CSVs with float_format="%.3f".
    cols = np.array(stats_rows)
    jm, jr, jd, fm, fr, fd = (float(np.mean(cols[:, i])) for i in range(6))
    g = {
        "J&F-Mean": (jm + fm) / 2.0,
        "J-Mean": jm,
        "J-Recall": jr,
        "J-Decay": jd,
        "F-Mean": fm,
        "F-Recall": fr,
        "F-Decay": fd,
    }
    table_g = pd.DataFrame(data=np.array([list(g.values())]), columns=list(g))
    names = list(per_object)
    table_seq = pd.DataFrame(
        data=list(
            zip(
                names,
                [per_object[k]["J-Mean"] for k in names],
                [per_object[k]["F-Mean"] for k in names],
                strict=True,
            )
        ),
        columns=["Sequence", "J-Mean", "F-Mean"],
    )
    expected = {
        "about": "Official DAVIS 2017 semi-supervised numbers for this fixture; regenerate with "
        "tools/make_jf_oracle.py (see its docstring for how the oracle is built).",
        "oracle": {
            "primitives": "vos_benchmark.utils._seg2bmap + cv2.dilate + skimage.morphology.disk",
            "versions": {
                p: version(p)
                for p in (
                    "vos-benchmark",
                    "opencv-python-headless",
                    "scikit-image",
                    "numpy",
                    "pandas",
                    "pillow",
                )
            },
            "vos_benchmark_evaluator_check": {"objects_compared": compared, "max_abs_diff": worst},
        },
        "split": SPLIT,
        "size": [H, W],
        "radius": int(math.ceil(0.008 * math.sqrt(H * H + W * W))),
        "wide_radius": WIDE_RADIUS,
        "sequences": list(seqs),
        "large": large_expected,
        "global": g,
        "per_object": per_object,
        "csv": {
            f"global_results-{SPLIT}.csv": table_g.to_csv(index=False, float_format="%.3f"),
            f"per-sequence_results-{SPLIT}.csv": table_seq.to_csv(index=False, float_format="%.3f"),
        },
    }
    (args.out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(table_g.to_string(index=False))
    print(table_seq.to_string(index=False))
    print(f"vos-benchmark Evaluator cross-check: {compared} objects, max |diff| {worst:.3g}")


if __name__ == "__main__":
    main()

"""Benchmark vidseg's VPQ + STQ submission scoring against a naive implementation of the same rules.

    python -m bench.vpq --out bench/results                 # 10 videos x 6 frames at 1024x2048
    python -m bench.vpq --out bench/results --videos 2      # quicker

Data: a generated Cityscapes-VPS-format GT (panoptic PNGs + JSON) and submission, 1024x2048, every
video 6 annotated frames of a toy street scene (5 stuff regions, ~30 moving boxes of thing classes, a void
patch, a crowd box; the prediction has jittered boxes, id switches, class errors and false positives).

Rows (each includes decoding the PNGs, i.e. the whole scoring process after the JSONs are read):
- vidseg: ``evaluate_submission`` in this process (workers=1) and with a pool (workers=2, the cores here);
- naive: a straightforward implementation written here: per window, stack the frames, one boolean mask per
  segment, a Python loop over same-category (GT, pred) segment pairs for the intersections; STQ from
  per-pixel semantic/instance maps painted segment by segment;
- official (if the mirrors exist): mcahny/vps eval_vpq.py ``vpq_compute_single_core`` + deeplab2's numpy
  STQuality, executed from the mirrors at run time by tools/make_vps_oracle.py.

Whole-process rows (imports, config composition, reading, scoring, writing results) run
``python -m vidseg.evaluate task=vps ... predictions=<submission>`` and the official rules in a fresh
Python process each; their ratio is the speed-up a user sees.

Peak memory = tracemalloc peak of the call (numpy buffers are traced), in the calling process only.
Writes vpq-cpu.md and vpq-cpu.json under --out.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared machine: see bench/ops.py

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from vidseg.data.panoptic import read_panoptic_png, write_panoptic_png  # noqa: E402
from vidseg.data.vps_layout import CITYSCAPES_VPS  # noqa: E402
from vidseg.metrics.vps_eval import evaluate_submission, load_ground_truth  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = [{"id": i, "name": f"c{i}", "isthing": int(i >= 11)} for i in range(19)]
WINDOWS = (1, 2, 3, 4)


# ------------------------------------------------------------------------------------------- data
def make_video(rng: np.random.Generator, H: int, W: int, T: int, n_things: int):
    """(gt ids, gt segments, pred ids, pred segments) per frame; painted with slices, no per-pixel loop."""
    stuff_cats = rng.choice(11, size=5, replace=False)
    ys = np.sort(rng.integers(H // 5, 4 * H // 5, size=2))
    xs = int(rng.integers(W // 4, 3 * W // 4))
    boxes = []
    for j in range(n_things + 1):
        bh, bw = int(rng.integers(H // 20, H // 5)), int(rng.integers(W // 40, W // 8))
        boxes.append(dict(gid=20000 + j, pid=30000 + j, cat=int(rng.integers(11, 19)), crowd=j == n_things,
                          y=int(rng.integers(0, H - bh)), x=int(rng.integers(0, W - bw)), h=bh, w=bw,
                          vy=int(rng.integers(-20, 21)), vx=int(rng.integers(-40, 41)),
                          pcat=None, switch=int(rng.integers(1, T)) if rng.random() < 0.2 else None))
        if rng.random() < 0.1:
            boxes[-1]["pcat"] = int(rng.integers(11, 19))
    out = []
    for f in range(T):
        g = np.empty((H, W), dtype=np.int64)
        # 5 stuff regions: top band, middle-left, middle-right, bottom-left, bottom-right.
        g[: ys[0]] = 1
        g[ys[0]: ys[1], :xs], g[ys[0]: ys[1], xs:] = 2, 3
        g[ys[1]:, : xs // 2], g[ys[1]:, xs // 2:] = 4, 5
        p = g + 100
        gcat = {i + 1: int(c) for i, c in enumerate(stuff_cats)}
        pcat = {i + 101: int(c) for i, c in enumerate(stuff_cats)}
        for b in boxes:
            y = int(np.clip(b["y"] + b["vy"] * f, 0, H - b["h"]))
            x = int(np.clip(b["x"] + b["vx"] * f, 0, W - b["w"]))
            g[y:y + b["h"], x:x + b["w"]] = b["gid"]
            gcat[b["gid"]] = b["cat"]
            if b["crowd"] or rng.random() < 0.05:
                continue
            dy, dx = (int(v) for v in rng.integers(-6, 7, size=2))
            y, x = int(np.clip(y + dy, 0, H - b["h"])), int(np.clip(x + dx, 0, W - b["w"]))
            pid = b["pid"] + (1 if b["switch"] is not None and f >= b["switch"] else 0)
            p[y:y + b["h"], x:x + b["w"]] = pid
            pcat[pid] = b["pcat"] or b["cat"]
        g[H - 40:, :200] = 0  # void (ego vehicle)
        for k in range(3):  # false positives
            fy, fx = int(rng.integers(0, H - 60)), int(rng.integers(0, W - 60))
            p[fy:fy + 60, fx:fx + 60] = 40000 + 10 * f + k
            pcat[40000 + 10 * f + k] = int(rng.integers(11, 19))
        gu, gn = np.unique(g, return_counts=True)
        pu = np.unique(p)
        crowd_id = boxes[-1]["gid"]
        gsegs = [{"id": int(i), "category_id": gcat[int(i)], "iscrowd": int(int(i) == crowd_id), "area": int(n)}
                 for i, n in zip(gu, gn, strict=True) if i]
        psegs = [{"id": int(i), "category_id": pcat[int(i)]} for i in pu if i]
        out.append((g, gsegs, p, psegs))
    return out


def write_case(case: Path, videos: int, frames: int, H: int, W: int, things: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    images, anns, preds, data = [], [], [], []
    png_dir = CITYSCAPES_VPS.panoptic_gt_dir(case / "gt", "val")
    for v in range(videos):
        video = make_video(rng, H, W, frames, things)
        data.append(video)
        for f, (g, gsegs, p, psegs) in enumerate(video):
            name = f"{v + 1:04d}_{5 * (f + 1):04d}_bench_{v:06d}_{f:06d}_newImg8bit.png"
            image_id = CITYSCAPES_VPS.image_id_of(name)
            png = CITYSCAPES_VPS.gt_png_name(name)
            write_panoptic_png(png_dir / png, g)
            write_panoptic_png(case / "submission" / "pan_pred" / f"{image_id}.png", p)
            images.append({"id": image_id, "width": W, "height": H, "file_name": name})
            anns.append({"image_id": image_id, "file_name": png, "segments_info": gsegs})
            preds.append({"image_id": image_id, "segments_info": psegs})
    CITYSCAPES_VPS.panoptic_gt_json(case / "gt", "val").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    (case / "submission" / "pred.json").write_text(json.dumps({"annotations": preds}))
    return data


# ------------------------------------------------------------------------------------ naive baseline
def naive_vpq_video(gts, gsegs, preds, psegs, stats):
    """Cityscapes-VPS rules, one boolean mask per segment, a loop over same-category segment pairs."""
    for w, nframes in enumerate(WINDOWS):
        for s in range(len(gts) - nframes + 1):
            g, p = np.stack(gts[s:s + nframes]), np.stack(preds[s:s + nframes])
            gt_tubes, pred_tubes = {}, {}
            for segs in gsegs[s:s + nframes]:
                for e in segs:
                    t = gt_tubes.setdefault(e["id"], {**e, "area": 0})
                    t["area"] += e["area"]
            for segs in psegs[s:s + nframes]:
                for e in segs:
                    pred_tubes.setdefault(e["id"], dict(e))
            void = g == 0
            gmask = {i: g == i for i in gt_tubes}
            pmask = {i: p == i for i in pred_tubes}
            for i, t in pred_tubes.items():
                t["area"] = int(pmask[i].sum())
                t["void"] = int((pmask[i] & void).sum())
            gm, pm = set(), set()
            for gi, gt in gt_tubes.items():
                if gt["iscrowd"]:
                    continue
                for pi, pt in pred_tubes.items():
                    if pt["category_id"] != gt["category_id"]:
                        continue
                    inter = int((gmask[gi] & pmask[pi]).sum())
                    if inter == 0:
                        continue
                    iou = inter / (pt["area"] + gt["area"] - inter - pt["void"])
                    if iou > 0.5:
                        stats["tp"][w, gt["category_id"]] += 1
                        stats["iou"][w, gt["category_id"]] += iou
                        gm.add(gi)
                        pm.add(pi)
            crowd = {}
            for gi, gt in gt_tubes.items():
                if gt["iscrowd"]:
                    crowd[gt["category_id"]] = gi
                elif gi not in gm:
                    stats["fn"][w, gt["category_id"]] += 1
            for pi, pt in pred_tubes.items():
                if pi in pm:
                    continue
                ign = pt["void"]
                if pt["category_id"] in crowd:
                    ign += int((pmask[pi] & gmask[crowd[pt["category_id"]]]).sum())
                if ign / pt["area"] <= 0.5:
                    stats["fp"][w, pt["category_id"]] += 1


def naive_stq_video(gts, gsegs, preds, psegs, C, stq):
    """deeplab2-style STQ: per-pixel semantic/instance maps painted segment by segment, np.unique counts."""
    isthing = [c["isthing"] for c in CATEGORIES]
    gt_size, pr_size, inter = {}, {}, {}

    def paint(ids, segs, crowd_aware):
        sem = np.full(ids.shape, C, dtype=np.int64)
        inst = np.zeros(ids.shape, dtype=np.int64)
        for e in segs:
            m = ids == e["id"]
            sem[m] = e["category_id"]
            if isthing[e["category_id"]] and not (crowd_aware and e.get("iscrowd", 0)):
                inst[m] = e["id"]
        return sem, inst

    def add(d, keys):
        for k, n in zip(*np.unique(keys, return_counts=True), strict=True):
            d[int(k)] = d.get(int(k), 0) + int(n)

    for g, gs, p, ps in zip(gts, gsegs, preds, psegs, strict=True):
        gsem, ginst = paint(g, gs, True)
        psem, pinst = paint(p, ps, False)
        stq["conf"] += np.bincount((gsem * (C + 1) + psem).ravel(), minlength=(C + 1) ** 2).reshape(C + 1, C + 1)
        gthing = np.isin(gsem, np.flatnonzero(isthing))
        crowd = gthing & (ginst == 0)
        gtrack = gthing & ~crowd
        ptrack = np.isin(psem, np.flatnonzero(isthing)) & ~crowd
        glab, plab = (gsem << 24) + ginst, (psem << 24) + pinst
        add(gt_size, glab[gtrack])
        add(pr_size, plab[ptrack])
        add(inter, glab[gtrack & ptrack] * (1 << 32) + plab[gtrack & ptrack])
    aq = 0.0
    for k, tpa in inter.items():
        gk, pk = k >> 32, k & ((1 << 32) - 1)
        aq += tpa * tpa / (pr_size[pk] + gt_size[gk] - tpa) / gt_size[gk]
    stq["aq"] += aq
    stq["tracks"] += len(gt_size)


def naive_score(case: Path):
    gt_json = json.loads(CITYSCAPES_VPS.panoptic_gt_json(case / "gt", "val").read_text())
    pred_json = json.loads((case / "submission" / "pred.json").read_text())
    C = len(CATEGORIES)
    stats = {k: np.zeros((4, C), dtype=np.int64) for k in ("tp", "fp", "fn")}
    stats["iou"] = np.zeros((4, C))
    stq = {"conf": np.zeros((C + 1, C + 1), dtype=np.int64), "aq": 0.0, "tracks": 0}
    videos: dict = {}
    for image, ann, pred in zip(gt_json["images"], gt_json["annotations"], pred_json["annotations"], strict=True):
        videos.setdefault(CITYSCAPES_VPS.video_of(image), []).append((image, ann, pred))
    png_dir = CITYSCAPES_VPS.panoptic_gt_dir(case / "gt", "val")
    for frames in videos.values():
        gts = [read_panoptic_png(png_dir / a["file_name"]) for _, a, _ in frames]
        preds = [read_panoptic_png(case / "submission" / "pan_pred" / f"{i['id']}.png") for i, _, _ in frames]
        gsegs = [a["segments_info"] for _, a, _ in frames]
        psegs = [p["segments_info"] for _, _, p in frames]
        naive_vpq_video(gts, gsegs, preds, psegs, stats)
        naive_stq_video(gts, gsegs, preds, psegs, C, stq)
    pq = []
    for w in range(4):
        tp, fp, fn, iou = (stats[k][w] for k in ("tp", "fp", "fn", "iou"))
        n = tp + fp + fn > 0
        pq.append(float(np.mean(iou[n] / (tp[n] + fp[n] / 2 + fn[n] / 2))) if n.any() else 0.0)
    conf = stq["conf"].astype(float)
    conf[-1] = 0
    d = conf.diagonal()
    u = conf.sum(0) + conf.sum(1) - d
    sq = float(np.sum(d / np.maximum(u, 1e-15)) / np.count_nonzero(u))
    aq = stq["aq"] / max(stq["tracks"], 1e-15)
    return {"vpq": float(np.mean(pq)), "STQ": float(np.sqrt(aq * sq))}


# ------------------------------------------------------------------------------------------- timing
def measure(fn, trace: bool = True):
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    if trace:
        tracemalloc.stop()
    return out, dt, peak


def whole_process_vidseg(work: Path, workers: int) -> tuple[dict, float]:
    """Time ``python -m vidseg.evaluate task=vps`` on the case, as a user runs it."""
    out = work / f"evaluate_w{workers}"
    cmd = [sys.executable, "-m", "vidseg.evaluate", "task=vps", f"data.root={work / 'gt'}",
           f"predictions={work / 'submission'}", f"output_dir={out}", f"hydra.run.dir={out / 'hydra'}",
           f"workers={workers}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    dt = time.perf_counter() - t0
    saved = json.loads((out / "results-val.json").read_text())
    return {"vpq": saved["vpq"]["all"], "STQ": saved["stq"]["STQ"]}, dt


def whole_process_official(work: Path) -> tuple[dict, float]:
    """Time the official rules (eval_vpq.py per video + deeplab2 STQ) in a fresh process."""
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from make_vps_oracle "
            "import load_official, official_case; off = official_case(load_official(sys.argv[2], sys.argv[3]), "
            "Path(sys.argv[4]), "
            "'cityscapes_vps'); print(json.dumps({'vpq': off['vpq_final_percent']['all'] / 100, "
            "'STQ': off['stq']['STQ']}))")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "tools"), "/work/.mirror/mcahny+vps/repo",
                           "/work/.mirror/google-research+deeplab2/repo", str(work)],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    dt = time.perf_counter() - t0
    return json.loads(proc.stdout.strip().splitlines()[-1]), dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--things", type=int, default=30)
    parser.add_argument("--no-official", action="store_true", help="skip the official code even if mirrored")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_vpq_"))
    try:
        t0 = time.perf_counter()
        write_case(work, args.videos, args.frames, args.height, args.width, args.things, seed=0)
        print(f"generated {args.videos} videos x {args.frames} frames at {args.height}x{args.width} in "
              f"{time.perf_counter() - t0:.1f} s ({work})", flush=True)
        gt = load_ground_truth("cityscapes_vps", work / "gt", "val")
        rows = []
        res, dt, peak = measure(lambda: evaluate_submission(gt, work / "submission", workers=1))
        ours = {"vpq": res.vpq["all"], "STQ": res.stq["STQ"]}
        rows.append(("vidseg (workers=1)", dt, peak, ours))
        print(rows[-1], flush=True)
        res2, dt2, _ = measure(lambda: evaluate_submission(gt, work / "submission", workers=2), trace=False)
        rows.append(("vidseg (workers=2)", dt2, None, {"vpq": res2.vpq["all"], "STQ": res2.stq["STQ"]}))
        print(rows[-1], flush=True)
        naive, dtn, peakn = measure(lambda: naive_score(work))
        rows.append(("naive baseline", dtn, peakn, naive))
        print(rows[-1], flush=True)
        mirrors = Path("/work/.mirror/mcahny+vps/repo").exists() and Path(
            "/work/.mirror/google-research+deeplab2/repo").exists()
        if mirrors and not args.no_official:
            sys.path.insert(0, str(ROOT / "tools"))
            from make_vps_oracle import SPLIT, load_official, official_case

            assert SPLIT == "val"
            official = load_official("/work/.mirror/mcahny+vps/repo", "/work/.mirror/google-research+deeplab2/repo")
            off, dto, peako = measure(lambda: official_case(official, work, "cityscapes_vps"))
            rows.append(("official eval_vpq.py + deeplab2 STQ", dto, peako,
                         {"vpq": off["vpq_final_percent"]["all"] / 100, "STQ": off["stq"]["STQ"]}))
            print(rows[-1], flush=True)
        for workers in (1, 2):
            nums, dtw = whole_process_vidseg(work, workers)
            rows.append((f"whole process: python -m vidseg.evaluate task=vps workers={workers}", dtw, None, nums))
            print(rows[-1], flush=True)
        if mirrors and not args.no_official:
            nums, dtw = whole_process_official(work)
            rows.append(("whole process: official eval_vpq.py rules + deeplab2 STQ", dtw, None, nums))
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = rows[0][1]
    header = "| implementation | time (s) | x slower than vidseg (workers=1) | peak traced memory (MiB) | VPQ | STQ |"
    lines = [f"# VPQ + STQ scoring, {args.videos} videos x {args.frames} frames at {args.height}x{args.width}",
             "", f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
             f"numpy {np.__version__}, {datetime.date.today()}; times include PNG decoding.", "",
             header, "|---|---|---|---|---|---|"]
    for name, dt, peak, nums in rows:
        mem = f"{peak / 2**20:.0f}" if peak is not None else "-"
        lines.append(f"| {name} | {dt:.2f} | {dt / base:.1f} | {mem} | {100 * nums['vpq']:.4f} | "
                     f"{100 * nums['STQ']:.4f} |")
    whole = {name: dt for name, dt, _, _ in rows if name.startswith("whole process")}
    official_whole = whole.get("whole process: official eval_vpq.py rules + deeplab2 STQ")
    if official_whole:
        lines.append("")
        for name, dt in whole.items():
            if "vidseg" in name:
                lines.append(f"Whole process, {name.split(': ', 1)[1]}: {official_whole / dt:.1f}x faster than the "
                             "official rules.")
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vpq-cpu.md").write_text(table)
    (args.out / "vpq-cpu.json").write_text(json.dumps({
        "config": vars(args) | {"out": str(args.out)},
        "rows": [{"name": n, "seconds": dt, "peak_traced_bytes": peak, **nums} for n, dt, peak, nums in rows],
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()

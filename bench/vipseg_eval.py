"""Benchmark VIPSeg scoring: ``python -m vidseg.evaluate task=vps data=vipseg`` against the official
``eval_vpq_vspw.py`` + ``eval_stq_vspw.py`` on the same generated submission, side by side in one run.

    python -m bench.vipseg_eval --official-dir <folder with eval_vpq_vspw.py, eval_stq_vspw.py and
                                segmentation_and_tracking_quality.py> [--videos 343 --frames 24] [--out bench/results]

VIPSeg val is 343 videos at 720p with about 24 annotated frames each (84,750 frames in 3,536 videos); the
defaults generate that size. Use ``--videos N --frames F`` for a smaller run and say so: the written table
names the size. The official scripts are not shipped with vidseg (no licence); point ``--official-dir`` at a
copy of the VIPSeg-Dataset repository's ``ClipPanoFCN`` folder (they need numpy, Pillow and tqdm).

Data: a generated VIPSeg 720p COCO-video GT (``VIPSeg_720P/panomasksRGB`` + ``panoptic_gt_VIPSeg_val.json``,
:mod:`vidseg.data.vipseg_layout`) and a submission (``pan_pred/<video>/<frame>.png`` + nested ``pred.json``):
per video 4 stuff regions and ``--things`` moving boxes of thing classes, a void patch; the prediction has
jittered boxes, id switches, class errors, missed things and false positives.

Rows (each a fresh process, as a user runs it; times include imports, reading and decoding every PNG):
- vidseg: ``python -m vidseg.evaluate task=vps data=vipseg ... workers=W`` (VPQ of the 5 windows + STQ);
- official: ``eval_vpq_vspw.py --num_processes W`` then ``eval_stq_vspw.py`` (one process), the sum.
Peak memory = the largest resident set of any one process of the row (ru_maxrss). The numbers of both are
compared (final VPQ all/thing/stuff to the 4 decimals of vpq-final.txt, STQ/AQ/SQ as printed).
Writes vipseg-eval-cpu.md and vipseg-eval-cpu.json under --out.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared machine: see bench/ops.py

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from vidseg.data.panoptic import write_panoptic_png  # noqa: E402
from vidseg.data.vipseg_layout import (  # noqa: E402
    STUFF_IDS,
    THING_IDS,
    VIPSEG_720P_LAYOUT,
    VIPSEG_CATEGORIES,
    VIPSegFrame,
    VIPSegVideo,
    panoptic_video_json,
)

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_FILES = ("eval_vpq_vspw.py", "eval_stq_vspw.py", "segmentation_and_tracking_quality.py")


# ------------------------------------------------------------------------------------------- data
def _colour_id(category: int) -> int:
    r, g, b = VIPSEG_CATEGORIES[category].color
    return r + 256 * g + 65536 * b


def make_video(rng: np.random.Generator, H: int, W: int, T: int, n_things: int):
    """Per frame ``(gt ids, gt segments, pred ids, pred segments)``, painted with slices. GT stuff ids are the
    category colours and GT segment lists follow the official converter (stuff first), as in the release."""
    stuff = [int(c) for c in rng.choice(STUFF_IDS, size=4, replace=False)]
    ys = np.sort(rng.integers(H // 5, 4 * H // 5, size=2))
    xs = int(rng.integers(W // 4, 3 * W // 4))
    boxes = []
    for j in range(n_things):
        bh, bw = int(rng.integers(H // 12, H // 4)), int(rng.integers(W // 30, W // 6))
        cat = int(rng.choice(THING_IDS))
        boxes.append(dict(gid=2_000_000 + 97 * j, pid=3_000_000 + 89 * j, cat=cat, h=bh, w=bw,
                          y=int(rng.integers(0, H - bh)), x=int(rng.integers(0, W - bw)),
                          vy=int(rng.integers(-10, 11)), vx=int(rng.integers(-20, 21)),
                          pcat=int(rng.choice(THING_IDS)) if rng.random() < 0.1 else cat,
                          switch=int(rng.integers(1, T)) if T > 1 and rng.random() < 0.2 else None))
    out = []
    for f in range(T):
        g = np.empty((H, W), dtype=np.int64)
        regions = [(slice(0, ys[0]), slice(0, W)), (slice(ys[0], ys[1]), slice(0, xs)),
                   (slice(ys[0], ys[1]), slice(xs, W)), (slice(ys[1], H), slice(0, W))]
        gcat, pcat = {}, {}
        p = np.empty_like(g)
        for k, (sy, sx) in enumerate(regions):
            g[sy, sx] = _colour_id(stuff[k])
            p[sy, sx] = 100 + k
            gcat[_colour_id(stuff[k])] = stuff[k]
            pcat[100 + k] = stuff[k] if rng.random() > 0.05 else int(rng.choice(STUFF_IDS))
        for b in boxes:
            y = int(np.clip(b["y"] + b["vy"] * f, 0, H - b["h"]))
            x = int(np.clip(b["x"] + b["vx"] * f, 0, W - b["w"]))
            g[y:y + b["h"], x:x + b["w"]] = b["gid"]
            gcat[b["gid"]] = b["cat"]
            if rng.random() < 0.05:
                continue  # missed in this frame
            dy, dx = (int(v) for v in rng.integers(-6, 7, size=2))
            y, x = int(np.clip(y + dy, 0, H - b["h"])), int(np.clip(x + dx, 0, W - b["w"]))
            pid = b["pid"] + (1 if b["switch"] is not None and f >= b["switch"] else 0)
            p[y:y + b["h"], x:x + b["w"]] = pid
            pcat[pid] = b["pcat"]
        g[H - 30:, : W // 6] = 0  # void
        for k in range(2):  # false positives
            fy, fx = int(rng.integers(0, H - 50)), int(rng.integers(0, W - 50))
            p[fy:fy + 50, fx:fx + 50] = 4_000_000 + 10 * f + k
            pcat[4_000_000 + 10 * f + k] = int(rng.choice(THING_IDS))
        gu, gn = np.unique(g, return_counts=True)
        order = sorted((i for i in range(len(gu)) if gu[i]), key=lambda i: (gcat[int(gu[i])] in THING_IDS, gu[i]))
        gsegs = [{"id": int(gu[i]), "category_id": gcat[int(gu[i])], "iscrowd": 0, "area": int(gn[i])} for i in order]
        psegs = [{"id": int(i), "category_id": pcat[int(i)]} for i in np.unique(p) if i]
        out.append((g, gsegs, p, psegs))
    return out


def write_case(case: Path, videos: int, frames: int, H: int, W: int, things: int, seed: int) -> None:
    """GT under ``case/gt`` (the data.root), the submission under ``case/submission``."""
    rng = np.random.default_rng(seed)
    rgb_dir = VIPSEG_720P_LAYOUT.panoptic_rgb_dir(case / "gt")
    gt_videos, pred_annotations = [], []
    for v in range(videos):
        name = f"{v + 1}_bench{v:04d}"
        gt_frames, pred_frames = [], []
        for f, (g, gsegs, p, psegs) in enumerate(make_video(rng, H, W, frames, things)):
            stem = f"{5 * (f + 1):08d}"
            write_panoptic_png(rgb_dir / name / f"{stem}.png", g)
            write_panoptic_png(case / "submission" / "pan_pred" / name / f"{stem}.png", p)
            gt_frames.append(VIPSegFrame(stem, f"{stem}.png", H, W, gsegs))
            pred_frames.append({"file_name": f"{stem}.jpg", "segments_info": psegs})
        gt_videos.append(VIPSegVideo(name, tuple(gt_frames)))
        pred_annotations.append({"video_id": name, "annotations": pred_frames})
    VIPSEG_720P_LAYOUT.panoptic_gt_json(case / "gt", "val").write_text(json.dumps(panoptic_video_json(gt_videos)))
    (case / "submission" / "pred.json").write_text(json.dumps({"annotations": pred_annotations}))


# -------------------------------------------------------------------------------------------- runs
_WRAP = ("import json, resource, subprocess, sys; r = subprocess.run(sys.argv[2:], cwd=sys.argv[1], "
         "capture_output=True, text=True); sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
         "print(json.dumps({'rc': r.returncode, 'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN)"
         ".ru_maxrss}))")


def run_measured(cmd: list[str], cwd: Path) -> tuple[str, float, float]:
    """Run ``cmd`` in a fresh wrapper process; return (stdout, seconds, peak RSS of its largest process, MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAP, str(cwd), *cmd], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    lines = proc.stdout.rstrip().splitlines()
    info = json.loads(lines[-1])
    if info["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({info['rc']}):\n{proc.stderr[-3000:]}")
    return "\n".join(lines[:-1]), dt, info["maxrss_kib"] / 1024


def run_vidseg(case: Path, workers: int) -> tuple[dict, float, float]:
    out = case / f"vidseg_w{workers}"
    cmd = [sys.executable, "-m", "vidseg.evaluate", "task=vps", "data=vipseg", f"data.root={case / 'gt'}",
           "data.split=val", f"predictions={case / 'submission'}", f"output_dir={out}", f"workers={workers}"]
    _, dt, rss = run_measured(cmd, ROOT)
    saved = json.loads((out / "results-val.json").read_text())
    final = (out / "vpq-final.txt").read_text().split()
    return {"final": final, **{k: saved["stq"][k] for k in ("STQ", "AQ", "SQ")}}, dt, rss


def run_official(case: Path, official_dir: Path, processes: int) -> tuple[dict, float, float, float, float]:
    """Both official scripts on a copy of the submission (eval_vpq_vspw.py writes into its --submit_dir)."""
    sub = case / "official_submission"
    if not sub.exists():
        shutil.copytree(case / "submission", sub)
    args = ["--submit_dir", str(sub), "--truth_dir", str(VIPSEG_720P_LAYOUT.panoptic_rgb_dir(case / "gt")),
            "--pan_gt_json_file", str(VIPSEG_720P_LAYOUT.panoptic_gt_json(case / "gt", "val"))]
    _, t_vpq, rss_vpq = run_measured([sys.executable, "eval_vpq_vspw.py", *args, "--num_processes",
                                      str(processes)], official_dir)
    out, t_stq, rss_stq = run_measured([sys.executable, "eval_stq_vspw.py", *args], official_dir)
    numbers = {"final": (sub / "vpq-final.txt").read_text().split(),
               "STQ": float(re.search(r"STQ : (\S+)", out).group(1)),
               "AQ": float(re.search(r"AQ :(\S+)", out).group(1)),
               "SQ": float(re.search(r"IoU:(\S+)", out).group(1))}
    return numbers, t_vpq, t_stq, rss_vpq, rss_stq


def equal(a: dict, b: dict) -> bool:
    return a["final"] == b["final"] and all(abs(a[k] - b[k]) <= 1e-9 for k in ("STQ", "AQ", "SQ"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-dir", type=Path, required=True,
                        help="folder with eval_vpq_vspw.py, eval_stq_vspw.py, segmentation_and_tracking_quality.py")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--videos", type=int, default=343)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--things", type=int, default=12)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="vidseg workers = the official eval_vpq_vspw.py --num_processes (default: cores, <= 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None, help="where to generate the data (default: a temp dir)")
    args = parser.parse_args()
    missing = [f for f in OFFICIAL_FILES if not (args.official_dir / f).is_file()]
    if missing:
        sys.exit(f"--official-dir {args.official_dir} lacks {missing}")

    work = Path(tempfile.mkdtemp(prefix="vipseg_bench_", dir=args.work_dir))
    try:
        t0 = time.perf_counter()
        write_case(work, args.videos, args.frames, args.height, args.width, args.things, args.seed)
        gen = time.perf_counter() - t0
        print(f"generated {args.videos} videos x {args.frames} frames at {args.height}x{args.width} in {gen:.1f} s",
              flush=True)
        ours, t_ours, rss_ours = run_vidseg(work, args.workers)
        print(f"vidseg: {t_ours:.1f} s", flush=True)
        theirs, t_vpq, t_stq, rss_vpq, rss_stq = run_official(work, args.official_dir, args.workers)
        print(f"official: VPQ {t_vpq:.1f} s + STQ {t_stq:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t_official = t_vpq + t_stq
    same = equal(ours, theirs)
    size = f"{args.videos} videos x {args.frames} frames at {args.height}x{args.width}"
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, numpy {np.__version__}"
    doc = {
        "date": datetime.date.today().isoformat(), "machine": machine, "size": size,
        "videos": args.videos, "frames": args.frames, "height": args.height, "width": args.width,
        "things": args.things, "workers": args.workers,
        "vidseg": {"seconds": t_ours, "peak_rss_mib": rss_ours, **ours},
        "official": {"seconds": t_official, "vpq_seconds": t_vpq, "stq_seconds": t_stq,
                     "peak_rss_mib": max(rss_vpq, rss_stq), **theirs},
        "speedup": t_official / t_ours, "equal": same,
    }
    rows = [
        f"| vidseg: python -m vidseg.evaluate task=vps data=vipseg workers={args.workers} | {t_ours:.1f} | 1.0 | "
        f"{rss_ours:.0f} | {' '.join(ours['final'])} | {ours['STQ']:.6f} |",
        f"| official: eval_vpq_vspw.py --num_processes {args.workers} + eval_stq_vspw.py | {t_official:.1f} "
        f"({t_vpq:.1f} + {t_stq:.1f}) | {t_official / t_ours:.1f} | {max(rss_vpq, rss_stq):.0f} | "
        f"{' '.join(theirs['final'])} | {theirs['STQ']:.6f} |",
    ]
    md = "\n".join([
        f"# VIPSeg scoring (VPQ of 5 windows + STQ), {size}",
        "",
        f"{machine}, {doc['date']}; each row is whole processes (imports, reading, decoding every PNG, writing).",
        "",
        "| implementation | time (s) | x slower than vidseg | peak RSS of one process (MiB) | vpq-final.txt | STQ |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"vidseg is {t_official / t_ours:.1f}x faster than the official scripts; numbers equal: {same}.",
        "",
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vipseg-eval-cpu.md").write_text(md)
    (args.out / "vipseg-eval-cpu.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(md)
    if not same:
        sys.exit("vidseg and the official scripts disagree: see the table")


if __name__ == "__main__":
    main()

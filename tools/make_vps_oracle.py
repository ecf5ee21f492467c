#!/usr/bin/env python
"""Regenerate tests/fixtures/vps_oracle: tiny VPS submissions scored by the OFFICIAL algorithms.

Each case is a synthetic GT dataset (Cityscapes-VPS or VIPER layout) plus a submission folder, written with
tests/helpers/vps_submission.py and then perturbed with the official code's corner cases (GT ids in the PNG
but not in the JSON, JSON areas that differ from the pixel count, a category that changes mid-video, two
crowd regions of one category). expected.json holds the numbers of:

* mcahny/vps ``tools/eval_vpq.py``: its ``vpq_compute_single_core`` called per video (its ``main()`` breaks
  on NumPy 2) and its ``PQStat.pq_average``;
* mcahny/vps ``tools/dataset/viper.py``: the static ``_pq_compute_single_core`` (1-frame windows) and
  ``_vpq_compute_single_core`` (5/10/15 frames) per video, and its ``PQStat`` (class 11 excluded). The module
  imports mmdet-era packages, so only these functions' source text is taken from the file (with ``ast``)
  and executed in a namespace holding numpy;
* google-research/deeplab2 ``evaluation/numpy/segmentation_and_tracking_quality.py``: ``STQuality``, one
  sequence per video, ids encoded as described in vidseg.metrics.stq.

Nothing of that code is stored in this repository: it is read from the git mirrors at run time
(``/work/.mirror/...`` or --vps-repo / --deeplab2-repo).

    .venv/bin/python tools/make_vps_oracle.py                 # rewrite the fixture
    .venv/bin/python tools/make_vps_oracle.py --compare 6     # 6 larger random cases: print max differences
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import io
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
from tests.helpers.vps_submission import (  # noqa: E402
    CITYSCAPES_CATEGORIES,
    VIPER_CATEGORIES,
    layout_of,
    random_video,
    write_dataset,
    write_submission,
)

VPS_REPO = "/work/.mirror/mcahny+vps/repo"
DEEPLAB2_REPO = "/work/.mirror/google-research+deeplab2/repo"
SPLIT = "val"


# ------------------------------------------------------------------------------------- official code
def git_show(repo: str, path: str) -> str:
    return subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], check=True, capture_output=True,
                          text=True).stdout


def load_official(vps_repo: str, deeplab2_repo: str) -> dict:
    """Namespaces with the official functions, executed from the mirrors' source text."""
    city: dict = {"__name__": "eval_vpq_official"}
    exec(compile(git_show(vps_repo, "tools/eval_vpq.py"), "eval_vpq.py", "exec"), city)

    viper_src = git_show(vps_repo, "tools/dataset/viper.py")
    tree = ast.parse(viper_src)
    wanted = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in ("PQStatCat", "PQStat"):
            wanted.append(ast.get_source_segment(viper_src, node))
        if isinstance(node, ast.ClassDef) and node.name == "Viper":
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name in ("_pq_compute_single_core",
                                                                   "_vpq_compute_single_core"):
                    seg = ast.get_source_segment(viper_src, fn, padded=True)
                    wanted.append(textwrap.dedent(seg))
    viper: dict = {"np": np, "time": __import__("time"), "defaultdict": defaultdict}
    exec(compile("\n\n".join(wanted), "viper.py (functions)", "exec"), viper)

    stq: dict = {"__name__": "deeplab2_stq"}
    exec(compile(git_show(deeplab2_repo, "evaluation/numpy/segmentation_and_tracking_quality.py"),
                 "segmentation_and_tracking_quality.py", "exec"), stq)
    return {"city": city, "viper": viper, "stq": stq}


def read_rgb(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def official_case(official: dict, case_dir: Path, protocol: str) -> dict:
    """Run the official algorithms on a written case (GT root + submission folder)."""
    layout = layout_of(protocol)
    root, sub = case_dir / "gt", case_dir / "submission"
    gt_json = json.loads(layout.panoptic_gt_json(root, SPLIT).read_text())
    pred_json = json.loads((sub / "pred.json").read_text())
    categories = {c["id"]: c for c in gt_json["categories"]}
    png_dir = layout.panoptic_gt_dir(root, SPLIT)
    videos: dict[str, list] = {}
    for image, ann, pred in zip(gt_json["images"], gt_json["annotations"], pred_json["annotations"], strict=True):
        gt_pan = read_rgb(png_dir / ann["file_name"])
        pred_pan = read_rgb(sub / "pan_pred" / f"{image['id']}.png")
        videos.setdefault(layout.video_of(image), []).append((ann, pred, gt_pan, pred_pan, image))

    result: dict = {"windows": {}}
    if protocol == "cityscapes_vps":
        ns, windows = official["city"], [(0, 1), (5, 2), (10, 3), (15, 4)]
    else:
        ns, windows = official["viper"], [(1, 1), (5, 5), (10, 10), (15, 15)]
    finals = defaultdict(list)
    for k, nframes in windows:
        stat = ns["PQStat"]()
        for frames in videos.values():
            frames = copy.deepcopy(frames)  # the official functions mutate the segment dicts
            if protocol == "cityscapes_vps":
                stat += ns["vpq_compute_single_core"](frames, categories, nframes=nframes)
            else:
                cols = [list(c) for c in zip(*frames, strict=True)]
                with contextlib.redirect_stdout(io.StringIO()):
                    if nframes == 1:
                        stat += ns["_pq_compute_single_core"](0, *cols, categories)
                    else:
                        stat += ns["_vpq_compute_single_core"](0, *cols, categories, nframes=nframes)
        entry = {"nframes": nframes}
        for name, isthing in (("all", None), ("thing", True), ("stuff", False)):
            avg, per_class = stat.pq_average(categories, isthing=isthing)
            entry[name] = {key: float(v) if key != "n" else int(v) for key, v in avg.items()}
            if isthing is None:
                entry["per_class"] = {str(c): {key: (float(v) if key in ("pq", "sq", "rq", "iou") else int(v))
                                               for key, v in r.items()} for c, r in per_class.items()}
            finals[name].append(100 * avg["pq"])
        result["windows"][str(k)] = entry
    result["vpq_final_percent"] = {name: float(sum(v) / len(v)) for name, v in finals.items()}
    result["stq"] = official_stq(official["stq"], videos, categories)
    return result


def official_stq(ns: dict, videos: dict, categories: dict) -> dict:
    """deeplab2 STQuality with the vidseg encoding: semantic = category (255 = ignore), instance = a
    per-video compact index of the PNG id for non-crowd things, else 0."""
    num_classes = max(categories) + 1
    things = [c for c, info in categories.items() if info["isthing"]]
    metric = ns["STQuality"](num_classes, things, 255, 16, 2**24)

    def encode(ids, segments, instance_of):
        sem = np.full(ids.shape, 255, dtype=np.int64)
        inst = np.zeros(ids.shape, dtype=np.int64)
        for s in segments:
            m = ids == s["id"]
            sem[m] = s["category_id"]
            if categories[s["category_id"]]["isthing"] and not s.get("iscrowd", 0):
                inst[m] = instance_of.setdefault(s["id"], len(instance_of) + 1)
        return (sem << 16) + inst

    for name, frames in videos.items():
        gt_inst, pred_inst = {}, {}
        for ann, pred, gt_pan, pred_pan, _ in frames:
            gt_ids, pr_ids = (p[..., 0] + 256 * p[..., 1] + 65536 * p[..., 2]
                              for p in (gt_pan.astype(np.int64), pred_pan.astype(np.int64)))
            metric.update_state(encode(gt_ids, ann["segments_info"], gt_inst),
                                encode(pr_ids, pred["segments_info"], pred_inst), sequence_id=name)
    res = metric.result()
    return {"STQ": float(res["STQ"]), "AQ": float(res["AQ"]), "SQ": float(res["IoU"])}


# ------------------------------------------------------------------------------------------ the cases
def perturb(video, rng: np.random.Generator, categories: list[dict], json_area_noise: bool) -> None:
    """Add the official code's corner cases to a generated video, in place."""
    T = video.num_frames
    things = [c["id"] for c in categories if c["isthing"]]
    tracks = [t for t in video.meta["tracks"] if t["kind"] == "thing"]
    crowd = [t for t in video.meta["tracks"] if t["kind"] == "crowd"]
    if crowd and tracks and rng.random() < 0.7:  # a second crowd region of the same category
        t = tracks.pop(0)
        for segs in video.gt_segments:
            for s in segs:
                if s["id"] == t["gid"]:
                    s["iscrowd"], s["category_id"] = 1, crowd[0]["cat"]
    if tracks and T > 1 and rng.random() < 0.7:  # a GT category change mid-video
        t = tracks[-1]
        f = int(rng.integers(1, T))
        new = int(rng.choice(things))
        for segs in video.gt_segments[f:]:
            for s in segs:
                if s["id"] == t["gid"]:
                    s["category_id"] = new
    if rng.random() < 0.7:  # GT pixels whose id no segment list has (the whole video: the official
        # code would assert on IoU > 1 if an id were listed in some frames of a window and not in others)
        f = int(rng.integers(0, T))
        h, w = video.gt_ids[f].shape
        y, x = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
        video.gt_ids[f][y:y + 3, x:x + 3] = 77777
        for segs, ids in ((video.gt_segments[f], video.gt_ids[f]),):
            for s in segs:
                s["area"] = int(np.count_nonzero(ids == s["id"]))
            segs[:] = [s for s in segs if s["area"] > 0]
    if T > 1 and rng.random() < 0.5:  # a predicted category change mid-video
        f = int(rng.integers(1, T))
        segs = video.pred_segments[f]
        if segs:
            segs[int(rng.integers(0, len(segs)))]["category_id"] = int(rng.choice(things))
    if json_area_noise:  # Cityscapes-VPS GT areas come from the JSON: make them disagree with the PNG
        for segs in video.gt_segments:
            for s in segs:
                if rng.random() < 0.3:
                    s["area"] += int(rng.integers(0, 6))


def make_case(case_dir: Path, protocol: str, seed: int, *, videos: int, frames: int, height: int, width: int,
              num_things: int) -> None:
    rng = np.random.default_rng(seed)
    cats = CITYSCAPES_CATEGORIES if protocol == "cityscapes_vps" else VIPER_CATEGORIES
    vids = []
    for v in range(videos):
        video = random_video(rng, f"v{v}", num_frames=frames, height=height, width=width, categories=cats,
                             num_things=num_things, false_positives=int(rng.integers(0, 3)))
        perturb(video, rng, cats, json_area_noise=protocol == "cityscapes_vps")
        vids.append(video)
    layout = layout_of(protocol)
    gt = write_dataset(case_dir / "gt", layout, SPLIT, vids, cats)
    write_submission(case_dir / "submission", gt, vids, with_image_id=bool(seed % 2))


FIXTURE_CASES = [
    # name, protocol, seed, videos, frames, height, width, things
    ("city_a", "cityscapes_vps", 0, 3, 6, 24, 48, 4),
    ("city_b", "cityscapes_vps", 1, 2, 6, 32, 64, 6),
    ("city_c", "cityscapes_vps", 2, 2, 5, 20, 40, 3),
    ("viper_a", "viper", 3, 2, 16, 48, 96, 4),
    ("viper_b", "viper", 4, 1, 17, 64, 80, 5),
]


def build_fixture(out: Path, official: dict) -> None:
    if out.exists():
        shutil.rmtree(out)
    expected = {}
    for name, protocol, seed, videos, frames, h, w, things in FIXTURE_CASES:
        make_case(out / name, protocol, seed, videos=videos, frames=frames, height=h, width=w, num_things=things)
        expected[name] = {"protocol": protocol, **official_case(official, out / name, protocol)}
        print(name, protocol, expected[name]["vpq_final_percent"], expected[name]["stq"])
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


def max_differences(ours, theirs: dict) -> dict:
    """Largest |ours - official| over the VPQ numbers (percent) and STQ numbers (fractions)."""
    vpq_diff, count_diff = 0.0, 0
    for k, e in theirs["windows"].items():
        mine = ours.windows[int(k)]
        for key in ("all", "thing", "stuff"):
            for m in ("pq", "sq", "rq"):
                vpq_diff = max(vpq_diff, 100 * abs(mine[key][m] - e[key][m]))
            count_diff = max(count_diff, abs(mine[key]["n"] - e[key]["n"]))
        for c, r in e["per_class"].items():
            mr = mine["per_class"][int(c)]
            vpq_diff = max(vpq_diff, *(100 * abs(mr[m] - r[m]) for m in ("pq", "sq", "rq")))
            count_diff = max(count_diff, *(abs(mr[m] - r[m]) for m in ("tp", "fp", "fn")))
    for key in ("all", "thing", "stuff"):
        vpq_diff = max(vpq_diff, abs(100 * ours.vpq[key] - theirs["vpq_final_percent"][key]))
    stq_diff = max(abs(ours.stq[m] - theirs["stq"][m]) for m in ("STQ", "AQ", "SQ"))
    return {"vpq_percent": vpq_diff, "counts": count_diff, "stq": stq_diff}


def compare(n: int, official: dict) -> None:
    from vidseg.metrics.vps_eval import evaluate_submission, load_ground_truth

    worst = {"vpq_percent": 0.0, "counts": 0, "stq": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            protocol = "cityscapes_vps" if i % 2 == 0 else "viper"
            case = Path(tmp) / f"case{i}"
            if protocol == "cityscapes_vps":
                make_case(case, protocol, 100 + i, videos=4, frames=6, height=128, width=256, num_things=12)
            else:
                make_case(case, protocol, 100 + i, videos=2, frames=20, height=96, width=160, num_things=8)
            theirs = official_case(official, case, protocol)
            gt = load_ground_truth(protocol, case / "gt", SPLIT)
            ours = evaluate_submission(gt, case / "submission", protocol, workers=1)
            d = max_differences(ours, theirs)
            print(f"case {i} ({protocol}): VPQ official {theirs['vpq_final_percent']['all']:.6f} ours "
                  f"{100 * ours.vpq['all']:.6f}; max diff {d}")
            worst = {key: max(worst[key], d[key]) for key in worst}
    print(f"max differences over {n} cases: {worst}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "vps_oracle")
    parser.add_argument("--vps-repo", default=VPS_REPO)
    parser.add_argument("--deeplab2-repo", default=DEEPLAB2_REPO)
    parser.add_argument("--compare", type=int, default=0, help="instead: N larger random cases vs vidseg")
    args = parser.parse_args()
    official = load_official(args.vps_repo, args.deeplab2_repo)
    if args.compare:
        compare(args.compare, official)
    else:
        build_fixture(args.out, official)


if __name__ == "__main__":
    main()

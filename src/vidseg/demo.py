"""End-to-end CPU demos on toy data (``make demo``; ``make demo-vos`` / ``make demo-vps`` run one task).

VOS: generate the toy DAVIS set, train FEELVOS, evaluate J&F, predict an mp4 from its first-frame mask; the
summary puts the trained model next to the copy-the-first-mask baseline.
VPS (``--task vps``): generate the toy Cityscapes-VPS set, train the image and fusetrack VPSNet variants,
evaluate both with the official protocol (VPQ k = 0, 5, 10, 15, STQ), predict an mp4 of a val clip with an
overlay video; the summary table puts both variants next to the keep-the-first-annotated-frame baseline.

Runs the same commands a user would type and prints each one. Everything goes under ``--out``: training keeps
Hydra's run folder there (it is the run's output); evaluate and predict get ``output_dir=``/``output=``, so Hydra
writes no run files for them, nothing in the working directory (``vidseg.utils.outputs.NoHydraRunFilesWithOutput``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from vidseg.data.davis import list_sequences, sequence_paths
from vidseg.data.io import read_image, read_mask, write_json_atomic, write_mask
from vidseg.data.names import checked_join
from vidseg.data.panoptic import read_panoptic_png, write_panoptic_png
from vidseg.data.toy import generate_toy_davis
from vidseg.data.toy_vps import generate_toy_vps
from vidseg.data.video import write_video
from vidseg.data.vps_layout import CITYSCAPES_VPS
from vidseg.metrics.vps_eval import load_ground_truth
from vidseg.utils.cli import run_cli


def run(args: list[str]) -> None:
    print(f"\n$ {shlex.join(args)}", flush=True)
    subprocess.run(args, check=True)


def write_copy_first_baseline(root: Path, split: str, out_dir: Path) -> Path:
    """The trivial baseline: every frame gets the first frame's mask."""
    for seq in list_sequences(root, year="2017", split=split):
        frame_paths, mask_paths = sequence_paths(root, seq)
        first = read_mask(mask_paths[0])
        for frame in frame_paths:
            write_mask(checked_join(out_dir, seq, f"{frame.stem}.png", source=root, what="sequence name"), first)
    return out_dir


TASKS = ("all", "vos", "vps")
# The toy Cityscapes-VPS set of the VPS demo (conf/experiment/toy_vps.yaml describes the recipe trained on it).
VPS_TOY = dict(videos=12, val_videos=8, height=128, width=256, max_objects=6)
VPS_VARIANTS = ("image", "fusetrack")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="all", choices=TASKS, help="which demo to run (all: VOS, then VPS)")
    parser.add_argument("--out", default="outputs/demo", help="where everything is written (VPS: <out>/vps)")
    parser.add_argument("--data", default="data/toy_davis", help="toy DAVIS root (generated if missing)")
    parser.add_argument("--experiment", default="toy_vos")
    parser.add_argument("--vps-data", default="data/toy_cityscapes_vps",
                        help="toy Cityscapes-VPS root (generated if missing)")
    parser.add_argument("--vps-experiment", default="toy_vps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for training, e.g. trainer.max_steps=50")
    args = parser.parse_args(argv)

    def work() -> None:
        if args.task in ("all", "vos"):
            run_vos_demo(args)
        if args.task in ("all", "vps"):
            run_vps_demo(args)

    run_cli(work)  # a data folder it cannot use (e.g. an older toy set) is one line, exit 2


def run_vos_demo(args: argparse.Namespace) -> None:
    out, data = Path(args.out), Path(args.data)
    py = sys.executable
    started = time.time()

    print(f"1/4 toy DAVIS-format data -> {data}")
    generate_toy_davis(data, seed=args.seed)

    print("\n2/4 training FEELVOS on CPU")
    train_dir = out / "train"
    run([py, "-m", "vidseg.train", f"experiment={args.experiment}", f"data.root={data}",
         f"hydra.run.dir={train_dir}", *args.overrides])
    ckpt = train_dir / "checkpoints" / "last.ckpt"

    print("\n3/4 evaluating J&F on the toy val split (official DAVIS protocol)")
    eval_dir, baseline_eval_dir = out / "evaluate", out / "baseline"
    run([py, "-m", "vidseg.evaluate", "task=vos", f"ckpt={ckpt}", f"data.root={data}", "data.split=val",
         f"output_dir={eval_dir}"])
    baseline_masks = write_copy_first_baseline(data, "val", out / "baseline_masks")
    run([py, "-m", "vidseg.evaluate", "task=vos", f"data.root={data}", "data.split=val",
         f"predictions={baseline_masks}", f"output_dir={baseline_eval_dir}"])

    print("\n4/4 predicting a val video from an mp4 and its first-frame mask")
    seq = list_sequences(data, year="2017", split="val")[0]
    frame_paths, mask_paths = sequence_paths(data, seq)
    video = checked_join(out, "input", f"{seq}.mp4", source=data, what="sequence name")
    write_video(video, [read_image(p) for p in frame_paths], fps=12)
    predict_dir = out / "predict"
    run([py, "-m", "vidseg.predict", "task=vos", f"ckpt={ckpt}", f"input={video}", f"mask={mask_paths[0]}",
         f"output={predict_dir}"])

    model = json.loads((eval_dir / "results-val.json").read_text())["global"]
    baseline = json.loads((baseline_eval_dir / "results-val.json").read_text())["global"]
    print("\n================ vidseg demo summary ================")
    print(f"{'':24s}{'J&F-Mean':>10s}{'J-Mean':>10s}{'F-Mean':>10s}")
    for name, scores in (("FEELVOS (trained here)", model), ("copy first-frame mask", baseline)):
        print(f"{name:24s}{scores['J&F-Mean']:10.3f}{scores['J-Mean']:10.3f}{scores['F-Mean']:10.3f}")
    print(f"\ncheckpoint:      {ckpt.resolve()}")
    print(f"training logs:   {(train_dir / 'csv').resolve()}")
    print(f"J&F tables:      {eval_dir.resolve()}/global_results-val.csv, per-sequence_results-val.csv")
    print(f"val masks:       {(eval_dir / 'masks').resolve()}")
    print(f"predicted masks: {(predict_dir / 'masks').resolve()}")
    print(f"overlay video:   {(predict_dir / 'overlay.mp4').resolve()}")
    print(f"total time:      {time.time() - started:.0f} s")


def write_first_frame_baseline(root: Path, split: str, out_dir: Path) -> Path:
    """The trivial VPS baseline: every annotated frame of a clip gets its first annotated frame's ground truth
    (a submission folder: pan_pred/<image id>.png + pred.json)."""
    gt = load_ground_truth(CITYSCAPES_VPS, root, split)
    annotations = {}
    for video in gt.videos:
        first = video.frames[0]
        ids = read_panoptic_png(first.png_path)
        for frame in video.frames:
            write_panoptic_png(checked_join(out_dir, "pan_pred", f"{frame.image_id}.png", source=gt.json_path,
                                            what="image id"), ids)
            annotations[frame.image_id] = {"image_id": frame.image_id, "file_name": f"{frame.image_id}.png",
                                           "segments_info": first.segments_info}
    write_json_atomic(out_dir / "pred.json", {"annotations": [annotations[i] for i in gt.image_ids]})
    return out_dir


def vps_table(rows: list[tuple[str, dict]]) -> str:
    """One line per method: VPQ at k = 0, 5, 10, 15, final, thing, stuff (percent), STQ and AQ."""
    header = (f"{'':34s}{'k=0':>7s}{'k=5':>7s}{'k=10':>7s}{'k=15':>7s}{'VPQ':>7s}{'thing':>7s}{'stuff':>7s}"
              f"{'STQ':>7s}{'AQ':>7s}")
    lines = [header]
    for name, res in rows:
        windows = res["windows"]
        cells = [100 * windows[str(k)]["all"]["pq"] for k in (0, 5, 10, 15)]
        cells += [100 * res["vpq"]["all"], 100 * res["vpq"]["thing"], 100 * res["vpq"]["stuff"],
                  100 * res["stq"]["STQ"], 100 * res["stq"]["AQ"]]
        lines.append(f"{name:34s}" + "".join(f"{c:7.2f}" for c in cells))
    return "\n".join(lines)


def run_vps_demo(args: argparse.Namespace) -> None:
    out, data = Path(args.out) / "vps", Path(args.vps_data)
    py = sys.executable
    started = time.time()

    print(f"1/5 toy Cityscapes-VPS data -> {data}")
    generate_toy_vps(data, format="cityscapes_vps", seed=args.seed, **VPS_TOY)

    ckpts = {}
    for step, variant in enumerate(VPS_VARIANTS, start=2):
        print(f"\n{step}/5 training VPSNet ({variant} variant) on CPU")
        train_dir = out / f"train_{variant}"
        run([py, "-m", "vidseg.train", "task=vps", f"experiment={args.vps_experiment}", f"model.variant={variant}",
             f"data.root={data}", f"hydra.run.dir={train_dir}", *args.overrides])
        ckpts[variant] = train_dir / "checkpoints" / "last.ckpt"

    print("\n4/5 evaluating on the toy val split (official Cityscapes-VPS protocol: every frame predicted, "
          "annotated frames scored)")
    results = {}
    for variant, ckpt in ckpts.items():
        eval_dir = out / f"evaluate_{variant}"
        run([py, "-m", "vidseg.evaluate", "task=vps", f"ckpt={ckpt}", f"data.root={data}", "data.split=val",
             f"output_dir={eval_dir}"])
        results[variant] = json.loads((eval_dir / "results-val.json").read_text())
    baseline_dir = out / "baseline"
    write_first_frame_baseline(data, "val", baseline_dir)
    run([py, "-m", "vidseg.evaluate", "task=vps", f"predictions={baseline_dir}", f"data.root={data}",
         "data.split=val", f"output_dir={baseline_dir}"])
    baseline = json.loads((baseline_dir / "results-val.json").read_text())

    print("\n5/5 predicting a val clip from an mp4 (panoptic PNG + segments JSON per frame, overlay video)")
    frames = sorted((data / "val" / "img_all").glob("*.png"))
    clip = [f for f in frames if f.name[:4] == frames[0].name[:4]]
    video = checked_join(out, "input", f"clip_{clip[0].name[:4]}.mp4", source=data, what="video id")
    write_video(video, [read_image(p) for p in clip], fps=10)
    predict_dir = out / "predict"
    run([py, "-m", "vidseg.predict", "task=vps", f"ckpt={ckpts['fusetrack']}", f"input={video}",
         f"output={predict_dir}"])

    print("\n================ vidseg VPS demo summary (toy Cityscapes-VPS val, percent) ================")
    print(vps_table([*((f"VPSNet {v} (trained here)", results[v]) for v in VPS_VARIANTS),
                     ("keep first annotated frame", baseline)]))
    for variant in VPS_VARIANTS:
        print(f"\n{variant} checkpoint: {ckpts[variant].resolve()}")
        print(f"{variant} submission: {(out / f'evaluate_{variant}').resolve()} (pan_pred/, pred.json, vpq-*.txt)")
    print(f"training logs:        {(out / 'train_fusetrack' / 'csv').resolve()}")
    print(f"predicted frames:     {(predict_dir / 'panoptic').resolve()}, {(predict_dir / 'segments').resolve()}")
    print(f"overlay video:        {(predict_dir / 'overlay.mp4').resolve()}")
    print(f"total time:           {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()

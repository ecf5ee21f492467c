"""End-to-end demo on the toy DAVIS set (``make demo``): generate, train, evaluate, predict.

Runs the same commands a user would type, prints each one, and finishes with the J&F of the trained model
next to the copy-the-first-mask baseline and the paths of everything written.
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
from vidseg.data.io import read_image, read_mask, write_mask
from vidseg.data.toy import generate_toy_davis
from vidseg.data.video import write_video


def run(args: list[str]) -> None:
    print(f"\n$ {shlex.join(args)}", flush=True)
    subprocess.run(args, check=True)


def write_copy_first_baseline(root: Path, split: str, out_dir: Path) -> Path:
    """The trivial baseline: every frame gets the first frame's mask."""
    for seq in list_sequences(root, year="2017", split=split):
        frame_paths, mask_paths = sequence_paths(root, seq)
        first = read_mask(mask_paths[0])
        for frame in frame_paths:
            write_mask(out_dir / seq / f"{frame.stem}.png", first)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="outputs/demo", help="where everything is written")
    parser.add_argument("--data", default="data/toy_davis", help="toy DAVIS root (generated if missing)")
    parser.add_argument("--experiment", default="toy_vos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for training, e.g. trainer.max_steps=50")
    args = parser.parse_args(argv)
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
         f"hydra.run.dir={eval_dir}"])
    baseline_masks = write_copy_first_baseline(data, "val", out / "baseline_masks")
    run([py, "-m", "vidseg.evaluate", "task=vos", f"data.root={data}", "data.split=val",
         f"predictions={baseline_masks}", f"hydra.run.dir={baseline_eval_dir}"])

    print("\n4/4 predicting a val video from an mp4 and its first-frame mask")
    seq = list_sequences(data, year="2017", split="val")[0]
    frame_paths, mask_paths = sequence_paths(data, seq)
    video = out / "input" / f"{seq}.mp4"
    write_video(video, [read_image(p) for p in frame_paths], fps=12)
    predict_dir = out / "predict"
    run([py, "-m", "vidseg.predict", "task=vos", f"ckpt={ckpt}", f"input={video}", f"mask={mask_paths[0]}",
         f"output={predict_dir}", f"hydra.run.dir={predict_dir}"])

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


if __name__ == "__main__":
    main()

"""Does VPSNet learn things, and do its video parts (Fuse, Track) help? Scores on toy clips nobody trained on.

    python -m bench.vps_learning --ckpt image=outputs/demo/vps/train_image/checkpoints/last.ckpt \\
        --ckpt fusetrack=outputs/demo/vps/train_fusetrack/checkpoints/last.ckpt --out bench/results
    python -m bench.vps_learning --train fuse,track --data data/toy_cityscapes_vps --work outputs/vps_learning \\
        --ckpt image=... --ckpt fusetrack=... --out bench/results        # also train the variants not given

For each unseen seed (default 101, 102, 103) it writes a toy Cityscapes-VPS set of 8 val clips (the demo's size,
128x256; ``vidseg.data.toy_vps``) under ``--unseen-root``, scores every checkpoint there with
``python -m vidseg.evaluate task=vps`` (official protocol: every frame predicted, annotated frames scored) and
the keep-the-first-annotated-frame baseline, and prints the mean and the spread (min..max) over the seeds of
VPQ, thing and stuff VPQ, STQ and AQ, in percent. ``--train`` first trains the named variants with the demo's
recipe (``experiment=toy_vps``) on ``--data``, as ``make demo-vps`` trains image and fusetrack.
Writes vps-learning-cpu.md and .json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/ops.py

from bench.ops import machine  # noqa: E402
from vidseg.data.toy_vps import generate_toy_vps  # noqa: E402
from vidseg.demo import VPS_TOY, write_first_frame_baseline  # noqa: E402
from vidseg.models.vpsnet import VARIANTS  # noqa: E402

SEEDS = (101, 102, 103)
METRICS = ("VPQ", "thing", "stuff", "STQ", "AQ")
BASELINE = "keep first annotated frame"


def _run(args: list[str]) -> None:
    print(f"$ {shlex.join(args)}", flush=True)
    subprocess.run(args, check=True)


def _scores(results_json: Path) -> dict[str, float]:
    res = json.loads(results_json.read_text())
    return {"VPQ": res["vpq"]["all"], "thing": res["vpq"]["thing"], "stuff": res["vpq"]["stuff"],
            "STQ": res["stq"]["STQ"], "AQ": res["stq"]["AQ"]}


def summarise(per_seed: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``method -> seed -> metric`` -> ``method -> metric -> {"mean", "min", "max"}`` (fractions)."""
    out = {}
    for method, seeds in per_seed.items():
        out[method] = {}
        for m in METRICS:
            values = [s[m] for s in seeds.values()]
            out[method][m] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    return out


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| method | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for method, metrics in summary.items():
        cells = [f"{100 * v['mean']:.1f} ({100 * v['min']:.1f}..{100 * v['max']:.1f})" for v in metrics.values()]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", action="append", default=[], metavar="VARIANT=PATH",
                        help="a trained checkpoint to score (repeat)")
    parser.add_argument("--train", default="", help="comma-separated variants to train first (image,fuse,...)")
    parser.add_argument("--data", default="data/toy_cityscapes_vps", help="training set for --train")
    parser.add_argument("--work", default="outputs/vps_learning", help="training runs and submissions")
    parser.add_argument("--unseen-root", default="data/toy_vps_unseen", help="unseen sets: <root>_s<seed>")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    py, work = sys.executable, Path(args.work)
    ckpts: dict[str, Path] = {}
    for item in args.ckpt:
        name, _, path = item.partition("=")
        if not path:
            parser.error(f"--ckpt {item!r}: expected VARIANT=PATH")
        ckpts[name] = Path(path)
    for variant in filter(None, args.train.split(",")):
        generate_toy_vps(args.data, format="cityscapes_vps", seed=0, **VPS_TOY)
        run_dir = work / f"train_{variant}"
        _run([py, "-m", "vidseg.train", "task=vps", "experiment=toy_vps", f"model.variant={variant}",
              f"data.root={args.data}", f"hydra.run.dir={run_dir}"])
        ckpts[variant] = run_dir / "checkpoints" / "last.ckpt"
    if not ckpts:
        parser.error("nothing to score: give --ckpt VARIANT=PATH or --train VARIANTS")
    order = [v for v in VARIANTS if v in ckpts] + [v for v in ckpts if v not in VARIANTS]  # the paper's order
    ckpts = {v: ckpts[v] for v in order}
    per_seed: dict[str, dict[int, dict[str, float]]] = {f"VPSNet {v}": {} for v in ckpts} | {BASELINE: {}}
    for seed in args.seeds:
        data = Path(f"{args.unseen_root}_s{seed}")
        generate_toy_vps(data, format="cityscapes_vps", seed=seed, **{**VPS_TOY, "videos": 1})
        for variant, ckpt in ckpts.items():
            eval_dir = work / f"s{seed}" / f"evaluate_{variant}"
            _run([py, "-m", "vidseg.evaluate", "task=vps", f"ckpt={ckpt}", f"data.root={data}", "data.split=val",
                  f"output_dir={eval_dir}"])
            per_seed[f"VPSNet {variant}"][seed] = _scores(eval_dir / "results-val.json")
        baseline_dir = work / f"s{seed}" / "baseline"
        write_first_frame_baseline(data, "val", baseline_dir)
        _run([py, "-m", "vidseg.evaluate", "task=vps", f"predictions={baseline_dir}", f"data.root={data}",
              "data.split=val", f"output_dir={baseline_dir}"])
        per_seed[BASELINE][seed] = _scores(baseline_dir / "results-val.json")
    summary = summarise(per_seed)
    m = machine("cpu")
    text = (f"# VPSNet on unseen toy clips (seeds {', '.join(map(str, args.seeds))}; 8 val clips each, 128x256)\n\n"
            f"Machine: {m['cpu']}, {m['cpu_count']} cores, torch {m['torch']}. Mean (min..max) over the seeds, "
            "percent; checkpoints: "
            + ", ".join(f"{v} = {p}" for v, p in ckpts.items()) + "\n\n" + table(summary) + "\n")
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vps-learning-cpu.md").write_text(text)
    (out / "vps-learning-cpu.json").write_text(json.dumps({"per_seed": per_seed, "summary": summary}, indent=1))
    return summary


if __name__ == "__main__":
    main()

"""End-to-end FEELVOS inference speed at DAVIS 480p with 3 objects: vidseg ops vs naive ops.

    python -m bench.feelvos_fps --out bench/results                 # ResNet-101 and MobileNetV3-Large, 480x854
    python -m bench.feelvos_fps --out bench/results --quick         # small frames, seconds

Measures exactly what ``python -m vidseg.evaluate task=vos ckpt=...`` runs: the network of the paper config
(``task=vos backbone=<name>``, composed from vidseg's Hydra configs) is saved as a checkpoint with random
weights, loaded with ``VOSPredictor.from_checkpoint`` (so it runs at ``net.inference_output_stride``, 8, like
evaluate) and frames are streamed through ``predictor.track`` (one backbone pass, global matching to frame 0,
local matching to frame t-1, the per-object head). Decoding and writing PNGs are not timed. "naive" swaps
the matching for the baselines of prior code (torch.cdist full-matrix global matching, CFBI-style F.unfold
local matching) and changes nothing else. Random weights: the speed of a network does not depend on its
training. The paper reports 0.51 s/frame (DAVIS 2017, GPU). Writes feelvos-fps-<device>[-quick].md and
.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/ops.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

import vidseg.models.feelvos.model as feelvos_model  # noqa: E402
from bench.ops import cdist_global, cfbi_unfold_local, machine  # noqa: E402
from vidseg.inference.checkpoint import TASK_KEY  # noqa: E402
from vidseg.inference.vos import VOSPredictor  # noqa: E402
from vidseg.models.feelvos import FEELVOS  # noqa: E402


def paper_net_config(backbone: str) -> dict:
    """``model.net`` of ``python -m vidseg.train task=vos backbone=<backbone>`` (the paper config)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_module("vidseg.conf", version_base="1.3"):
        cfg = compose("train", overrides=["task=vos", f"backbone={backbone}"])
    return OmegaConf.to_container(cfg.model.net, resolve=True)


def save_random_checkpoint(net: dict, path: Path) -> Path:
    """A checkpoint in vidseg's layout (what vidseg.train writes) holding a randomly initialised FEELVOS."""
    model = FEELVOS(**net)
    torch.save({TASK_KEY: "vos", "hyper_parameters": {"net": net},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def naive_global(query, reference, ref_labels, num_objects, *, impl="auto"):
    return cdist_global(query.float(), reference.float(), ref_labels, num_objects)


def naive_local(query, previous, prev_labels, num_objects, max_distance=15, dilation=1, *, impl="auto"):
    # FEELVOS inference never uses dilation; bands of 8 query rows keep the unfold stack below ~1 GB
    return cfbi_unfold_local(query.float(), previous.float(), prev_labels, num_objects, max_distance, band_rows=8)


def time_video(predictor: VOSPredictor, frames: list[np.ndarray], first_mask: np.ndarray, device: str):
    """Seconds per frame over frames 2.. of ``predictor.track`` (frame 0 embeds the reference, 1 warms up)."""
    start = 0.0
    for index, _, _ in predictor.track(frames, first_mask):
        if index == 1:  # warm-up done
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (len(frames) - 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--frames", type=int, default=5, help="frames per timing (2 are warm-up)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backbones", default="resnet101,mobilenet_v3_large")
    args = parser.parse_args(argv)
    height, width = (120, 214) if args.quick else (480, 854)

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(args.frames)]
    first_mask = np.zeros((height, width), np.uint8)
    first_mask[height // 8 : height // 2, width // 8 : width // 3] = 1
    first_mask[height // 2 : height * 7 // 8, width // 3 : width // 2] = 2
    first_mask[height // 4 : height * 3 // 4, width * 2 // 3 : width * 7 // 8] = 3

    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="feelvos_fps_"))
    for backbone in args.backbones.split(","):
        torch.manual_seed(0)
        net = paper_net_config(backbone)
        # evaluate's path: checkpoint -> VOSPredictor.from_checkpoint (re-dilated to net.inference_output_stride)
        ckpt = save_random_checkpoint(net, workdir / f"{backbone}.ckpt")
        predictor = VOSPredictor.from_checkpoint(ckpt, device=args.device, precision=args.precision)
        stride = predictor.model.output_stride
        seconds = {}
        for method in ("vidseg", "naive"):
            saved = feelvos_model.global_matching, feelvos_model.local_matching
            if method == "naive":
                feelvos_model.global_matching, feelvos_model.local_matching = naive_global, naive_local
            try:
                seconds[method] = time_video(predictor, frames, first_mask, args.device)
            finally:
                feelvos_model.global_matching, feelvos_model.local_matching = saved
            fps = 1 / seconds[method]
            print(f"{backbone:20s} {method:7s} {seconds[method]:.3f} s/frame  {fps:.2f} fps", flush=True)
        rows.append({"backbone": backbone, "size": f"{height}x{width}", "objects": 3, "precision": args.precision,
                     "output_stride": stride,
                     "vidseg_s_per_frame": seconds["vidseg"], "naive_s_per_frame": seconds["naive"],
                     "speedup": seconds["naive"] / seconds["vidseg"]})

    info = machine(args.device)
    command = " ".join(["python -m bench.feelvos_fps", *(argv if argv is not None else sys.argv[1:])])
    strides = sorted({r["output_stride"] for r in rows})
    lines = [f"# FEELVOS inference, {height}x{width}, 3 objects, output stride "
             f"{'/'.join(map(str, strides))}, paper config as evaluate runs it ({args.device})", "",
             f"Machine: {info.get('gpu', info['cpu'])}, {info['cpu_count']} cores, torch {info['torch']}, "
             f"{info['date']}. Command: `{command}`.",
             "",
             "| backbone | vidseg s/frame | vidseg fps | naive ops s/frame | speed-up |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['vidseg_s_per_frame']:.3f} | {1 / r['vidseg_s_per_frame']:.2f} | "
                     f"{r['naive_s_per_frame']:.3f} | {r['speedup']:.2f}x |")
    lines += ["", "Paper (FEELVOS, GPU): 0.51 s/frame on DAVIS 2017."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"feelvos-fps-{args.device}{'-quick' if args.quick else ''}"
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

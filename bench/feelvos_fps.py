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
training. The paper reports 0.51 s/frame (DAVIS 2017, GPU). On a GPU:

    python -m bench.feelvos_fps --device cuda --precision 32,bf16-mixed --frames 12 [--compile both]
    python -m bench.feelvos_fps --device cuda --precision bf16-mixed --paths base,fast --backbones resnet101

``--paths``: "base" is ``VOSPredictor(...)`` as trained (autocast per frame for a mixed precision, fp32
matching); "fast" is ``VOSPredictor(..., fast=True, pipelined=True)``: BatchNorm folded, channels_last, weights
cast once, matching in the network's precision, cudnn.benchmark, the mask copied back one frame late (see
VOSPredictor). The naive-ops baseline runs on the base path only; a fast row's speed-up is against it.
``--compile on`` wraps, on the base path, the feature extractor, embedding head and segmentation head in
torch.compile (the matching custom ops stay opaque calls); on the fast path it compiles the whole per-frame step
(``VOSPredictor(compile=True)``: one graph, CUDA graphs with ``mode="reduce-overhead"`` under inductor).
Compilation happens in the warm-up frames, which are not timed.
On CUDA each row also counts host synchronisations per frame (``torch.cuda.set_sync_debug_mode("warn")`` on a
separate, untimed pass; the event wait for the pipelined mask copy is not one of them); "n/a" on CPU.
Writes feelvos-fps-<cpu|gpu>[-quick].md and .json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
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


# The naive baselines take the ops' keyword arguments (impl, validate) and ignore them: they check nothing.
def naive_global(query, reference, ref_labels, num_objects, *, impl="auto", validate=True):
    return cdist_global(query.float(), reference.float(), ref_labels, num_objects)


def naive_local(query, previous, prev_labels, num_objects, max_distance=15, dilation=1, *, impl="auto",
                validate=True):
    # FEELVOS inference never uses dilation; bands of 8 query rows keep the unfold stack below ~1 GB
    return cfbi_unfold_local(query.float(), previous.float(), prev_labels, num_objects, max_distance, band_rows=8)


def time_video(predictor: VOSPredictor, frames: list[np.ndarray], first_mask: np.ndarray, device: str):
    """Seconds per frame over frames 2.. of ``predictor.track`` (frame 0 embeds the reference, 1 warms up).

    A pipelined predictor yields frame 1 after frame 2 is queued; the clock starts after a synchronisation,
    so frame 2 is done by then and the timed frames are 3..
    """
    start = 0.0
    for index, _, _ in predictor.track(frames, first_mask):
        if index == 1:  # warm-up done
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
    if device == "cuda":
        torch.cuda.synchronize()
    timed = len(frames) - 2 - (1 if getattr(predictor, "pipelined", False) else 0)
    if timed < 1:
        raise ValueError(f"{len(frames)} frames leave none to time; give at least {len(frames) - timed + 1}")
    return (time.perf_counter() - start) / timed


def syncs_per_frame(predictor: VOSPredictor, frames: list[np.ndarray], first_mask: np.ndarray,
                    device: str) -> float | None:
    """Host synchronisations per frame over frames 2.. (CUDA's sync debug mode, one warning each); None on CPU.

    Counts what CUDA reports as synchronising (``.item()``, ``.cpu()``, pageable copies, ``nonzero``, ...);
    ``torch.cuda.Event.synchronize`` (the pipelined mask's wait) is not reported.
    """
    if device != "cuda":
        return None
    count, start_count = 0, None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for index, _, _ in predictor.track(frames, first_mask):
                if index == 1:
                    start_count = sum("synchroniz" in str(w.message) for w in caught)
            count = sum("synchroniz" in str(w.message) for w in caught)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    counted = len(frames) - 2 - (1 if getattr(predictor, "pipelined", False) else 0)  # as time_video
    return (count - (start_count or 0)) / max(1, counted)


def compile_network(predictor: VOSPredictor, backend: str) -> None:
    """torch.compile the network's dense parts (DeepLab feature extractor, embedding head, segmentation head);
    the matching ops are custom ops, so they stay single opaque calls inside the graphs."""
    model = predictor.model
    for name in ("feature_extractor", "embedding_head", "head"):
        setattr(model, name, torch.compile(getattr(model, name), backend=backend, dynamic=False))


def write_results(args: argparse.Namespace, argv: list[str] | None, rows: list[dict], height: int, width: int) -> str:
    """<name>.md and .json under args.out; returns the markdown table."""
    info = machine(args.device)
    command = " ".join(["python -m bench.feelvos_fps", *(argv if argv is not None else sys.argv[1:])])
    strides = sorted({r["output_stride"] for r in rows})

    def cell(value, digits=3):
        return f"{value:.{digits}f}" if value is not None else ""

    lines = [f"# FEELVOS inference, {height}x{width}, 3 objects, output stride "
             f"{'/'.join(map(str, strides))}, paper config as evaluate runs it ({args.device})", "",
             f"Machine: {info.get('gpu', info['cpu'])}, {info['cpu_count']} cores, torch {info['torch']}"
             f"{', triton ' + info['triton'] if 'triton' in info else ''}, {info['date']}. Command: `{command}`.",
             "",
             "| backbone | precision | path | torch.compile | vidseg s/frame | vidseg fps | naive ops s/frame | "
             "speed-up | host syncs/frame |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        syncs = r.get("syncs_per_frame")
        lines.append(f"| {r['backbone']} | {r['precision']} | {r.get('path', 'base')} | {r['compile'] or 'no'} | "
                     f"{cell(r['vidseg_s_per_frame'])} | {cell(r['vidseg_fps'], 2)} | {cell(r['naive_s_per_frame'])} | "
                     f"{cell(r['speedup'], 2) + 'x' if r['speedup'] else ''} | "
                     f"{'n/a' if syncs is None else f'{syncs:.2f}'} |")
    lines += ["", "Paper (FEELVOS, GPU): 0.51 s/frame on DAVIS 2017."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"feelvos-fps-{'gpu' if args.device == 'cuda' else 'cpu'}{'-quick' if args.quick else ''}"
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32", help="one or more of 32, bf16-mixed, 16-mixed (comma-separated)")
    parser.add_argument("--frames", type=int, default=5, help="frames per timing (2 are warm-up)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backbones", default="resnet101,mobilenet_v3_large")
    parser.add_argument("--methods", default="vidseg,naive", help="vidseg and/or naive (comma-separated)")
    parser.add_argument("--paths", default="base", help="base and/or fast (comma-separated): the predictor as "
                        "trained, or with fast=True, pipelined=True (naive ops run on the base path only)")
    parser.add_argument("--no-syncs", action="store_true", help="skip the host-sync count (CUDA)")
    parser.add_argument("--compile", default="off", choices=("off", "on", "both"),
                        help="torch.compile the network (compile time is excluded: it happens in the warm-up frames)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager for a quick "
                        "check of the plumbing)")
    parser.add_argument("--name", default=None, help="file stem (default feelvos-fps-<cpu|gpu>[-quick])")
    args = parser.parse_args(argv)
    height, width = (120, 214) if args.quick else (480, 854)
    methods = args.methods.split(",")
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]

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
        for precision in args.precision.split(","):
            for compiled in compiles:
                naive_seconds = None
                for path in args.paths.split(","):
                    if path not in ("base", "fast"):
                        raise SystemExit(f"--paths: unknown path {path!r}; use base and/or fast")
                    options = {}
                    if path == "fast":
                        options = {"fast": True, "pipelined": True}
                        if compiled:
                            options.update(compile=True, compile_backend=args.compile_backend)
                    predictor = VOSPredictor.from_checkpoint(ckpt, device=args.device, precision=precision, **options)
                    if compiled and path == "base":
                        compile_network(predictor, args.compile_backend)
                    stride = predictor.model.output_stride
                    seconds = {}
                    for method in methods if path == "base" else [m for m in methods if m == "vidseg"]:
                        saved = feelvos_model.global_matching, feelvos_model.local_matching
                        if method == "naive":
                            feelvos_model.global_matching, feelvos_model.local_matching = naive_global, naive_local
                        try:
                            seconds[method] = time_video(predictor, frames, first_mask, args.device)
                        finally:
                            feelvos_model.global_matching, feelvos_model.local_matching = saved
                        tag = f"{backbone} {precision} {path} {'compiled' if compiled else 'eager'}"
                        print(f"{tag:47s} {method:7s} {seconds[method]:.4f} s/frame  {1 / seconds[method]:.2f} fps",
                              flush=True)
                    naive_seconds = seconds.get("naive", naive_seconds)
                    vidseg = seconds.get("vidseg")
                    syncs = None
                    if vidseg and not args.no_syncs:
                        syncs = syncs_per_frame(predictor, frames, first_mask, args.device)
                    rows.append({"backbone": backbone, "size": f"{height}x{width}", "objects": 3,
                                 "precision": precision, "path": path,
                                 "compile": args.compile_backend if compiled else None, "output_stride": stride,
                                 "timed_frames": args.frames - 2 - (1 if predictor.pipelined else 0),
                                 "vidseg_s_per_frame": vidseg,
                                 "naive_s_per_frame": naive_seconds if path == "base" else None,
                                 "vidseg_fps": 1 / vidseg if vidseg else None,
                                 "speedup": naive_seconds / vidseg if vidseg and naive_seconds else None,
                                 "syncs_per_frame": syncs})
                    write_results(args, argv, rows, height, width)  # after every row: a stopped run keeps its rows
                    del predictor
                    if args.device == "cuda":
                        torch.cuda.empty_cache()
    print(write_results(args, argv, rows, height, width))



if __name__ == "__main__":
    main()

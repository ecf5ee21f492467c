"""FEELVOS on CPU: ONNX Runtime (an exported folder) vs PyTorch eager, the per-frame step and whole toy videos.

    python -m bench.onnx_speed --out bench/results            # the toy demo's network, random weights
    python -m bench.onnx_speed --out bench/results --ckpt outputs/demo/train/checkpoints/last.ckpt \
        --davis data/toy_davis                                # the trained demo model on the toy DAVIS val set
    python -m bench.onnx_speed --out /tmp/bench --quick       # smaller frames, fewer repeats

The network is the CPU demo's (``experiment=toy_vos``: MobileNetV3-Large DeepLabv3+, 32-dim embedding, local
window k=8): random weights by default (speed does not depend on training), or ``--ckpt`` (e.g. the one
``make demo`` trains). It is exported with ``python -m vidseg.export task=vos format=onnx``
(:func:`vidseg.onnx.feelvos.export_feelvos`). Both backends run in this process, one after the other for every
repeat and video, so a change of machine load hits both:

- step: one frame of the session's network step with the video's objects and a full-frame reference
  (:class:`vidseg.inference.vos.TorchFrameStep`, i.e. ``track_step`` eager, vs ``step.onnx`` under ONNX
  Runtime's CPU provider); median over the repeats, after two warm-up rounds.
- video: ``VOSPredictor.from_checkpoint(<ckpt>)`` vs ``VOSPredictor.from_checkpoint(<onnx folder>)`` over
  videos (``--davis``: the val sequences of a toy DAVIS set, with J&F of both against the ground truth; else
  toy videos rendered in memory, 3 objects): seconds per frame over frames 2.., and the share of mask pixels on
  which the two agree. With random weights the objects' logits nearly tie everywhere, so float rounding flips
  arg-maxes that feed the next frame: the agreement then says little (PyTorch against itself with the
  reference matching instead of the CPU matching agrees on ~80% of pixels); with a trained model it is the check.

Both use the same number of threads (torch.get_num_threads(), ONNX Runtime intra-op threads). Writes
onnx-speed-cpu[-quick].md and .json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/ops.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.feelvos_fps import save_random_checkpoint  # noqa: E402
from bench.ops import machine  # noqa: E402
from vidseg.data.toy import render_toy_sequence  # noqa: E402
from vidseg.inference.vos import VOSPredictor, _padded_frame  # noqa: E402


def demo_net_config() -> dict:
    """``model.net`` of ``python -m vidseg.train experiment=toy_vos`` (the CPU demo's FEELVOS)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_module("vidseg.conf", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=toy_vos"])
    return OmegaConf.to_container(cfg.model.net, resolve=True)


def time_step(torch_predictor: VOSPredictor, onnx_predictor: VOSPredictor, frames: np.ndarray, masks: np.ndarray,
              repeats: int) -> dict:
    """Median seconds of one network step, each backend on the same state (a session started on frame 0)."""
    sessions = {name: p.start(frames[0], masks[0]) for name, p in (("torch", torch_predictor),
                                                                   ("onnx", onnx_predictor))}
    times: dict[str, list[float]] = {"torch": [], "onnx": []}
    for repeat in range(repeats + 2):  # two warm-up rounds
        for name, session in sessions.items():
            padded, size = _padded_frame(frames[1], session.device, session.backend.size_divisor)
            args = (padded, size, session.ref_embedding, session.ref_labels, session.prev_embedding,
                    session.prev_labels, session.num_objects - 1)
            start = time.perf_counter()
            with torch.inference_mode():
                session.backend.step(*args, validate=False)
            if repeat >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def time_videos(torch_predictor: VOSPredictor, onnx_predictor: VOSPredictor, videos: list[tuple]) -> dict:
    """Seconds per frame over frames 2.. of every video (both backends on each video in turn), the share of mask
    pixels on which they agree over all frames, and each backend's J&F (DAVIS protocol, mean over objects) when
    the videos come with ground truth of every frame."""
    from vidseg.metrics.j_and_f import evaluate_sequence

    seconds = {"torch": 0.0, "onnx": 0.0}
    scores: dict[str, list[np.ndarray]] = {"torch_J": [], "torch_F": [], "onnx_J": [], "onnx_F": []}
    timed, agree, pixels = 0, 0, 0
    for frames, masks in videos:
        out = {}
        for name, predictor in (("torch", torch_predictor), ("onnx", onnx_predictor)):
            start, result = 0.0, []
            for index, _, mask in predictor.track(list(frames), masks[0]):
                result.append(mask)
                if index == 1:
                    start = time.perf_counter()
            seconds[name] += time.perf_counter() - start
            out[name] = np.stack(result)
            per_object = evaluate_sequence(masks, out[name], int(masks[0][masks[0] != 255].max()))
            scores[f"{name}_J"].append(per_object["J"].mean(1))
            scores[f"{name}_F"].append(per_object["F"].mean(1))
        timed += len(frames) - 2
        agree += int((out["torch"] == out["onnx"]).sum())
        pixels += out["torch"].size
    jf = {name: 100 * (np.concatenate(scores[f"{name}_J"]).mean() + np.concatenate(scores[f"{name}_F"]).mean()) / 2
          for name in ("torch", "onnx")}
    return {"torch": seconds["torch"] / timed, "onnx": seconds["onnx"] / timed, "agreement": agree / pixels,
            "frames_timed": timed, "jf_torch": float(jf["torch"]), "jf_onnx": float(jf["onnx"])}


def davis_videos(root: Path, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(T, H, W, 3) frames and (T, H, W) ground truth of the first ``limit`` val sequences of a DAVIS-format set."""
    from vidseg.data.davis import list_sequences, sequence_paths
    from vidseg.data.io import read_image, read_mask

    videos = []
    for name in list_sequences(root, split="val")[:limit]:
        frames, masks = sequence_paths(root, name)
        videos.append((np.stack([read_image(f) for f in frames]), np.stack([read_mask(m) for m in masks])))
    return videos


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quick", action="store_true", help="64x112 frames, 2 short videos, 5 step repeats")
    parser.add_argument("--ckpt", type=Path, default=None, help="a VOS checkpoint (default: random weights)")
    parser.add_argument("--davis", type=Path, default=None, help="a toy DAVIS root: its val sequences, with J&F")
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    height, width = (64, 112) if args.quick else (128, 224)  # the toy DAVIS set's frame size
    videos_n, frames_n, repeats = (2, 6, 5) if args.quick else (args.videos, args.frames, args.repeats)

    from vidseg.onnx.feelvos import OnnxFrameStep, export_feelvos
    from vidseg.onnx.folder import OPSET

    with tempfile.TemporaryDirectory() as tmp:
        if args.ckpt is None:
            net = demo_net_config()
            ckpt = save_random_checkpoint(net, Path(tmp) / "demo.ckpt")
        else:
            from vidseg.inference.checkpoint import read_checkpoint

            ckpt, net = args.ckpt, read_checkpoint(args.ckpt, task="vos").hyper_parameters["net"]
        start = time.perf_counter()
        folder = export_feelvos(ckpt, Path(tmp) / "onnx")
        export_seconds = time.perf_counter() - start
        graph_mb = (folder / "step.onnx").stat().st_size / 2**20
        threads = torch.get_num_threads()
        torch_predictor = VOSPredictor.from_checkpoint(ckpt)
        onnx_predictor = VOSPredictor(OnnxFrameStep.from_folder(folder, threads=threads))
        if args.davis is not None:
            videos = davis_videos(args.davis, videos_n)
            height, width = videos[0][0].shape[1:3]
        else:
            videos = [render_toy_sequence(seed=0, split="val", index=i, frames=frames_n, height=height, width=width,
                                          max_objects=3) for i in range(videos_n)]
        step = time_step(torch_predictor, onnx_predictor, *videos[0], repeats)
        video = time_videos(torch_predictor, onnx_predictor, videos)
    rows = [
        {"what": "per-frame step", "torch_s": step["torch"], "onnx_s": step["onnx"],
         "speedup": step["torch"] / step["onnx"]},
        {"what": "whole video (s/frame)", "torch_s": video["torch"], "onnx_s": video["onnx"],
         "speedup": video["torch"] / video["onnx"]},
    ]
    import onnxruntime

    info = {**machine("cpu"), "onnxruntime": onnxruntime.__version__, "threads": threads, "opset": OPSET,
            "load_average_end": os.getloadavg()}
    name = "onnx-speed-cpu" + ("-quick" if args.quick else "")
    weights = f"trained weights ({args.ckpt})" if args.ckpt is not None else "random weights"
    source = (f"{len(videos)} val sequences of {args.davis} ({sum(len(v[0]) for v in videos)} frames)"
              if args.davis is not None else f"{videos_n} toy videos of {frames_n} frames, 3 objects")
    result = {"machine": info, "argv": sys.argv[1:] if argv is None else argv, "network": net,
              "weights": weights, "videos": source, "frame_size": [int(height), int(width)],
              "step_repeats": repeats, "export_seconds": export_seconds, "graph_mb": graph_mb,
              "mask_agreement": video["agreement"], "frames_timed": video["frames_timed"],
              "jf_torch": video["jf_torch"], "jf_onnx": video["jf_onnx"], "rows": rows}
    lines = [
        f"# FEELVOS on CPU: ONNX Runtime vs PyTorch eager ({name})", "",
        f"Network: {net['backbone']['name']}, embedding {net['embedding_dim']}, k={net['local_max_distance']} (the "
        f"CPU demo's), {weights}; {source} at {height}x{width}. Export {export_seconds:.0f} s, step.onnx "
        f"{graph_mb:.1f} MB, opset {OPSET}.",
        f"Machine: {info['cpu']}, {info['cpu_count']} cores, {threads} threads for both backends, torch "
        f"{info['torch']}, onnxruntime {info['onnxruntime']}, OMP_WAIT_POLICY={info['omp_wait_policy']}, load "
        f"average {info['load_average_start'][0]:.1f} -> {info['load_average_end'][0]:.1f}.", "",
        "| what | PyTorch eager (s) | ONNX Runtime (s) | speed-up |", "|---|---:|---:|---:|",
        *(f"| {r['what']} | {r['torch_s']:.4f} | {r['onnx_s']:.4f} | {r['speedup']:.2f}x |" for r in rows), "",
        f"Masks agree on {100 * video['agreement']:.3f}% of pixels; J&F {video['jf_torch']:.2f} (PyTorch) vs "
        f"{video['jf_onnx']:.2f} (ONNX Runtime) over {len(videos)} videos ({video['frames_timed']} timed frames).",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()

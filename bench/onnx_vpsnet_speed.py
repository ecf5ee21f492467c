"""VPSNet on CPU: ONNX Runtime backend vs PyTorch, in one run (the same frames, threads and session code).

    python -m bench.onnx_vpsnet_speed --out bench/results                   # toy recipe's network, 128x256
    python -m bench.onnx_vpsnet_speed --out bench/results --network paper   # + the paper's network

The toy network has the toy recipe's widths (``experiment=toy_vps``: ResNet-18 FPN, vidseg.models.vpsnet.TINY
widths) and the tiny flow network (the recipe itself trains without one), so that the flow graph is timed too;
``--network paper`` adds the paper's (ResNet-50 FPN, 256 channels, RAFT-small with
12 updates). Both are ``--variant`` (fusetrack) with seeded random weights and no detection score threshold (at
most 20 detections per frame), so that instances, tracks and post-processing run as with a trained model. Each
is exported with :func:`vidseg.onnx.vpsnet.export_vpsnet_model` and both backends run through
:class:`vidseg.inference.vps.VPSPredictor` (the ONNX one: the four graphs in ONNX Runtime, the rest of the frame
in the same PyTorch code). The two sessions take the frames in turns, so that load from other processes hits both
alike. Time per frame = mean (and median) over ``--frames`` after ``--warmup`` frames, ``--threads`` for both
(torch.set_num_threads, ONNX Runtime intra-op threads). Also reports the fraction of equal panoptic ids.
Writes onnx-vpsnet-speed-cpu.md and .json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/ops.py

import numpy as np  # noqa: E402
import torch  # noqa: E402


def frames_of(height: int, width: int, count: int) -> list[np.ndarray]:
    """A moving toy scene (smooth background, drifting rectangles), so flow and tracks have something to follow."""
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, 90)], -1).astype(np.uint8)
    boxes = [(g.integers(0, height // 2), g.integers(0, width // 2), g.integers(12, height // 3),
              g.integers(12, width // 3), g.integers(0, 256, 3)) for _ in range(5)]
    out = []
    for t in range(count):
        frame = base.copy()
        for k, (y, x, h, w, colour) in enumerate(boxes):
            x0 = (x + 3 * t * (k % 3 - 1)) % (width - w)
            frame[y:y + h, x0:x0 + w] = colour
        out.append(frame)
    return out


def time_backends(predictors: list, frames: list[np.ndarray], warmup: int) -> list[tuple[list[float], list]]:
    """Per predictor: (seconds of each timed frame, results of every frame). The predictors' sessions take the
    frames in turns (frame t of each, then frame t + 1), so that load from other processes hits them alike."""
    sessions = [p.start() for p in predictors]
    out: list[tuple[list[float], list]] = [([], []) for _ in predictors]
    for t, frame in enumerate(frames):
        for session, (times, results) in zip(sessions, out, strict=True):
            start = time.perf_counter()
            results.append(session.step(frame))
            if t >= warmup:
                times.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--variant", default="fusetrack")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--network", choices=("toy", "paper"), default="toy",
                        help="toy: the toy recipe's network only; paper: also the paper's")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    frames = frames_of(*args.size, args.warmup + args.frames)
    rows = [measure("toy", args, frames)]
    if args.network == "paper":
        rows.append(measure("paper", args, frames))
    import onnxruntime

    lines = [f"# VPSNet ({args.variant}) on CPU: ONNX Runtime vs PyTorch\n",
             f"{args.size[0]}x{args.size[1]} frames, {args.frames} timed after {args.warmup} warm-up, {args.threads} "
             f"threads for both, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs. Random "
             "weights, no detection threshold (at most 20 "
             "detections per frame). ONNX Runtime runs the four graphs; proposal/detection selection, association "
             "and post-processing are the same PyTorch code in both rows.\n",
             "| network | PyTorch ms / frame (median) | ONNX Runtime ms / frame (median) | PyTorch / ONNX Runtime "
             "| equal panoptic ids | thing segments | export s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['torch_ms_per_frame']:.1f} ({r['torch_median_ms']:.1f}) | "
                     f"{r['onnx_ms_per_frame']:.1f} ({r['onnx_median_ms']:.1f}) | "
                     f"{r['speedup_onnx_vs_torch']:.2f}x | {r['equal_pixel_fraction']:.6f} | {r['thing_segments']} | "
                     f"{r['export_s']:.0f} |")
    lines.append("\ntoy: the toy recipe's widths (ResNet-18 FPN, 32 channels, tiny flow network); paper: ResNet-50 "
                 "FPN, 256 channels, RAFT-small with 12 updates.")
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "onnx-vpsnet-speed-cpu.md").write_text(table)
    result = {"variant": args.variant, "size": list(args.size), "frames": args.frames, "warmup": args.warmup,
              "threads": args.threads, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
              "rows": rows}
    (args.out / "onnx-vpsnet-speed-cpu.json").write_text(json.dumps(result, indent=2) + "\n")


def network_config(network: str, variant: str) -> dict:
    """build_vpsnet keyword arguments of the toy recipe's network or the paper's, with no detection threshold."""
    from vidseg.models.vpsnet import TINY

    if network == "toy":
        detector = {**TINY["detector"], "anchor_sizes": [8, 16, 32, 64, 128], "score_thresh": 0.0,
                    "detections_per_img": 20}
        flow = {"name": "tiny", "channels": 32} if "fuse" in variant else None
        return dict(variant=variant, backbone={"name": "resnet18"}, flow=flow,
                    **{**TINY, "detector": detector, "stuff_area_limit": 32})
    flow = {"name": "raft_small", "weights": None} if "fuse" in variant else None
    return dict(variant=variant, flow=flow, detector={"score_thresh": 0.0, "detections_per_img": 20},
                stuff_area_limit=32)


def measure(network: str, args, frames: list[np.ndarray]) -> dict:
    """Export ``network`` and time both backends on ``frames``."""
    from vidseg.inference.vps import VPSPredictor
    from vidseg.models.vpsnet import build_vpsnet
    from vidseg.onnx.vpsnet import OnnxVPSNet, export_vpsnet_model

    torch.manual_seed(0)
    config = network_config(network, args.variant)
    net = build_vpsnet(**config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = export_vpsnet_model(net, Path(tmp) / "onnx", net_config=config)
        export_s = time.perf_counter() - start
        onnx = VPSPredictor(OnnxVPSNet.from_folder(folder, threads=args.threads))
        (torch_times, torch_results), (onnx_times, onnx_results) = time_backends([VPSPredictor(net), onnx], frames,
                                                                                 args.warmup)
    torch_s, onnx_s = float(np.mean(torch_times)), float(np.mean(onnx_times))
    equal = float(np.mean([np.mean(a.panoptic == b.panoptic)
                           for a, b in zip(torch_results, onnx_results, strict=True)]))
    return {"network": network, "torch_ms_per_frame": torch_s * 1000, "onnx_ms_per_frame": onnx_s * 1000,
            "speedup_onnx_vs_torch": torch_s / onnx_s, "equal_pixel_fraction": equal,
            "torch_median_ms": float(np.median(torch_times)) * 1000,
            "onnx_median_ms": float(np.median(onnx_times)) * 1000,
            "thing_segments": int(sum(s["isthing"] for r in torch_results for s in r.segments)),
            "export_s": export_s}


if __name__ == "__main__":
    main()

"""VPSNet fusetrack inference speed with the breakdown by module, peak memory, and constant memory over a clip.

    python -m bench.vpsnet_fps --out bench/results                 # 1024x2048 (paper) and 256x512, this device
    python -m bench.vpsnet_fps --out bench/results --quick         # tiny widths, small frames, seconds

Measures what ``python -m vidseg.evaluate task=vps ckpt=...`` runs: the paper network of
``task=vps`` (ResNet-50-FPN, RAFT-small initial flow, Fuse module, track head; composed from vidseg's Hydra
configs) saved as a checkpoint with random weights, loaded with ``VPSPredictor.from_checkpoint`` and fed frame
by frame through a :class:`VPSSession`. Random weights give few detections above the 0.6 threshold, so the
detector threshold is lowered to 0.0 with at most ``--detections`` (default 20) per frame, as a trained model
finds on Cityscapes. Module times come from forward pre/post hooks (synchronised on CUDA): backbone+FPN,
flow, fuse, semantic head, detector (RPN + box + mask heads), panoptic head; "post-processing + tracking" is
the rest of ``infer_frame`` (mask pasting, overlap removal, merging, association). The paper reports 1.3 fps
(a Titan RTX-class GPU). Memory: peak (CUDA max allocated, or the process's max RSS on CPU) and the RSS / CUDA
allocation after 30 and after 300 frames at a small size: constant memory means they agree.

Flow, base vs fast: at the first size the whole pipeline runs twice, with RAFT's default vidseg forward
("fast": no host copies per iteration, only the last update upsampled, the previous frame's encoder
features reused) and with torchvision's ``RAFT.forward`` ("base"), rows side by side. Then the flow module
alone (RAFT-small, random weights, the same clip) for each of ``--flow-variants`` (see FLOW_VARIANTS):
ms/frame timed without hooks (CUDA synchronised only around the clip), the same split by RAFT stage
(feature encoder, context encoder, update blocks, the rest = correlation pyramid, sampling, upsampling;
synchronised hooks), and the largest difference from "base" on the clip's first pair (exact variants: float
rounding only). Writes vpsnet-fps-<device>[-quick].md and .json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/ops.py

import torch  # noqa: E402

from bench.ops import machine  # noqa: E402
from vidseg.inference.checkpoint import TASK_KEY  # noqa: E402
from vidseg.inference.vps import VPSPredictor  # noqa: E402
from vidseg.models.vpsnet import build_vpsnet  # noqa: E402

PAPER_FPS = 1.3
MODULES = ("backbone", "fpn", "flow", "fuse", "semantic_head", "detector", "panoptic_head")
# RAFTFlow settings of each flow variant; "reuse": the previous frame's encoder features are passed on
FLOW_VARIANTS = {
    "base": ({"implementation": "torchvision"}, False),
    "fast-noreuse": ({}, False),
    "fast": ({}, True),
    "fast-tf32": ({"precision": "tf32"}, True),
    "fast-bf16": ({"precision": "bf16"}, True),
    "fast-compiled": ({"compile": True}, True),
    "fast-compiled-tf32": ({"compile": True, "precision": "tf32"}, True),
}
RAFT_STAGES = ("feature_encoder", "context_encoder", "update_block", "mask_predictor")


def paper_net_config(*, quick: bool, detections: int) -> dict:
    """``model.net`` of ``python -m vidseg.train task=vps`` (the paper config), classes of Cityscapes-VPS."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    overrides = ["task=vps", "model.variant=fusetrack", "model.net.num_stuff=11", "model.net.num_things=8"]
    if quick:  # the toy demo's net, with the tiny flow net so that every module is timed (the demo has none)
        overrides += ["experiment=toy_vps", "model.net.flow.name=tiny"]
    with initialize_config_module("vidseg.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    net["variant"] = "fusetrack"
    net["detector"] = {**net.get("detector", {}), "score_thresh": 0.0, "detections_per_img": detections}
    return net


def save_random_checkpoint(net: dict, path: Path) -> Path:
    torch.manual_seed(0)
    model = build_vpsnet(**net)
    torch.save({TASK_KEY: "vps", "hyper_parameters": {"net": net, "categories": None},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Modules that inference calls through a method other than forward (forward hooks would never fire).
INFERENCE_METHODS = {"detector": "detect"}


class _Restore:
    """Undo a method wrapper; the same ``remove()`` as a hook handle."""

    def __init__(self, module, attribute: str) -> None:
        self.module, self.attribute = module, attribute

    def remove(self) -> None:
        delattr(self.module, self.attribute)  # the class's method shows through again


class ModuleTimer:
    """Wall time spent in each named top-level module of VPSNet (forward hooks, or a wrapper around the method
    inference calls, see INFERENCE_METHODS)."""

    def __init__(self, model, device: torch.device) -> None:
        self.device, self.times, self._start, self.handles = device, defaultdict(float), {}, []
        for name in MODULES:
            module = getattr(model, name, None)
            if module is None:
                continue
            if name in INFERENCE_METHODS:
                self.handles.append(self._wrap(name, module, INFERENCE_METHODS[name]))
                continue
            self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            self.handles.append(module.register_forward_hook(self._post(name)))

    def _wrap(self, name: str, module, attribute: str) -> _Restore:
        method = getattr(module, attribute)

        def timed(*args, **kwargs):
            self._pre(name)(module, args)
            out = method(*args, **kwargs)
            self._post(name)(module, args, out)
            return out

        setattr(module, attribute, timed)
        return _Restore(module, attribute)

    def _pre(self, name):
        def hook(module, args):
            _sync(self.device)
            self._start[name] = time.perf_counter()
        return hook

    def _post(self, name):
        def hook(module, args, output):
            _sync(self.device)
            self.times[name] += time.perf_counter() - self._start[name]
        return hook


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def allocated_mib(device: torch.device) -> float:
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mib()


def time_size(ckpt: Path, device: torch.device, size: tuple[int, int], frames: int, warmup: int,
              flow: str = "fast") -> dict:
    """The pipeline at one size; ``flow``: "fast" (the default RAFT forward) or "base" (torchvision's)."""
    predictor = VPSPredictor.from_checkpoint(ckpt, device=device)
    if not getattr(predictor.model.flow, "keeps_encoding", False):
        flow = "not RAFT"  # e.g. --quick's tiny flow network: no base/fast variants
    elif flow == "base":
        predictor.model.flow.implementation = "torchvision"
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g)
    # a slowly panning frame: consecutive frames differ like a video's
    clip = [torch.roll(base, shifts=4 * t, dims=2) for t in range(warmup + frames)]
    session = predictor.start()
    for frame in clip[:warmup]:
        session.step(frame)
    timer = ModuleTimer(predictor.model, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    for frame in clip[warmup:]:
        session.step(frame)
    _sync(device)
    total = time.perf_counter() - start
    for h in timer.handles:
        h.remove()
    per_frame = {k: 1000 * v / frames for k, v in timer.times.items()}
    measured = sum(per_frame.values())
    breakdown = {"backbone+FPN": per_frame.get("backbone", 0) + per_frame.get("fpn", 0),
                 "flow": per_frame.get("flow", 0), "fuse": per_frame.get("fuse", 0),
                 "semantic head": per_frame.get("semantic_head", 0), "detector": per_frame.get("detector", 0),
                 "panoptic head": per_frame.get("panoptic_head", 0),
                 "post-processing + tracking": 1000 * total / frames - measured}
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"size": list(size), "flow": flow, "frames": frames, "fps": frames / total,
            "ms_per_frame": 1000 * total / frames, "breakdown_ms": breakdown, "peak_memory_mib": peak}


def time_flow_variants(device: torch.device, size: tuple[int, int], frames: int, warmup: int,
                       variants: list[str]) -> list[dict]:
    """The flow module alone over a panning clip, per variant of FLOW_VARIANTS (RAFT-small, random weights,
    12 updates, frames of ``size`` padded as the model pads them)."""
    from vidseg.models.vpsnet.flow import RAFTFlow, build_flow

    torch.manual_seed(0)
    raft = build_flow(name="raft_small").raft.to(device).eval()
    g = torch.Generator().manual_seed(2)
    height, width = (-(-n // 32) * 32 for n in size)
    base = torch.rand(1, 3, height, width + 4 * (warmup + frames), generator=g)
    clip = [base[..., 4 * t: 4 * t + width].to(device) for t in range(warmup + frames)]
    rows, reference = [], None
    for name in sorted(variants, key=lambda v: v != "base"):  # base first: the others are compared with it
        options, reuse = FLOW_VARIANTS[name]
        flow = RAFTFlow(raft, frozen=True, **options)

        def run(frames_, previous=None, encoding=None, flow=flow, reuse=reuse):
            """Frames of a video after ``previous`` (None: the first is its own reference), as VPSNet calls
            the flow: returns (flows, (last frame, its encoding)) to continue from."""
            outputs = []
            for frame in frames_:
                out, new = flow(frame, frame if previous is None else previous,
                                encoding if reuse and previous is not None else None, return_encoding=True)
                outputs.append(out)
                encoding, previous = new, frame
            return outputs, (previous, encoding)

        with torch.inference_mode():
            first = run(clip[:2])[0][1]  # also the warm-up of a compiled variant's first shapes
            _, state = run(clip[:warmup])
            _sync(device)
            start = time.perf_counter()
            _, state = run(clip[warmup:], *state)  # steady state: every frame has a previous one
            _sync(device)
            total = time.perf_counter() - start
            stages = StageTimer(raft, device) if not options.get("compile") else None
            staged = min(frames, 3)  # the split needs its own (synchronised) run: a few frames are enough
            if stages is not None:
                _sync(device)
                start = time.perf_counter()
                run(clip[warmup: warmup + staged], *state)
                _sync(device)
                staged_total = time.perf_counter() - start
                stages.remove()
        if name == "base":
            reference = first
        row = {"variant": name, "options": options, "reuse_encoding": reuse, "size": [height, width],
               "frames": frames, "ms_per_frame": 1000 * total / frames,
               "max_abs_diff_vs_base": None if reference is None else float((first - reference).abs().max())}
        if stages is not None:
            split = {k: 1000 * v / staged for k, v in stages.times.items()}
            split["rest (correlation, sampling, upsampling)"] = 1000 * staged_total / staged - sum(split.values())
            row["stages_ms"] = split
        rows.append(row)
    return rows


class StageTimer(ModuleTimer):
    """Synchronised wall time per RAFT stage (hooks on the torchvision RAFT's submodules)."""

    def __init__(self, raft, device: torch.device) -> None:
        self.device, self.times, self._start, self.handles = device, defaultdict(float), {}, []
        for name in RAFT_STAGES:
            module = getattr(raft, name, None)
            if module is not None:
                self.handles.append(module.register_forward_pre_hook(self._pre(name)))
                self.handles.append(module.register_forward_hook(self._post(name)))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def memory_over_clip(ckpt: Path, device: torch.device, size: tuple[int, int], checkpoints=(30, 300)) -> dict:
    predictor = VPSPredictor.from_checkpoint(ckpt, device=device)
    g = torch.Generator().manual_seed(1)
    base = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g)
    session = predictor.start()
    out = {}
    for t in range(1, max(checkpoints) + 1):
        session.step(torch.roll(base, shifts=2 * t, dims=2))
        if t in checkpoints:
            out[str(t)] = {"memory_mib": allocated_mib(device), "tracks": len(session.state.tracks)}
    return {"size": list(size), "kind": "CUDA allocated" if device.type == "cuda" else "RSS", "after": out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny widths and small frames (seconds)")
    parser.add_argument("--detections", type=int, default=20)
    parser.add_argument("--frames", type=int, default=None, help="timed frames per size")
    parser.add_argument("--memory-frames", default=None, help="frame counts of the memory check, e.g. 30,100 "
                        "(default 30,300; 10,30 with --quick)")
    parser.add_argument("--flow-variants", default=None,
                        help=f"comma-separated, of {', '.join(FLOW_VARIANTS)} (default: base,fast-noreuse,fast,"
                        "fast-tf32,fast-bf16 on CUDA, base,fast on the CPU; 'none' to skip); compiled variants "
                        "compile on their first frames (a minute or more)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        sizes, frames, warmup, mem_size, mem_frames = [(128, 256)], args.frames or 5, 1, (64, 128), (10, 30)
    else:
        sizes = [(1024, 2048), (256, 512)]
        frames = args.frames or (20 if device.type == "cuda" else 3)
        warmup, mem_size, mem_frames = (3 if device.type == "cuda" else 1), (128, 256), (30, 300)
    if args.memory_frames:
        mem_frames = tuple(int(n) for n in args.memory_frames.split(","))
    if args.flow_variants is None:
        variants = ["base", "fast-noreuse", "fast", "fast-tf32", "fast-bf16"] if device.type == "cuda" else \
            ["base", "fast"]
    else:
        variants = [] if args.flow_variants == "none" else args.flow_variants.split(",")
    unknown = sorted(set(variants) - set(FLOW_VARIANTS))
    if unknown:
        parser.error(f"unknown --flow-variants {unknown}; choose from {', '.join(FLOW_VARIANTS)}")
    net = paper_net_config(quick=args.quick, detections=args.detections)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_random_checkpoint(net, Path(tmp) / "vpsnet.ckpt")
        rows = [time_size(ckpt, device, size, frames, warmup) for size in sizes]
        if net["flow"]["name"].startswith("raft") and variants:  # the pipeline pair: fast (above), then base
            rows.insert(1, time_size(ckpt, device, sizes[0], frames, warmup, flow="base"))
        memory = memory_over_clip(ckpt, device, mem_size, mem_frames)
    flow_rows = time_flow_variants(device, sizes[0], frames, warmup, variants) if variants else []
    result = {"machine": machine(str(device)), "quick": args.quick, "network": "fusetrack " +
              ("(toy_vps widths)" if args.quick else "(paper: ResNet-50-FPN, RAFT-small)"),
              "paper_fps": PAPER_FPS, "sizes": rows, "flow_variants": flow_rows, "memory_over_clip": memory}
    lines = [f"# VPSNet fusetrack inference ({result['network']}, {device})", "",
             f"Paper: {PAPER_FPS} fps at 1024x2048 (GPU). Detections capped at {args.detections}/frame.", "",
             "| size | flow | fps | ms/frame | " + " | ".join(rows[0]["breakdown_ms"])
             + (" | peak CUDA MiB |" if device.type == "cuda" else " | process peak RSS so far, MiB |"),
             "|" + "---|" * (5 + len(rows[0]["breakdown_ms"]))]
    for r in rows:
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {r['flow']} | {r['fps']:.2f} | {r['ms_per_frame']:.0f} | "
                     + " | ".join(f"{v:.0f}" for v in r["breakdown_ms"].values()) + f" | {r['peak_memory_mib']:.0f} |")
    if flow_rows:
        stage_names = list(next((r["stages_ms"] for r in flow_rows if "stages_ms" in r), {}))
        flow_size = "x".join(str(n) for n in flow_rows[0]["size"])
        lines += ["", f"Flow module alone (RAFT-small, 12 updates, {flow_size}, ms/frame; stages from synchronised "
                  "hooks):", "",
                  "| variant | ms/frame | max abs diff vs base (px) | " + " | ".join(stage_names) + " |",
                  "|" + "---|" * (3 + len(stage_names))]
        for r in flow_rows:
            diff = "-" if r["max_abs_diff_vs_base"] is None else f"{r['max_abs_diff_vs_base']:.2e}"
            stages = [f"{r['stages_ms'][k]:.1f}" if "stages_ms" in r else "-" for k in stage_names]
            lines.append(f"| {r['variant']} | {r['ms_per_frame']:.1f} | {diff} | " + " | ".join(stages) + " |")
    after = memory["after"]
    lines += ["", f"Memory over one clip at {memory['size'][0]}x{memory['size'][1]} ({memory['kind']}): "
              + ", ".join(f"after {k} frames {v['memory_mib']:.0f} MiB ({v['tracks']} tracks)"
                          for k, v in after.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"vpsnet-fps-{device.type}{'-quick' if args.quick else ''}"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Deformable convolution on CPU: vidseg's grid_sample path against torchvision's kernel, and what it does to a
toy VPSNet training step.

    python -m bench.deform_conv --out bench/results            # about 2 minutes on 2 cores
    python -m bench.deform_conv --quick                        # seconds (sizes of the test suite)

Rows:
- the op alone, forward and forward+backward (gradients to input, offset and weight), float32, 3x3 taps with
  random offsets of a few pixels, on the shapes of the toy recipe's semantic head (``experiment=toy_vps``: 32
  channels at P2 and P3 of a 96x192 crop, batch 4) and of the paper's width (256 channels) at 64x128;
  best of 3 runs after a warm-up; "diff" is the max |difference| from torchvision's output;
- one training step of the toy VPS recipe (fusetrack, the demo's data and batch), forward, backward and AdamW,
  mean over 10 steps after 3 warm-up steps, with the semantic head's deformable convs on each path (the
  baseline patches the head to ``impl="torchvision"``). Needs ``--data`` (the demo's toy set; generated there
  with the demo's settings when missing).
Same process, same inputs, so the ratios hold on this machine; absolute times are for the machine printed.
Writes deform-conv-cpu.md and .json under --out.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared machine: see bench/ops.py

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from bench.ops import machine, measure  # noqa: E402
from vidseg.ops import deform_conv2d  # noqa: E402

IMPLS = ("cpu", "torchvision")


def op_rows(quick: bool) -> list[dict]:
    cases = [("toy P2 (B=4, C=32, 24x48)", (4, 32, 32, 24, 48)), ("toy P3 (B=4, C=32, 12x24)", (4, 32, 16, 12, 24))]
    if not quick:
        cases.append(("paper width (B=1, C=256, 64x128)", (1, 256, 256, 64, 128)))
    rows = []
    for name, (batch, channels, out_channels, height, width) in cases:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch, channels, height, width, generator=generator)
        offset = 2 * torch.randn(batch, 18, height, width, generator=generator)
        weight = torch.randn(out_channels, channels, 3, 3, generator=generator) / (3 * channels ** 0.5)
        outputs = {}
        for mode in ("forward", "forward+backward"):
            times = {}
            for impl in IMPLS:
                leaves = [t.clone().requires_grad_(mode != "forward") for t in (x, offset, weight)]

                def call(impl=impl, leaves=leaves, mode=mode) -> torch.Tensor:
                    with torch.set_grad_enabled(mode != "forward"):
                        out = deform_conv2d(*leaves, padding=1, impl=impl)
                        if mode != "forward":
                            torch.autograd.grad(out.sum(), leaves)
                    return out.detach()

                times[impl], memory, outputs[impl] = measure(call, "cpu", 3)
                row = {"case": name, "mode": mode, "path": impl, "ms": 1e3 * times[impl], "peak_mb": memory}
                rows.append(row)
            diff = float((outputs["cpu"] - outputs["torchvision"]).abs().max())
            for row in rows[-2:]:
                row.update(speedup=times["torchvision"] / times[row["path"]], diff=diff)
            for row in rows[-2:]:
                print(f"{row['case']:34s} {row['mode']:17s} {row['path']:12s} {row['ms']:9.1f} ms "
                      f"{row['peak_mb']:8.1f} MB  x{row['speedup']:5.1f}  diff {row['diff']:.1e}", flush=True)
    return rows


def training_step_rows(data: Path, steps: int, warmup: int) -> list[dict]:
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import vidseg.models.vpsnet.semantic_head as semantic_head
    from vidseg.models.vpsnet import build_vpsnet

    if not (data / "toy_vps.json").is_file():
        from vidseg.data.toy_vps import generate_toy_vps
        from vidseg.demo import VPS_TOY

        generate_toy_vps(data, format="cityscapes_vps", seed=0, **VPS_TOY)
    with initialize_config_module("vidseg.conf", version_base="1.3"):
        cfg = compose("train", overrides=["task=vps", "experiment=toy_vps", "model.variant=fusetrack",
                                          f"data.root={data}"])
    rows = []
    for impl in IMPLS:
        torch.manual_seed(0)
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        num_stuff = sum(1 for c in datamodule.info.categories if not c["isthing"])
        net = {**OmegaConf.to_container(cfg.model.net, resolve=True), "variant": "fusetrack", "num_stuff": num_stuff,
               "num_things": len(datamodule.info.categories) - num_stuff}
        model = build_vpsnet(**net).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        batches = iter(datamodule.train_dataloader())
        original: Callable = semantic_head.deform_conv2d
        semantic_head.deform_conv2d = functools.partial(original, impl=impl)
        try:
            elapsed = 0.0
            for step in range(warmup + steps):
                batch = next(batches)
                start = time.perf_counter()
                losses = model.forward_train(batch)
                optimizer.zero_grad()
                sum(losses.values()).backward()
                optimizer.step()
                if step >= warmup:
                    elapsed += time.perf_counter() - start
        finally:
            semantic_head.deform_conv2d = original
        rows.append({"case": "toy VPS training step (fusetrack, 4 crops 96x192)", "mode": "train step",
                     "path": impl, "ms": 1e3 * elapsed / steps, "peak_mb": 0.0})
    for row in rows:
        row.update(speedup=rows[1]["ms"] / row["ms"], diff=float("nan"))
        print(f"{row['case']:34s} {row['mode']:17s} {row['path']:12s} {row['ms']:9.1f} ms  x{row['speedup']:5.1f}",
              flush=True)
    return rows


def markdown(rows: list[dict], info: dict) -> str:
    lines = ["# Deformable convolution on CPU: vidseg's grid_sample path vs torchvision's kernel", "",
             f"Command: `{info['command']}`  ", f"Machine: {info['cpu']}, {info['cpu_count']} cores, torch "
             f"{info['torch']}, OMP_WAIT_POLICY={info['omp_wait_policy']}, {info['date']}  ",
             "Speed-up: torchvision's time / this row's time (same process, same inputs). diff: max |output "
             "difference| from torchvision.", "",
             "| case | mode | path | time (ms) | peak extra MB | speed-up | diff |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "" if r["diff"] != r["diff"] else f"{r['diff']:.1e}"
        memory = f"{r['peak_mb']:.1f}" if r["peak_mb"] else ""
        lines.append(f"| {r['case']} | {r['mode']} | {r['path']} | {r['ms']:.1f} | {memory} | "
                     f"x{r['speedup']:.1f} | {diff} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quick", action="store_true", help="small op sizes, 2 training steps")
    parser.add_argument("--data", type=Path, default=Path("data/toy_cityscapes_vps"),
                        help="the demo's toy Cityscapes-VPS set (generated here when missing)")
    args = parser.parse_args(argv)
    info = machine("cpu")
    rows = op_rows(args.quick)
    rows += training_step_rows(args.data, steps=2 if args.quick else 10, warmup=1 if args.quick else 3)
    info["command"] = "python -m bench.deform_conv" + (" --quick" if args.quick else "")
    info["load_average_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "deform-conv-cpu" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.md").write_text(markdown(rows, info))
    (args.out / f"{stem}.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    print(f"wrote {args.out / stem}.md and .json")


if __name__ == "__main__":
    main()

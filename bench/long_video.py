"""Memory is constant in video length: peak RSS (and CUDA max allocated on a GPU) after 100 and after 5,000 frames.

    python -m bench.long_video --out bench/results                   # 100 vs 5,000 frames, 64x112
    python -m bench.long_video --out /tmp/lv --frames 300            # a quick look

Five measurements, each in its own process so that one's peak cannot hide another's:

- ``vos-api`` / ``vps-api``: the streaming predictors (``VOSPredictor.track``, ``VPSPredictor.start().step``)
  fed synthetic frames; RSS sampled after frame 100 and after the last frame of one run.
- ``vos-predict-mp4`` / ``vos-predict-folder`` / ``vps-predict-mp4``: the whole ``python -m vidseg.predict``
  command (decoding with decord / reading a frame folder, writing masks and the overlay video), run once on
  the first 100 frames and once on all frames; the process's peak RSS of each run.

Models: the tiny FEELVOS and VPSNet of the test suite, trained for one step on generated toy data (memory does
not depend on the weights). Constant memory means the two columns agree up to allocator noise. Writes
long-video-<device>.md and .json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/ops.py

from tests.helpers.configs import TINY_FEELVOS  # noqa: E402
from tests.helpers.vps_training import TINY_VPS as TINY_VPS_TRAINING  # noqa: E402

HEIGHT, WIDTH = 64, 112
EARLY = 100
# The test suite's tiny models, trained for one step: memory depends on a model's size, not on its weights.
TINY_VPS = [o for o in TINY_VPS_TRAINING if not o.startswith(("task=", "trainer."))]


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cuda_mib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), OMP_WAIT_POLICY="PASSIVE")


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


# ------------------------------------------------------------------------------------------------ setup


def prepare(work: Path, frames: int) -> dict[str, Path]:
    """Toy data, two one-step checkpoints, a long synthetic mp4 + frame folder and its first-frame mask."""
    from vidseg.data.io import write_image, write_mask
    from vidseg.data.toy import generate_toy_davis
    from vidseg.data.video import write_video

    paths: dict[str, Path] = {}
    davis = generate_toy_davis(work / "toy_davis", num_train=2, num_val=1, frames=6, height=HEIGHT, width=WIDTH,
                               max_objects=2, seed=0)
    _run([sys.executable, "-m", "vidseg.data.toy_vps", "--format", "cityscapes_vps", "--root", str(work / "toy_vps"),
          "--videos", "2", "--val-videos", "1", "--height", "64", "--width", "128"], "toy VPS generation")
    common = ["trainer.max_steps=1", "trainer.check_val_every_n_epoch=1000", "logger=none"]
    _run([sys.executable, "-m", "vidseg.train", "task=vos", f"data.root={davis}", *TINY_FEELVOS,
          "data.crop_size=[64,112]", "data.batch_size=2", "data.samples_per_epoch=2", "data.num_workers=0", *common,
          f"hydra.run.dir={work / 'vos_run'}"], "VOS training")
    _run([sys.executable, "-m", "vidseg.train", "task=vps", f"data.root={work / 'toy_vps'}", *TINY_VPS, *common,
          "data.num_workers=0", f"hydra.run.dir={work / 'vps_run'}"], "VPS training")
    paths["vos_ckpt"] = work / "vos_run" / "checkpoints" / "last.ckpt"
    paths["vps_ckpt"] = work / "vps_run" / "checkpoints" / "last.ckpt"

    # A moving square over a gradient: cheap to make at any length.
    import numpy as np

    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([xx * 2, yy * 3, (xx + yy) % 256], axis=-1).astype(np.uint8)

    def frame(t: int) -> np.ndarray:
        img = background.copy()
        x = 10 + (t % 60)
        img[20:40, x:x + 20] = (230, 40, 40)
        return img

    folder = work / "frames"
    folder.mkdir()
    for t in range(frames):
        write_image(folder / f"{t:05d}.jpg", frame(t))
    paths["folder"], paths["folder_early"] = folder, work / "frames_early"
    paths["folder_early"].mkdir()
    for t in range(EARLY):
        os.link(folder / f"{t:05d}.jpg", paths["folder_early"] / f"{t:05d}.jpg")
    paths["mp4"] = write_video(work / "long.mp4", (frame(t) for t in range(frames)), fps=25)
    paths["mp4_early"] = write_video(work / "early.mp4", (frame(t) for t in range(EARLY)), fps=25)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[20:40, 10:30] = 1
    paths["mask"] = work / "mask.png"
    write_mask(paths["mask"], mask)
    return paths


# ------------------------------------------------------------------------------------------------ workers


def worker_api(task: str, ckpt: Path, frames: int) -> dict:
    """Stream ``frames`` synthetic frames through the task's predictor; RSS after frame 100 and at the end."""
    import numpy as np
    import torch

    from vidseg.utils.device import resolve_device

    device = resolve_device("auto")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    marks: dict[str, float | None] = {}
    start = time.perf_counter()

    def frame_stream():
        for t in range(frames):
            yield np.roll(base, t % WIDTH, axis=1)

    if task == "vos":
        from vidseg.inference.vos import VOSPredictor

        predictor = VOSPredictor.from_checkpoint(ckpt, device=device)
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        mask[20:40, 10:30] = 1
        for index, _, _ in predictor.track(frame_stream(), mask):
            if index + 1 == EARLY:
                marks["early_rss"], marks["early_cuda"] = rss_mib(), cuda_mib()
    else:
        from vidseg.inference.vps import VPSPredictor

        session = VPSPredictor.from_checkpoint(ckpt, device=device).start()
        with torch.inference_mode():
            for t, image in enumerate(frame_stream()):
                session.step(image)
                if t + 1 == EARLY:
                    marks["early_rss"], marks["early_cuda"] = rss_mib(), cuda_mib()
    marks["late_rss"], marks["late_cuda"] = rss_mib(), cuda_mib()
    marks["seconds"] = time.perf_counter() - start
    marks["device"] = str(device)
    return marks


def measure_predict(task: str, ckpt: Path, source: Path, mask: Path | None, out: Path) -> float:
    """Peak RSS (MiB) of one ``python -m vidseg.predict`` process."""
    argv = [sys.executable, "-m", "vidseg.predict", f"task={task}", f"ckpt={ckpt}", f"input={source}",
            f"output={out}", f"hydra.run.dir={out}"]
    if mask is not None:
        argv.append(f"mask={mask}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    _run(argv, f"predict {task} on {source.name}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the maximum over all waited-for children: run the small case first.
    return max(after, before) / 1024.0


def measure_predict_pair(task: str, ckpt: Path, early: Path, late: Path, mask: Path | None, work: Path,
                         name: str) -> dict:
    # Each run in a fresh helper process, so RUSAGE_CHILDREN reports that run only.
    results = {}
    for key, source in (("early_rss", early), ("late_rss", late)):
        argv = [sys.executable, "-m", "bench.long_video", "--predict-worker", task, str(ckpt), str(source),
                str(mask or ""), str(work / f"{name}-{key}")]
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=_env())
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        results[key] = json.loads(proc.stdout.strip().splitlines()[-1])["rss"]
        results[f"{key[:-4]}_seconds"] = time.perf_counter() - start
    return results


# ------------------------------------------------------------------------------------------------ main


def write_report(out: Path, rows: list[dict], frames: int, device: str) -> None:
    from bench.ops import machine

    out.mkdir(parents=True, exist_ok=True)
    info = {"machine": machine(device), "frames": frames, "early": EARLY, "size": [HEIGHT, WIDTH], "device": device,
            "command": "python -m bench.long_video " + " ".join(sys.argv[1:]), "rows": rows}
    (out / f"long-video-{device}.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = [f"# Memory over a long video ({HEIGHT}x{WIDTH}, tiny models, {device})", "",
             f"Machine: {info['machine'].get('gpu') or info['machine']['cpu']} ({info['machine']['cpu_count']} cores), "
             f"torch {info['machine']['torch']}. Command: `{info['command']}`.", "",
             f"| measurement | peak RSS after {EARLY} frames (MiB) | after {frames} frames (MiB) | growth (MiB) |"
             + (" CUDA max allocated early / late (MiB) |" if device == "cuda" else ""),
             "|---|---|---|---|" + ("---|" if device == "cuda" else "")]
    for r in rows:
        line = f"| {r['name']} | {r['early_rss']:.0f} | {r['late_rss']:.0f} | {r['late_rss'] - r['early_rss']:+.0f} |"
        if device == "cuda":
            line += f" {r.get('early_cuda') or 0:.0f} / {r.get('late_cuda') or 0:.0f} |"
        lines.append(line)
    (out / f"long-video-{device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="folder for long-video-<device>.md/.json")
    parser.add_argument("--frames", type=int, default=5000, help="length of the long video (default 5000)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--api-worker", nargs=3, metavar=("TASK", "CKPT", "FRAMES"), help=argparse.SUPPRESS)
    parser.add_argument("--predict-worker", nargs=5, metavar=("TASK", "CKPT", "INPUT", "MASK", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.api_worker:
        task, ckpt, frames = args.api_worker
        print(json.dumps(worker_api(task, Path(ckpt), int(frames))))
        return
    if args.predict_worker:
        task, ckpt, source, mask, out = args.predict_worker
        rss = measure_predict(task, Path(ckpt), Path(source), Path(mask) if mask else None, Path(out))
        print(json.dumps({"rss": rss}))
        return
    if args.frames <= EARLY:
        parser.error(f"--frames must be more than {EARLY}")
    with tempfile.TemporaryDirectory(prefix="vidseg-long-video-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"preparing {args.frames} frames and two tiny checkpoints in {work} ...", flush=True)
        paths = prepare(work, args.frames)
        rows = []
        for task in ("vos", "vps"):
            proc = subprocess.run([sys.executable, "-m", "bench.long_video", "--api-worker", task,
                                   str(paths[f"{task}_ckpt"]), str(args.frames)], capture_output=True, text=True,
                                  env=_env())
            if proc.returncode != 0:
                raise SystemExit(f"{task}-api failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"name": f"{task}-api", **row})
            print(f"{task}-api: {row}", flush=True)
        device = rows[0]["device"].split(":")[0]
        for name, task, early, late, mask in (
                ("vos-predict-mp4", "vos", paths["mp4_early"], paths["mp4"], paths["mask"]),
                ("vos-predict-folder", "vos", paths["folder_early"], paths["folder"], paths["mask"]),
                ("vps-predict-mp4", "vps", paths["mp4_early"], paths["mp4"], None)):
            row = measure_predict_pair(task, paths[f"{task}_ckpt"], early, late, mask, work, name)
            rows.append({"name": name, **row})
            print(f"{name}: {row}", flush=True)
        if args.out:
            write_report(args.out, rows, args.frames, device)


if __name__ == "__main__":
    main()

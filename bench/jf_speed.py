"""Time scoring a DAVIS results folder: ``vidseg.evaluate`` against vos-benchmark, whole processes.

    python -m bench.jf_speed --out bench/results                   # 8 sequences x 40 frames at 854x480
    python -m bench.jf_speed --out bench/results --vos-python P    # reuse an interpreter that has vos-benchmark

Data: a generated DAVIS-layout folder (``JPEGImages``/``Annotations``/``ImageSets``, 480p) of 8 sequences x
40 frames at 854x480, 2 to 5 objects per sequence (star-shaped blobs with wobbly outlines that move, grow
and shrink), and a results folder of slightly perturbed predictions: every object shifted by a few pixels,
its outline redrawn with other wobbles, sometimes missed for a frame, plus a few false-positive specks.

Baseline: vos-benchmark 0.1.0 (hkchengrex, PyPI), which reproduces the official DAVIS toolkit's J and F
(shared/reference/davis.md) and, like its own ``benchmark.py`` script, scores videos in a process pool of
``os.cpu_count()`` workers. It needs opencv-python (not headless) and scikit-image, so it is installed into a
throwaway venv under the bench's work folder from the package index, never into vidseg's environment. It has
no command-line entry point of its own in the wheel: its process runs ``vos_benchmark.benchmark.benchmark``
on ``Annotations/480p`` and the results folder, as the repository's script does.

With ``--official <davis2017-evaluation checkout>`` (github.com/davisvideochallenge/davis2017-evaluation; the bench
never downloads it) a third row times the official toolkit itself, ``evaluation_method.py --task
semi-supervised``, in the same throwaway venv (plus pandas). It prints its numbers with three decimals only, so it
must agree with vidseg's to 5e-4.

The rows are whole processes started once each, one run (imports, config, reading PNGs, scoring, writing
results): ``python -m vidseg.evaluate task=vos data.root=<root> predictions=<results>`` and the baselines.
vidseg's sources are byte-compiled first, as pip does for an installed package (an editable install with
PYTHONDONTWRITEBYTECODE set would otherwise compile them in every process).
The two must give the same global J and F (to 1e-6) or the bench fails. Writes jf-speed-cpu.md and
jf-speed-cpu.json under --out.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared machine: see bench/ops.py

import argparse  # noqa: E402
import compileall  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from vidseg.data.io import write_mask, write_text_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VOS_BENCHMARK = "vos-benchmark==0.1.0"
SEQ_PREFIX = "bench"
# Run in the baseline's interpreter: score, then print the global numbers at full precision as JSON.
VOS_CODE = (
    "import json, sys\n"
    "from vos_benchmark.benchmark import benchmark\n"
    "jf, j, f, _ = benchmark([sys.argv[1]], [sys.argv[2]], verbose=False)\n"
    "print(json.dumps({'J&F-Mean': jf[0] / 100, 'J-Mean': j[0] / 100, 'F-Mean': f[0] / 100}))\n"
)


# ------------------------------------------------------------------------------------------- data
def _blob(h: int, w: int, cy: float, cx: float, radius: float, phases: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """``(h, w)`` bool star-shaped blob: radius * (1 + sum_k amps[k] sin((k + 2) theta + phases[k]))."""
    y0, y1 = max(0, int(cy - 2 * radius)), min(h, int(cy + 2 * radius) + 1)
    x0, x1 = max(0, int(cx - 2 * radius)), min(w, int(cx + 2 * radius) + 1)
    out = np.zeros((h, w), dtype=bool)
    if y0 >= y1 or x0 >= x1:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx)
    k = np.arange(2, 2 + len(amps))[:, None, None]
    rim = radius * (1 + np.sum(amps[:, None, None] * np.sin(k * theta + phases[:, None, None]), axis=0))
    out[y0:y1, x0:x1] = dy * dy + dx * dx <= rim * rim
    return out


def make_sequence(
    rng: np.random.Generator, frames: int, height: int, width: int, objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(gt, pred)``, each ``(frames, height, width) uint8`` label maps (ids 1..objects, later ids on top).

    Every object is visible in every GT frame, so both scorers see each object from the first scored frame
    (vos-benchmark starts an object's list where it first appears).
    """
    scale = min(height, width)
    gt = np.zeros((frames, height, width), dtype=np.uint8)
    pred = np.zeros_like(gt)
    for obj in range(1, objects + 1):
        radius0 = rng.uniform(0.08, 0.2) * scale
        cy0, cx0 = rng.uniform(0.25, 0.75) * height, rng.uniform(0.2, 0.8) * width
        vy, vx = rng.uniform(-2, 2), rng.uniform(-4, 4)
        phases, amps = rng.uniform(0, 2 * np.pi, 5), rng.uniform(0.02, 0.12, 5)
        for t in range(frames):
            cy = np.clip(cy0 + vy * t, 0.15 * height, 0.85 * height)
            cx = np.clip(cx0 + vx * t, 0.1 * width, 0.9 * width)
            radius = radius0 * (1 + 0.15 * np.sin(0.2 * t + obj))
            gt[t][_blob(height, width, cy, cx, radius, phases + 0.05 * t, amps)] = obj
            if rng.random() < 0.03:  # missed in this frame
                continue
            jitter_p, jitter_a = rng.normal(0, 0.3, 5), rng.normal(0, 0.02, 5)
            dy, dx = rng.normal(0, 3, 2)
            pred[t][_blob(height, width, cy + dy, cx + dx, radius * rng.uniform(0.93, 1.07),
                          phases + 0.05 * t + jitter_p, np.abs(amps + jitter_a))] = obj
    for t in range(frames):  # false-positive specks
        for _ in range(int(rng.integers(0, 3))):
            y, x = int(rng.integers(0, height - 8)), int(rng.integers(0, width - 8))
            pred[t, y : y + int(rng.integers(2, 8)), x : x + int(rng.integers(2, 8))] = rng.integers(1, objects + 1)
    return gt, pred


def make_case(
    root: Path, *, sequences: int = 8, frames: int = 40, height: int = 480, width: int = 854, seed: int = 0,
    min_objects: int = 2, max_objects: int = 5,
) -> tuple[Path, Path]:
    """Write a DAVIS 2017 layout (split ``val``) under ``root/davis`` and the results under ``root/results``.

    Frames are one flat grey JPEG per frame (the folder layout needs them; scoring never decodes them).
    Returns ``(davis_root, results_dir)``.
    """
    rng = np.random.default_rng(seed)
    davis, results = root / "davis", root / "results"
    grey = Image.fromarray(np.full((height, width, 3), 128, np.uint8))
    names = []
    for s in range(sequences):
        name = f"{SEQ_PREFIX}-{s:02d}"
        names.append(name)
        gt, pred = make_sequence(rng, frames, height, width, int(rng.integers(min_objects, max_objects + 1)))
        img_dir = davis / "JPEGImages" / "480p" / name
        img_dir.mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            grey.save(img_dir / f"{t:05d}.jpg", quality=90)
            write_mask(davis / "Annotations" / "480p" / name / f"{t:05d}.png", gt[t])
            write_mask(results / name / f"{t:05d}.png", pred[t])
    write_text_atomic(davis / "ImageSets" / "2017" / "val.txt", "\n".join(names) + "\n")
    return davis, results


# ------------------------------------------------------------------------------------------- runs
def timed(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd`` to completion: (process, wall seconds, CPU seconds of it and all its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def run_vidseg(davis: Path, results: Path, out: Path, workers: int | None = None) -> tuple[dict, float, float]:
    """Time ``python -m vidseg.evaluate task=vos ... predictions=<results>``: (global numbers, wall s, CPU s)."""
    cmd = [sys.executable, "-m", "vidseg.evaluate", "task=vos", f"data.root={davis}", f"predictions={results}",
           f"output_dir={out}", f"hydra.run.dir={out / 'hydra'}"]
    if workers is not None:
        cmd.append(f"workers={workers}")
    _, wall, cpu = timed(cmd, cwd=ROOT)
    saved = json.loads((out / "results-val.json").read_text())
    return {k: saved["global"][k] for k in ("J&F-Mean", "J-Mean", "F-Mean")}, wall, cpu


def make_vos_venv(work: Path) -> Path:
    """A throwaway venv with vos-benchmark, pandas (for the official toolkit) and their dependencies from the
    package index; returns its python."""
    venv = work / "vos-venv"
    timed([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    timed([str(python), "-m", "pip", "install", "-q", VOS_BENCHMARK, "pandas"])
    return python


def _linked_results(results: Path, links: Path) -> Path:
    """A fresh folder of links to the sequence folders of ``results`` (scorers that write into what they score)."""
    links.mkdir()
    for seq in sorted(p for p in results.iterdir() if p.is_dir()):
        (links / seq.name).symlink_to(seq.resolve(), target_is_directory=True)
    return links


def check_toolkit(toolkit: Path) -> Path:
    """``toolkit``'s ``evaluation_method.py``; exits with the fix when ``toolkit`` is not a checkout of it."""
    script = toolkit / "evaluation_method.py"
    if not script.is_file() or not (toolkit / "davis2017").is_dir():
        raise SystemExit(f"--official {toolkit}: not a davis2017-evaluation checkout (evaluation_method.py and "
                         "davis2017/ expected); git clone https://github.com/davisvideochallenge/davis2017-evaluation")
    return script


def run_official(python: Path, toolkit: Path, davis: Path, results: Path, work: Path) -> tuple[dict, float, float]:
    """Time the official toolkit's ``evaluation_method.py`` on the same folder: (global numbers, wall s, CPU s).

    It re-reads ``global_results-val.csv`` from the folder it scores when the file exists, so every run scores a
    fresh folder of links.
    """
    script = check_toolkit(toolkit)
    masks = _linked_results(results, work / f"official-masks-{time.time_ns()}")
    _, wall, cpu = timed([str(python), str(script), "--task", "semi-supervised", "--set", "val",
                          "--davis_path", str(davis), "--results_path", str(masks)], cwd=toolkit)
    header, values = (masks / "global_results-val.csv").read_text().strip().splitlines()[:2]
    table = dict(zip(header.split(","), (float(v) for v in values.split(",")), strict=True))
    return {k: table[k] for k in ("J&F-Mean", "J-Mean", "F-Mean")}, wall, cpu


def run_vos_benchmark(python: Path, davis: Path, results: Path, work: Path) -> tuple[dict, float, float]:
    """Time vos-benchmark on the same folder in its own process: (global numbers, wall s, CPU s).

    It writes ``results.csv`` into the folder it scores, so it scores a folder of links to the sequences.
    """
    masks = _linked_results(results, work / f"vos-masks-{time.time_ns()}")
    proc, wall, cpu = timed([str(python), "-c", VOS_CODE, str(davis / "Annotations" / "480p"), str(masks)])
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall, cpu


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": model, "cpu_count": os.cpu_count(), "usable_cores": usable, "python": platform.python_version(),
            "numpy": np.__version__, "load_average_start": os.getloadavg(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def report(rows: list[dict], config: dict, info: dict) -> tuple[str, dict]:
    """Markdown table and JSON payload; ``ratio`` = baseline seconds / vidseg seconds when both ran."""
    by_name = {r["name"]: r for r in rows}
    ours, base = by_name.get("vidseg"), by_name.get("vos-benchmark")
    ratio = base["seconds"] / ours["seconds"] if ours and base else None
    lines = [
        f"# J&F folder scoring, {config['sequences']} sequences x {config['frames']} frames at "
        f"{config['width']}x{config['height']}, {config.get('min_objects', 2)}-{config.get('max_objects', 5)} "
        "objects per sequence, whole processes, one run",
        "",
        f"Machine: {info['cpu']}, {info['usable_cores']} usable cores, Python {info['python']}, numpy "
        f"{info['numpy']}, load average at start {info['load_average_start'][0]:.2f}, {info['date']}. "
        f"Command: `{config.get('command', 'python -m bench.jf_speed')}`.",
        "",
        "| scorer | command | time (s) | CPU time (s) | J&F-Mean | J-Mean | F-Mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | `{r['command']}` | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
                     f"{r['J&F-Mean']:.6f} | {r['J-Mean']:.6f} | {r['F-Mean']:.6f} |")
    cpu_ratio = base["cpu_seconds"] / ours["cpu_seconds"] if ours and base else None
    if ratio is not None:
        lines += ["", f"vidseg is {ratio:.1f}x faster than vos-benchmark (whose J and F equal the official "
                      f"toolkit's) on this folder, whole processes; it uses {cpu_ratio:.1f}x less CPU time (both "
                      "score in a pool of one process per core; CPU time = the process and its children)."]
    official = by_name.get("official toolkit")
    official_ratio = official["seconds"] / ours["seconds"] if ours and official else None
    if official_ratio is not None:
        lines += ["", f"vidseg is {official_ratio:.1f}x faster than the official toolkit (davis2017-evaluation, "
                      "one process, as its evaluation_method.py runs; it prints three decimals)."]
    payload = {"machine": info, "config": config, "rows": rows, "speedup_vs_vos_benchmark": ratio,
               "cpu_time_ratio": cpu_ratio, "speedup_vs_official_toolkit": official_ratio}
    return "\n".join(lines) + "\n", payload


def check_equal(rows: list[dict], tol: float = 1e-6) -> None:
    """Fail when a scorer disagrees with the first (vidseg): a fast wrong answer is no result.

    The official toolkit's row is compared to 5e-4 (its table has three decimals), every other to ``tol``.
    """
    a = rows[0]
    for b in rows[1:]:
        limit = 5e-4 + 1e-9 if b["name"] == "official toolkit" else tol
        for key in ("J&F-Mean", "J-Mean", "F-Mean"):
            if abs(a[key] - b[key]) > limit:
                raise SystemExit(f"{a['name']} and {b['name']} disagree on {key}: {a[key]!r} vs {b[key]!r}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write jf-speed-cpu.md/.json here (default: print only)")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-objects", type=int, default=2, help="objects per sequence, drawn in [min, max]")
    parser.add_argument("--max-objects", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None, help="vidseg's workers= (default: its config)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--vos-python", type=Path, default=None,
                        help="an interpreter that has vos-benchmark (default: install it into a throwaway venv)")
    parser.add_argument("--no-baseline", action="store_true", help="time vidseg only (no venv, no network)")
    parser.add_argument("--official", type=Path, default=None,
                        help="a davis2017-evaluation checkout: also time the official toolkit")
    args = parser.parse_args(argv)

    if args.official is not None:
        check_toolkit(args.official)  # before any timing
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_jf_"))
    config = {k: v for k, v in vars(args).items() if k in ("sequences", "frames", "height", "width", "seed",
                                                           "min_objects", "max_objects", "workers")}
    config["command"] = " ".join(["python -m bench.jf_speed", *(sys.argv[1:] if argv is None else argv)])
    try:
        t0 = time.perf_counter()
        davis, results = make_case(work, sequences=args.sequences, frames=args.frames, height=args.height,
                                   width=args.width, seed=args.seed, min_objects=args.min_objects,
                                   max_objects=args.max_objects)
        print(f"generated {args.sequences} sequences x {args.frames} frames at {args.width}x{args.height} in "
              f"{time.perf_counter() - t0:.1f} s ({work})", flush=True)
        compileall.compile_dir(str(ROOT / "src"), quiet=1)
        info = machine()  # load average after generating, just before timing
        rows = []
        nums, dt, cpu = run_vidseg(davis, results, work / "vidseg-out", args.workers)
        cmd = "python -m vidseg.evaluate task=vos data.root=<root> predictions=<results>"
        rows.append({"name": "vidseg", "command": cmd + (f" workers={args.workers}" if args.workers else ""),
                     "seconds": dt, "cpu_seconds": cpu, **nums})
        print(rows[-1], flush=True)
        if not args.no_baseline:
            python = args.vos_python or make_vos_venv(work)
            config["baseline_packages"] = timed([str(python), "-m", "pip", "freeze"])[0].stdout.split()
            nums, dt, cpu = run_vos_benchmark(python, davis, results, work)
            rows.append({"name": "vos-benchmark", "command": f"{VOS_BENCHMARK}: benchmark([<gt>], [<results>])",
                         "seconds": dt, "cpu_seconds": cpu, **nums})
            print(rows[-1], flush=True)
            if args.official is not None:
                nums, dt, cpu = run_official(python, args.official.resolve(), davis, results, work)
                rows.append({"name": "official toolkit", "command": "python evaluation_method.py --task "
                             "semi-supervised --davis_path <root> --results_path <results>",
                             "seconds": dt, "cpu_seconds": cpu, **nums})
                print(rows[-1], flush=True)
        check_equal(rows)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    table, payload = report(rows, config, info)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out / "jf-speed-cpu.md", table)
        write_text_atomic(args.out / "jf-speed-cpu.json", json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()

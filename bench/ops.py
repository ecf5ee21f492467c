"""Benchmark vidseg.ops against the baselines of prior implementations, at the sizes of the issue.

    python -m bench.ops --out bench/results            # full sizes: a few minutes on 2 CPU cores
    python -m bench.ops --out bench/results --quick    # small sizes: seconds

Cases (full sizes):
- local matching, DAVIS 480p at stride 4: 120x214, C=100, k=15 (31x31 window), 1/3/10 objects;
  baselines: CFBI-style F.unfold (run in bands of query rows: the whole-image unfold would need
  ~2 x 9.9 GB) and the TF FEELVOS fallback (loop over the 961 shifted slices).
- global matching, same frames, all 25,680 reference pixels; baseline: torch.cdist per object (the
  full query x reference matrix).
- correlation, r=4, C=256 at VPSNet P2 of a 1024x2048 image (256x512); baseline: loop over the 81
  shifted slices.
- flow warping, C=256 at 256x512 (F.grid_sample; no baseline).

Peak extra memory is the process's peak resident memory during the call minus its resident memory
before it (VmHWM after resetting it through /proc/self/clear_refs) on CPU, and the allocator's peak on
CUDA. Embeddings are scaled so that distances are O(1) (tanh not saturated) and outputs are compared
with the vidseg result ("max |diff|").
Writes ops-<device>[-quick].md and .json under --out.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

# Before torch loads OpenMP: on a shared machine, spin-waiting worker threads compete with other
# processes for the cores and make every parallel op wait for a scheduler tick (10-100x slowdowns of
# short ops). Passive waiting measures the code, not the scheduler. Set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vidseg.ops import correlation, flow_warp, global_matching, local_matching  # noqa: E402

IGNORE = 255


@dataclass
class Row:
    op: str
    case: str
    method: str
    time_s: float
    peak_extra_mb: float
    speedup: float  # baseline time / vidseg time on baseline rows, 1.0 on vidseg rows
    max_abs_diff: float  # against the vidseg output of the same case
    note: str = ""


# ---------------------------------------------------------------------------------------------------
# measurement


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _release_free_heap() -> None:
    """Return freed heap pages to the OS so that reusing them counts as new memory."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(fn: Callable[[], torch.Tensor], device: str, repeats: int) -> tuple[float, float, torch.Tensor]:
    """Best-of-``repeats`` wall time (s), peak extra memory (MB) over the runs, and the last output.
    With repeats > 1 an unmeasured warm-up run comes first."""
    best, peak = float("inf"), 0.0
    out = fn() if repeats > 1 else None  # warm-up (lazy initialisation, allocator caches)
    for _ in range(repeats):
        out = None
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            _release_free_heap()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident size
            before = _status_kb("VmRSS") * 1024
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if device == "cuda":
            extra = torch.cuda.max_memory_allocated() - before
        else:
            extra = _status_kb("VmHWM") * 1024 - before
        best, peak = min(best, elapsed), max(peak, extra / 2**20)
    return best, peak, out


def machine(device: str) -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "load_average_start": os.getloadavg(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ---------------------------------------------------------------------------------------------------
# inputs


def embeddings(shape: tuple[int, ...], device: str, seed: int) -> torch.Tensor:
    """Random embeddings with |x - y|^2 around 2 (unsaturated FEELVOS distances)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) / shape[1] ** 0.5).to(device)


def blob_labels(batch: int, height: int, width: int, num_objects: int, device: str, seed: int) -> torch.Tensor:
    """Piecewise-constant labels (12x12 cells of random objects) with a band of ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, num_objects, (batch, height // 12 + 1, width // 12 + 1), generator=g)
    labels = cells.repeat_interleave(12, 1).repeat_interleave(12, 2)[:, :height, :width].contiguous()
    labels[:, height // 2 : height // 2 + 2] = IGNORE
    return labels.to(device)


# ---------------------------------------------------------------------------------------------------
# baselines (the way prior implementations compute the same outputs)


def cfbi_unfold_local(query, previous, labels, num_objects, k, band_rows):
    """CFBI-style: F.unfold the padded previous frame into its (2k+1)^2 * C window stack, squared
    differences to the query, per-object masked min. Run on bands of ``band_rows`` query rows."""
    batch, channels, height, width = query.shape
    size = 2 * k + 1
    one_hot = torch.stack([(labels == o) for o in range(num_objects)], 1).to(query.dtype)  # (B, N, H, W)
    out = query.new_ones((batch, num_objects, height, width))
    padded = F.pad(previous, (k, k, k, k))
    padded_labels = F.pad(one_hot, (k, k, k, k))  # zero padding = absent
    for y0 in range(0, height, band_rows):
        y1 = min(height, y0 + band_rows)
        stack = F.unfold(padded[:, :, y0 : y1 + 2 * k], size).view(batch, channels, size * size, -1)
        sq = (query[:, :, y0:y1].reshape(batch, channels, 1, -1) - stack).square().sum(1)  # (B, S^2, P)
        dist = torch.tanh(sq / 2)
        member = F.unfold(padded_labels[:, :, y0 : y1 + 2 * k], size).view(batch, num_objects, size * size, -1)
        masked = torch.where(member > 0, dist[:, None], torch.ones_like(dist[:, None]))
        out[:, :, y0:y1] = masked.amin(2).view(batch, num_objects, y1 - y0, width)
    return out


def tf_shifted_local(query, previous, labels, num_objects, k):
    """FEELVOS TF fallback: distance maps of the 961 shifted slices stacked, then per-object masked min
    (written with one reused difference buffer, so that the loop does not churn the allocator)."""
    batch, channels, height, width = query.shape
    size = 2 * k + 1
    padded = F.pad(previous, (k, k, k, k))  # padded positions carry the IGNORE label
    padded_labels = F.pad(labels, (k, k, k, k), value=IGNORE)
    dist = query.new_empty((batch, size * size, height, width))
    stacked_labels = labels.new_empty((batch, size * size, height, width))
    diff = torch.empty_like(query)
    for i, (dy, dx) in enumerate((dy, dx) for dy in range(size) for dx in range(size)):
        torch.sub(query, padded[:, :, dy : dy + height, dx : dx + width], out=diff)
        torch.sum(diff.square_(), 1, out=dist[:, i])
        stacked_labels[:, i] = padded_labels[:, dy : dy + height, dx : dx + width]
    dist = torch.tanh(dist / 2)
    out = [torch.where(stacked_labels == o, dist, 1.0).amin(1) for o in range(num_objects)]
    return torch.stack(out, 1)


def cdist_global(query, reference, labels, num_objects):
    """Full-matrix global matching: torch.cdist to every reference pixel of each object, then min."""
    batch, channels = query.shape[:2]
    out = query.new_ones((batch, num_objects, *query.shape[2:]))
    for b in range(batch):
        q = query[b].reshape(channels, -1).T
        r = reference[b].reshape(channels, -1).T
        flat = labels[b].reshape(-1)
        for o in range(num_objects):
            if bool((flat == o).any()):
                sq = torch.cdist(q, r[flat == o]).square_().amin(1)
                out[b, o] = torch.tanh(sq / 2).view(query.shape[2:])
    return out


# ---------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> tuple[list[Row], dict]:
    device, quick = args.device, args.quick
    info = machine(device)
    rows: list[Row] = []

    def add(op, case, method, fn, repeats, ours=None, note=""):
        """Measure ``fn``; baseline rows (``ours`` given) get a speed-up and a diff against it."""
        t, mem, out = measure(fn, device, repeats)
        speedup, diff = 1.0, 0.0
        if ours is not None:
            speedup, diff = t / ours[0], float((out.float() - ours[2].float()).abs().max())
        rows.append(Row(op, case, method, t, mem, speedup, diff, note))
        print(
            f"{op:12s} {case:34s} {method:30s} {t * 1e3:10.1f} ms {mem:9.1f} MB  x{speedup:6.1f}  diff {diff:.1e}",
            flush=True,
        )
        return t, mem, out

    # FEELVOS matching at DAVIS 480p, stride 4
    height, width, channels, k = (30, 54, 32, 7) if quick else (120, 214, 100, 15)
    band = height if quick else 4
    size = f"{height}x{width} C={channels}"
    query = embeddings((1, channels, height, width), device, 0)
    previous = embeddings((1, channels, height, width), device, 1)
    for n in (1, 3, 10):
        args = (query, previous, blob_labels(1, height, width, n, device, n), n)
        case = f"{size} k={k} N={n}"
        ours = add("local", case, "vidseg (auto)", partial(local_matching, *args, k), 3)
        note = f"bands of {band} rows" if band < height else ""
        add("local", case, "CFBI-style unfold", partial(cfbi_unfold_local, *args, k, band), 1, ours, note)
        add("local", case, "TF-style 961 shifted slices", partial(tf_shifted_local, *args, k), 1, ours)
    for n in (1, 3, 10):
        args = (query, previous, blob_labels(1, height, width, n, device, n), n)
        case = f"{size} all {height * width} ref px N={n}"
        ours = add("global", case, "vidseg (auto)", partial(global_matching, *args), 2)
        add("global", case, "cdist per object", partial(cdist_global, *args), 1, ours)

    # VPSNet fusion at P2 of a 1024x2048 image
    height, width, channels, r = (32, 64, 64, 4) if quick else (256, 512, 256, 4)
    x1 = embeddings((1, channels, height, width), device, 2)
    x2 = embeddings((1, channels, height, width), device, 3)
    case = f"{height}x{width} C={channels} r={r}"
    ours = add("correlation", case, "vidseg (auto)", partial(correlation, x1, x2, r), 3)
    baseline = partial(correlation, x1, x2, r, impl="reference")
    add("correlation", case, "81 shifted slices (reference)", baseline, 1, ours)
    flow = 5 * torch.randn((1, 2, height, width), generator=torch.Generator().manual_seed(4)).to(device)
    add(
        "flow_warp",
        f"{height}x{width} C={channels}",
        "vidseg (F.grid_sample)",
        partial(flow_warp, x1, flow),
        3,
    )
    info["load_average_end"] = os.getloadavg()
    info["command"] = "python -m bench.ops" + (" --quick" if quick else "") + f" --device {device}"
    return rows, info


def markdown(rows: list[Row], info: dict) -> str:
    lines = [
        "# vidseg.ops benchmark",
        "",
        f"`{info['command']}` on {info['cpu']} ({info['cpu_count']} cores, torch {info['torch']}, "
        f"{info['torch_threads']} threads, OMP_WAIT_POLICY={info['omp_wait_policy']}"
        f"{', ' + info['gpu'] if 'gpu' in info else ''}), {info['date']}.",
        f"Load average at start / end: {info['load_average_start'][0]:.2f} / "
        f"{info['load_average_end'][0]:.2f} (the machine is shared; timings are best-of-N).",
        "",
        "| op | case | method | time (ms) | peak extra memory (MB) | vidseg speed-up | max abs diff | note |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        speed = "" if r.method.startswith("vidseg") else f"{r.speedup:.1f}x"
        diff = "" if r.method.startswith("vidseg") else f"{r.max_abs_diff:.1e}"
        cells = [
            r.op,
            r.case,
            r.method,
            f"{r.time_s * 1e3:.1f}",
            f"{r.peak_extra_mb:.1f}",
            speed,
            diff,
            r.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with torch.no_grad():
        rows, info = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"ops-{args.device}" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.md").write_text(markdown(rows, info))
    (args.out / f"{stem}.json").write_text(json.dumps({"machine": info, "rows": [asdict(r) for r in rows]}, indent=2))
    print(f"wrote {args.out / stem}.md and .json")


if __name__ == "__main__":
    main()

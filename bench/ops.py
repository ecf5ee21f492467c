"""Benchmark vidseg.ops against the baselines of prior implementations, at the sizes of the issue.

    python -m bench.ops --out bench/results                       # CPU, full sizes: a few minutes on 2 cores
    python -m bench.ops --out bench/results --quick               # CPU, small sizes: seconds
    python -m bench.ops --out bench/results --device cuda --sweep # GPU: + ceilings, floors, kernel settings
    TRITON_INTERPRET=1 python -m bench.ops --smoke --out /tmp/x   # the GPU code path on CPU, tiny sizes

Cases (full sizes):
- local matching, DAVIS 480p at stride 4: 120x214, C=100, k=15 (31x31 window), 1/3/10 objects;
  baselines: CFBI-style F.unfold (run in bands of query rows: the whole-image unfold would need
  ~2 x 9.9 GB) and the TF FEELVOS fallback (loop over the 961 shifted slices).
- global matching, same frames, all 25,680 reference pixels; baseline: torch.cdist per object (the
  full query x reference matrix).
- correlation, r=4, C=256 at VPSNet P2 of a 1024x2048 image (256x512); baseline: loop over the 81
  shifted slices. With the median protocol (GPU, smoke) also forward+backward (its note: the ratio to the
  forward, goal <= 3x) and the backward alone (the gather kernel on CUDA; baseline: the old backward's 81
  shifted multiply-adds).
- flow warping, C=256 at 256x512 (F.grid_sample; no baseline).
On the GPU, matching and correlation also run with bf16 inputs, the raw Triton search is timed apart from
the whole op (which adds the exact-distance pass), and ``--sweep`` times a few kernel settings. A setting
the device cannot run (its shared memory, estimated before launching or reported by Triton at launch, or
a compilation error) is recorded as skipped, with what it needed, and the sweep goes on. ``--no-baselines``
leaves out the prior implementations (the GPU check's ops section).

Timing. CPU: best of N wall-clock runs (the machine is shared). GPU (and ``--smoke``): CUDA events around
each call, median over runs after warm-up, rotating over several input sets so that the 60 MB L2 does not
flatter (the spread column is (p75 - p25) / median). Peak extra memory: on CPU the process's peak resident
memory during the call minus its resident memory before it (VmHWM after resetting it through
/proc/self/clear_refs); on CUDA the allocator's peak during one call minus what was allocated before.

Floors (GPU): the larger of FLOPs / matrix rate and fewest bytes / copy bandwidth, with both ceilings
measured in the same run (a 2 GB device-to-device copy; 8192^3 bf16 and TF32 matmuls on random data). The
FLOPs are ops.md's: 2 * pairs * C (global: all pairs; local: the exact window; correlation: 81 offsets).
fp32 inputs are ranked with 3xTF32, so their floor is three TF32 passes. ``floor %`` = floor / time.

Embeddings are scaled so that distances are O(1) (tanh not saturated) and baseline outputs are compared
with the vidseg result ("max |diff|"). Writes ops-<cpu|gpu>[-quick|-smoke].md and .json under --out.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime
import importlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
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

correlation_module = importlib.import_module("vidseg.ops.correlation")  # the package exports the op by that name

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
    dtype: str = "float32"
    floor_s: float = 0.0  # 0 when no floor is known (CPU)
    spread: float = 0.0  # (p75 - p25) / median of the timed runs (GPU, --smoke)
    runs: int = 1
    kernel: dict | None = None  # registers, spills, shared memory, PTX facts of the Triton kernel (GPU)
    first_call_s: float = 0.0  # the first call alone: Triton JIT (or autotuning) included (GPU, --smoke)
    skipped: bool = False  # a setting the device could not run: time_s is NaN, the note says what it needed


def skipped_note(error: Exception) -> str:
    """What a setting needed, for a row that records it as skipped: "skipped: shared 327680 > 232448 B
    (...)" for an OutOfResources, else the error's first line."""
    required, limit = getattr(error, "required", None), getattr(error, "limit", None)
    if required is not None and limit is not None:
        what = str(getattr(error, "name", "resource")).replace("shared memory", "shared")
        how = ("estimated before launching" if getattr(error, "estimated", False) else "reported by Triton at launch")
        return f"skipped: {what} {required} > {limit} B ({how})"
    first = (str(error).strip().splitlines() or [""])[0]
    return f"skipped: {type(error).__name__}: {first[:200]}"


def skippable_errors() -> tuple[type[Exception], ...]:
    """Errors that mean "this kernel setting cannot run on this device" (Triton's, when it is installed)."""
    try:
        from triton.compiler.errors import CompilationError
        from triton.runtime.errors import OutOfResources
    except ImportError:
        return ()
    return (OutOfResources, CompilationError)


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
    """CPU: best-of-``repeats`` wall time (s), peak extra memory (MB) over the runs, and the last output.
    With repeats > 1 an unmeasured warm-up run comes first."""
    best, peak = float("inf"), 0.0
    out = fn() if repeats > 1 else None  # warm-up (lazy initialisation, allocator caches)
    for _ in range(repeats):
        out = None
        _release_free_heap()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
        before = _status_kb("VmRSS") * 1024
        start = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - start
        extra = _status_kb("VmHWM") * 1024 - before
        best, peak = min(best, elapsed), max(peak, extra / 2**20)
    return best, peak, out


class Clock:
    """Times one call: CUDA events on the GPU, perf_counter after a synchronise elsewhere."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def time(self, fn: Callable[[], object]) -> tuple[float, object]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3, out
        begin = time.perf_counter()
        out = fn()
        return time.perf_counter() - begin, out


def measure_median(
    fns: Sequence[Callable[[], torch.Tensor]], device: str, *, warmup: int, min_runs: int, max_runs: int,
    min_seconds: float,
) -> tuple[float, float, int, float, torch.Tensor, float]:
    """Median time over runs that rotate through ``fns`` (one callable per input set), after ``warmup``
    calls of each. Runs until ``min_runs`` and ``min_seconds`` are both reached, or ``max_runs``.

    Returns (median s, spread, runs, peak extra MB of one call, output of fns[0], first call s: JIT included)."""
    clock = Clock(device)
    first, out = clock.time(fns[0])
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[float] = []
    while len(times) < max_runs and (len(times) < min_runs or sum(times) < min_seconds):
        elapsed, _ = clock.time(fns[len(times) % len(fns)])
        times.append(elapsed)
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fns[0]()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        out, peak = fns[0](), 0.0
    median = statistics.median(times)
    if len(times) >= 4:
        q = statistics.quantiles(times, n=4)
        spread = (q[2] - q[0]) / median
    else:
        spread = (max(times) - min(times)) / median
    return median, spread, len(times), peak, out, first


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
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(), sm_count=props.multi_processor_count,
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    capability=".".join(map(str, torch.cuda.get_device_capability())))
    return info


def ceilings(device: str, smoke: bool) -> dict:
    """Measured copy bandwidth (bytes read + written per second) and bf16 / TF32 matmul rates (FLOP/s)."""
    clock = Clock(device)
    g = torch.Generator(device=device).manual_seed(0)
    floats = (1 << 18) if smoke else (1 << 29)  # 2 GB of fp32 on the GPU
    src = torch.rand(floats, device=device, generator=g)
    dst = torch.empty_like(src)
    runs = 3 if smoke else 10
    copy = [clock.time(partial(dst.copy_, src))[0] for _ in range(runs + 1)][1:]
    src = dst = None  # free 4 GB before the matmuls
    n = 128 if smoke else 8192
    result = {"copy_bytes_per_s": 2 * floats * 4 / statistics.median(copy), "matmul_n": n}
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True)):
        a = torch.randn(n, n, device=device, generator=g).to(dtype)
        b = torch.randn(n, n, device=device, generator=g).to(dtype)
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            times = [clock.time(partial(torch.matmul, a, b))[0] for _ in range(runs + 2)][2:]
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved
        result[f"{name}_flop_per_s"] = 2 * n**3 / statistics.median(times)
        # the global-matching shape as one matmul (25,680 x 128 x 25,680): what the pair matrix alone costs
        p = 256 if smoke else 25680
        a = torch.randn(p, 128, device=device, generator=g).to(dtype)
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            times = [clock.time(partial(torch.matmul, a, a.T))[0] for _ in range(runs + 2)][2:]
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved
        result[f"{name}_pair_matrix_s"] = statistics.median(times)
        result["pair_matrix_n"] = p
        a = b = None
    return result


PTX: dict[str, str] = {}  # "<kernel> <dtype>" -> PTX of its first launch with the default settings


def keep_ptx(name: str, dtype: str) -> None:
    from vidseg.ops import triton_kernels as tk

    handle = tk.LAST_COMPILED.get(name)
    ptx = (getattr(handle, "asm", None) or {}).get("ptx") if handle is not None else None
    if ptx and f"{name} {dtype}" not in PTX:
        PTX[f"{name} {dtype}"] = ptx


def kernel_report(name: str) -> dict | None:
    """Registers, spills, shared memory and PTX facts of the last launch of a Triton kernel (CUDA only)."""
    try:
        from vidseg.ops import triton_kernels as tk
    except ImportError:
        return None
    handle = tk.LAST_COMPILED.get(name)
    setting = tk.LAST_CONFIG.get(name) or {}
    if handle is None:
        # the interpreter compiles nothing: the setting and the estimate are all there is
        return {"shared_estimate": setting.get("shared_estimate"), "num_stages": setting.get("num_stages")} \
            if setting else None
    report = {"shared_estimate": setting.get("shared_estimate"), "num_stages": setting.get("num_stages")}
    for key in ("n_regs", "n_spills"):
        report[key] = getattr(handle, key, None)
    metadata = getattr(handle, "metadata", None)
    report["shared_bytes"] = getattr(metadata, "shared", None)
    report["num_warps"] = getattr(metadata, "num_warps", None)
    ptx = (getattr(handle, "asm", {}) or {}).get("ptx", "")
    report["wgmma"] = ptx.count("wgmma.mma_async")
    report["mma_sync"] = ptx.count("mma.sync")
    lines = ptx.splitlines()
    report["cp_async_16B"] = sum(1 for line in lines if "cp.async" in line and line.rstrip(";").endswith(", 16"))
    report["cp_async"] = ptx.count("cp.async.")
    report["ld_global_v4"] = ptx.count("ld.global.v4")
    return report


# ---------------------------------------------------------------------------------------------------
# inputs


def embeddings(shape: tuple[int, ...], device: str, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random embeddings with |x - y|^2 around 2 (unsaturated FEELVOS distances)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) / shape[1] ** 0.5).to(device=device, dtype=dtype)


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
# kernel settings tried by --sweep (defaults first); each list is small: one compile costs 1-3 s on the GPU,
# and the GPU check's sweep section has 70 s for all of them (24 rows)

SWEEP = {
    # RUNNING_MIN False: the per-tile min-with-index of the 2026-12-04 kernel; 128x128 at 2 stages needs
    # 262,144 B in fp32 (skipped before launching on an H200), 98,304 B in bf16
    "global": [{}, {"RUNNING_MIN": False}, {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8},
               {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2}],
    # the defaults are the 2026-12-04 best (BX 32, ROWS 2, RN 64, 4 warps); BX 128 / RN 256 needs 327,680 B
    # in fp32 at two stages and runs fitted to one
    "local_tc": [{}, {"BX": 32, "ROWS": 4, "RN": 64, "num_warps": 8}, {"BX": 16, "ROWS": 4, "RN": 64, "num_warps": 4},
                 {"BX": 128, "ROWS": 1, "RN": 256, "num_warps": 8}],
    "correlation": [{}, {"BX": 32, "BLOCK_K": 64}, {"BX": 64, "BLOCK_K": 64, "num_warps": 8}],
}


def forward_backward(op: Callable, *inputs: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A callable timing op(*inputs) with the backward pass to its first two inputs (training's cost)."""
    leaves = [x.detach().clone().requires_grad_(i < 2) for i, x in enumerate(inputs)]

    def run() -> torch.Tensor:
        with torch.enable_grad():
            out = op(*leaves)
            torch.autograd.grad(out.sum(), leaves[:2])
        return out.detach()

    return run


def _sizes(args) -> dict:
    if args.smoke:
        return {"match": (12, 20, 16, 3), "band": 12, "corr": (8, 20, 16, 2), "sets": 2, "objects": (1, 3)}
    if args.quick:
        return {"match": (30, 54, 32, 7), "band": 30, "corr": (32, 64, 64, 4), "sets": 1, "objects": (1, 3, 10)}
    return {"match": (120, 214, 100, 15), "band": 40 if args.device == "cuda" else 4, "corr": (256, 512, 256, 4),
            "sets": 4 if args.device == "cuda" else 1, "objects": (1, 3, 10)}


def run(args: argparse.Namespace) -> tuple[list[Row], dict]:
    device, impl = args.device, args.impl
    median = device == "cuda" or args.smoke  # GPU timing protocol (the smoke run exercises it on CPU)
    info = machine(device)
    if median:
        info["ceilings"] = ceilings(device, args.smoke)
    rates = info.get("ceilings")
    sizes = _sizes(args)
    rows: list[Row] = []
    fmt = ("{op:12s} {case:34s} {method:32s} {dtype:8s} {t:10.3f} ms {mem:9.1f} MB  x{speed:6.1f}  diff {diff:.1e}"
           "{floor}")

    def add(op, case, method, fns, *, ours=None, note="", dtype=torch.float32, floor=None, kernel=None, slow=False,
            may_skip=False):
        """Measure ``fns`` (one callable per input set); baseline rows (``ours`` given) get a speed-up and a
        max |diff| against it. ``slow``: fewer runs (baselines). ``may_skip``: a setting the device cannot
        run is recorded as a skipped row (time NaN, the note says what it needed) and None is returned;
        always so for Triton kernel rows (``kernel`` given): one setting must not cost the rest of the run."""
        if may_skip or kernel is not None:
            try:
                return measured(op, case, method, fns, ours=ours, note=note, dtype=dtype, floor=floor, kernel=kernel,
                                slow=slow)
            except skippable_errors() as error:
                row = Row(op, case, method, float("nan"), 0.0, 1.0, 0.0, skipped_note(error),
                          str(dtype).removeprefix("torch."), floor or 0.0, skipped=True)
                rows.append(row)
                write_results(args, rows, info)
                print(f"{op:12s} {case:34s} {method:32s} {row.dtype:8s} {row.note}", flush=True)
                return None
        return measured(op, case, method, fns, ours=ours, note=note, dtype=dtype, floor=floor, kernel=kernel, slow=slow)

    def measured(op, case, method, fns, *, ours, note, dtype, floor, kernel, slow):
        if median:
            if args.smoke:  # the interpreter: one run per input set exercises the protocol
                runs = dict(warmup=0, min_runs=2, max_runs=2, min_seconds=0.0)
            elif slow:
                runs = dict(warmup=1, min_runs=3, max_runs=5, min_seconds=0.0)
            else:
                runs = dict(warmup=3, min_runs=20, max_runs=200, min_seconds=0.3)
            t, spread, n, mem, out, first = measure_median(fns, device, **runs)
        else:
            t, mem, out = measure(fns[0], device, 1 if slow else 3)
            spread, n, first = 0.0, 1 if slow else 3, 0.0
        speedup, diff = 1.0, 0.0
        if ours is not None:
            speedup, diff = t / ours[0], float((out.float() - ours[2].float()).abs().max())
        floor_s = floor or 0.0
        row = Row(op, case, method, t, mem, speedup, diff, note, str(dtype).removeprefix("torch."), floor_s, spread, n,
                  kernel_report(kernel) if kernel else None, first)
        if kernel and not op.startswith("sweep"):
            keep_ptx(kernel, row.dtype)
        rows.append(row)
        write_results(args, rows, info)  # after every row: a run stopped at its time limit keeps what it measured
        floor_text = f"  floor {100 * floor_s / t:5.1f}%" if floor_s else ""
        print(fmt.format(op=op, case=case, method=method, dtype=row.dtype, t=t * 1e3, mem=mem, speed=speedup,
                         diff=diff, floor=floor_text), flush=True)
        return t, mem, out

    def floor_of(flops: float, nbytes: float, dtype: torch.dtype) -> float | None:
        if not rates:
            return None
        rate = rates["bf16_flop_per_s"] if dtype != torch.float32 else rates["tf32_flop_per_s"] / 3  # 3xTF32
        return max(flops / rate, nbytes / rates["copy_bytes_per_s"])

    # FEELVOS matching at DAVIS 480p, stride 4
    height, width, channels, k = sizes["match"]
    pixels = height * width
    size = f"{height}x{width} C={channels}"
    sets = sizes["sets"]
    dtypes = (torch.float32, torch.bfloat16) if median else (torch.float32,)
    queries = [embeddings((1, channels, height, width), device, 10 * s) for s in range(sets)]
    previous = [embeddings((1, channels, height, width), device, 10 * s + 1) for s in range(sets)]
    from_triton = impl == "triton" or (impl == "auto" and device == "cuda")
    if from_triton:
        from vidseg.ops import triton_kernels as tk
    objects = () if args.only_sweep else sizes["objects"]
    for n in objects:
        labels = [blob_labels(1, height, width, n, device, n + 100 * s) for s in range(sets)]
        case = f"{size} k={k} N={n}"
        window_pairs = pixels * (2 * k + 1) ** 2
        for dtype in dtypes:
            nbytes = 2 * pixels * channels * dtype.itemsize + pixels * (8 + 12 * n)
            floor = floor_of(2 * window_pairs * channels, nbytes, dtype)
            fns = [partial(local_matching, q.to(dtype), p.to(dtype), lab, n, k, impl=impl)
                   for q, p, lab in zip(queries, previous, labels, strict=True)]
            ours = add("local", case, f"vidseg ({impl})", fns, dtype=dtype, floor=floor, kernel="local_tc")
            if from_triton:
                search = [partial(tk.local_argmin, q.to(dtype), p.to(dtype), lab, n, k, 1)
                          for q, p, lab in zip(queries, previous, labels, strict=True)]
                add("local", case, "vidseg raw search (tc)", search, dtype=dtype, floor=floor, kernel="local_tc")
                if n == 3:
                    direct = [partial(tk.local_argmin, q.to(dtype), p.to(dtype), lab, n, k, 1, kernel="direct")
                              for q, p, lab in zip(queries, previous, labels, strict=True)]
                    add("local", case, "vidseg raw search (direct)", direct, dtype=dtype, floor=floor,
                        kernel="local_direct")
            if median and n == 3:
                op = partial(local_matching, num_objects=n, max_distance=k, impl=impl)
                fns = [forward_backward(op, q.to(dtype), p.to(dtype), lab)
                       for q, p, lab in zip(queries, previous, labels, strict=True)]
                add("local", case, f"vidseg ({impl}) forward+backward", fns, dtype=dtype)
            if dtype != torch.float32 or args.no_baselines:
                continue
            args0 = (queries[0], previous[0], labels[0], n)
            band = sizes["band"]
            note = f"bands of {band} rows" if band < height else ""
            add("local", case, "CFBI-style unfold", [partial(cfbi_unfold_local, *args0, k, band)], ours=ours,
                note=note, slow=True)
            add("local", case, "TF-style 961 shifted slices", [partial(tf_shifted_local, *args0, k)], ours=ours,
                slow=True)
    for n in objects:
        labels = [blob_labels(1, height, width, n, device, n + 100 * s) for s in range(sets)]
        case = f"{size} all {pixels} ref px N={n}"
        for dtype in dtypes:
            nbytes = 2 * pixels * channels * dtype.itemsize + pixels * (8 + 12 * n)
            floor = floor_of(2 * pixels * pixels * channels, nbytes, dtype)
            fns = [partial(global_matching, q.to(dtype), p.to(dtype), lab, n, impl=impl)
                   for q, p, lab in zip(queries, previous, labels, strict=True)]
            ours = add("global", case, f"vidseg ({impl})", fns, dtype=dtype, floor=floor, kernel="global")
            if from_triton:
                search = [partial(tk.global_argmin, q.to(dtype), p.to(dtype), lab, n)
                          for q, p, lab in zip(queries, previous, labels, strict=True)]
                add("global", case, "vidseg raw search", search, dtype=dtype, floor=floor, kernel="global")
            if median and n == 3:
                op = partial(global_matching, num_objects=n, impl=impl)
                fns = [forward_backward(op, q.to(dtype), p.to(dtype), lab)
                       for q, p, lab in zip(queries, previous, labels, strict=True)]
                add("global", case, f"vidseg ({impl}) forward+backward", fns, dtype=dtype)
            if dtype == torch.float32 and not args.no_baselines:
                add("global", case, "cdist per object", [partial(cdist_global, queries[0], previous[0], labels[0], n)],
                    ours=ours, slow=True)

    # VPSNet fusion at P2 of a 1024x2048 image
    height, width, channels, r = sizes["corr"]
    pixels = height * width
    span2 = (2 * r + 1) ** 2
    x1s = [embeddings((1, channels, height, width), device, 20 + 2 * s) for s in range(sets)]
    x2s = [embeddings((1, channels, height, width), device, 21 + 2 * s) for s in range(sets)]
    case = f"{height}x{width} C={channels} r={r}"
    main_dtypes = () if args.only_sweep else dtypes
    for dtype in main_dtypes:
        nbytes = 2 * pixels * channels * dtype.itemsize + span2 * pixels * 4
        floor = floor_of(2 * pixels * span2 * channels, nbytes, dtype)
        fns = [partial(correlation, a.to(dtype), b.to(dtype), r, impl=impl) for a, b in zip(x1s, x2s, strict=True)]
        ours = add("correlation", case, f"vidseg ({impl})", fns, dtype=dtype, floor=floor, kernel="correlation")
        if median:
            op = partial(correlation, max_displacement=r, impl=impl)
            fns = [forward_backward(op, a.to(dtype), b.to(dtype)) for a, b in zip(x1s, x2s, strict=True)]
            both = add("correlation", case, f"vidseg ({impl}) forward+backward", fns, dtype=dtype)
            if both is not None and ours is not None:  # the goal: forward+backward <= 3x the forward
                rows[-1].note = f"{both[0] / ours[0]:.2f}x the forward"
            # the backward alone: the gather kernel on CUDA (two launches), else the CPU path's backward
            grads = [torch.randn((1, span2, height, width), generator=torch.Generator().manual_seed(40 + s)).to(device)
                     for s in range(sets)]
            backward = tk.correlation_grad if from_triton else correlation_module.correlation_backward
            fns = [partial(backward, g, a.to(dtype), b.to(dtype), r, True) for g, a, b in zip(grads, x1s, x2s,
                                                                                              strict=True)]
            # twice the forward's products; reads the grad and both inputs, writes both gradients
            nbytes = 4 * pixels * channels * dtype.itemsize + span2 * pixels * 4
            floor = floor_of(2 * 2 * pixels * span2 * channels, nbytes, dtype)
            add("correlation", case, f"vidseg ({impl}) backward", fns, dtype=dtype, floor=floor,
                kernel="correlation_grad" if from_triton else None)
            if dtype == torch.float32 and not args.no_baselines:
                add("correlation", case, "old backward (81 slices)",
                    [partial(correlation_module.correlation_backward_reference, grads[0], x1s[0], x2s[0], r, True)],
                    slow=True)
        if dtype == torch.float32 and not args.no_baselines:
            baseline = [partial(correlation, x1s[0], x2s[0], r, impl="reference")]
            add("correlation", case, "81 shifted slices (reference)", baseline, ours=ours, slow=True)
    flows = [5 * torch.randn((1, 2, height, width), generator=torch.Generator().manual_seed(4 + s)).to(device)
             for s in range(sets)]
    for dtype in main_dtypes:
        floor = floor_of(0.0, 2 * pixels * channels * dtype.itemsize + 2 * pixels * 4, dtype)
        fns = [partial(flow_warp, x.to(dtype), f) for x, f in zip(x1s, flows, strict=True)]
        add("flow_warp", f"{height}x{width} C={channels}", "vidseg (F.grid_sample)", fns, dtype=dtype, floor=floor)

    if args.ptx and PTX:
        args.ptx.write_text("".join(f"// ===== {name}\n{text}\n" for name, text in PTX.items()))
    if (args.sweep or args.only_sweep) and from_triton:
        sweep(args, rows, add, floor_of, sizes, queries, previous, x1s, x2s)
    info["load_average_end"] = os.getloadavg()
    flags = [f"--device {device}"] + [f"--{f.replace('_', '-')}" for f in ("quick", "smoke", "sweep", "only_sweep",
                                                                            "no_baselines") if getattr(args, f)]
    if impl != "auto":
        flags.append(f"--impl {impl}")
    info["command"] = "python -m bench.ops " + " ".join(flags)
    return rows, info


def sweep(args, rows, add, floor_of, sizes, queries, previous, x1s, x2s) -> None:
    """Time the raw Triton searches with a few kernel settings at N = 3, fp32 and bf16; fp32 also with
    single TF32 products (faster, less accurate: its arg-min agreement with 3xTF32 is reported)."""
    from vidseg.ops import triton_kernels as tk

    height, width, channels, k = sizes["match"]
    pixels = height * width
    n = 3
    labels = [blob_labels(1, height, width, n, args.device, n + 100 * s) for s in range(len(queries))]
    settings = {name: configs[:2] if args.smoke else configs for name, configs in SWEEP.items()}
    for dtype in (torch.float32, torch.bfloat16):
        nbytes = 2 * pixels * channels * dtype.itemsize + pixels * (8 + 12 * n)
        cases = [
            ("local_tc", f"{height}x{width} C={channels} k={k} N={n}", 2 * pixels * (2 * k + 1) ** 2 * channels,
             lambda q, p, lab, cfg, d=dtype: partial(tk.local_argmin, q.to(d), p.to(d), lab, n, k, 1, kernel="tc",
                                                      config=cfg)),
            ("global", f"{height}x{width} C={channels} N={n}", 2 * pixels * pixels * channels,
             lambda q, p, lab, cfg, d=dtype: partial(tk.global_argmin, q.to(d), p.to(d), lab, n, config=cfg)),
        ]
        for kernel, case, flops, make in cases:
            floor = floor_of(flops, nbytes, dtype)
            for cfg in settings[kernel]:
                fns = [make(q, p, lab, cfg) for q, p, lab in zip(queries, previous, labels, strict=True)]
                add(f"sweep {kernel}", case, json.dumps(cfg) if cfg else "defaults", fns, dtype=dtype, floor=floor,
                    kernel=kernel, may_skip=True)
            if dtype == torch.float32:
                saved = tk.FP32_PRECISION
                try:
                    reference = make(queries[0], previous[0], labels[0], None)()
                    tk.FP32_PRECISION = "tf32"
                    fns = [make(q, p, lab, None) for q, p, lab in zip(queries, previous, labels, strict=True)]
                    result = add(f"sweep {kernel}", case, "defaults, single TF32", fns, dtype=dtype, floor=floor,
                                 kernel=kernel, may_skip=True)
                except skippable_errors() as error:  # the defaults themselves cannot run: already recorded above
                    print(f"sweep {kernel}: single TF32 row left out ({skipped_note(error)})", flush=True)
                    result = None
                finally:
                    tk.FP32_PRECISION = saved
                if result is not None:
                    fast = result[2]
                    rows[-1].note = f"arg-min agreement with 3xTF32: {float((fast == reference).double().mean()):.4f}"
    height, width, channels, r = sizes["corr"]
    pixels = height * width
    for dtype in (torch.float32, torch.bfloat16):
        nbytes = 2 * pixels * channels * dtype.itemsize + (2 * r + 1) ** 2 * pixels * 4
        floor = floor_of(2 * pixels * (2 * r + 1) ** 2 * channels, nbytes, dtype)
        for cfg in settings["correlation"]:
            fns = [partial(tk.correlation_sum, a.to(dtype), b.to(dtype), r, config=cfg) for a, b in zip(x1s, x2s,
                                                                                                     strict=True)]
            add("sweep correlation", f"{height}x{width} C={channels} r={r}", json.dumps(cfg) if cfg else "defaults",
                fns, dtype=dtype, floor=floor, kernel="correlation", may_skip=True)


def markdown(rows: list[Row], info: dict) -> str:
    where = info.get("gpu") or info["cpu"]
    versions = f"torch {info['torch']}" + (f", triton {info['triton']}" if "triton" in info else "")
    lines = [
        "# vidseg.ops benchmark",
        "",
        f"`{info['command']}` on {where} ({info['cpu_count']} CPU cores, {versions}, "
        f"{info['torch_threads']} threads, OMP_WAIT_POLICY={info['omp_wait_policy']}), {info['date']}.",
        f"Load average at start / end: {info['load_average_start'][0]:.2f} / "
        f"{info['load_average_end'][0]:.2f}.",
    ]
    if "ceilings" in info:
        c = info["ceilings"]
        lines.append(
            f"Measured ceilings: copy {c['copy_bytes_per_s'] / 1e12:.2f} TB/s (read + write), matmul "
            f"{c['bf16_flop_per_s'] / 1e12:.0f} TFLOP/s bf16, {c['tf32_flop_per_s'] / 1e12:.0f} TFLOP/s TF32 "
            f"({c['matmul_n']}^3). Times are medians of rotated inputs after warm-up (CUDA events)."
        )
    else:
        lines.append("Times are best-of-N wall clock (the machine is shared).")
    lines += [
        "",
        "| op | case | method | dtype | time (ms) | spread | first call (ms) | peak extra memory (MB) | "
        "vidseg speed-up | max abs diff | floor % | note |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        baseline = not (r.method.startswith("vidseg") or r.op.startswith("sweep"))
        cells = [
            r.op,
            r.case,
            r.method,
            r.dtype,
            "skipped" if r.skipped else f"{r.time_s * 1e3:.3f}" if r.time_s < 0.01 else f"{r.time_s * 1e3:.1f}",
            f"{100 * r.spread:.0f}%" if r.runs > 3 else "",
            f"{r.first_call_s * 1e3:.0f}" if r.first_call_s else "",
            f"{r.peak_extra_mb:.1f}",
            f"{r.speedup:.1f}x" if baseline else "",
            f"{r.max_abs_diff:.1e}" if baseline else "",
            f"{100 * r.floor_s / r.time_s:.1f}" if r.floor_s and not r.skipped else "",
            r.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    kernels = [r for r in rows if r.kernel]
    if kernels:
        lines += ["", "Triton kernels (last launch of each row): registers, spills, shared memory (compiled, and "
                  "vidseg's estimate before launching), stages after fitting, PTX instruction counts.", "",
                  "| op | method | dtype | regs | spills | shared B | estimate B | stages | warps | wgmma | mma.sync | "
                  "cp.async 16 B | ld.global.v4 |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in kernels:
            k = r.kernel
            keys = ("n_regs", "n_spills", "shared_bytes", "shared_estimate", "num_stages", "num_warps", "wgmma",
                    "mma_sync", "cp_async_16B", "ld_global_v4")
            cells = [r.op, r.method, r.dtype] + [k.get(key, "") for key in keys]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, GPU timing protocol (for TRITON_INTERPRET=1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--impl", default="auto", choices=("auto", "cpu", "triton"))
    parser.add_argument("--sweep", action="store_true", help="also time a few Triton kernel settings")
    parser.add_argument("--only-sweep", action="store_true", help="only the kernel settings (a separate GPU section)")
    parser.add_argument("--no-baselines", action="store_true", help="leave out the prior implementations")
    parser.add_argument("--ptx", type=Path, help="write the PTX of the default-setting Triton kernels here (GPU)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with torch.no_grad():
        rows, info = run(args)
    stem = write_results(args, rows, info)
    print(f"wrote {args.out / stem}.md and .json")


def write_results(args: argparse.Namespace, rows: list[Row], info: dict) -> str:
    """ops-<cpu|gpu>[-smoke|-quick][-sweep].md and .json under args.out; returns the stem."""
    args.out.mkdir(parents=True, exist_ok=True)
    stem = ("ops-gpu" if args.device == "cuda" else "ops-cpu") + ("-smoke" if args.smoke else "-quick" if args.quick
                                                                  else "") + ("-sweep" if args.only_sweep else "")
    info = {**info, "load_average_end": info.get("load_average_end", os.getloadavg())}
    info.setdefault("command", "(running)")
    (args.out / f"{stem}.md").write_text(markdown(rows, info))
    (args.out / f"{stem}.json").write_text(json.dumps({"machine": info, "rows": [asdict(r) for r in rows]}, indent=2))
    return stem


if __name__ == "__main__":
    main()

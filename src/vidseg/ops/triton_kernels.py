"""Triton kernels (CUDA; CPU tensors under TRITON_INTERPRET=1, which must be set before this module is
imported). Each kernel fuses the products with their reduction in registers and never writes a pair
matrix; only arg-min indices (or the cost volume itself) reach memory. No host synchronisation.

- global matching: per (query block, object, batch) program, tl.dot of the query block (loaded once)
  against the object's label-sorted reference pixels (tensor cores; fp32 inputs use 3xTF32), ranking
  on |r|^2 - 2 q.r with a running elementwise (BLOCK_M, BLOCK_N) minimum and its indices, reduced across
  lanes once after the loop (``RUNNING_MIN``; a min-with-index per tile is the other setting). Extra
  memory: channel-padded channels-last copies
  of query and reference and the label-sorted reference, O(C*(H*W + Hr*Wr)).
- local matching: two kernels behind ``local_argmin``. "tc" (default, vidseg.ops.triton_local_tc):
  dot products of a query tile against the previous-frame rows of its window on tensor cores. "direct":
  per (row segment, row, batch x object group) program, fp32 differences over the window on CUDA
  cores. Extra memory: channels-last copies, O(C*H*W).
- correlation: per (row segment, row, batch) program, tl.dot of the query segment against each of the
  2r+1 reference rows (read in place, NCHW, any strides), then the 2r+1 displacements of each row are
  picked out of the product tile. Extra memory: none beyond the output.
- correlation backward: per (row segment, row, batch x channel chunk) program and gradient, a gather over
  the displacement window without atomics: grad x1 at p sums g[d, p] * x2[p + d]; grad x2 at q sums
  g[d, q - d] * x1[q - d]. For each of the 2r+1 rows, the banded (BX, RN) weight tile of the grad
  (nonzero on 2r+1 diagonals, read straight from the grad) times the (RN, channel chunk) row segment of the
  other input, on tensor cores; 1/C and the cast to the input's dtype are folded into the store. Extra
  memory: the two gradients only.

Ranking with |r|^2 - 2 q.r loses a few ulps of |q|^2 + |r|^2: fp32 inputs are centred first (every
squared distance is translation invariant; bf16/fp16 inputs are ranked on their exact values, as
re-rounding centred values would add error), and the exact distance of the chosen pair is recomputed
afterwards in :mod:`vidseg.ops._common`, so only near-ties closer than that can be swapped.

Exactness is tested in the interpreter at block-edge-crossing sizes (tests/ops/triton_checks.py) and on
CUDA by ``pytest -m cuda``; block sizes are defaults to be tuned on hardware (bench/gpu_check.py sweeps
a few).

Shared memory: before launching, each tensor-core wrapper estimates what its setting needs
(:func:`shared_memory_need`, calibrated on the H200 run of 2026-12-04) and lowers ``num_stages`` until it
fits the device's ``shared_memory_per_block_optin`` (the default setting then also halves its channel
chunk, for GPUs with less shared memory); a setting that does not fit raises :class:`KernelResourceError`
before launching, and an OutOfResources from Triton at launch is
re-raised as one, naming the kernel and the setting (bench.ops' sweep records such settings as skipped).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# Block sizes and launch settings; each wrapper takes ``config=`` overrides (tests shrink the blocks so
# small inputs cross every block edge, the GPU check sweeps them).
# RUNNING_MIN: keep an elementwise (BLOCK_M, BLOCK_N) minimum over the reference tiles and reduce across
# lanes once at the end (False: a min-with-index per tile, the 2026-12-04 kernel at 20-24% of its floor).
GLOBAL_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128, "num_warps": 4, "num_stages": 3, "RUNNING_MIN": True}
LOCAL_DIRECT_CONFIG = {"BLOCK_X": 32, "BLOCK_C": 64, "BLOCK_O": 16, "num_warps": 4, "num_stages": 2}
CORRELATION_CONFIG = {"BX": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 2}
# BX=32 -> a (32, 64) banded tile per row: 64 MACs per pixel and channel for 2r+1 = 9 useful (BX=64: 128)
CORRELATION_GRAD_CONFIG = {"BX": 32, "BLOCK_K": 64, "num_warps": 4, "num_stages": 2}
# fp32 operands of tl.dot: "tf32x3" ranks near fp32 accuracy; "tf32" is ~3x faster and ranks ~1000x
# worse (a benchmark option, not a default). The interpreter has neither: it computes in fp32 ("ieee").
FP32_PRECISION = os.environ.get("VIDSEG_TRITON_FP32_DOT", "tf32x3")

# Debug switch for tests and the GPU check: poison the raw outputs before each launch (arg-min -7,
# correlation NaN) and check after it that every element was written. Through the API an unwritten
# arg-min is indistinguishable from "nothing found" (negative values become -1).
CHECK_WRITES = os.environ.get("VIDSEG_TRITON_CHECK_WRITES") == "1"
ARG_POISON = -7

# Kernel name -> the compiled kernel of its last launch (CUDA only): registers, spills, shared memory
# and PTX for the GPU check's resource report.
LAST_COMPILED: dict[str, object] = {}


def merge_config(defaults: Mapping, overrides: Mapping | None) -> dict:
    cfg = dict(defaults)
    unknown = set(overrides or {}) - set(cfg)
    if unknown:
        raise ValueError(f"unknown kernel settings {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(overrides or {})
    return cfg


def dot_settings(dtype: torch.dtype) -> tuple[str, bool]:
    """(input_precision, upcast) for tl.dot on ``dtype`` operands.

    The interpreter's bf16 tl.dot reinterprets bits (wrong results): there, bf16 is upcast to fp32, which
    ranks the same (bf16 products are exact in fp32)."""
    if _INTERPRET:
        return "ieee", dtype == torch.bfloat16
    # input_precision only matters for fp32 operands; bf16/fp16 get Triton's default
    return (FP32_PRECISION if dtype == torch.float32 else "tf32"), False


# Kernel name -> the setting of its last launch (blocks, warps, stages after fitting, estimated shared bytes).
LAST_CONFIG: dict[str, dict] = {}


class KernelResourceError(OutOfResources):
    """A kernel setting the device cannot run: estimated before launching (``estimated``) or reported by
    Triton at launch. Names the kernel and its setting; an OutOfResources, so one ``except`` catches both."""

    def __init__(self, required, limit, name, *, kernel: str = "", config: Mapping | None = None,
                 estimated: bool = False) -> None:
        super().__init__(required, limit, name)
        self.kernel, self.config, self.estimated = kernel, dict(config or {}), estimated

    def __str__(self) -> str:
        how = "estimated before launching" if self.estimated else "reported by Triton at launch"
        return (f"{self.kernel} {self.config}: {self.name} {self.required} > {self.limit} B ({how}); lower the "
                "block sizes or num_stages")

    def __reduce__(self):
        return (_resource_error, (self.required, self.limit, self.name, self.kernel, self.config, self.estimated))


def _resource_error(required, limit, name, kernel, config, estimated):
    return KernelResourceError(required, limit, name, kernel=kernel, config=config, estimated=estimated)


def shared_memory_need(kernel: str, blocks: Mapping, dtype: torch.dtype, num_stages: int) -> int:
    """Bytes of shared memory a tensor-core kernel needs with these effective ``blocks`` (after channel
    chunking and RN capping), input ``dtype`` and ``num_stages``; an estimate made before launching.

    Calibrated on every setting the 2026-12-04 H200 run compiled (Triton 3.6; gpu_check.md's kernel table):
    - global: the query tile once, ``num_stages`` reference tiles, and with 3xTF32 two more (the split
      operands): fp32 64x64x128, 3 stages -> 196,608 B; bf16 -> 65,536 B.
    - local_tc: the query tile (ROWS*BX x BLOCK_K) and ``num_stages`` reference chunks (BLOCK_K x RN): fp32
      defaults 196,608 B, ROWS=1 163,840 B, BX=32/RN=64 98,304 B (ROWS=4: 131,072 B); the setting that
      failed (BX=128, RN=256, fp32) -> 327,680 B > 232,448 B.
    - correlation: query and reference chunk, and with 3xTF32 two reference-sized operands: fp32 defaults
      57,344 B, bf16 12,288 B.
    The interpreter upcasts bf16 but has no shared memory: the estimate is for the compiled kernel."""
    size = 4 if dtype == torch.float32 else torch.empty((), dtype=dtype).element_size()
    split = 2 if dtype == torch.float32 and FP32_PRECISION == "tf32x3" else 0
    bk = blocks["BLOCK_K"]
    if kernel == "global":
        return size * (blocks["BLOCK_M"] * bk + bk * blocks["BLOCK_N"] * (num_stages + split))
    if kernel == "local_tc":
        return size * (blocks["ROWS"] * blocks["BX"] * bk + bk * blocks["RN"] * num_stages)
    if kernel == "correlation":
        return size * (bk * blocks["BX"] + bk * blocks["RN"]) + (4 * split * bk * blocks["RN"])
    if kernel == "correlation_grad":
        # not yet calibrated: by analogy with the forward, the banded weight tile (BX, RN) plays the query
        # (fp32 for fp32/fp16 inputs, bf16 hi + lo for bf16) and the row segment (RN, BLOCK_K) the reference,
        # with two reference-sized split operands under 3xTF32 (fp16 inputs are upcast to fp32 operands)
        size = 2 if dtype == torch.bfloat16 else 4
        parts = 2 if dtype == torch.bfloat16 else 1
        split = 2 if dtype != torch.bfloat16 and FP32_PRECISION == "tf32x3" else 0
        band = blocks["BX"] * blocks["RN"]
        return size * (parts * band + bk * blocks["RN"]) + 4 * split * bk * blocks["RN"]
    raise ValueError(f"no shared-memory model for kernel {kernel!r} (global, local_tc, correlation, correlation_grad)")


_LIMITS: dict[int, int] = {}


def shared_memory_limit(device: torch.device | str) -> int | None:
    """The device's opt-in shared memory per block in bytes (232,448 on an H100/H200), None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda" or _INTERPRET:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _LIMITS:
        props = torch.cuda.get_device_properties(index)
        _LIMITS[index] = int(getattr(props, "shared_memory_per_block_optin", 0) or props.shared_memory_per_block)
    return _LIMITS[index]


def fit_stages(kernel: str, blocks: Mapping, dtype: torch.dtype, num_stages: int, limit: int | None) -> tuple[int, int]:
    """(num_stages, estimated bytes): the most stages up to ``num_stages`` whose shared memory fits ``limit``
    (no limit: unchanged). Raises KernelResourceError (before any launch) when one stage does not fit."""
    need = shared_memory_need(kernel, blocks, dtype, num_stages)
    if limit is None:
        return num_stages, need
    stages = num_stages
    while need > limit and stages > 1:
        stages -= 1
        need = shared_memory_need(kernel, blocks, dtype, stages)
    if need > limit:
        raise KernelResourceError(need, limit, "shared memory", kernel=kernel,
                                  config={**blocks, "num_stages": num_stages, "dtype": str(dtype)}, estimated=True)
    return stages, need


def fit_setting(kernel: str, blocks: Mapping, dtype: torch.dtype, num_stages: int, limit: int | None, *,
                shrink_channels: bool = False) -> tuple[dict, int, int]:
    """(blocks, num_stages, estimated bytes) that fit ``limit``: fewer stages first (:func:`fit_stages`);
    then, with ``shrink_channels`` (the default setting, not one asked for), the channel chunk BLOCK_K halved
    down to 16 (e.g. global fp32 on a GPU with 99 KB per block). Raises the first KernelResourceError."""
    blocks = dict(blocks)
    first = None
    while True:
        try:
            stages, need = fit_stages(kernel, blocks, dtype, num_stages, limit)
            return blocks, stages, need
        except KernelResourceError as error:
            first = first or error
            if not shrink_channels or blocks["BLOCK_K"] <= 16:
                raise first from None
            blocks["BLOCK_K"] //= 2


def launch(name: str, kernel, grid, *args, num_warps: int, num_stages: int, shared_estimate: int | None = None,
           **meta) -> None:
    """Launch ``kernel`` (records its setting in LAST_CONFIG, its compiled handle in LAST_COMPILED on CUDA);
    an OutOfResources from Triton is re-raised as KernelResourceError naming the kernel and setting."""
    setting = {k: v for k, v in meta.items() if isinstance(v, (int, bool))}  # the constexpr sizes and switches
    setting.update(num_warps=num_warps, num_stages=num_stages)
    LAST_CONFIG[name] = {**setting, "shared_estimate": shared_estimate}
    try:
        handle = kernel[grid](*args, num_warps=num_warps, num_stages=num_stages, **meta)
    except KernelResourceError:
        raise
    except OutOfResources as error:
        raise KernelResourceError(error.required, error.limit, error.name, kernel=name, config=setting) from error
    if not _INTERPRET:
        LAST_COMPILED[name] = handle


def channel_block(channels: int, block_k: int) -> tuple[int, int]:
    """(channel chunk, padded channel count): the chunk is a power of two >= 16 (tl.dot's minimum) and at
    most ``block_k``; channels are zero-padded to a multiple of it (aligned rows, no masked chunk)."""
    chunk = min(block_k, max(16, triton.next_power_of_2(channels)))
    return chunk, triton.cdiv(channels, chunk) * chunk


def channels_last_padded(x: torch.Tensor, channels: int, dtype: torch.dtype, shift: torch.Tensor | None = None):
    """(B, C, H, W) any strides -> contiguous (B, H, W, ``channels``) in ``dtype``, channels >= C zero,
    minus ``shift`` (B, C) when given (in ``dtype``; only used for fp32)."""
    batch, c, height, width = x.shape
    out = x.new_empty((batch, height, width, channels), dtype=dtype)
    out[..., c:].zero_()
    out[..., :c].copy_(x.permute(0, 2, 3, 1))
    if shift is not None:
        out[..., :c] -= shift[:, None, None, :].to(dtype)
    return out


def centre(reference: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """Per-batch mean embedding (B, C) to subtract before ranking fp32 inputs, None otherwise.

    bf16/fp16 inputs are ranked on their exact values: re-rounding centred values would add error."""
    return reference.float().mean((2, 3)) if dtype == torch.float32 else None


def index_buffer(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    if CHECK_WRITES:
        return torch.full(shape, ARG_POISON, dtype=torch.int32, device=device)
    return torch.empty(shape, dtype=torch.int32, device=device)


def check_indices(arg: torch.Tensor, upper: int, name: str) -> None:
    """With CHECK_WRITES: every raw arg-min is -1 or in [0, upper) (a poison value left means unwritten)."""
    if not CHECK_WRITES:
        return
    bad = (arg < -1) | (arg >= upper)
    if bool(bad.any()):
        raise RuntimeError(
            f"{name}: {int(bad.sum())} of {arg.numel()} raw arg-min outputs are unwritten or outside [-1, {upper}) "
            f"(e.g. {arg[bad][:5].tolist()}; poison {ARG_POISON})"
        )


# Sizes are not specialised on (==1, %16): each distinct size would otherwise compile again (~1-3 s each on
# the GPU); strides of the correlation inputs are, so that unit x-strides give contiguous loads.
@triton.jit(do_not_specialize=["P", "R", "N"])
def _global_argmin_kernel(
    q_ptr,  # (B, P, CP) query, channels-last, zero-padded channels
    r_ptr,  # (B, R, CP) reference pixels sorted by label
    rn_ptr,  # (B, R) fp32 squared norms of r
    seg_ptr,  # (B, N + 1) int32: object o is rows [seg[o], seg[o + 1]) of the sorted order
    arg_ptr,  # (B, N, P) int32 output: row in the sorted order, -1 when the object has no pixel
    P,
    R,
    N,
    CP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    RUNNING_MIN: tl.constexpr,
):
    pid_m = tl.program_id(0)
    obj = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < P
    offs_k = tl.arange(0, BLOCK_K)
    start = tl.load(seg_ptr + b * (N + 1) + obj)
    end = tl.load(seg_ptr + b * (N + 1) + obj + 1)
    q_rows = q_ptr + (b * P + offs_m[:, None]) * CP
    if CP == BLOCK_K:  # one channel chunk: the query tile is loaded once for the whole segment
        q = tl.load(q_rows + offs_k[None, :], mask=m_mask[:, None], other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
    if RUNNING_MIN:
        # per lane (row, column): the best candidate among columns n0 + j; strict < keeps the first
        best2 = tl.full([BLOCK_M, BLOCK_N], float("inf"), tl.float32)
        arg2 = tl.full([BLOCK_M, BLOCK_N], -1, tl.int32)
    else:
        best = tl.full([BLOCK_M], float("inf"), tl.float32)
        arg = tl.full([BLOCK_M], -1, tl.int32)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < end
        r_cols = r_ptr + (b * R + offs_n[None, :]) * CP
        if CP == BLOCK_K:
            r = tl.load(r_cols + offs_k[:, None], mask=n_mask[None, :], other=0.0)
            if UPCAST:
                r = r.to(tl.float32)
            acc = tl.dot(q, r, input_precision=PRECISION)
        else:
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for k0 in range(0, CP, BLOCK_K):
                qk = tl.load(q_rows + k0 + offs_k[None, :], mask=m_mask[:, None], other=0.0)
                rk = tl.load(r_cols + k0 + offs_k[:, None], mask=n_mask[None, :], other=0.0)
                if UPCAST:
                    qk, rk = qk.to(tl.float32), rk.to(tl.float32)
                acc = tl.dot(qk, rk, acc, input_precision=PRECISION)
        # |q|^2 is the same for every candidate of a row: rank on |r|^2 - 2 q.r; columns past the
        # segment get +inf through their norm
        rn = tl.load(rn_ptr + b * R + offs_n, mask=n_mask, other=float("inf"))
        score = rn[None, :] - 2.0 * acc
        if RUNNING_MIN:
            better2 = score < best2
            best2 = tl.where(better2, score, best2)
            arg2 = tl.where(better2, offs_n[None, :], arg2)
        else:
            tile_min, tile_arg = tl.min(score, axis=1, return_indices=True)
            better = tile_min < best  # strict: the first of equal candidates wins, as in the reference
            best = tl.where(better, tile_min, best)
            arg = tl.where(better, tile_arg + n0, arg)
    if RUNNING_MIN:
        # one cross-lane reduction: the minimum, then the first (smallest) reference row reaching it, as in
        # the reference (lanes never updated hold inf and -1: an empty segment gives -1)
        best = tl.min(best2, axis=1)
        first = tl.where(best2 == best[:, None], arg2, 2147483647)
        arg = tl.min(first, axis=1)
    tl.store(arg_ptr + (b * N + obj) * P + offs_m, arg, mask=m_mask)


@triton.jit(do_not_specialize=["H", "W", "C", "N", "NUM_GROUPS", "K", "DIL"])
def _local_direct_kernel(
    q_ptr,  # (B, H, W, C) query, channels-last
    p_ptr,  # (B, H, W, C) previous frame, channels-last
    lab_ptr,  # (B, H, W) int32 labels, -1 = ignored
    arg_ptr,  # (B, N, H * W) int32 output: flat index into H * W, -1 when nothing is in the window
    H,
    W,
    C,
    N,
    NUM_GROUPS,
    K,
    DIL,
    BLOCK_X: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    pid_x = tl.program_id(0)
    y = tl.program_id(1)
    b = (tl.program_id(2) // NUM_GROUPS).to(tl.int64)
    group = tl.program_id(2) % NUM_GROUPS
    xs = pid_x * BLOCK_X + tl.arange(0, BLOCK_X)
    x_in = xs < W
    objs = group * BLOCK_O + tl.arange(0, BLOCK_O)
    best = tl.full([BLOCK_X, BLOCK_O], float("inf"), tl.float32)
    arg = tl.full([BLOCK_X, BLOCK_O], -1, tl.int32)
    for dy in range(-K, K + 1):
        ry = y + dy * DIL
        if (ry >= 0) & (ry < H):
            for dx in range(-K, K + 1):
                rx = xs + dx * DIL
                valid = x_in & (rx >= 0) & (rx < W)
                lab = tl.load(lab_ptr + (b * H + ry) * W + rx, mask=valid, other=-1)
                sq = tl.zeros([BLOCK_X], tl.float32)
                for c0 in range(0, C, BLOCK_C):
                    cs = c0 + tl.arange(0, BLOCK_C)
                    c_mask = cs < C
                    qv = tl.load(
                        q_ptr + ((b * H + y) * W + xs)[:, None] * C + cs[None, :],
                        mask=x_in[:, None] & c_mask[None, :],
                        other=0.0,
                    )
                    pv = tl.load(
                        p_ptr + ((b * H + ry) * W + rx)[:, None] * C + cs[None, :],
                        mask=valid[:, None] & c_mask[None, :],
                        other=0.0,
                    )
                    diff = qv.to(tl.float32) - pv.to(tl.float32)
                    sq += tl.sum(diff * diff, axis=1)
                update = (lab[:, None] == objs[None, :]) & (sq[:, None] < best)
                best = tl.where(update, sq[:, None], best)
                arg = tl.where(update, (ry * W + rx)[:, None], arg)
    out = arg_ptr + (b * N + objs[None, :]) * (H * W) + y * W + xs[:, None]
    tl.store(out, arg, mask=x_in[:, None] & (objs[None, :] < N))


@triton.jit(do_not_specialize=["C", "H", "W", "R", "sab", "sbb"])
def _correlation_kernel(
    a_ptr,  # (B, C, H, W) any strides
    b_ptr,  # (B, C, H, W) any strides
    out_ptr,  # (B, S * S, H, W) fp32 output, S = 2R + 1
    C,
    H,
    W,
    R,
    sab,
    sac,
    say,
    sax,
    sbb,
    sbc,
    sby,
    sbx,
    BX: tl.constexpr,
    RN: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_x = tl.program_id(0)
    y = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    span = 2 * R + 1
    i = tl.arange(0, BX)
    j = tl.arange(0, RN)
    offs_k = tl.arange(0, BLOCK_K)
    xs = pid_x * BX + i
    x_ok = xs < W
    # column j of the reference segment is x = x0 - R + j, so query i at displacement dx is column i + dx + R
    rx = pid_x * BX - R + j
    r_ok = (rx >= 0) & (rx < W) & (j < BX + 2 * R)
    for dyi in range(0, span):
        ry = y + dyi - R
        row_ok = (ry >= 0) & (ry < H)
        acc = tl.zeros([BX, RN], tl.float32)
        for c0 in range(0, C, BLOCK_K):
            cs = c0 + offs_k
            c_ok = cs < C
            qa = tl.load(
                a_ptr + b * sab + cs[:, None] * sac + y * say + xs[None, :] * sax,
                mask=c_ok[:, None] & x_ok[None, :],
                other=0.0,
            )
            rb = tl.load(
                b_ptr + b * sbb + cs[:, None] * sbc + ry * sby + rx[None, :] * sbx,
                mask=c_ok[:, None] & r_ok[None, :] & row_ok,
                other=0.0,
            )
            if UPCAST:
                qa, rb = qa.to(tl.float32), rb.to(tl.float32)
            acc = tl.dot(tl.trans(qa), rb, acc, input_precision=PRECISION)  # (BX, RN)
        for dxi in range(0, span):
            value = tl.sum(tl.where(j[None, :] == i[:, None] + dxi, acc, 0.0), axis=1)
            tl.store(out_ptr + ((b * span * span + dyi * span + dxi) * H + y) * W + xs, value, mask=x_ok)


@triton.jit(do_not_specialize=["C", "H", "W", "R", "NUM_CHUNKS", "sgb", "svb"])
def _correlation_grad_kernel(
    g_ptr,  # (B, S * S, H, W) gradient of the cost volume, fp32, any strides, S = 2R + 1
    v_ptr,  # (B, C, H, W) the other input (x2 for grad x1, x1 for grad x2), any strides
    out_ptr,  # (B, C, H, W) contiguous gradient, in its input's dtype
    C,
    H,
    W,
    R,
    NUM_CHUNKS,
    scale,
    sgb,
    sgd,
    sgy,
    sgx,
    svb,
    svc,
    svy,
    svx,
    BX: tl.constexpr,
    RN: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    SPLIT: tl.constexpr,
    GRAD_X2: tl.constexpr,
):
    pid_x = tl.program_id(0)
    y = tl.program_id(1)
    b = (tl.program_id(2) // NUM_CHUNKS).to(tl.int64)
    cs = (tl.program_id(2) % NUM_CHUNKS) * BLOCK_K + tl.arange(0, BLOCK_K)
    c_ok = cs < C
    span = 2 * R + 1
    i = tl.arange(0, BX)
    j = tl.arange(0, RN)
    xs = pid_x * BX + i
    x_ok = xs < W
    # column j of the row segment of v is x = x0 - R + j
    vx = pid_x * BX - R + j
    v_ok = (vx >= 0) & (vx < W) & (j < BX + 2 * R)
    if GRAD_X2:
        # q = xs[i] receives g[d, p] * x1[p] from p = q - d = vx[j]: dx + R = i - j + 2R, g read at p
        dxi = i[:, None] - j[None, :] + 2 * R
        gx = vx[None, :]
    else:
        # p = xs[i] receives g[d, p] * x2[p + d] from p + d = vx[j]: dx + R = j - i, g read at p
        dxi = j[None, :] - i[:, None]
        gx = xs[:, None]
    band = (dxi >= 0) & (dxi < span) & x_ok[:, None] & v_ok[None, :]
    acc = tl.zeros([BX, BLOCK_K], tl.float32)
    for dyi in range(0, span):
        if GRAD_X2:
            vy = y - (dyi - R)  # p's row; g is read there too
            gy = vy
        else:
            vy = y + dyi - R  # p + d's row; g is read at p's row
            gy = y
        row_ok = (vy >= 0) & (vy < H)
        weight = tl.load(
            g_ptr + b * sgb + (dyi * span + dxi) * sgd + gy * sgy + gx * sgx,
            mask=band & row_ok,
            other=0.0,
        )  # (BX, RN) fp32, nonzero on 2R + 1 diagonals
        rows = tl.load(
            v_ptr + b * svb + cs[None, :] * svc + vy * svy + vx[:, None] * svx,
            mask=v_ok[:, None] & c_ok[None, :] & row_ok,
            other=0.0,
        )  # (RN, BLOCK_K)
        if UPCAST:
            rows = rows.to(tl.float32)
        if SPLIT:
            # bf16 operands: the fp32 weights as hi + lo bf16 (~16 bits), products exact, fp32 accumulation
            hi = weight.to(tl.bfloat16)
            lo = (weight - hi.to(tl.float32)).to(tl.bfloat16)
            if UPCAST:
                acc = tl.dot(hi.to(tl.float32), rows, acc, input_precision=PRECISION)
                acc = tl.dot(lo.to(tl.float32), rows, acc, input_precision=PRECISION)
            else:
                acc = tl.dot(hi, rows, acc)
                acc = tl.dot(lo, rows, acc)
        else:
            acc = tl.dot(weight, rows, acc, input_precision=PRECISION)
    out = out_ptr + ((b * C + cs[None, :]) * H + y) * W + xs[:, None]
    # cast to the input's dtype: rounded to nearest even on the GPU (the interpreter truncates to bf16)
    tl.store(out, (acc * scale).to(out_ptr.dtype.element_ty), mask=x_ok[:, None] & c_ok[None, :])


def global_argmin(
    query: torch.Tensor,
    reference: torch.Tensor,
    ref_labels: torch.Tensor,
    num_objects: int,
    *,
    config: Mapping | None = None,
) -> torch.Tensor:
    """Global matching arg-min; same contract as :func:`vidseg.ops.reference.global_argmin`.

    ``config`` overrides :data:`GLOBAL_CONFIG`. Memory: channel-padded channels-last copies of query and
    reference, the label-sorted reference copy and its order, O(C*(H*W + Hr*Wr)).
    """
    cfg = merge_config(GLOBAL_CONFIG, config)
    batch, channels, height, width = query.shape
    pixels, length = height * width, reference.shape[2] * reference.shape[3]
    device = query.device
    if pixels == 0 or length == 0:
        return torch.full((batch, num_objects, pixels), -1, dtype=torch.long, device=device)
    dtype = query.dtype if query.dtype == reference.dtype else torch.float32
    block_k, _ = channel_block(channels, cfg["BLOCK_K"])
    blocks = {"BLOCK_M": cfg["BLOCK_M"], "BLOCK_N": cfg["BLOCK_N"], "BLOCK_K": block_k}
    blocks, stages, need = fit_setting("global", blocks, dtype, cfg["num_stages"], shared_memory_limit(device),
                                       shrink_channels=not config)
    block_k = blocks["BLOCK_K"]
    padded = triton.cdiv(channels, block_k) * block_k
    shift = centre(reference, dtype)
    q = channels_last_padded(query, padded, dtype, shift).view(batch, pixels, padded)
    r = channels_last_padded(reference, padded, dtype, shift).view(batch, length, padded)
    # label-sorted reference on the device (no host sync): ignored pixels (key N) sort last
    labels = ref_labels.reshape(batch, length)
    key = torch.where(labels < num_objects, labels, num_objects)
    order = torch.argsort(key, dim=1, stable=True)
    counts = torch.zeros((batch, num_objects + 1), dtype=torch.long, device=device)
    counts.scatter_add_(1, key, torch.ones_like(key))
    starts = torch.zeros((batch, num_objects + 1), dtype=torch.int32, device=device)
    starts[:, 1:] = counts[:, :num_objects].cumsum(1)
    r_sorted = r.gather(1, order[:, :, None].expand(batch, length, padded))
    rn = r_sorted.float().square().sum(2)
    arg = index_buffer((batch, num_objects, pixels), device)
    precision, upcast = dot_settings(dtype)
    grid = (triton.cdiv(pixels, cfg["BLOCK_M"]), num_objects, batch)
    launch(
        "global",
        _global_argmin_kernel,
        grid,
        q,
        r_sorted,
        rn,
        starts,
        arg,
        pixels,
        length,
        num_objects,
        CP=padded,
        BLOCK_M=cfg["BLOCK_M"],
        BLOCK_N=cfg["BLOCK_N"],
        BLOCK_K=block_k,
        PRECISION=precision,
        UPCAST=upcast,
        RUNNING_MIN=bool(cfg["RUNNING_MIN"]),
        num_warps=cfg["num_warps"],
        num_stages=stages,
        shared_estimate=need,
    )
    check_indices(arg, length, "global matching")
    arg = arg.long()
    return torch.where(arg >= 0, order.gather(1, arg.clamp(min=0).flatten(1)).view_as(arg), -1)


def local_argmin(
    query: torch.Tensor,
    previous: torch.Tensor,
    prev_labels: torch.Tensor,
    num_objects: int,
    max_distance: int,
    dilation: int,
    *,
    kernel: str | None = None,
    config: Mapping | None = None,
) -> torch.Tensor:
    """Local matching arg-min; same contract as :func:`vidseg.ops.reference.local_argmin`.

    ``kernel``: "tc" (tensor cores, :mod:`vidseg.ops.triton_local_tc`) or "direct" (fp32 differences);
    None reads ``VIDSEG_TRITON_LOCAL`` (default "tc"). ``config`` overrides that kernel's settings.
    """
    kernel = kernel or os.environ.get("VIDSEG_TRITON_LOCAL", "tc")
    if kernel == "tc":
        from vidseg.ops.triton_local_tc import local_argmin_tc

        return local_argmin_tc(query, previous, prev_labels, num_objects, max_distance, dilation, config=config)
    if kernel != "direct":
        raise ValueError(f"local matching kernel must be 'tc' or 'direct', got {kernel!r}")
    return local_argmin_direct(query, previous, prev_labels, num_objects, max_distance, dilation, config=config)


def local_argmin_direct(
    query: torch.Tensor,
    previous: torch.Tensor,
    prev_labels: torch.Tensor,
    num_objects: int,
    max_distance: int,
    dilation: int,
    *,
    config: Mapping | None = None,
) -> torch.Tensor:
    """Local matching arg-min with fp32 differences on CUDA cores (no ranking error).

    ``config`` overrides :data:`LOCAL_DIRECT_CONFIG`. Memory: channels-last copies, O(C*H*W); the running
    minimum lives in registers.
    """
    cfg = merge_config(LOCAL_DIRECT_CONFIG, config)
    batch, channels, height, width = query.shape
    dtype = query.dtype if query.dtype == previous.dtype else torch.float32
    q = channels_last_padded(query, channels, dtype)
    p = channels_last_padded(previous, channels, dtype)
    labels = torch.where(prev_labels < num_objects, prev_labels, -1).to(torch.int32).contiguous()
    arg = index_buffer((batch, num_objects, height * width), query.device)
    block_o = min(cfg["BLOCK_O"], triton.next_power_of_2(num_objects))
    groups = triton.cdiv(num_objects, block_o)
    block_c = min(cfg["BLOCK_C"], triton.next_power_of_2(channels))
    grid = (triton.cdiv(width, cfg["BLOCK_X"]), height, batch * groups)
    launch(
        "local_direct",
        _local_direct_kernel,
        grid,
        q,
        p,
        labels,
        arg,
        height,
        width,
        channels,
        num_objects,
        groups,
        max_distance,
        dilation,
        BLOCK_X=cfg["BLOCK_X"],
        BLOCK_C=block_c,
        BLOCK_O=block_o,
        num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"],
    )
    check_indices(arg, height * width, "local matching (direct)")
    return arg.long()


def correlation_sum(
    x1: torch.Tensor, x2: torch.Tensor, max_displacement: int, *, config: Mapping | None = None
) -> torch.Tensor:
    """Unnormalised cost volume (B, (2r+1)^2, H, W) fp32; same contract as the reference.

    Reads x1 and x2 in place with their strides (a copy only to unify mixed dtypes). ``config`` overrides
    :data:`CORRELATION_CONFIG`. Memory: the output only.
    """
    cfg = merge_config(CORRELATION_CONFIG, config)
    dtype = x1.dtype if x1.dtype == x2.dtype else torch.float32
    a, b = x1.to(dtype), x2.to(dtype)
    batch, channels, height, width = a.shape
    r = max_displacement
    span = 2 * r + 1
    shape = (batch, span * span, height, width)
    if CHECK_WRITES:
        out = torch.full(shape, float("nan"), dtype=torch.float32, device=a.device)
    else:
        out = torch.empty(shape, dtype=torch.float32, device=a.device)
    if out.numel() == 0:
        return out
    if channels == 0:
        return out.zero_()
    block_k, _ = channel_block(channels, cfg["BLOCK_K"])
    rn = max(16, triton.next_power_of_2(cfg["BX"] + 2 * r))
    precision, upcast = dot_settings(dtype)
    grid = (triton.cdiv(width, cfg["BX"]), height, batch)
    blocks = {"BX": cfg["BX"], "RN": rn, "BLOCK_K": block_k}
    blocks, stages, need = fit_setting("correlation", blocks, dtype, cfg["num_stages"], shared_memory_limit(a.device),
                                       shrink_channels=not config)
    block_k = blocks["BLOCK_K"]
    launch(
        "correlation",
        _correlation_kernel,
        grid,
        a,
        b,
        out,
        channels,
        height,
        width,
        r,
        *a.stride(),
        *b.stride(),
        BX=cfg["BX"],
        RN=rn,
        BLOCK_K=block_k,
        PRECISION=precision,
        UPCAST=upcast,
        num_warps=cfg["num_warps"],
        num_stages=stages,
        shared_estimate=need,
    )
    if CHECK_WRITES and bool(out.isnan().any()):
        raise RuntimeError(f"correlation: {int(out.isnan().sum())} of {out.numel()} outputs unwritten (NaN poison)")
    return out


def correlation_grad(
    grad_out: torch.Tensor,
    x1: torch.Tensor,
    x2: torch.Tensor,
    max_displacement: int,
    normalize: bool,
    *,
    config: Mapping | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the cost volume w.r.t. x1 and x2, two launches of one gather kernel (no atomics):
    grad_x1[p] = sum_d g[d, p] x2[p + d], grad_x2[q] = sum_d g[d, q - d] x1[q - d] (/ C if ``normalize``),
    zero-padded at the borders as in the forward.

    Args:
        grad_out: (B, (2r+1)^2, H, W) float, any strides (read as fp32).
        x1, x2: (B, C, H, W) float16/bfloat16/float32, any strides, read in place (a copy only to unify
            mixed dtypes).
    Returns:
        (grad_x1, grad_x2), contiguous, in x1's and x2's dtypes; accumulated in fp32 (fp32 and fp16 inputs:
        fp32 weights on 3xTF32; bf16 inputs: the weights split into bf16 hi + lo, two bf16 products).
    ``config`` overrides :data:`CORRELATION_GRAD_CONFIG`. Memory: the two gradients only.
    """
    cfg = merge_config(CORRELATION_GRAD_CONFIG, config)
    dtype = x1.dtype if x1.dtype == x2.dtype else torch.float32
    a, b = x1.to(dtype), x2.to(dtype)
    g = grad_out.to(torch.float32)
    batch, channels, height, width = a.shape
    r = max_displacement
    shape = (batch, channels, height, width)
    grads = []
    for like in (x1, x2):
        if CHECK_WRITES:
            grads.append(torch.full(shape, float("nan"), dtype=like.dtype, device=a.device))
        else:
            grads.append(torch.empty(shape, dtype=like.dtype, device=a.device))
    if a.numel() == 0:
        return grads[0], grads[1]
    block_k, _ = channel_block(channels, cfg["BLOCK_K"])
    rn = max(16, triton.next_power_of_2(cfg["BX"] + 2 * r))
    if dtype == torch.float16:
        # fp16 weights would flush small gradients (min subnormal 6e-8): fp32 weights, fp16 rows upcast
        # (exact in TF32, so 3xTF32 keeps fp32 accuracy)
        precision, upcast, split = ("ieee" if _INTERPRET else FP32_PRECISION), True, False
    else:
        precision, upcast = dot_settings(dtype)
        split = dtype == torch.bfloat16
    blocks = {"BX": cfg["BX"], "RN": rn, "BLOCK_K": block_k}
    blocks, stages, need = fit_setting("correlation_grad", blocks, dtype, cfg["num_stages"],
                                       shared_memory_limit(a.device), shrink_channels=not config)
    block_k = blocks["BLOCK_K"]
    chunks = triton.cdiv(channels, block_k)
    grid = (triton.cdiv(width, cfg["BX"]), height, batch * chunks)
    scale = 1.0 / channels if normalize else 1.0
    for grad_x2, (other, out) in enumerate(((b, grads[0]), (a, grads[1]))):
        launch(
            "correlation_grad",
            _correlation_grad_kernel,
            grid,
            g,
            other,
            out,
            channels,
            height,
            width,
            r,
            chunks,
            scale,
            *g.stride(),
            *other.stride(),
            BX=cfg["BX"],
            RN=rn,
            BLOCK_K=block_k,
            PRECISION=precision,
            UPCAST=upcast,
            SPLIT=split,
            GRAD_X2=bool(grad_x2),
            num_warps=cfg["num_warps"],
            num_stages=stages,
            shared_estimate=need,
        )
    if CHECK_WRITES:
        for name, grad in zip(("x1", "x2"), grads, strict=True):
            if bool(grad.isnan().any()):
                raise RuntimeError(f"correlation backward: {int(grad.isnan().sum())} of {grad.numel()} elements of "
                                   f"grad {name} unwritten (NaN poison)")
    return grads[0], grads[1]

"""Triton kernels (CUDA; CPU tensors under TRITON_INTERPRET=1, which must be set before this module is
imported). Each kernel fuses the distance (or product) computation with its reduction in registers
and never writes a pair matrix; only arg-min indices (or the cost volume itself) reach memory.

- global matching: per (query block, object, batch) program, tl.dot of a query block against the
  object's label-sorted reference pixels (tensor cores; fp32 inputs use 3xTF32, near-fp32 accuracy),
  running min/arg-min per query row. Extra memory: the label-sorted reference copy, O(C*Hr*Wr).
- local matching: per (row segment, row, batch x object group) program, a loop over the window with
  direct fp32 differences and a running per-object min in registers. Extra memory: channels-last
  copies, O(C*H*W).
- correlation: per (row segment, row, batch) program, a loop over the offsets with fp32 dot products
  over channels. Extra memory: channels-last copies, O(C*H*W).

These kernels have been checked for exactness in the interpreter only (see tests/ops); block sizes
are reasonable defaults, not tuned on hardware.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from vidseg.ops.cpu import _group_by_label

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _global_argmin_kernel(
    q_ptr,  # (B, P, C) query, channels-last
    qn_ptr,  # (B, P) fp32 squared norms
    r_ptr,  # (B, R, C) reference pixels sorted by label
    rn_ptr,  # (B, R) fp32 squared norms
    seg_ptr,  # (B, N + 1) int32 segment starts in the sorted order
    arg_ptr,  # (B, N, P) int32 output: row in the sorted order, -1 when the segment is empty
    P,
    R,
    C,
    N,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    obj = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < P
    start = tl.load(seg_ptr + b * (N + 1) + obj)
    end = tl.load(seg_ptr + b * (N + 1) + obj + 1)
    qn = tl.load(qn_ptr + b * P + offs_m, mask=m_mask, other=0.0)
    best = tl.full([BLOCK_M], float("inf"), tl.float32)
    arg = tl.full([BLOCK_M], -1, tl.int32)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < end
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < C
            q = tl.load(
                q_ptr + (b * P + offs_m[:, None]) * C + offs_k[None, :],
                mask=m_mask[:, None] & k_mask[None, :],
                other=0.0,
            )
            r = tl.load(
                r_ptr + (b * R + offs_n[None, :]) * C + offs_k[:, None],
                mask=n_mask[None, :] & k_mask[:, None],
                other=0.0,
            )
            if UPCAST:
                q, r = q.to(tl.float32), r.to(tl.float32)
            acc = tl.dot(q, r, acc, input_precision=PRECISION)
        rn = tl.load(rn_ptr + b * R + offs_n, mask=n_mask, other=0.0)
        d = qn[:, None] + rn[None, :] - 2.0 * acc
        d = tl.where(n_mask[None, :], d, float("inf"))
        tile_min = tl.min(d, axis=1)
        tile_arg = tl.argmin(d, axis=1).to(tl.int32) + n0
        better = tile_min < best
        best = tl.where(better, tile_min, best)
        arg = tl.where(better, tile_arg, arg)
    tl.store(arg_ptr + (b * N + obj) * P + offs_m, arg, mask=m_mask)


@triton.jit
def _local_argmin_kernel(
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


@triton.jit
def _correlation_kernel(
    a_ptr,  # (B, H, W, C) channels-last
    b_ptr,  # (B, H, W, C) channels-last
    out_ptr,  # (B, S * S, H, W) fp32 output, S = 2R + 1
    H,
    W,
    C,
    R,
    BLOCK_X: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_x = tl.program_id(0)
    y = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    xs = pid_x * BLOCK_X + tl.arange(0, BLOCK_X)
    x_in = xs < W
    span = 2 * R + 1
    for d in range(0, span * span):
        ry = y + d // span - R
        rx = xs + d % span - R
        valid = x_in & (rx >= 0) & (rx < W) & (ry >= 0) & (ry < H)
        acc = tl.zeros([BLOCK_X], tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cs = c0 + tl.arange(0, BLOCK_C)
            c_mask = cs < C
            av = tl.load(
                a_ptr + ((b * H + y) * W + xs)[:, None] * C + cs[None, :],
                mask=x_in[:, None] & c_mask[None, :],
                other=0.0,
            )
            bv = tl.load(
                b_ptr + ((b * H + ry) * W + rx)[:, None] * C + cs[None, :],
                mask=valid[:, None] & c_mask[None, :],
                other=0.0,
            )
            acc += tl.sum(av.to(tl.float32) * bv.to(tl.float32), axis=1)
        tl.store(out_ptr + ((b * span * span + d) * H + y) * W + xs, acc, mask=x_in)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> contiguous (B, H, W, C); fp64 is excluded by the dispatcher."""
    return x.permute(0, 2, 3, 1).contiguous()


def global_argmin(
    query: torch.Tensor, reference: torch.Tensor, ref_labels: torch.Tensor, num_objects: int
) -> torch.Tensor:
    """Global matching arg-min; same contract as :func:`vidseg.ops.reference.global_argmin`.

    Memory: label-sorted reference copy and channels-last query copy, O(C*(H*W + Hr*Wr)).
    """
    batch, channels, height, width = query.shape
    pixels = height * width
    dtype = query.dtype if query.dtype == reference.dtype else torch.float32
    q = _channels_last(query.to(dtype)).view(batch, pixels, channels)
    r = _channels_last(reference.to(dtype)).view(batch, -1, channels)
    # the cpu path's label-grouped layout, without group padding: object o of batch element b is
    # rows [starts[b, o], starts[b, o + 1]) of r_sorted[b]
    order, starts = _group_by_label(ref_labels.reshape(batch, -1), num_objects, group=1)
    length = order.shape[1]
    if length == 0:
        return torch.full((batch, num_objects, pixels), -1, dtype=torch.long, device=query.device)
    starts = torch.tensor(starts[:-1], device=query.device).view(batch, num_objects + 1)
    starts = (starts - torch.arange(batch, device=query.device)[:, None] * length).to(torch.int32).contiguous()
    index = order.clamp(min=0)[:, :, None].expand(batch, length, channels)
    r_sorted = r.gather(1, index).contiguous()
    qn = q.float().square().sum(2).contiguous()
    rn = r_sorted.float().square().sum(2).contiguous()
    arg = torch.empty((batch, num_objects, pixels), dtype=torch.int32, device=query.device)
    # The interpreter has no 3xTF32 and its bf16 tl.dot reinterprets bits (wrong results): there,
    # dot in fp32 instead (bf16 products are exact in fp32, so the ranking is the same).
    precision = "ieee" if _INTERPRET else "tf32x3"
    upcast = _INTERPRET and dtype == torch.bfloat16
    grid = (triton.cdiv(pixels, 64), num_objects, batch)
    _global_argmin_kernel[grid](
        q,
        qn,
        r_sorted,
        rn,
        starts,
        arg,
        pixels,
        length,
        channels,
        num_objects,
        BLOCK_M=64,
        BLOCK_N=64,
        BLOCK_K=32,
        PRECISION=precision,
        UPCAST=upcast,
    )
    arg = arg.long()
    return torch.where(arg >= 0, order.gather(1, arg.clamp(min=0).flatten(1)).view_as(arg), -1)


def local_argmin(
    query: torch.Tensor,
    previous: torch.Tensor,
    prev_labels: torch.Tensor,
    num_objects: int,
    max_distance: int,
    dilation: int,
) -> torch.Tensor:
    """Local matching arg-min; same contract as :func:`vidseg.ops.reference.local_argmin`.

    Memory: channels-last copies, O(C*H*W); the running minimum lives in registers.
    """
    batch, channels, height, width = query.shape
    dtype = query.dtype if query.dtype == previous.dtype else torch.float32
    q = _channels_last(query.to(dtype))
    p = _channels_last(previous.to(dtype))
    labels = torch.where(prev_labels < num_objects, prev_labels, -1).to(torch.int32).contiguous()
    arg = torch.empty((batch, num_objects, height * width), dtype=torch.int32, device=query.device)
    block_o = min(16, triton.next_power_of_2(num_objects))
    groups = triton.cdiv(num_objects, block_o)
    block_c = min(64, triton.next_power_of_2(channels))
    grid = (triton.cdiv(width, 32), height, batch * groups)
    _local_argmin_kernel[grid](
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
        BLOCK_X=32,
        BLOCK_C=block_c,
        BLOCK_O=block_o,
    )
    return arg.long()


def correlation_sum(x1: torch.Tensor, x2: torch.Tensor, max_displacement: int) -> torch.Tensor:
    """Unnormalised cost volume (B, (2r+1)^2, H, W) fp32; same contract as the reference.

    Memory: channels-last copies, O(C*H*W).
    """
    batch, channels, height, width = x1.shape
    dtype = x1.dtype if x1.dtype == x2.dtype else torch.float32
    a, b = _channels_last(x1.to(dtype)), _channels_last(x2.to(dtype))
    span = 2 * max_displacement + 1
    out = torch.empty((batch, span * span, height, width), dtype=torch.float32, device=x1.device)
    block_c = min(64, triton.next_power_of_2(channels))
    grid = (triton.cdiv(width, 32), height, batch)
    _correlation_kernel[grid](a, b, out, height, width, channels, max_displacement, BLOCK_X=32, BLOCK_C=block_c)
    return out

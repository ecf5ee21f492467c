"""FEELVOS local matching on tensor cores (Triton): the "tc" kernel behind
:func:`vidseg.ops.triton_kernels.local_argmin`.

A program owns a tile of ROWS x BX query pixels (M = ROWS * BX rows of a tl.dot, loaded once) and walks
the previous-frame rows its windows reach (ROWS + 2k of them). Each row is read as one contiguous
channels-last segment of BX + 2k pixels, in chunks of RN, and multiplied with the query tile:
S = Q . R^T (M x RN, tensor cores). Query pixel (r, i) sees column j of the segment iff
0 <= j - i <= 2k and its row is within k of the segment's row; per object of the program's group, a
masked min-with-index over the columns updates a running (M, objects) minimum in registers. Ranking
uses |r|^2 - 2 q.r (fp32 inputs centred first, as in global matching); the exact fp32 distance of the
chosen pair is recomputed by :mod:`vidseg.ops._common`.

Dilation d: a dilated window only visits pixels congruent to its centre modulo d, so the image splits
into d^2 residue classes, each an undilated problem on a strided sub-grid; the kernel addresses the
sub-grid in place (the class is part of the program id), no copy.

Work per query pixel: (ROWS + 2k) / ROWS rows x RN columns x C channels of MMA, about 3.3e10 FLOP at
DAVIS 480p / stride 4 / k = 15 with BX = 64, ROWS = 2 (ops.md: 5-12 us bf16 at the dense floor of the
exact window, ~60-100 us for this design); the defaults (BX = 32, RN = 64) halve the columns per row.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import triton
import triton.language as tl

from vidseg.ops.triton_kernels import (
    centre,
    channel_block,
    channels_last_padded,
    check_indices,
    dot_settings,
    fit_setting,
    index_buffer,
    launch,
    merge_config,
    shared_memory_limit,
)

# RN: columns per reference chunk (BX + 2k columns are walked in chunks of RN; next_pow2(BX + 2k) when
# larger than that is not needed). BLOCK_K: channel chunk (channels zero-padded to a multiple).
# Defaults: the best setting of the 2026-12-04 H200 sweep (fp32, N=3, k=15: 1.03 ms, 98,304 B of shared
# memory) against 1.68 ms for the former BX=64, ROWS=2, RN=128, 8 warps (255 registers, 184 spilled).
LOCAL_TC_CONFIG = {"BX": 32, "ROWS": 2, "RN": 64, "BLOCK_K": 128, "BLOCK_O": 16, "num_warps": 4, "num_stages": 2}


@triton.jit(do_not_specialize=["H", "W", "N", "K", "DIL", "NUM_GROUPS"])  # see triton_kernels
def _local_tc_kernel(
    q_ptr,  # (B, H, W, CP) query, channels-last, zero-padded channels
    p_ptr,  # (B, H, W, CP) previous frame, same layout
    pn_ptr,  # (B, H, W) fp32 squared norms of p
    lab_ptr,  # (B, H, W) int32 labels, -1 = ignored or not an object
    arg_ptr,  # (B, N, H * W) int32 output: flat index into H * W, -1 when nothing is in the window
    H,
    W,
    N,
    K,
    DIL,
    NUM_GROUPS,
    CP: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BX: tl.constexpr,
    ROWS: tl.constexpr,
    RN: tl.constexpr,
    BLOCK_O: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_x = tl.program_id(0)
    pid_y = tl.program_id(1)
    pid_z = tl.program_id(2)
    group = pid_z % NUM_GROUPS
    rest = pid_z // NUM_GROUPS
    cls = rest % (DIL * DIL)
    b = (rest // (DIL * DIL)).to(tl.int64)
    ay = cls // DIL  # residue class: full-image pixel (ay + DIL * y, ax + DIL * x) is sub-grid pixel (y, x)
    ax = cls % DIL
    h = (H - ay + DIL - 1) // DIL
    w = (W - ax + DIL - 1) // DIL
    y0 = pid_y * ROWS
    x0 = pid_x * BX

    m = tl.arange(0, ROWS * BX)
    i = m % BX
    qy = y0 + m // BX
    q_ok = (qy < h) & ((x0 + i) < w)
    q_pix = (b * H + ay + DIL * qy) * W + ax + DIL * (x0 + i)
    offs_k = tl.arange(0, BLOCK_K)
    q_rows = q_ptr + q_pix[:, None] * CP
    if CP == BLOCK_K:  # one channel chunk: the query tile stays in registers for the whole window
        q = tl.load(q_rows + offs_k[None, :], mask=q_ok[:, None], other=0.0)
        if UPCAST:
            q = q.to(tl.float32)

    o_lo = group * BLOCK_O
    o_hi = tl.minimum(N, o_lo + BLOCK_O)
    objs = o_lo + tl.arange(0, BLOCK_O)
    best = tl.full([ROWS * BX, BLOCK_O], float("inf"), tl.float32)
    arg = tl.full([ROWS * BX, BLOCK_O], -1, tl.int32)
    j = tl.arange(0, RN)
    seg_len = BX + 2 * K
    for ry in range(tl.maximum(y0 - K, 0), tl.minimum(y0 + ROWS + K, h)):
        row_ok = (ry - qy <= K) & (qy - ry <= K)  # (M,) query rows whose window reaches row ry
        full_ry = ay + DIL * ry
        for j0 in range(0, seg_len, RN):
            rx = x0 - K + j0 + j
            r_ok = (rx >= 0) & (rx < w) & (j0 + j < seg_len)
            r_pix = (b * H + full_ry) * W + ax + DIL * rx
            lab = tl.load(lab_ptr + r_pix, mask=r_ok, other=-1)
            # most chunks hold one or two objects: skip the products when none of this group is there
            if tl.max(((lab >= o_lo) & (lab < o_hi)).to(tl.int32), axis=0) > 0:
                r_cols = p_ptr + r_pix[None, :] * CP
                if CP == BLOCK_K:
                    r = tl.load(r_cols + offs_k[:, None], mask=r_ok[None, :], other=0.0)
                    if UPCAST:
                        r = r.to(tl.float32)
                    s = tl.dot(q, r, input_precision=PRECISION)
                else:
                    s = tl.zeros([ROWS * BX, RN], tl.float32)
                    for k0 in range(0, CP, BLOCK_K):
                        qk = tl.load(q_rows + k0 + offs_k[None, :], mask=q_ok[:, None], other=0.0)
                        rk = tl.load(r_cols + k0 + offs_k[:, None], mask=r_ok[None, :], other=0.0)
                        if UPCAST:
                            qk, rk = qk.to(tl.float32), rk.to(tl.float32)
                        s = tl.dot(qk, rk, s, input_precision=PRECISION)
                rn = tl.load(pn_ptr + r_pix, mask=r_ok, other=0.0)
                score = rn[None, :] - 2.0 * s
                dj = (j0 + j)[None, :] - i[:, None]  # = rx - qx + K
                window = (dj >= 0) & (dj <= 2 * K) & row_ok[:, None]
                for o in range(o_lo, o_hi):
                    if tl.max((lab == o).to(tl.int32), axis=0) > 0:
                        masked = tl.where(window & (lab[None, :] == o), score, float("inf"))
                        value, col = tl.min(masked, axis=1, return_indices=True)
                        # strict: rows and columns are visited in row-major order, so the first of equal
                        # candidates wins, as in the reference's loop over (dy, dx)
                        update = (objs[None, :] == o) & (value[:, None] < best)
                        flat = full_ry * W + ax + DIL * (x0 - K + j0 + col)
                        best = tl.where(update, value[:, None], best)
                        arg = tl.where(update, flat[:, None], arg)
    out_pix = (ay + DIL * qy) * W + ax + DIL * (x0 + i)
    out = arg_ptr + (b * N + objs[None, :]) * (H * W) + out_pix[:, None]
    tl.store(out, arg, mask=q_ok[:, None] & (objs[None, :] < N))


def local_argmin_tc(
    query: torch.Tensor,
    previous: torch.Tensor,
    prev_labels: torch.Tensor,
    num_objects: int,
    max_distance: int,
    dilation: int,
    *,
    config: Mapping | None = None,
) -> torch.Tensor:
    """Local matching arg-min on tensor cores; same contract as :func:`vidseg.ops.reference.local_argmin`.

    ``config`` overrides :data:`LOCAL_TC_CONFIG`. Memory: channel-padded channels-last copies of query and
    previous frame and the previous frame's norms, O(C*H*W); the running minimum lives in registers.
    """
    cfg = merge_config(LOCAL_TC_CONFIG, config)
    batch, channels, height, width = query.shape
    device = query.device
    dtype = query.dtype if query.dtype == previous.dtype else torch.float32
    k, d = max_distance, dilation
    bx, rows = cfg["BX"], cfg["ROWS"]
    rn = min(cfg["RN"], max(16, triton.next_power_of_2(bx + 2 * k)))
    block_k, _ = channel_block(channels, cfg["BLOCK_K"])
    blocks = {"BX": bx, "ROWS": rows, "RN": rn, "BLOCK_K": block_k}
    blocks, stages, need = fit_setting("local_tc", blocks, dtype, cfg["num_stages"], shared_memory_limit(device),
                                       shrink_channels=not config)
    block_k = blocks["BLOCK_K"]
    padded = triton.cdiv(channels, block_k) * block_k
    shift = centre(previous, dtype)
    q = channels_last_padded(query, padded, dtype, shift)
    p = channels_last_padded(previous, padded, dtype, shift)
    pn = p.float().square().sum(3)
    labels = torch.where(prev_labels < num_objects, prev_labels, -1).to(torch.int32).contiguous()
    arg = index_buffer((batch, num_objects, height * width), device)
    if arg.numel() == 0:
        return arg.long()
    block_o = min(cfg["BLOCK_O"], triton.next_power_of_2(num_objects))
    groups = triton.cdiv(num_objects, block_o)
    # the largest residue class is class (0, 0): ceil(H / d) x ceil(W / d)
    grid = (triton.cdiv(triton.cdiv(width, d), bx), triton.cdiv(triton.cdiv(height, d), rows), batch * d * d * groups)
    precision, upcast = dot_settings(dtype)
    launch(
        "local_tc",
        _local_tc_kernel,
        grid,
        q,
        p,
        pn,
        labels,
        arg,
        height,
        width,
        num_objects,
        k,
        d,
        groups,
        CP=padded,
        BLOCK_K=block_k,
        BX=bx,
        ROWS=rows,
        RN=rn,
        BLOCK_O=block_o,
        PRECISION=precision,
        UPCAST=upcast,
        num_warps=cfg["num_warps"],
        num_stages=stages,
        shared_estimate=need,
    )
    check_indices(arg, height * width, "local matching (tc)")
    return arg.long()

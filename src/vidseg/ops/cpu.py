"""Tiled matmul paths in plain PyTorch: the fast path on CPU (they also run on CUDA, e.g. for float64).

Matching ranks candidates with |y|^2 - 2 x.y (the |x|^2 term is constant per query pixel) computed by
a BLAS matmul over tiles (a chunk of local-matching tiles is one batched matmul), then reduces each
tile with an arg-min that makes one vectorised pass over it (``_segment_argmin``). Reference pixels
are grouped by label so that every object is a contiguous run of rows: one tile serves all objects
at once, whatever their number. The exact distance of the chosen pair is recomputed afterwards (see
:mod:`vidseg.ops._common`).

Working memory is set by ``vidseg.ops._common.TILE_BYTES`` (read at call time), never by (H*W)^2
or by the (2k+1)^2 * C window stack; each function's docstring states its bound.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidseg.ops import _common as common
from vidseg.ops._common import IGNORE_LABEL, PENALTY, compute_dtype

# Rows per block of the arg-min reduction; label groups are padded to a multiple of it.
GROUP = 16
# Query tile side of local matching (shrunk for large windows so one tile stays within TILE_BYTES).
LOCAL_TILE = 16
# Query tile side of correlation: the (side + 2r)^2 reference tile wastes (side+2r)^2 / (2r+1)^2
# of the matmul, 3.2x for side 8, r 4, while smaller tiles make BLAS inefficient.
CORRELATION_TILE = 8


def _first_index(values: torch.Tensor, target: torch.Tensor, dim: int) -> torch.Tensor:
    """Index along ``dim`` of the first entry equal to ``target`` (an exact element, <= all others).

    Float arithmetic only: ATen's arg-min along a non-last dim is not vectorised and ~20x slower than
    these three passes (sign of the difference is 0 only at the minimum).
    """
    n = values.shape[dim]
    shape = [1] * values.dim()
    shape[dim] = n
    position = torch.arange(n, dtype=values.dtype, device=values.device).view(shape)
    return torch.sub(values, target).sign_().mul_(n).add_(position).amin(dim).long()


def _segment_argmin(scores: torch.Tensor, starts: list[int], group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """First arg-min over the rows of each segment of a ranking tile.

    Args:
        scores: (n, M) float, n a multiple of ``group``.
        starts: N + 1 row offsets, multiples of ``group``, from 0 to n, delimiting N segments.
    Returns:
        value (N, M) and row (N, M) int64. An empty segment gives value PENALTY.
    Memory: one full pass over ``scores`` (a block-wise amin); everything else is (n/group + N*group) x M.
    """
    n, m = scores.shape
    device = scores.device
    num_blocks, num_segments = n // group, len(starts) - 1
    starts_t = torch.tensor(starts, device=device)
    segment_of_block = torch.repeat_interleave(
        torch.arange(num_segments, device=device),
        (starts_t[1:] - starts_t[:-1]) // group,
        output_size=num_blocks,
    )
    block_min = scores.view(num_blocks, group, m).amin(1)  # (n/group, M)
    seg_index = segment_of_block[:, None].expand(num_blocks, m)
    value = scores.new_full((num_segments, m), PENALTY).scatter_reduce_(0, seg_index, block_min, "amin")
    # first block of each segment holding the minimum, then the first row inside that block
    block_pos = torch.arange(num_blocks, dtype=scores.dtype, device=device)[:, None]
    key = torch.sub(block_min, value[segment_of_block]).sign_().mul_(num_blocks).add_(block_pos)
    block = scores.new_zeros((num_segments, m)).scatter_reduce_(0, seg_index, key, "amin", include_self=False)
    first_row = block.long() * group  # (N, M)
    rows = first_row[:, None, :] + torch.arange(group, device=device)[None, :, None]  # (N, group, M)
    flat = (rows * m + torch.arange(m, device=device)).clamp_(max=n * m - 1)  # empty segments: clamp
    candidates = scores.reshape(-1)[flat]
    return value, first_row + _first_index(candidates, value[:, None, :], 1)


def _group_by_label(labels: torch.Tensor, num_objects: int, group: int = GROUP) -> tuple[torch.Tensor, list[int]]:
    """Positions of each row's pixels grouped by label, for one ranking tile per row.

    Args:
        labels: (T, n) int64 in [0, N) or 255 (255 is dropped).
    Returns:
        order (T, L) int64 positions into the row (-1 = padding): label 0's pixels, then label 1's...,
        each group padded to a multiple of ``group``, rows padded to a common length L;
        starts: T * (N + 1) + 1 offsets into the flattened (T * L) rows delimiting, row after row,
        N label segments and one segment of trailing padding.
    """
    rows, n = labels.shape
    device = labels.device
    clipped = labels.clamp(max=num_objects)  # N: not an object
    counts = torch.zeros(rows, num_objects + 1, dtype=torch.long, device=device)
    counts = counts.scatter_add_(1, clipped, torch.ones_like(clipped))[:, :num_objects]
    padded = (counts + group - 1) // group * group
    padded_start = padded.cumsum(1) - padded
    used = padded.sum(1)
    length = int(used.max()) if rows else 0
    order = torch.argsort(clipped, dim=1, stable=True)
    label = clipped.gather(1, order).clamp_(max=num_objects - 1)
    rank = torch.arange(n, device=device) - (counts.cumsum(1) - counts).gather(1, label)
    # non-objects sort last and are sent to a spill column, dropped below
    dest = torch.where(rank < counts.gather(1, label), padded_start.gather(1, label) + rank, length)
    grouped = torch.full((rows, length + 1), -1, dtype=torch.long, device=device).scatter_(1, dest, order)
    bounds = torch.cat([padded_start, used[:, None]], 1) + torch.arange(rows, device=device)[:, None] * length
    return grouped[:, :length], bounds.flatten().tolist() + [rows * length]


def global_argmin(
    query: torch.Tensor,
    reference: torch.Tensor,
    ref_labels: torch.Tensor,
    num_objects: int,
) -> torch.Tensor:
    """Global matching arg-min by tiled matmul.

    Args:
        query: (B, C, H, W) float. reference: (B, C, Hr, Wr) float. ref_labels: (B, Hr, Wr) int64.
    Returns:
        (B, N, H*W) int64 flat index into Hr*Wr, -1 where the object has no reference pixel.
    Memory: the ranking tile (query chunk x reference chunk) <= TILE_BYTES, plus O(C*(H*W + Hr*Wr))
    for the fp32 label-sorted copy of the reference and O(N*H*W) for the running minimum.
    """
    dtype = compute_dtype(query, reference)
    itemsize = torch.finfo(dtype).bits // 8
    batch, channels, height, width = query.shape
    pixels = height * width
    tile_bytes = common.TILE_BYTES
    q_chunk = max(1, min(1024, tile_bytes // (8192 * itemsize)))
    r_chunk = max(GROUP, tile_bytes // (q_chunk * itemsize) // GROUP * GROUP)
    argmin = torch.full((batch, num_objects, pixels), -1, dtype=torch.long, device=query.device)
    for b in range(batch):
        order, starts = _group_by_label(ref_labels[b].reshape(1, -1), num_objects)
        order, starts = order[0], starts[: num_objects + 1]
        if starts[-1] == 0:
            continue
        # scores = |y|^2 - 2 x.y as one matmul of [y, |y|^2] (rows) with [-2x; 1] (columns): an addmm
        # bias would be broadcast-copied into every tile first
        q = torch.cat([query[b].reshape(channels, pixels).to(dtype) * -2, query.new_ones(1, pixels, dtype=dtype)])
        r = reference[b].reshape(channels, -1).T.to(dtype)
        r_sorted = torch.cat([r, r.new_zeros(1, channels)])[order]  # padding (-1) takes the zero row
        r_norm = r_sorted.square().sum(1).masked_fill_(order < 0, PENALTY)
        r_sorted = torch.cat([r_sorted, r_norm[:, None]], 1)  # (n, C + 1)
        best_value = q.new_full((num_objects, pixels), PENALTY)
        best_row = torch.zeros((num_objects, pixels), dtype=torch.long, device=query.device)
        for r0 in range(0, starts[-1], r_chunk):
            r1 = min(starts[-1], r0 + r_chunk)
            # objects whose rows intersect [r0, r1): segments of this chunk
            o_lo = next(o for o in range(num_objects) if starts[o + 1] > r0)
            o_hi = max(o for o in range(num_objects) if starts[o] < r1)
            seg = [max(starts[o], r0) - r0 for o in range(o_lo, o_hi + 1)] + [min(starts[o_hi + 1], r1) - r0]
            for p0 in range(0, pixels, q_chunk):
                p1 = min(pixels, p0 + q_chunk)
                scores = r_sorted[r0:r1] @ q[:, p0:p1]
                value, row = _segment_argmin(scores, seg)
                old_value = best_value[o_lo : o_hi + 1, p0:p1]
                old_row = best_row[o_lo : o_hi + 1, p0:p1]
                better = value < old_value
                old_row.copy_(torch.where(better, row + r0, old_row))
                old_value.copy_(torch.minimum(value, old_value))
        argmin[b] = torch.where(best_value < PENALTY / 2, order[best_row], -1)
    return argmin


def _local_tile_side(max_distance: int, itemsize: int, tile_bytes: int) -> int:
    side = LOCAL_TILE
    while side > 1 and (side + 2 * max_distance) ** 2 * side**2 * itemsize > tile_bytes:
        side //= 2
    return side


def _window_penalty(side: int, max_distance: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(window^2 + 1, side^2) table: 0 where reference cell r of a tile's window is within
    max_distance of query cell m, PENALTY elsewhere; the last row (padding) is 0."""
    window = side + 2 * max_distance
    ry, rx = (
        torch.arange(window, device=device).repeat_interleave(window),
        torch.arange(window, device=device).repeat(window),
    )
    qy, qx = (
        torch.arange(side, device=device).repeat_interleave(side),
        torch.arange(side, device=device).repeat(side),
    )
    # query cell (qy, qx) sits at (qy + k, qx + k) in window coordinates
    outside = ((ry[:, None] - qy[None] - max_distance).abs() > max_distance) | (
        (rx[:, None] - qx[None] - max_distance).abs() > max_distance
    )
    table = torch.zeros((window * window + 1, side * side), dtype=dtype, device=device)
    table[:-1].masked_fill_(outside, PENALTY)
    return table


def _local_argmin_one(
    query: torch.Tensor,
    previous: torch.Tensor,
    labels: torch.Tensor,
    num_objects: int,
    max_distance: int,
    side: int,
    tile_bytes: int,
) -> torch.Tensor:
    """Undilated local arg-min for one image: query, previous (C, h, w), labels (h, w).
    Returns (N, h, w) int64 flat index into h*w, -1 where nothing of the object is in the window."""
    channels, h, w = query.shape
    k, dtype, device = max_distance, query.dtype, query.device
    tiles_y, tiles_x = -(-h // side), -(-w // side)
    window = side + 2 * k
    # Pad so that every tile has a full window: queries to whole tiles (zeros, cropped at the end),
    # the previous frame by k more on each side with ignored labels.
    # scores = |y|^2 - 2 x.y as one matmul of [y, |y|^2] (rows) with [-2x; 1] (columns), as in global_argmin
    q_tiles = F.pad(query * -2, (0, tiles_x * side - w, 0, tiles_y * side - h))
    q_tiles = torch.cat([q_tiles, q_tiles.new_ones(1, *q_tiles.shape[1:])])
    q_tiles = q_tiles.view(channels + 1, tiles_y, side, tiles_x, side).permute(1, 3, 0, 2, 4)
    q_tiles = q_tiles.reshape(tiles_y * tiles_x, channels + 1, side * side)  # (tiles, C + 1, M)
    pad = (k, k + tiles_x * side - w, k, k + tiles_y * side - h)
    hp, wp = tiles_y * side + 2 * k, tiles_x * side + 2 * k
    # channels-last rows [y, |y|^2] of the padded frame, plus a last row [0, PENALTY] standing for
    # label-group padding
    p_rows = previous.new_zeros((hp * wp + 1, channels + 1))
    p_rows[:-1, :channels].view(hp, wp, channels)[k : k + h, k : k + w] = previous.permute(1, 2, 0)
    p_rows[:, channels] = p_rows[:, :channels].square().sum(1)
    sentinel = hp * wp
    p_rows[sentinel, channels] = PENALTY
    labels_flat = F.pad(labels, pad, value=IGNORE_LABEL).reshape(-1)
    table = _window_penalty(side, k, dtype, device)  # last row: padding
    cell = (torch.arange(window, device=device)[:, None] * wp + torch.arange(window, device=device)).reshape(-1)
    corner = torch.arange(tiles_y, device=device)[:, None] * (side * wp) + torch.arange(tiles_x, device=device) * side
    corner = corner.reshape(-1)  # window origin of each tile in the padded frame
    itemsize = torch.finfo(dtype).bits // 8
    rows_per_tile = window * window + num_objects * (GROUP - 1)
    per_tile = rows_per_tile * (side * side + channels + 1) * itemsize + (num_objects + 1) * GROUP * side * side * 8
    chunk = max(1, tile_bytes // per_tile)
    out = torch.full((num_objects, tiles_y * tiles_x, side * side), -1, dtype=torch.long, device=device)
    for t0 in range(0, corner.numel(), chunk):
        region = corner[t0 : t0 + chunk, None] + cell  # (T, window^2) padded-frame pixels
        tiles = region.shape[0]
        order, starts = _group_by_label(labels_flat[region], num_objects)
        if order.shape[1] == 0:
            continue
        padding = order < 0
        refs = torch.where(padding, sentinel, region.gather(1, order.clamp(min=0)))  # (T, L)
        scores = table[order.masked_fill(padding, window * window)]  # (T, L, M): PENALTY outside the window
        # (T, L, M) += |y|^2 - 2 x.y, one batched matmul for the chunk of tiles
        scores.baddbmm_(p_rows[refs], q_tiles[t0 : t0 + tiles])
        value, row = _segment_argmin(scores.view(-1, side * side), starts)
        value = value.view(tiles, num_objects + 1, -1)[:, :num_objects]
        best = refs.view(-1)[row.view(tiles, num_objects + 1, -1)[:, :num_objects]]
        y, x = best // wp - k, best % wp - k  # back to the unpadded frame
        out[:, t0 : t0 + tiles] = torch.where(value < PENALTY / 2, y * w + x, -1).transpose(0, 1)
    out = out.view(num_objects, tiles_y, tiles_x, side, side).permute(0, 1, 3, 2, 4)
    return out.reshape(num_objects, tiles_y * side, tiles_x * side)[:, :h, :w]


def local_argmin(
    query: torch.Tensor,
    previous: torch.Tensor,
    prev_labels: torch.Tensor,
    num_objects: int,
    max_distance: int,
    dilation: int,
) -> torch.Tensor:
    """Local matching arg-min by tiled matmul over (side x side) query tiles and their
    (side + 2k)^2 reference windows; dilation is handled by splitting the image into dilation^2
    residue classes (a dilated window only visits pixels congruent to its centre).

    Args:
        query, previous: (B, C, H, W) float. prev_labels: (B, H, W) int64.
    Returns:
        (B, N, H*W) int64 flat index into H*W, -1 where nothing of the object is in the window.
    Memory: a chunk of tiles (ranking scores and gathered reference rows) <= TILE_BYTES, at least one
    tile of about (side+2k)^2 * side^2 * itemsize (side shrinks from 16 towards 1 until one tile fits
    TILE_BYTES); the window table (one tile); O(C*H*W) for padded channels-last copies.
    """
    dtype = compute_dtype(query, previous)
    batch, _, height, width = query.shape
    tile_bytes = common.TILE_BYTES
    side = _local_tile_side(max_distance, torch.finfo(dtype).bits // 8, tile_bytes)
    pixel = torch.arange(height * width, device=query.device).view(height, width)
    argmin = torch.full((batch, num_objects, height, width), -1, dtype=torch.long, device=query.device)
    d = dilation
    for b in range(batch):
        for ay in range(min(d, height)):
            for ax in range(min(d, width)):
                sub = _local_argmin_one(
                    query[b, :, ay::d, ax::d].to(dtype),
                    previous[b, :, ay::d, ax::d].to(dtype),
                    prev_labels[b, ay::d, ax::d],
                    num_objects,
                    max_distance,
                    side,
                    tile_bytes,
                )
                to_full = pixel[ay::d, ax::d].reshape(-1)
                argmin[b, :, ay::d, ax::d] = torch.where(sub >= 0, to_full[sub.clamp(min=0)], -1)
    return argmin.flatten(2)


def correlation_sum(x1: torch.Tensor, x2: torch.Tensor, max_displacement: int) -> torch.Tensor:
    """Cost volume by batched matmul of (side x side) query tiles with their (side + 2r)^2 reference
    tiles, then a fixed gather of the (2r+1)^2 offsets of each query pixel.

    Args:
        x1, x2: (B, C, H, W) float.
    Returns:
        (B, (2r+1)^2, H, W) in compute_dtype, unnormalised sums, zero where p + d is outside.
    Memory: a chunk of tiles with (side^2*C + (side+2r)^2*C + side^2*(side+2r)^2) * itemsize
    <= TILE_BYTES (at least one tile), plus one zero-padded copy of x2 (and of x1 when H or W is not
    a multiple of the tile side).
    """
    dtype = compute_dtype(x1, x2)
    batch, channels, height, width = x1.shape
    r, side = max_displacement, CORRELATION_TILE
    span, window = 2 * r + 1, CORRELATION_TILE + 2 * max_displacement
    tiles_y, tiles_x = -(-height // side), -(-width // side)
    pad_y, pad_x = tiles_y * side - height, tiles_x * side - width
    a = x1.to(dtype)
    if pad_x or pad_y:
        a = F.pad(a, (0, pad_x, 0, pad_y))
    b_pad = F.pad(x2.to(dtype), (r, pad_x + r, r, pad_y + r))  # zeros: products outside the image vanish
    cell = torch.arange(side * side, device=x1.device)
    offset = torch.arange(span * span, device=x1.device)
    # reference-tile cell of query cell m shifted by offset d (both row-major)
    gather_index = (cell[:, None] // side + offset[None] // span) * window + (
        cell[:, None] % side + offset[None] % span
    )
    itemsize = torch.finfo(dtype).bits // 8
    per_tile = (side * side * channels + window * window * channels + side * side * window * window) * itemsize
    chunk = max(1, common.TILE_BYTES // per_tile)
    out = a.new_empty((batch, span * span, height, width))
    for b in range(batch):
        for ty in range(tiles_y):
            y0, y1 = ty * side, min(height, (ty + 1) * side)
            q_band = a[b, :, ty * side : (ty + 1) * side]  # (C, side, Wp)
            r_band = b_pad[b, :, ty * side : ty * side + window]  # (C, window, Wp + 2r)
            for t0 in range(0, tiles_x, chunk):
                n = min(tiles_x, t0 + chunk) - t0
                q_tiles = q_band[..., t0 * side : (t0 + n) * side].reshape(channels, side, n, side)
                q_tiles = q_tiles.permute(2, 1, 3, 0).reshape(n, side * side, channels)
                r_tiles = r_band[..., t0 * side : (t0 + n) * side + 2 * r].unfold(2, window, side)  # (C, win, n, win)
                r_tiles = r_tiles.permute(2, 0, 1, 3).reshape(n, channels, window * window)
                values = torch.bmm(q_tiles, r_tiles).gather(2, gather_index.expand(n, -1, -1))  # (n, side^2, S^2)
                values = values.view(n, side, side, span * span).permute(3, 1, 0, 2)
                x0, x1_ = t0 * side, min(width, (t0 + n) * side)
                out[b, :, y0:y1, x0:x1_] = values.reshape(span * span, side, n * side)[:, : y1 - y0, : x1_ - x0]
    return out

"""Pure-PyTorch reference paths: direct differences, no tricks, small enough to check by eye.

They are slow (Python loops over objects, chunks and window offsets) but memory-bounded like every
path, and run on any device and dtype. Each matching function returns the arg-min only; values and
gradients are computed from it in :mod:`vidseg.ops._common`.
"""

from __future__ import annotations

import torch

from vidseg.ops import _common as common
from vidseg.ops._common import compute_dtype, displacements, overlap


def global_argmin(
    query: torch.Tensor, reference: torch.Tensor, ref_labels: torch.Tensor, num_objects: int
) -> torch.Tensor:
    """Arg-min over reference pixels of each object of |query_p - reference_q|^2.

    Args:
        query: (B, C, H, W) float. reference: (B, C, Hr, Wr) float. ref_labels: (B, Hr, Wr) int64.
    Returns:
        (B, N, H*W) int64 flat index into Hr*Wr, -1 where the object has no reference pixel.
    Memory: one (chunk, n_o, C) difference block with chunk * n_o * C <= TILE_BYTES / itemsize (at
    least one query pixel, i.e. O(C * Hr * Wr)).
    """
    dtype = compute_dtype(query, reference)
    q = query.flatten(2).to(dtype)
    r = reference.flatten(2).to(dtype)
    labels = ref_labels.flatten(1)
    batch, channels, pixels = q.shape
    argmin = torch.full((batch, num_objects, pixels), -1, dtype=torch.long, device=q.device)
    for b in range(batch):
        for o in range(num_objects):
            members = torch.nonzero(labels[b] == o).squeeze(1)
            if members.numel() == 0:
                continue
            r_o = r[b][:, members]  # (C, n_o)
            chunk = max(1, common.TILE_BYTES // (members.numel() * channels * q.element_size()))
            for p0 in range(0, pixels, chunk):
                diff = q[b, :, p0 : p0 + chunk, None] - r_o[:, None, :]  # (C, chunk, n_o)
                argmin[b, o, p0 : p0 + chunk] = members[diff.square_().sum(0).argmin(1)]
    return argmin


def local_argmin(
    query: torch.Tensor,
    previous: torch.Tensor,
    prev_labels: torch.Tensor,
    num_objects: int,
    max_distance: int,
    dilation: int,
) -> torch.Tensor:
    """Arg-min of |query_p - previous_q|^2 over q = p + dilation * (dy, dx), |dy|, |dx| <= max_distance,
    inside the image, with label o. Loops over the (2k+1)^2 offsets with shifted slices.

    Args:
        query, previous: (B, C, H, W) float. prev_labels: (B, H, W) int64.
    Returns:
        (B, N, H*W) int64 flat index into H*W, -1 where no pixel of the object is in the window.
    Memory: O(B * C * H * W) per offset (one shifted difference), O(B * N * H * W) for the running min.
    """
    dtype = compute_dtype(query, previous)
    q, p = query.to(dtype), previous.to(dtype)
    batch, _, height, width = q.shape
    best = q.new_full((batch, num_objects, height, width), float("inf"))
    argmin = torch.full(best.shape, -1, dtype=torch.long, device=q.device)
    flat_index = torch.arange(height * width, device=q.device).view(height, width)
    span = range(-max_distance, max_distance + 1)
    for dy in span:
        sy = dy * dilation
        y0, y1 = overlap(height, sy)
        for dx in span:
            sx = dx * dilation
            x0, x1 = overlap(width, sx)
            if y0 >= y1 or x0 >= x1:
                continue
            sq = (q[..., y0:y1, x0:x1] - p[..., y0 + sy : y1 + sy, x0 + sx : x1 + sx]).square().sum(1)
            labels = prev_labels[:, y0 + sy : y1 + sy, x0 + sx : x1 + sx]
            index = flat_index[y0 + sy : y1 + sy, x0 + sx : x1 + sx]
            for o in range(num_objects):
                best_o = best[:, o, y0:y1, x0:x1]
                better = (labels == o) & (sq < best_o)
                best_o.copy_(torch.where(better, sq, best_o))
                arg_o = argmin[:, o, y0:y1, x0:x1]
                arg_o.copy_(torch.where(better, index, arg_o))
    return argmin.flatten(2)


def correlation_sum(x1: torch.Tensor, x2: torch.Tensor, max_displacement: int) -> torch.Tensor:
    """out[b, (dy, dx), p] = sum_c x1[b, c, p] * x2[b, c, p + (dy, dx)], zero outside the image.

    Args:
        x1, x2: (B, C, H, W) float.
    Returns:
        (B, (2r+1)^2, H, W) in compute_dtype, offsets row-major over (dy, dx) from -r to r.
    Memory: one (B, C, H, W) product per offset.
    """
    dtype = compute_dtype(x1, x2)
    a, b = x1.to(dtype), x2.to(dtype)
    batch, _, height, width = a.shape
    r = max_displacement
    out = a.new_zeros((batch, (2 * r + 1) ** 2, height, width))
    for d, (dy, dx) in enumerate(displacements(r)):
        (ya, yb), (xa, xb) = overlap(height, dy), overlap(width, dx)
        if ya < yb and xa < xb:
            out[:, d, ya:yb, xa:xb] = (a[..., ya:yb, xa:xb] * b[..., ya + dy : yb + dy, xa + dx : xb + dx]).sum(1)
    return out

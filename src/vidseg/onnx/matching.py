"""FEELVOS matching in plain tensor ops with symbolic sizes: the path an exported graph contains.

:mod:`vidseg.ops` runs matching as torch custom ops whose paths (Python loops and tiles sized from concrete
shapes, Triton kernels) a graph exporter cannot see into. These functions compute the same values with
operators ``torch.export`` traces for any height, width, reference size and number of objects:

- :func:`global_matching`: a ``scan`` (ONNX Scan) over chunks of query pixels; per chunk the ranking scores
  |r|^2 - 2 q.r against every reference pixel (one matmul), the first arg-min per object of the scores masked
  to the object's pixels (+inf elsewhere), and the exact squared distance of that pair, as vidseg.ops computes
  it. Working memory: an (N, R, QUERY_CHUNK) tile, R = reference pixels, whatever the frame size (~50 MB for a
  DAVIS 480p reference and 4 objects).
- :func:`local_matching`: direct differences (exact, no expansion), one unrolled step per window row dy
  (2k+1 steps), each a gather of the (2k+1) column offsets; working memory O((N + C) * (2k+1) * h * w).

Same contract as :func:`vidseg.ops.global_matching` / :func:`vidseg.ops.local_matching` for labels in
[0, N) or 255 (no validation: a graph has no errors to raise): out = tanh(min squared distance / 2), 1.0 where
an object has no candidate. Values equal vidseg.ops' up to float rounding (a different pixel may win a
near-tie). Inference only (no gradient path is kept).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch._higher_order_ops.scan import scan

from vidseg.constants import IGNORE_LABEL

# Query pixels per scan step of global matching: bounds the (R, chunk) ranking tile.
QUERY_CHUNK = 128


def _distance(sq: torch.Tensor) -> torch.Tensor:
    # as vidseg.ops._common.distance_from_squared: tanh(sq / 2); +inf (no candidate) gives 1
    return torch.tanh(sq * 0.5)


def global_matching(query: torch.Tensor, reference: torch.Tensor, ref_labels: torch.Tensor,
                    num_objects: int | torch.SymInt) -> torch.Tensor:
    """Distance of each query pixel to the nearest reference pixel of each object (batch of one).

    Args:
        query: (1, C, H, W) float embeddings of the current frame.
        reference: (1, C, Hr, Wr) float reference embeddings (any spatial shape, e.g. (1, C, 1, K)).
        ref_labels: (1, Hr, Wr) int64 labels in [0, N) or 255 (ignored).
        num_objects: N, objects including the background (may be symbolic).
    Returns:
        (1, N, H, W) float32; 1.0 where an object has no reference pixel.
    """
    _, channels, height, width = query.shape
    pixels = height * width
    q = query[0].reshape(channels, pixels).float()
    r = reference[0].reshape(channels, -1).float().T  # (R, C)
    slots = torch.arange(num_objects, device=q.device)
    member = ref_labels.reshape(1, -1) == slots[:, None]  # (N, R); 255 belongs to no slot
    # 0 for an object's own reference pixels, +inf for the others: the masked ranking's arg-min per object
    mask = torch.where(member, 0.0, float("inf"))[:, None, :]  # (N, 1, R)
    present = member.any(1)[:, None]  # (N, 1): objects with at least one reference pixel
    ranking = torch.cat([r * -2, (r * r).sum(1, keepdim=True)], 1).T  # (C + 1, R): [-2r; |r|^2] against [q, 1]
    padded = (pixels + QUERY_CHUNK - 1) // QUERY_CHUNK * QUERY_CHUNK
    q_chunks = F.pad(q, (0, padded - pixels)).T.reshape(-1, QUERY_CHUNK, channels)  # (T, S, C)

    def chunk_step(carry: torch.Tensor, q_chunk: torch.Tensor):
        scores = torch.cat([q_chunk, q_chunk.new_ones(QUERY_CHUNK, 1)], 1) @ ranking  # (S, R)
        # (N, S): the first reference pixel of each object at its minimum (reduced along the contiguous axis)
        first = (scores[None] + mask).argmin(2)
        diff = q_chunk[None] - r[first]  # (N, S, C): the exact distance of the chosen pair
        sq = torch.where(present, (diff * diff).sum(-1), float("inf"))
        return carry.clone(), _distance(sq)

    _, out = scan(chunk_step, q.new_zeros(()), q_chunks)  # (T, N, S)
    return out.permute(1, 0, 2).reshape(num_objects, padded)[:, :pixels].reshape(1, num_objects, height, width)


def local_matching(query: torch.Tensor, previous: torch.Tensor, prev_labels: torch.Tensor,
                   num_objects: int | torch.SymInt, max_distance: int, dilation: int = 1) -> torch.Tensor:
    """Distance of each query pixel to the nearest previous-frame pixel of each object within the
    (2k+1)^2 window of offsets dilation * (dy, dx), |dy|, |dx| <= k, inside the image (batch of one).

    Args:
        query, previous: (1, C, h, w) float embeddings.
        prev_labels: (1, h, w) int64 labels in [0, N) or 255 (ignored).
        num_objects: N (may be symbolic). max_distance: k. dilation: window spacing.
    Returns:
        (1, N, h, w) float32; 1.0 where no pixel of the object is in the window.
    """
    _, channels, height, width = query.shape
    k, d = max_distance, dilation
    span = 2 * k + 1
    # Width-major, channels-last layouts: the window gathers pick whole (h, C) blocks along the leading axis,
    # which ONNX Runtime copies as contiguous runs (a gather along the last axis is ~10x slower there).
    q = query[0].float().permute(2, 1, 0)[None]  # (1, w, h, C)
    # outside the image: zero embeddings with the ignored label, which no object matches
    prev = F.pad(previous[0].float(), (k * d, k * d, k * d, k * d)).permute(2, 1, 0)  # (w + 2kd, h + 2kd, C)
    labels = F.pad(prev_labels[0], (k * d, k * d, k * d, k * d), value=IGNORE_LABEL).T  # (w + 2kd, h + 2kd)
    columns = (torch.arange(span, device=query.device)[:, None] * d
               + torch.arange(width, device=query.device)[None, :]).reshape(-1)  # (span * w,)
    slots = torch.arange(num_objects, device=query.device)[:, None, None, None]
    best = q.new_full((num_objects, width, height), float("inf"))
    for dy in range(span):  # unrolled: 2k+1 steps, each a gather of the span column offsets
        window = prev[:, dy * d: dy * d + height].index_select(0, columns).reshape(span, width, height, channels)
        diff = q - window
        sq = (diff * diff).sum(-1)  # (span, w, h); a Mul, which ONNX Runtime runs faster than Pow
        window_labels = labels[:, dy * d: dy * d + height].index_select(0, columns).reshape(span, width, height)
        candidate = torch.where(window_labels[None] == slots, sq[None], float("inf"))  # (N, span, w, h)
        best = torch.minimum(best, candidate.amin(1))
    return _distance(best).transpose(1, 2)[None]

"""Float64 brute-force definitions of the ops, written from the definitions (no tiling, no tricks)."""

from __future__ import annotations

import torch

IGNORE = 255


def embeddings(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random embeddings whose squared distances are O(1), so tanh(sq/2) is far from saturated."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) / shape[1] ** 0.5).to(dtype)


def labels(*shape: int, num_objects: int, seed: int, ignore_fraction: float = 0.2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, num_objects, shape, generator=g)
    return torch.where(torch.rand(shape, generator=g) < ignore_fraction, IGNORE, lab)


def global_matching(query, reference, ref_labels, num_objects):
    """out[b, o, p] = tanh(min_{q: label o} |query_p - reference_q|^2 / 2), 1 when o has no pixel."""
    q = query.double().flatten(2)
    r = reference.double().flatten(2)
    lab = ref_labels.flatten(1)
    batch, _, pixels = q.shape
    out = torch.ones(batch, num_objects, pixels, dtype=torch.float64)
    for b in range(batch):
        sq = (q[b][:, :, None] - r[b][:, None, :]).square().sum(0)  # (P, R)
        for o in range(num_objects):
            members = lab[b] == o
            if members.any():
                out[b, o] = torch.tanh(sq[:, members].min(1).values / 2)
    return out.view(batch, num_objects, *query.shape[2:])


def local_matching(query, previous, prev_labels, num_objects, k, dilation):
    """Same as global matching, restricted to q = p + dilation * (dy, dx) with |dy|, |dx| <= k."""
    batch, _, height, width = query.shape
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    y, x = y.reshape(-1), x.reshape(-1)
    dy, dx = y[None, :] - y[:, None], x[None, :] - x[:, None]  # (query p, previous q)
    in_window = (dy.abs() <= k * dilation) & (dx.abs() <= k * dilation) & (dy % dilation == 0) & (dx % dilation == 0)
    q = query.double().flatten(2)
    p = previous.double().flatten(2)
    lab = prev_labels.flatten(1)
    out = torch.ones(batch, num_objects, height * width, dtype=torch.float64)
    for b in range(batch):
        sq = (q[b][:, :, None] - p[b][:, None, :]).square().sum(0)
        for o in range(num_objects):
            allowed = in_window & (lab[b] == o)[None, :]
            best = torch.where(allowed, sq, torch.inf).min(1).values
            out[b, o] = torch.where(allowed.any(1), torch.tanh(best / 2), 1.0)
    return out.view(batch, num_objects, height, width)


def correlation(x1, x2, r, normalize):
    a, b = x1.double(), x2.double()
    batch, channels, height, width = a.shape
    out = torch.zeros(batch, (2 * r + 1) ** 2, height, width, dtype=torch.float64)
    for i, (dy, dx) in enumerate((dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)):
        for yy in range(height):
            for xx in range(width):
                if 0 <= yy + dy < height and 0 <= xx + dx < width:
                    out[:, i, yy, xx] = (a[:, :, yy, xx] * b[:, :, yy + dy, xx + dx]).sum(1)
    return out / channels if normalize else out

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


# ---------------------------------------------------------------------------------------------------
# Realistic inputs and an exact check of raw arg-min outputs (Triton kernels, interpreter and CUDA)


def realistic_pair(batch: int, channels: int, height: int, width: int, *, seed: int, dtype=torch.float32,
                   device="cpu", other_size: tuple[int, int] | None = None):
    """(query, other) with FEELVOS-like statistics: |e|^2 ~ 100 with a large common component (as after
    the embedding's ReLU), and near-duplicates: ``other`` is constant on 2x2 blocks up to noise of squared
    norm ~1e-3, and the query is ``other`` moved by one pixel plus such noise, so each query pixel has
    about four candidates within ~1e-3 of each other. Ranking by |q|^2 + |r|^2 - 2 q.r without care
    (single TF32, no centring) swaps them."""
    g = torch.Generator().manual_seed(seed)
    oh, ow = other_size or (height, width)
    scale = (100.0 / channels) ** 0.5
    base_h, base_w = max(oh, height) // 2 + 2, max(ow, width) // 2 + 2
    base = scale * (0.8 + 0.6 * torch.randn(batch, channels, base_h, base_w, generator=g, dtype=torch.float64))
    base = base.repeat_interleave(2, 2).repeat_interleave(2, 3)
    noise = (1e-3 / channels) ** 0.5
    other = base[..., :oh, :ow] + noise * torch.randn(batch, channels, oh, ow, generator=g, dtype=torch.float64)
    query = base[..., 1 : height + 1, 1 : width + 1]
    query = query + noise * torch.randn(batch, channels, height, width, generator=g, dtype=torch.float64)
    return query.to(dtype).to(device), other.to(dtype).to(device)


def _chunks(total: int, size: int):
    return ((s, min(total, s + size)) for s in range(0, total, size))


def top2_global(query, reference, ref_labels, num_objects, chunk: int = 4096):
    """Best and second-best squared distance and the (first) best reference index per (b, o, p), fp64.

    Shapes: query (B, C, H, W), reference (B, C, Hr, Wr), labels (B, Hr, Wr). Returns best, second
    (B, N, P) fp64 (inf where missing) and index (B, N, P) int64 (-1 where the object has no pixel).
    Chunked fp64 matmul on the inputs' device (|q|^2 + |r|^2 - 2 q.r is exact enough in fp64)."""
    q = query.double().flatten(2)
    r = reference.double().flatten(2)
    lab = ref_labels.flatten(1)
    batch, _, pixels = q.shape
    best = q.new_full((batch, num_objects, pixels), float("inf"))
    second = best.clone()
    index = torch.full(best.shape, -1, dtype=torch.long, device=q.device)
    for b in range(batch):
        qn = q[b].square().sum(0)
        for o in range(num_objects):
            members = torch.nonzero(lab[b] == o).squeeze(1)
            if members.numel() == 0:
                continue
            r_o = r[b][:, members]
            rn = r_o.square().sum(0)
            for p0, p1 in _chunks(pixels, chunk):
                sq = (qn[p0:p1, None] + rn[None, :] - 2 * q[b][:, p0:p1].T @ r_o).clamp_(min=0)
                k = min(2, sq.shape[1])
                values, where = sq.topk(k, dim=1, largest=False, sorted=True)
                best[b, o, p0:p1] = values[:, 0]
                # topk does not promise the first index among exact ties: take the first explicitly
                first = (sq == values[:, :1]).to(torch.int8).argmax(1)
                index[b, o, p0:p1] = members[first]
                if k == 2:
                    second[b, o, p0:p1] = values[:, 1]
    return best, second, index


def top2_local(query, previous, prev_labels, num_objects, k, dilation):
    """Like :func:`top2_global` within the (2k+1)^2 window (direct fp64 differences, one shifted slice at a
    time, in the reference's (dy, dx) order so that the first of equal candidates is the index)."""
    q, p = query.double(), previous.double()
    batch, _, height, width = q.shape
    shape = (batch, num_objects, height, width)
    best = q.new_full(shape, float("inf"))
    second = best.clone()
    index = torch.full(shape, -1, dtype=torch.long, device=q.device)
    flat = torch.arange(height * width, device=q.device).view(height, width)
    for dy in range(-k, k + 1):
        sy = dy * dilation
        y0, y1 = max(0, -sy), min(height, height - sy)
        for dx in range(-k, k + 1):
            sx = dx * dilation
            x0, x1 = max(0, -sx), min(width, width - sx)
            if y0 >= y1 or x0 >= x1:
                continue
            sq = (q[..., y0:y1, x0:x1] - p[..., y0 + sy : y1 + sy, x0 + sx : x1 + sx]).square().sum(1)
            labels = prev_labels[:, y0 + sy : y1 + sy, x0 + sx : x1 + sx]
            src = flat[y0 + sy : y1 + sy, x0 + sx : x1 + sx]
            for o in range(num_objects):
                cand = torch.where(labels == o, sq, float("inf"))
                b_o, s_o, i_o = best[:, o, y0:y1, x0:x1], second[:, o, y0:y1, x0:x1], index[:, o, y0:y1, x0:x1]
                better = cand < b_o
                s_o.copy_(torch.where(better, b_o, torch.minimum(s_o, cand)))
                i_o.copy_(torch.where(better, src.expand_as(i_o), i_o))
                b_o.copy_(torch.minimum(b_o, cand))
    return best.flatten(2), second.flatten(2), index.flatten(2)


def rank_tolerance(*tensors) -> float:
    """Squared-distance error allowed to a kernel that ranks candidates in fp32 by |r|^2 - 2 q.r: 2^-19
    (~8 fp32 ulps) of the largest |q|^2 + |r|^2. On :func:`realistic_pair` inputs (|e|^2 ~ 100) fp32
    accumulation of uncentred products (the bf16/fp16 paths; vidseg.ops.cpu) reaches about 1/6 of it, and
    uncentred single TF32 (10-bit products) about 7x over it (see gpu-kernels-review.md)."""
    return 2.0**-19 * sum(float(t.double().square().sum(1).max()) for t in tensors)


def check_argmin(name, got, query, other, labels, top2, tol, *, window=None) -> dict:
    """Raw arg-min ``got`` (B, N, P) int64 against the fp64 ``top2`` of the same inputs.

    Asserts: -1 exactly where the object has no candidate; every chosen pixel has the object's label (and
    lies in the window ``(k, dilation)`` for local matching); its exact fp64 squared distance is within
    ``tol`` of the best; and it is the best itself wherever the runner-up is more than ``tol`` behind (no
    ranking error can excuse a swap there). Returns statistics for reports."""
    best, second, index = top2
    got = got.to(index.device)
    assert got.shape == index.shape, f"{name}: shape {tuple(got.shape)} != {tuple(index.shape)}"
    missing = index < 0
    assert ((got < 0) == missing).all(), f"{name}: -1 where a candidate exists, or an index where none does"
    batch, num_objects, pixels = got.shape
    safe = got.clamp(min=0)
    lab = labels.flatten(1).to(got.device)
    picked = lab.gather(1, safe.flatten(1)).view_as(got)
    objects = torch.arange(num_objects, device=got.device)[None, :, None]
    assert ((picked == objects) | missing).all(), f"{name}: a chosen pixel carries another object's label"
    if window is not None:
        k, d = window
        width = query.shape[-1]
        p = torch.arange(pixels, device=got.device)
        dy, dx = safe // width - p // width, safe % width - p % width
        inside = (dy.abs() <= k * d) & (dx.abs() <= k * d) & (dy % d == 0) & (dx % d == 0)
        assert (inside | missing).all(), f"{name}: a chosen pixel lies outside the window"
    q = query.double().flatten(2).to(got.device)
    o = other.double().flatten(2).to(got.device)
    sq = torch.zeros(got.shape, dtype=torch.float64, device=got.device)
    for n in range(num_objects):
        gathered = o.gather(2, safe[:, n][:, None, :].expand(-1, q.shape[1], -1))
        sq[:, n] = (q - gathered).square().sum(1)
    excess = torch.where(missing, 0.0, sq - best)
    assert float(excess.min()) >= -1e-8, f"{name}: {float(excess.min()):.3g} below the minimum (fp64)"
    worst = float(excess.max())
    assert worst <= tol, f"{name}: chosen pair {worst:.3g} above the minimum (tol {tol:.3g})"
    clear = ~missing & (second - best > tol)
    wrong = clear & (got != index)
    assert not wrong.any(), f"{name}: {int(wrong.sum())} of {int(clear.sum())} clear-cut arg-mins differ"
    # realistic_pair's near-duplicates are ~1e-3 apart: most minima must be clear-cut, or this checked little
    assert int(clear.sum()) * 2 >= int((~missing).sum()), f"{name}: too few clear-cut minima to check"
    return {"pixels": int((~missing).sum()), "clear_cut": int(clear.sum()), "max_excess_sq": float(excess.max()),
            "agreement": float(((got == index) | missing).double().mean()), "tolerance_sq": tol}

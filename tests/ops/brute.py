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
# Realistic inputs with controlled near-ties, and an exact check of raw arg-min outputs (Triton kernels,
# interpreter and CUDA). bench/gpu_check.py's tests section runs it; its own self-test is
# :func:`self_test` (a perfect answer passes, an index shifted by one and uncentred single-TF32 fail).

# fraction of present (batch, object, pixel) minima that must be clear-cut (runner-up more than the
# tolerance behind) for a case to test anything; below it the case is inconclusive, not failed
MIN_COVERAGE = 0.5
# pushed-away candidates: squared offset log-uniform in PUSH * tolerance (a few within it: near-ties
# that only the excess check judges; most beyond it: minima whose exact index is checked)
PUSH = (0.3, 100.0)


class Inconclusive(Exception):
    """The inputs of a case have too few clear-cut minima to judge a kernel: a fault of the inputs, not of
    the kernel (computed from the fp64 top-2 before the kernel runs)."""


def _tolerance_of(*tensors) -> float:
    return 2.0**-19 * sum(float(t.double().square().sum(1).max()) for t in tensors)


def realistic_pair(batch: int, channels: int, height: int, width: int, *, seed: int, dtype=torch.float32,
                   device="cpu", other_size: tuple[int, int] | None = None, near_ties: str = "one",
                   push: tuple[float, float] = PUSH):
    """(query, other) with FEELVOS-like statistics and controlled near-ties.

    |e|^2 ~ 100 with a large common component (as after the embedding's ReLU); ``other`` is built on 2x2
    blocks of one base vector each, and the query is ``other``'s base moved by one pixel, so each query
    pixel has its four candidates in one block of ``other``, plus noise of squared norm ~1e-3 on both.

    ``near_ties="one"``: in each block one pixel (at random) stays a near-duplicate; the other three are
    pushed away by a sparse offset (8 channels, so that bf16 rounding keeps it) of squared norm
    log-uniform in ``push`` x the ranking tolerance (one magnitude per block). Most minima are then
    clear-cut, a few are near-ties within the tolerance. ``near_ties="all"``: four near-duplicates per
    block (the 2026-12-04 generator: at one object almost no minimum is clear-cut, see
    gpu-run-2026-12-04/diagnosis.md; kept to test the inconclusive path). Ranking by |q|^2 + |r|^2 - 2 q.r
    without care (single TF32, no centring) swaps candidates many tolerances apart."""
    if near_ties not in ("one", "all"):
        raise ValueError(f"near_ties must be 'one' or 'all', got {near_ties!r}")
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
    if near_ties == "one":
        tol = _tolerance_of(query, other)
        bh, bw = (oh + 1) // 2, (ow + 1) // 2
        lo, hi = torch.log(torch.tensor(push, dtype=torch.float64))
        magnitude = tol * torch.exp(lo + (hi - lo) * torch.rand(batch, 1, bh, bw, generator=g, dtype=torch.float64))
        keep = torch.randint(0, 4, (batch, 1, bh, bw), generator=g)  # the near-duplicate's place in its block
        place = torch.arange(4).view(1, 1, 2, 2).repeat(1, 1, bh, bw)[..., :oh, :ow]
        pushed = place != keep.repeat_interleave(2, 2).repeat_interleave(2, 3)[..., :oh, :ow]
        # sparse direction: 8 random channels with random signs, each carrying 1/8 of the squared norm
        ranks = torch.rand(batch, channels, oh, ow, generator=g).argsort(1).argsort(1)
        signs = torch.where(torch.rand(batch, channels, oh, ow, generator=g) < 0.5, -1.0, 1.0).double()
        sparse = (ranks < min(8, channels)).double() * signs / min(8, channels) ** 0.5
        per_block = magnitude.sqrt().repeat_interleave(2, 2).repeat_interleave(2, 3)[..., :oh, :ow]
        other = other + sparse * per_block * pushed
    return query.to(dtype).to(device), other.to(dtype).to(device)


def _chunks(total: int, size: int):
    return ((s, min(total, s + size)) for s in range(0, total, size))


def round_tf32(x: torch.Tensor) -> torch.Tensor:
    """fp32 values rounded to TF32 (10 explicit mantissa bits, round to nearest even), as fp32."""
    bits = x.float().contiguous().view(torch.int32).long()
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & ~0x1FFF
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)


# Rankings of candidates by |r|^2 - 2 q.r as kernels compute them (emulated with torch ops), for the
# check's mutation self-test: "exact" (fp64), "centred_fp32" (fp32 inputs, centred, fp32 products: what
# the fp32 kernels do, within a few ulps), "exact_products" (bf16/fp16 inputs: products exact in fp32,
# fp32 sums), "uncentred_tf32" (inputs rounded to TF32, no centring: the bug the check must catch).
RANKINGS = ("exact", "centred_fp32", "exact_products", "uncentred_tf32")


def _ranked_operands(q: torch.Tensor, r: torch.Tensor, ranking: str):
    """(q, r, compute dtype, |r|^2) for ``ranking``, q (B, C, P), r (B, C, R): centred, rounded, cast.
    The norms come from the values before any rounding of the products' operands (as the kernels do)."""
    if ranking == "exact":
        q, r = q.double(), r.double()
        return q, r, torch.float64, r.square().sum(1)
    if ranking == "centred_fp32":
        shift = r.float().mean(2, keepdim=True)
        q, r = q.float() - shift, r.float() - shift
        return q, r, torch.float32, r.square().sum(1)
    if ranking == "exact_products":
        q, r = q.float(), r.float()
        return q, r, torch.float32, r.square().sum(1)
    if ranking == "uncentred_tf32":
        return round_tf32(q), round_tf32(r), torch.float32, r.float().square().sum(1)
    raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")


def _dot(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, ranking: str) -> torch.Tensor:
    """a (P, C) @ b (C, R) in the ranking's arithmetic (TF32 products are exact in fp64, summed, rounded).
    fp32 products are true fp32 whatever the process's matmul precision (TF32 would be another ranking)."""
    if ranking == "uncentred_tf32":
        return (a.double() @ b.double()).float()
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        return a.to(dtype) @ b.to(dtype)
    finally:
        torch.set_float32_matmul_precision(saved)


def top2_global(query, reference, ref_labels, num_objects, chunk: int = 4096, ranking: str = "exact"):
    """Best and second-best squared distance and the (first) best reference index per (b, o, p), fp64.

    Shapes: query (B, C, H, W), reference (B, C, Hr, Wr), labels (B, Hr, Wr). Returns best, second
    (B, N, P) fp64 (inf where missing) and index (B, N, P) int64 (-1 where the object has no pixel).
    Chunked matmul on the inputs' device (|q|^2 + |r|^2 - 2 q.r is exact enough in fp64). With another
    ``ranking`` (:data:`RANKINGS`) the candidates are ranked as that arithmetic would (the values are
    then its scores, not squared distances): the index is what such a kernel would return."""
    q, r, dtype, norms = _ranked_operands(query.flatten(2), reference.flatten(2), ranking)
    lab = ref_labels.flatten(1)
    batch, _, pixels = q.shape
    best = q.new_full((batch, num_objects, pixels), float("inf"), dtype=torch.float64)
    second = best.clone()
    index = torch.full(best.shape, -1, dtype=torch.long, device=q.device)
    for b in range(batch):
        qn = q[b].square().sum(0) if ranking == "exact" else torch.zeros(pixels, dtype=dtype, device=q.device)
        for o in range(num_objects):
            members = torch.nonzero(lab[b] == o).squeeze(1)
            if members.numel() == 0:
                continue
            r_o = r[b][:, members]
            rn = norms[b][members]
            for p0, p1 in _chunks(pixels, chunk):
                sq = qn[p0:p1, None] + rn[None, :] - 2 * _dot(q[b][:, p0:p1].T, r_o, dtype, ranking)
                if ranking == "exact":
                    sq = sq.clamp_(min=0)
                k = min(2, sq.shape[1])
                values, _ = sq.topk(k, dim=1, largest=False, sorted=True)
                best[b, o, p0:p1] = values[:, 0].double()
                # topk does not promise the first index among exact ties: take the first explicitly
                first = (sq == values[:, :1]).to(torch.int8).argmax(1)
                index[b, o, p0:p1] = members[first]
                if k == 2:
                    second[b, o, p0:p1] = values[:, 1].double()
    return best, second, index


def top2_local(query, previous, prev_labels, num_objects, k, dilation, ranking: str = "exact"):
    """Like :func:`top2_global` within the (2k+1)^2 window (direct fp64 differences, one shifted slice at a
    time, in the reference's (dy, dx) order so that the first of equal candidates is the index; other
    rankings use |r|^2 - 2 q.r in their arithmetic)."""
    batch, channels, height, width = query.shape
    q, p, dtype, pn = _ranked_operands(query.flatten(2), previous.flatten(2), ranking)
    q, p = q.view(batch, channels, height, width), p.view(batch, channels, height, width)
    pn = pn.view(batch, height, width)
    if ranking == "uncentred_tf32":
        q, p = q.double(), p.double()  # TF32 products are exact in fp64; the sum is rounded to fp32 below
    shape = (batch, num_objects, height, width)
    best = q.new_full(shape, float("inf"), dtype=torch.float64)
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
            shifted = p[..., y0 + sy : y1 + sy, x0 + sx : x1 + sx]
            if ranking == "exact":
                sq = (q[..., y0:y1, x0:x1] - shifted).square().sum(1)
            else:
                dot = (q[..., y0:y1, x0:x1] * shifted).sum(1).to(dtype)
                sq = (pn[:, y0 + sy : y1 + sy, x0 + sx : x1 + sx] - 2 * dot).double()
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
    (~8 fp32 ulps) of the largest |q|^2 + |r|^2. On :func:`realistic_pair` inputs (|e|^2 ~ 100) centred fp32
    ranking and exact-product bf16 ranking stay near 1/10 of it; uncentred single TF32 (10-bit products)
    exceeds it ~50x (see gpu-kernels-review.md and gpu-run-2026-12-04/diagnosis.md)."""
    return _tolerance_of(*tensors)


def coverage(top2, tol: float) -> dict:
    """Share of present minima that are clear-cut (runner-up more than ``tol`` behind, or no runner-up):
    only there is the exact index checked. Computed from the fp64 top-2 alone, before any kernel runs."""
    best, second, index = top2
    present = index >= 0
    clear = present & (second - best > tol)
    pixels = int(present.sum())
    return {"pixels": pixels, "clear_cut": int(clear.sum()), "coverage": int(clear.sum()) / max(1, pixels)}


def require_coverage(name: str, top2, tol: float, minimum: float = MIN_COVERAGE) -> dict:
    """:func:`coverage`, raising :class:`Inconclusive` when it is below ``minimum`` (the inputs, not the
    kernel, are at fault)."""
    stats = coverage(top2, tol)
    if stats["pixels"] and stats["coverage"] < minimum:
        error = Inconclusive(f"{name}: only {stats['clear_cut']} of {stats['pixels']} minima are clear-cut "
                             f"({stats['coverage']:.1%} < {minimum:.0%}): the inputs test too little, "
                             "not a kernel failure")
        error.stats = stats
        raise error
    return stats


def check_argmin(name, got, query, other, labels, top2, tol, *, window=None) -> dict:
    """Raw arg-min ``got`` (B, N, P) int64 against the fp64 ``top2`` of the same inputs.

    Asserts: every index in [-1, R); -1 exactly where the object has no candidate; every chosen pixel has
    the object's label (and lies in the window ``(k, dilation)`` for local matching); its exact fp64
    squared distance is within ``tol`` of the best; and it is the best itself wherever the runner-up is
    more than ``tol`` behind (no ranking error can excuse a swap there). Coverage (the share of such
    clear-cut minima) is judged before the kernel runs (:func:`require_coverage`). Returns statistics."""
    best, second, index = top2
    got = got.to(index.device)
    assert got.shape == index.shape, f"{name}: shape {tuple(got.shape)} != {tuple(index.shape)}"
    length = labels[0].numel()
    outside = (got < -1) | (got >= length)
    assert not outside.any(), f"{name}: {int(outside.sum())} indices outside [-1, {length})"
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
    assert worst <= tol, f"{name}: chosen pair {worst:.3g} above the minimum ({worst / tol:.3g} x tol {tol:.3g})"
    clear = ~missing & (second - best > tol)
    wrong = clear & (got != index)
    assert not wrong.any(), f"{name}: {int(wrong.sum())} of {int(clear.sum())} clear-cut arg-mins differ"
    return {**coverage(top2, tol), "max_excess_sq": worst, "excess_over_tol": worst / tol,
            "agreement": float(((got == index) | missing).double().mean()), "tolerance_sq": tol}


def self_test(device="cpu", *, size: str = "ci", dtypes=(torch.float32, torch.bfloat16)) -> list[dict]:
    """The check judged on emulated kernels (no Triton): the exact answer and the rankings the kernels use
    (centred fp32, exact-product bf16) must pass; an index shifted by one and uncentred single-TF32
    ranking must fail; inputs with four near-duplicates per block at one object must be inconclusive.
    Global and local matching, N = 1 and 3. Raises AssertionError naming the mutation that slipped
    through (or the correct answer that failed); returns one row per case."""
    if size == "ci":
        global_shape, local_shape, channels, k = (40, 64), (40, 64), 100, 4
    else:
        global_shape, local_shape, channels, k = (120, 214), (120, 214), 100, 15
    rows = []
    for kind in ("global", "local"):
        shape = global_shape if kind == "global" else local_shape
        for n in (1, 3):
            for dtype in dtypes:
                query, other = realistic_pair(1, channels, *shape, seed=31 + n, dtype=dtype, device=device)
                g = torch.Generator().manual_seed(40 + n)
                cells = torch.randint(0, n, (1, shape[0] // 8 + 1, shape[1] // 8 + 1), generator=g)
                lab = cells.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, : shape[0], : shape[1]]
                lab = lab.contiguous().to(device)
                window = (k, 1) if kind == "local" else None

                def search(ranking, q=query, o=other, lab=lab, kind=kind, n=n):
                    if kind == "global":
                        return top2_global(q, o, lab, n, ranking=ranking)
                    return top2_local(q, o, lab, n, k, 1, ranking=ranking)

                top2 = search("exact")
                tol = rank_tolerance(query, other)
                case = f"{kind} N={n} {str(dtype).removeprefix('torch.')}"
                stats = require_coverage(case, top2, tol)
                # the next pixel (the previous one at the end): a valid index, wrong
                idx, length = top2[2], lab[0].numel()
                shifted = torch.where(idx < 0, -1, torch.where(idx + 1 < length, idx + 1, idx - 1))
                correct = ["exact", "centred_fp32" if dtype == torch.float32 else "exact_products"]
                mutants = {"index + 1": shifted}
                if dtype == torch.float32:
                    mutants["uncentred single TF32"] = search("uncentred_tf32")[2]
                for ranking in correct:
                    got = top2[2] if ranking == "exact" else search(ranking)[2]
                    try:
                        result = check_argmin(case, got, query, other, lab, top2, tol, window=window)
                    except AssertionError as error:
                        raise AssertionError(f"self-test: the {ranking} ranking failed the check: {error}") from None
                    rows.append({"case": case, "answer": ranking, "verdict": "passed", **result})
                for mutation, got in mutants.items():
                    try:
                        check_argmin(case, got, query, other, lab, top2, tol, window=window)
                    except AssertionError as error:
                        rows.append({"case": case, "answer": mutation, "verdict": "failed (as it must)",
                                     "message": str(error), **stats})
                    else:
                        raise AssertionError(f"self-test: {case}: the mutation '{mutation}' passed the check")
    # the old generator at one object: too few clear-cut minima, which must be inconclusive (not a failure)
    query, other = realistic_pair(1, channels, *global_shape, seed=5, device=device, near_ties="all")
    lab = torch.zeros(1, *global_shape, dtype=torch.long, device=device)
    top2 = top2_global(query, other, lab, 1)
    try:
        require_coverage("global N=1 four near-duplicates", top2, rank_tolerance(query, other))
    except Inconclusive as error:
        rows.append({"case": "global N=1 four near-duplicates", "answer": "-", "verdict": "inconclusive (as it must)",
                     "message": str(error), **coverage(top2, rank_tolerance(query, other))})
    else:
        raise AssertionError("self-test: four near-duplicates per block at N=1 were not inconclusive")
    return rows

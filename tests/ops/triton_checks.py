"""Exactness checks of the Triton kernels against float64, at two sizes:

- ``ci``: small inputs with block sizes shrunk (``config=``) so that every block edge is crossed: several
  query and reference tiles, C not a multiple of the channel block (zero-padded chunks), W wider than the
  x block, reference rows longer than one column chunk, several object groups, strided inputs, absent
  objects, ignored labels, borders, dilation. Run by test_triton.py in the interpreter:
  ``TRITON_INTERPRET=1 python -m tests.ops.triton_checks --device cpu --size ci`` (the variable must be
  set before triton is imported, hence a separate process).
- ``real``: the benchmark sizes with the default blocks (DAVIS 480p at stride 4, VPSNet P2), on CUDA:
  ``python -m tests.ops.triton_checks --device cuda --size real --json out.json`` (``pytest -m cuda``).

Matching inputs have FEELVOS-like norms and near-duplicates (:func:`brute.realistic_pair`); raw arg-mins
are checked against an fp64 top-2 search (:func:`brute.check_argmin`). Every raw output is poisoned before
each launch and checked for unwritten elements (``triton_kernels.CHECK_WRITES``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import torch

from tests.ops import brute
from vidseg.ops import _common, correlation, global_matching, local_matching
from vidseg.ops import reference as reference_ops
from vidseg.ops import triton_kernels as tk
from vidseg.ops.triton_local_tc import local_argmin_tc

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TOL = dict(atol=2e-6, rtol=0)  # fp32 evaluation of an exact arg-min pair (unit-norm inputs)
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _strided(x: torch.Tensor) -> torch.Tensor:
    """The same values through a non-contiguous view (W is not the innermost dimension)."""
    return x.transpose(2, 3).contiguous().transpose(2, 3)


def _labels(batch, height, width, num_objects, seed, *, absent_in_last=True):
    """Random labels with ~20% ignored pixels; the last batch element lacks the last object."""
    lab = brute.labels(batch, height, width, num_objects=num_objects, seed=seed)
    if absent_in_last and num_objects > 1:
        lab[-1][lab[-1] == num_objects - 1] = 0
    return lab


def _blob_labels(batch, height, width, num_objects, seed):
    """Piecewise-constant labels (8x8 cells), a band of ignored pixels, the last object absent from the
    last batch element (real sizes: segments of very unequal length, as in DAVIS)."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, num_objects, (batch, height // 8 + 1, width // 8 + 1), generator=g)
    lab = cells.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :height, :width].contiguous()
    lab[:, height // 2 : height // 2 + 2] = brute.IGNORE
    if num_objects > 1:
        lab[-1][lab[-1] == num_objects - 1] = 0
    return lab


def _report(rows, check_name, case, dtype, stats):
    rows.append({"check": check_name, "case": case, "dtype": _name(dtype), **stats})


@check
def global_matching_argmin(device, size, rows):
    if size == "ci":
        # P = 45 -> 3 query blocks of 16; segments of ~20-30 -> 2 reference tiles of 16; C = 40 -> three
        # zero-padded chunks of 16, C = 20 -> one padded chunk of 32 (query loaded once)
        cases = [(2, 40, (5, 9), (6, 15), 3, dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)),
                 (2, 20, (5, 9), (6, 15), 3, dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32))]
    else:
        cases = [(1, 100, (120, 214), (120, 214), n, None) for n in (1, 3, 10)]
        cases.append((2, 100, (120, 214), (120, 214), 3, None))  # unequal segments per batch element
    for batch, channels, shape, ref_shape, n, cfg in cases:
        for dtype in DTYPES:
            query, ref = brute.realistic_pair(batch, channels, *shape, seed=1, dtype=dtype, other_size=ref_shape)
            lab = (_labels if size == "ci" else _blob_labels)(batch, *ref_shape, n, seed=2)
            query, ref, lab = _strided(query).to(device), ref.to(device), lab.to(device)
            arg = tk.global_argmin(query, ref, lab, n, config=cfg)
            top2 = brute.top2_global(query, ref, lab, n)
            stats = brute.check_argmin("global", arg, query, ref, lab, top2, brute.rank_tolerance(query, ref))
            _report(rows, "global", f"B={batch} C={channels} {shape}->{ref_shape} N={n}", dtype, stats)


@check
def global_matching_edge_shapes(device, size, rows):
    n = 4
    # gathered reference pixels (B, C, 1, K), a 1-pixel-high query, mixed dtypes (computed in fp32)
    query = brute.embeddings(2, 3, 1, 6, seed=4).to(device)
    ref = brute.embeddings(2, 3, 1, 70, seed=5, dtype=torch.bfloat16).to(device)
    lab = _labels(2, 1, 70, n, seed=6).to(device)
    out = global_matching(query, ref, lab, n, impl="triton")
    torch.testing.assert_close(out.cpu().double(), brute.global_matching(query.cpu(), ref.cpu(), lab.cpu(), n), **TOL)
    ignored = torch.full_like(lab, brute.IGNORE)
    assert (global_matching(query, ref, ignored, n, impl="triton") == 1.0).all()
    assert (tk.global_argmin(query, ref[..., :0], lab[..., :0], n) == -1).all()  # no reference pixel at all


@check
def local_matching_tc_argmin(device, size, rows):
    if size == "ci":
        # W = 20 -> 3 x-blocks of 8; ROWS = 2 -> 3 row blocks; k = 5 -> 18 reference columns in two chunks
        # of RN = 16; N = 3 in groups of 2; C = 20 one padded chunk of 32
        wide = (2, 20, (5, 20), 3, 5, 1, dict(BX=8, ROWS=2, RN=16, BLOCK_K=32, BLOCK_O=2))
        cases = [(dtype, *wide) for dtype in DTYPES]
        # C = 40 in three chunks of 16, dilation 2 (four residue classes), one row block of 2 x 16
        cases.append((torch.float32, 2, 40, (6, 11), 3, 2, 2, dict(BX=16, ROWS=1, RN=16, BLOCK_K=16, BLOCK_O=4)))
        cases.append((torch.float16, 1, 8, (5, 3), 3, 4, 1, dict(BX=8, ROWS=2, RN=16)))  # window > frame
        cases.append((torch.bfloat16, 1, 8, (4, 9), 2, 0, 1, dict(BX=16, ROWS=1, RN=16)))  # window = pixel
    else:
        cases = [(dtype, 1, 100, (120, 214), n, 15, 1, None) for n in (1, 3, 10) for dtype in DTYPES]
        cases += [(dtype, 1, 100, (120, 214), 3, 15, 2, None) for dtype in (torch.float32, torch.bfloat16)]
    for dtype, batch, channels, shape, n, k, d, cfg in cases:
        query, prev = brute.realistic_pair(batch, channels, *shape, seed=7, dtype=dtype)
        lab = (_labels if size == "ci" else _blob_labels)(batch, *shape, n, seed=8)
        query, prev, lab = _strided(query).to(device), prev.to(device), lab.to(device)
        arg = local_argmin_tc(query, prev, lab, n, k, d, config=cfg)
        top2 = brute.top2_local(query, prev, lab, n, k, d)
        tol = brute.rank_tolerance(query, prev)
        stats = brute.check_argmin("local tc", arg, query, prev, lab, top2, tol, window=(k, d))
        _report(rows, "local_tc", f"B={batch} C={channels} {shape} N={n} k={k} d={d}", dtype, stats)


@check
def local_matching_direct_argmin(device, size, rows):
    if size == "ci":
        # W = 20 -> 3 x-blocks of 8; C = 40 -> chunks of 16 with a partial last one; N = 3 in groups of 2
        cfg = dict(BLOCK_X=8, BLOCK_C=16, BLOCK_O=2)
        cases = [(dtype, 2, 40, (2, 20), 3, 1, 1, cfg) for dtype in DTYPES]
        cases.append((torch.float32, 1, 12, (5, 9), 3, 1, 2, cfg))
    else:
        cases = [(dtype, 1, 100, (120, 214), 3, 15, 1, None) for dtype in (torch.float32, torch.bfloat16)]
    for dtype, batch, channels, shape, n, k, d, cfg in cases:
        query, prev = brute.realistic_pair(batch, channels, *shape, seed=9, dtype=dtype)
        lab = (_labels if size == "ci" else _blob_labels)(batch, *shape, n, seed=10)
        query, prev, lab = _strided(query).to(device), prev.to(device), lab.to(device)
        arg = tk.local_argmin_direct(query, prev, lab, n, k, d, config=cfg)
        top2 = brute.top2_local(query, prev, lab, n, k, d)
        tol = brute.rank_tolerance(query, prev)
        stats = brute.check_argmin("local direct", arg, query, prev, lab, top2, tol, window=(k, d))
        _report(rows, "local_direct", f"B={batch} C={channels} {shape} N={n} k={k} d={d}", dtype, stats)


@check
def correlation_cost_volume(device, size, rows):
    if size == "ci":
        # W = 20 -> 2 x-blocks of 16; C = 40 -> chunks of 16 with a partial last one; r = 2 at every border
        cases = [(2, 40, (4, 20), 2, dict(BX=16, BLOCK_K=16))]
    else:
        cases = [(1, 256, (256, 512), 4, None)]
    for batch, channels, shape, r, cfg in cases:
        for dtype in DTYPES:
            x1 = _strided(brute.embeddings(batch, channels, *shape, seed=11, dtype=dtype)).to(device)
            x2 = brute.embeddings(batch, channels, *shape, seed=12, dtype=dtype).to(device)
            x2 = x2.contiguous(memory_format=torch.channels_last)  # strided the other way
            got = tk.correlation_sum(x1, x2, r, config=cfg).double()
            want = reference_ops.correlation_sum(x1.double(), x2.double(), r)  # fp64, checked against brute
            err = float((got - want).abs().max())
            scale = float(want.abs().max())
            # fp32 accumulation of C products (exact for bf16/fp16 operands; 3xTF32 or fp32 for fp32)
            assert err <= 2e-6 * scale + 1e-7, f"correlation {_name(dtype)}: max error {err:.3g} (scale {scale:.3g})"
            rows.append({"check": "correlation", "case": f"B={batch} C={channels} {shape} r={r}", "dtype": _name(dtype),
                         "max_abs_error": err, "max_abs_ref": scale})


@check
def public_ops_dispatch(device, size, rows):
    """The ops' public API with impl="triton" and default blocks: exact fp32 distances (unit norms)."""
    n = 4
    lab = _labels(2, 4, 9, n, seed=13).to(device)
    prev_lab = _labels(2, 5, 7, n, seed=16).to(device)
    for dtype in DTYPES:
        query = brute.embeddings(2, 6, 5, 7, seed=14, dtype=dtype).to(device)
        ref = brute.embeddings(2, 6, 4, 9, seed=15, dtype=dtype).to(device)
        prev = brute.embeddings(2, 6, 5, 7, seed=17, dtype=dtype).to(device)
        out = global_matching(query, ref, lab, n, impl="triton")
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.cpu().double(), brute.global_matching(query.cpu(), ref.cpu(), lab.cpu(), n),
                                   **TOL)
        want = brute.local_matching(query.cpu(), prev.cpu(), prev_lab.cpu(), n, 2, 1)
        torch.testing.assert_close(local_matching(query, prev, prev_lab, n, 2, 1, impl="triton").cpu().double(),
                                   want, **TOL)
        direct = tk.local_argmin(query, prev, prev_lab, n, 2, 1, kernel="direct")
        sq = _common.squared_distance_at(query.flatten(2), prev.flatten(2), direct)
        torch.testing.assert_close(_common.distance_from_squared(sq).cpu().double().view_as(want), want, **TOL)
        out = correlation(query, prev, 2, impl="triton")
        torch.testing.assert_close(out.cpu().double(), brute.correlation(query.cpu(), prev.cpu(), 2, True),
                                   atol=1e-6, rtol=1e-5)
    if device == "cuda":
        assert _common.resolve_impl("auto", query) == "triton"


@check
def gradients(device, size, rows):
    """The backward pass is shared; check it receives the right arg-min from the kernels."""
    n = 3
    lab = _labels(2, 4, 5, n, seed=18).to(device)
    query = brute.embeddings(2, 3, 4, 5, seed=19).to(device)
    other = brute.embeddings(2, 3, 4, 5, seed=20).to(device)
    ops = [
        lambda q, o, impl: global_matching(q, o, lab, n, impl=impl),
        lambda q, o, impl: local_matching(q, o, lab, n, 1, impl=impl),
        lambda q, o, impl: correlation(q, o, 1, impl=impl),
    ]
    for op in ops:
        grads = {}
        for impl in ("triton", "cpu"):
            q, o = query.clone().requires_grad_(), other.clone().requires_grad_()
            op(q, o, impl).square().sum().backward()
            grads[impl] = (q.grad, o.grad)
        for got, want in zip(grads["triton"], grads["cpu"], strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def run_all(device: str, size: str = "ci", only: list[str] | None = None) -> tuple[list[str], list[dict]]:
    """Run the checks (all, or those named in ``only``) with poisoned outputs; returns (failures, rows).

    Prints ``<check>: ok`` or ``<check>: FAILED`` with the traceback; a failure does not stop the others."""
    failures, rows = [], []
    saved = tk.CHECK_WRITES
    tk.CHECK_WRITES = True
    try:
        for fn in CHECKS:
            if only and fn.__name__ not in only:
                continue
            start = time.perf_counter()
            try:
                fn(device, size, rows)
            except Exception:  # report every failing check, not only the first
                failures.append(fn.__name__)
                print(f"{fn.__name__}: FAILED\n{traceback.format_exc()}", flush=True)
            else:
                print(f"{fn.__name__}: ok ({time.perf_counter() - start:.1f} s)", flush=True)
    finally:
        tk.CHECK_WRITES = saved
    return failures, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="ci", choices=("ci", "real"))
    parser.add_argument("--only", nargs="*", help="names of the checks to run (default: all)")
    parser.add_argument("--json", help="write the per-case statistics here")
    args = parser.parse_args(argv)
    failures, rows = run_all(args.device, args.size, args.only)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "size": args.size, "failures": failures, "rows": rows}, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Exactness checks of the Triton kernels against float64, at two sizes:

- ``ci``: small inputs with block sizes shrunk (``config=``) so that every block edge is crossed: several
  query and reference tiles, C not a multiple of the channel block (zero-padded chunks), W wider than the
  x block, reference rows longer than one column chunk, several object groups, strided inputs, absent
  objects, ignored labels, borders, dilation. Run by test_triton.py in the interpreter:
  ``TRITON_INTERPRET=1 python -m tests.ops.triton_checks --device cpu --size ci`` (the variable must be
  set before triton is imported, hence a separate process).
- ``real``: the benchmark sizes with the default blocks (DAVIS 480p at stride 4, VPSNet P2), on CUDA:
  ``python -m tests.ops.triton_checks --device cuda --size real --json out.json`` (``pytest -m cuda``).

Matching inputs have FEELVOS-like norms and controlled near-ties (:func:`brute.realistic_pair`: one
near-duplicate per 2x2 block, the others pushed away); raw arg-mins are checked against an fp64 top-2
search (:func:`brute.check_argmin`). The share of clear-cut minima is computed from that top-2 before the
kernel runs: too few makes the case *inconclusive* (the inputs' fault), never failed. Every case runs and
gets a row (status ok / failed / inconclusive), whatever the others did. The check itself is tested first
(:func:`brute.self_test`: the exact answer passes, an index shifted by one and uncentred single-TF32
ranking fail). Every raw output is poisoned before each launch and checked for unwritten elements
(``triton_kernels.CHECK_WRITES``).
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


class CheckFailed(AssertionError):
    """A check with at least one failed case (a kernel is wrong)."""


def run_case(rows: list[dict], check_name: str, case: str, dtype, body) -> dict:
    """Run one case, ``body() -> stats``, and record its row whatever happens: status "ok", "failed"
    (any error: a kernel or the code around it is wrong) or "inconclusive" (:class:`brute.Inconclusive`:
    the inputs test too little). Never raises: the next case runs."""
    row = {"check": check_name, "case": case, "dtype": _name(dtype) if isinstance(dtype, torch.dtype) else dtype}
    start = time.perf_counter()
    try:
        stats = body() or {}
    except brute.Inconclusive as error:
        row.update(status="inconclusive", message=str(error), **getattr(error, "stats", {}))
    except Exception as error:  # every case gets its row; the traceback goes to the log
        row.update(status="failed", message=f"{type(error).__name__}: {error}")
        print(f"{check_name} [{case} {row['dtype']}]: FAILED\n{traceback.format_exc()}", flush=True)
    else:
        row.update(status="ok", **stats)
    row["seconds"] = round(time.perf_counter() - start, 3)
    rows.append(row)
    return row


def verdict(rows: list[dict], first: int, name: str) -> None:
    """Raise when a case recorded since ``rows[first]`` failed (:class:`CheckFailed`) or, none failing, was
    inconclusive (:class:`brute.Inconclusive`)."""
    mine = rows[first:]
    failed = [f"{r['case']} {r['dtype']}: {r['message']}" for r in mine if r.get("status") == "failed"]
    if failed:
        raise CheckFailed(f"{name}: {len(failed)} of {len(mine)} cases failed:\n  " + "\n  ".join(failed))
    unsure = [f"{r['case']} {r['dtype']}: {r['message']}" for r in mine if r.get("status") == "inconclusive"]
    if unsure:
        raise brute.Inconclusive(f"{name}: {len(unsure)} of {len(mine)} cases inconclusive:\n  " + "\n  ".join(unsure))


def _argmin_case(name, search, query, other, lab, top2_fn, window=None):
    """body of one arg-min case: fp64 top-2 and coverage first (inconclusive before the kernel runs),
    then the kernel, then the exact check."""

    def body():
        top2 = top2_fn()
        tol = brute.rank_tolerance(query, other)
        brute.require_coverage(name, top2, tol)
        arg = search()
        return brute.check_argmin(name, arg, query, other, lab, top2, tol, window=window)

    return body


@check
def argmin_check_self_test(device, size, rows):
    """The arg-min check judged on emulated kernels before it judges the real ones (brute.self_test)."""
    first = len(rows)
    dtypes = (torch.float32, torch.bfloat16) if size == "ci" else (torch.float32,)

    def body():
        results = brute.self_test(device, size=size, dtypes=dtypes)
        tf32 = [r["message"] for r in results if r["answer"] == "uncentred single TF32"]
        return {"cases": len(results), "mutations_caught": sum(r["verdict"].startswith("failed") for r in results),
                "tf32_example": tf32[0][:160] if tf32 else None}

    run_case(rows, "self_test", f"mutations ({size})", "float32+bfloat16" if size == "ci" else "float32", body)
    verdict(rows, first, "argmin_check_self_test")


@check
def global_matching_argmin(device, size, rows):
    if size == "ci":
        # P = 45 -> 3 query blocks of 16; segments of ~20-30 -> 2 reference tiles of 16; C = 40 -> three
        # zero-padded chunks of 16, C = 20 -> one padded chunk of 32 (query loaded once); the running
        # elementwise minimum (default) and the per-tile min-with-index
        cases = [(2, 40, (5, 9), (6, 15), 3, dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)),
                 (2, 20, (5, 9), (6, 15), 3, dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32)),
                 (2, 20, (5, 9), (6, 15), 3, dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, RUNNING_MIN=False))]
    else:
        cases = [(1, 100, (120, 214), (120, 214), n, None) for n in (1, 3, 10)]
        cases.append((2, 100, (120, 214), (120, 214), 3, None))  # unequal segments per batch element
    first = len(rows)
    for batch, channels, shape, ref_shape, n, cfg in cases:
        for dtype in DTYPES:
            query, ref = brute.realistic_pair(batch, channels, *shape, seed=1, dtype=dtype, other_size=ref_shape)
            lab = (_labels if size == "ci" else _blob_labels)(batch, *ref_shape, n, seed=2)
            query, ref, lab = _strided(query).to(device), ref.to(device), lab.to(device)
            body = _argmin_case("global", lambda q=query, r=ref, lab=lab, n=n, cfg=cfg: tk.global_argmin(
                q, r, lab, n, config=cfg), query, ref, lab, lambda q=query, r=ref, lab=lab, n=n: brute.top2_global(
                q, r, lab, n))
            run_case(rows, "global", f"B={batch} C={channels} {shape}->{ref_shape} N={n}", dtype, body)
    verdict(rows, first, "global_matching_argmin")


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
    # exact ties across reference tiles (every reference pixel equal): the first pixel of each object wins,
    # as in the reference, with the running minimum and with the per-tile min-with-index
    same = ref[..., :1].expand_as(ref).contiguous()
    first = torch.stack([torch.stack([(lab[b, 0] == o).int().argmax() if (lab[b, 0] == o).any() else
                                      torch.tensor(-1, device=device) for o in range(n)]) for b in range(2)])
    for running in (True, False):
        cfg = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, RUNNING_MIN=running)
        arg = tk.global_argmin(query, same, lab, n, config=cfg)
        assert (arg == first[:, :, None].long()).all(), f"ties (RUNNING_MIN={running}): {arg[:, :, 0].tolist()}"

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
    first = len(rows)
    for dtype, batch, channels, shape, n, k, d, cfg in cases:
        query, prev = brute.realistic_pair(batch, channels, *shape, seed=7, dtype=dtype)
        lab = (_labels if size == "ci" else _blob_labels)(batch, *shape, n, seed=8)
        query, prev, lab = _strided(query).to(device), prev.to(device), lab.to(device)
        body = _argmin_case(
            "local tc", lambda q=query, p=prev, lab=lab, n=n, k=k, d=d, cfg=cfg: local_argmin_tc(
                q, p, lab, n, k, d, config=cfg), query, prev, lab,
            lambda q=query, p=prev, lab=lab, n=n, k=k, d=d: brute.top2_local(q, p, lab, n, k, d), window=(k, d))
        run_case(rows, "local_tc", f"B={batch} C={channels} {shape} N={n} k={k} d={d}", dtype, body)
    verdict(rows, first, "local_matching_tc_argmin")


@check
def local_matching_direct_argmin(device, size, rows):
    if size == "ci":
        # W = 20 -> 3 x-blocks of 8; C = 40 -> chunks of 16 with a partial last one; N = 3 in groups of 2
        cfg = dict(BLOCK_X=8, BLOCK_C=16, BLOCK_O=2)
        cases = [(dtype, 2, 40, (2, 20), 3, 1, 1, cfg) for dtype in DTYPES]
        cases.append((torch.float32, 1, 12, (5, 9), 3, 1, 2, cfg))
    else:
        cases = [(dtype, 1, 100, (120, 214), 3, 15, 1, None) for dtype in (torch.float32, torch.bfloat16)]
    first = len(rows)
    for dtype, batch, channels, shape, n, k, d, cfg in cases:
        query, prev = brute.realistic_pair(batch, channels, *shape, seed=9, dtype=dtype)
        lab = (_labels if size == "ci" else _blob_labels)(batch, *shape, n, seed=10)
        query, prev, lab = _strided(query).to(device), prev.to(device), lab.to(device)
        body = _argmin_case(
            "local direct", lambda q=query, p=prev, lab=lab, n=n, k=k, d=d, cfg=cfg: tk.local_argmin_direct(
                q, p, lab, n, k, d, config=cfg), query, prev, lab,
            lambda q=query, p=prev, lab=lab, n=n, k=k, d=d: brute.top2_local(q, p, lab, n, k, d), window=(k, d))
        run_case(rows, "local_direct", f"B={batch} C={channels} {shape} N={n} k={k} d={d}", dtype, body)
    verdict(rows, first, "local_matching_direct_argmin")


@check
def correlation_cost_volume(device, size, rows):
    if size == "ci":
        # W = 20 -> 2 x-blocks of 16; C = 40 -> chunks of 16 with a partial last one; r = 2 at every border
        cases = [(2, 40, (4, 20), 2, dict(BX=16, BLOCK_K=16))]
    else:
        cases = [(1, 256, (256, 512), 4, None)]
    first = len(rows)
    for batch, channels, shape, r, cfg in cases:
        for dtype in DTYPES:

            def body(dtype=dtype, batch=batch, channels=channels, shape=shape, r=r, cfg=cfg):
                x1 = _strided(brute.embeddings(batch, channels, *shape, seed=11, dtype=dtype)).to(device)
                x2 = brute.embeddings(batch, channels, *shape, seed=12, dtype=dtype).to(device)
                x2 = x2.contiguous(memory_format=torch.channels_last)  # strided the other way
                got = tk.correlation_sum(x1, x2, r, config=cfg).double()
                want = reference_ops.correlation_sum(x1.double(), x2.double(), r)  # fp64, checked against brute
                err = float((got - want).abs().max())
                scale = float(want.abs().max())
                # fp32 accumulation of C products (exact for bf16/fp16 operands; 3xTF32 or fp32 for fp32)
                assert err <= 2e-6 * scale + 1e-7, (f"correlation {_name(dtype)}: max error {err:.3g} "
                                                    f"(scale {scale:.3g})")
                return {"max_abs_error": err, "max_abs_ref": scale}

            run_case(rows, "correlation", f"B={batch} C={channels} {shape} r={r}", dtype, body)
    verdict(rows, first, "correlation_cost_volume")


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


def run_all(device: str, size: str = "ci", only: list[str] | None = None,
            inconclusive: list[str] | None = None, progress=None) -> tuple[list[str], list[dict]]:
    """Run the checks (all, or those named in ``only``) with poisoned outputs; returns (failures, rows):
    the checks with a failed case (a kernel is wrong) and one row per case. Checks whose cases were only
    inconclusive (too few clear-cut minima: the inputs' fault) are appended to ``inconclusive``, not to
    the failures.

    Prints ``<check>: ok``, ``<check>: INCONCLUSIVE`` or ``<check>: FAILED`` with the traceback; nothing
    stops the other checks or the other cases of a check. ``progress(failures, inconclusive, rows)`` is
    called after each check (the GPU check writes its JSON there, so a run stopped at its cap keeps it)."""
    failures, rows = [], []
    inconclusive = [] if inconclusive is None else inconclusive
    saved = tk.CHECK_WRITES
    tk.CHECK_WRITES = True
    try:
        for fn in CHECKS:
            if only and fn.__name__ not in only:
                continue
            start = time.perf_counter()
            try:
                fn(device, size, rows)
            except brute.Inconclusive as error:
                inconclusive.append(fn.__name__)
                print(f"{fn.__name__}: INCONCLUSIVE (not a kernel failure)\n{error}", flush=True)
            except Exception:  # report every failing check, not only the first
                failures.append(fn.__name__)
                print(f"{fn.__name__}: FAILED\n{traceback.format_exc()}", flush=True)
            else:
                print(f"{fn.__name__}: ok ({time.perf_counter() - start:.1f} s)", flush=True)
            if progress is not None:
                progress(failures, inconclusive, rows)
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
    inconclusive: list[str] = []

    def progress(failures, inconclusive, rows):
        write_json(args.json, args.device, args.size, failures, inconclusive, rows)

    failures, rows = run_all(args.device, args.size, args.only, inconclusive, progress if args.json else None)
    # 1: a kernel is wrong; 3: no kernel is wrong but some inputs tested too little
    return 1 if failures else 3 if inconclusive else 0


def write_json(path, device: str, size: str, failures: list[str], inconclusive: list[str], rows: list[dict]) -> None:
    """The per-case rows and the verdicts (bench/gpu_check.py reads ``failures`` to decide the fallback)."""
    if device == "cuda":
        device = torch.cuda.get_device_name()
    with open(path, "w") as f:
        json.dump({"device": device, "size": size, "failures": failures, "inconclusive": inconclusive,
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())

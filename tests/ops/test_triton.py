"""Triton kernels: exactness in the interpreter on CPU at block-edge-crossing sizes (a subprocess with
TRITON_INTERPRET=1, which must be set before triton is imported) and, where a GPU is present, on CUDA
at the benchmark sizes (``pytest -m cuda``; bench/gpu_check.py runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.ops import brute, triton_checks
from vidseg.ops import _common

ROOT = Path(__file__).resolve().parents[2]
needs_triton = pytest.mark.skipif(not _common.triton_available(), reason="triton is not installed")


@needs_triton
def test_triton_kernels_in_interpreter(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.ops.triton_checks", "--device", "cpu", "--size", "ci",
         "--json", str(tmp_path / "checks.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok") == len(triton_checks.CHECKS), result.stdout
    rows = json.loads((tmp_path / "checks.json").read_text())["rows"]
    # every kernel was checked at every input dtype
    for kernel in ("global", "local_tc", "local_direct", "correlation"):
        assert {r["dtype"] for r in rows if r["check"] == kernel} == {"float32", "bfloat16", "float16"}, kernel


@needs_triton
def test_unwritten_outputs_are_detected():
    """The poison check behind every kernel launch in the checks: it must fire on a poisoned element."""
    from vidseg.ops import triton_kernels as tk

    arg = torch.tensor([[-1, 0, 4]], dtype=torch.int32)
    saved = tk.CHECK_WRITES
    tk.CHECK_WRITES = True
    try:
        tk.check_indices(arg, 5, "test")  # -1 (nothing found) and in-range indices pass
        with pytest.raises(RuntimeError, match="unwritten"):
            tk.check_indices(torch.tensor([[0, tk.ARG_POISON]], dtype=torch.int32), 5, "test")
        with pytest.raises(RuntimeError, match="unwritten"):
            tk.check_indices(arg, 4, "test")  # index 4 is out of range for 4 reference pixels
    finally:
        tk.CHECK_WRITES = saved
    with pytest.raises(ValueError, match="unknown kernel settings"):
        tk.global_argmin(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long), 1,
                         config={"BLOCK_Q": 16})


@needs_triton
@pytest.mark.cuda
def test_triton_kernels_on_cuda_at_real_sizes():
    """Every CUDA path against float64 at the benchmark sizes, outputs poisoned before each launch; every
    case runs and is recorded. A kernel failure and an inconclusive case (inputs that tested too little)
    both fail this test, with different messages; bench/gpu_check.py falls back only on the first.

    VIDSEG_TRITON_CHECKS_JSON=<file> keeps the per-case rows, written after each check."""
    out = os.environ.get("VIDSEG_TRITON_CHECKS_JSON")
    inconclusive: list[str] = []

    def progress(failures, inconclusive, rows):
        triton_checks.write_json(out, "cuda", "real", failures, inconclusive, rows)

    failures, _ = triton_checks.run_all("cuda", "real", inconclusive=inconclusive, progress=progress if out else None)
    assert not failures, f"kernel checks failed: {failures}"
    assert not inconclusive, f"inconclusive (too few clear-cut minima; no kernel failed): {inconclusive}"


@needs_triton
@pytest.mark.cuda
def test_triton_kernels_on_cuda_at_ci_sizes():
    """The interpreter's block-edge cases, compiled (small blocks are valid on the GPU too); the check's
    self-test already ran at the real size."""
    only = [fn.__name__ for fn in triton_checks.CHECKS if fn.__name__ != "argmin_check_self_test"]
    failures, _ = triton_checks.run_all("cuda", "ci", only)
    assert not failures, failures


# ---------------------------------------------------------------------------------------------------
# the arg-min check itself (no Triton: emulated kernels, fp64 references; seconds on CPU)


def _case(kind: str, n: int, dtype=torch.float32, near_ties: str = "one"):
    from tests.ops import brute

    shape, k = (40, 64), 4
    query, other = brute.realistic_pair(1, 100, *shape, seed=50 + n, dtype=dtype, near_ties=near_ties)
    g = torch.Generator().manual_seed(60 + n)
    lab = torch.randint(0, n, (1, shape[0] // 8 + 1, shape[1] // 8 + 1), generator=g)
    lab = lab.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, : shape[0], : shape[1]].contiguous()

    def search(ranking="exact"):
        if kind == "global":
            return brute.top2_global(query, other, lab, n, ranking=ranking)
        return brute.top2_local(query, other, lab, n, k, 1, ranking=ranking)

    window = (k, 1) if kind == "local" else None
    return query, other, lab, search, window, brute.rank_tolerance(query, other)


@pytest.mark.parametrize("kind", ["global", "local"])
@pytest.mark.parametrize("n", [1, 3])
def test_argmin_check_passes_the_exact_answer_and_the_kernels_rankings(kind, n):
    from tests.ops import brute

    query, other, lab, search, window, tol = _case(kind, n)
    top2 = search()
    assert brute.require_coverage("case", top2, tol)["coverage"] >= 0.6  # one near-duplicate per block
    stats = brute.check_argmin("exact", top2[2], query, other, lab, top2, tol, window=window)
    assert stats["agreement"] == 1.0 and stats["excess_over_tol"] < 1e-3
    stats = brute.check_argmin("centred fp32", search("centred_fp32")[2], query, other, lab, top2, tol, window=window)
    assert stats["excess_over_tol"] <= 0.2  # the GPU run's target for the real kernels


@pytest.mark.parametrize("kind", ["global", "local"])
def test_argmin_check_fails_an_index_shifted_by_one(kind):
    from tests.ops import brute

    query, other, lab, search, window, tol = _case(kind, 1)
    top2 = search()
    index, length = top2[2], lab[0].numel()
    shifted = torch.where(index + 1 < length, index + 1, index - 1)  # in range: only the check can tell
    with pytest.raises(AssertionError, match="above the minimum|clear-cut|window|label"):
        brute.check_argmin("index + 1", shifted, query, other, lab, top2, tol, window=window)


@pytest.mark.parametrize("kind", ["global", "local"])
@pytest.mark.parametrize("n", [1, 3])
def test_argmin_check_fails_uncentred_single_tf32_ranking(kind, n):
    from tests.ops import brute

    query, other, lab, search, window, tol = _case(kind, n)
    top2 = search()
    with pytest.raises(AssertionError, match="above the minimum|clear-cut"):
        brute.check_argmin("tf32", search("uncentred_tf32")[2], query, other, lab, top2, tol, window=window)


def test_too_little_coverage_is_inconclusive_not_a_failure():
    """Four near-duplicates per block at one object (the 2026-12-04 inputs): even the exact answer cannot be
    judged. The case is recorded inconclusive before any kernel runs, and run_all does not count it as a
    failed check (bench/gpu_check.py falls back to the direct kernel only on failures)."""
    from tests.ops import brute

    query, other, lab, search, window, tol = _case("global", 1, near_ties="all")
    top2 = search()
    assert brute.coverage(top2, tol)["coverage"] < brute.MIN_COVERAGE
    with pytest.raises(brute.Inconclusive, match="not a kernel failure"):
        brute.require_coverage("global", top2, tol)

    launched = []

    def fake_check(device, size, rows):
        first = len(rows)
        body = triton_checks._argmin_case("global", lambda: launched.append(1), query, other, lab, lambda: top2)
        triton_checks.run_case(rows, "global", "four near-duplicates", torch.float32, body)
        triton_checks.verdict(rows, first, "fake_check")

    inconclusive: list[str] = []
    saved = triton_checks.CHECKS[:]
    triton_checks.CHECKS[:] = [fake_check]
    try:
        failures, rows = triton_checks.run_all("cpu", inconclusive=inconclusive)
    finally:
        triton_checks.CHECKS[:] = saved
    assert failures == [] and inconclusive == ["fake_check"]
    assert rows[0]["status"] == "inconclusive" and rows[0]["coverage"] < brute.MIN_COVERAGE
    assert not launched  # judged before the kernel ran


def test_every_case_runs_and_is_recorded_whatever_the_others_did():
    from tests.ops import brute

    def boom():
        raise AssertionError("wrong index")

    def unsure():
        raise brute.Inconclusive("too few clear-cut minima")

    def fake_check(device, size, rows):
        first = len(rows)
        for case, body in (("a", boom), ("b", unsure), ("c", lambda: {"coverage": 0.9})):
            triton_checks.run_case(rows, "fake", case, torch.bfloat16, body)
        triton_checks.verdict(rows, first, "fake_check")

    saved = triton_checks.CHECKS[:]
    triton_checks.CHECKS[:] = [fake_check, fake_check]
    try:
        inconclusive: list[str] = []
        failures, rows = triton_checks.run_all("cpu", inconclusive=inconclusive)
    finally:
        triton_checks.CHECKS[:] = saved
    assert failures == ["fake_check", "fake_check"] and inconclusive == []  # a failure outranks inconclusive
    assert [r["status"] for r in rows] == ["failed", "inconclusive", "ok"] * 2
    assert rows[0]["message"] == "AssertionError: wrong index" and rows[2]["coverage"] == 0.9


def test_the_self_test_catches_both_mutations():
    """brute.self_test, which the GPU run executes first at the real size: it raises if a mutation passes."""
    from tests.ops import brute

    rows = brute.self_test("cpu", size="ci", dtypes=(torch.float32,))
    caught = {(r["case"], r["answer"]) for r in rows if r["verdict"].startswith("failed")}
    for kind in ("global", "local"):
        for n in (1, 3):
            case = f"{kind} N={n} float32"
            assert {(case, "index + 1"), (case, "uncentred single TF32")} <= caught
    assert any(r["verdict"].startswith("inconclusive") for r in rows)


# ---------------------------------------------------------------------------------------------------
# shared memory: the estimate before launching, stages that fit, settings that cannot run


@needs_triton
def test_shared_memory_estimate_matches_the_h200_run():
    """Every setting the 2026-12-04 H200 run compiled (gpu_check.md's kernel table, Triton 3.6)."""
    from vidseg.ops import triton_kernels as tk

    fp32, bf16 = torch.float32, torch.bfloat16
    glob = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128}
    assert tk.shared_memory_need("global", glob, fp32, 3) == 196608
    assert tk.shared_memory_need("global", glob, bf16, 3) == 65536
    for bx, rows, rn, measured in ((64, 2, 128, 196608), (64, 1, 128, 163840), (32, 2, 64, 98304),
                                   (32, 4, 64, 131072)):
        blocks = {"BX": bx, "ROWS": rows, "RN": rn, "BLOCK_K": 128}
        assert tk.shared_memory_need("local_tc", blocks, fp32, 2) == measured
    # the setting that stopped the sweep: "Required: 327680, Hardware limit: 232448"
    assert tk.shared_memory_need("local_tc", {"BX": 128, "ROWS": 1, "RN": 256, "BLOCK_K": 128}, fp32, 2) == 327680
    corr = {"BX": 64, "RN": 128, "BLOCK_K": 32}
    assert tk.shared_memory_need("correlation", corr, fp32, 2) == 57344
    assert tk.shared_memory_need("correlation", corr, bf16, 2) == 12288


@needs_triton
def test_fit_stages_lowers_stages_and_refuses_what_cannot_fit():
    from vidseg.ops import triton_kernels as tk

    big = {"BX": 128, "ROWS": 1, "RN": 256, "BLOCK_K": 128}
    assert tk.fit_stages("local_tc", big, torch.float32, 2, None) == (2, 327680)  # no limit off CUDA
    assert tk.fit_stages("local_tc", big, torch.float32, 2, 232448) == (1, 196608)
    assert tk.fit_stages("local_tc", big, torch.bfloat16, 2, 232448) == (2, 163840)
    with pytest.raises(tk.KernelResourceError, match=r"global .*262144 > 232448 B \(estimated before launching\)"):
        tk.fit_stages("global", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128}, torch.float32, 2, 232448)
    error = tk.KernelResourceError(1, 2, "shared memory", kernel="global", config={"BLOCK_M": 128})
    from triton.runtime.errors import OutOfResources

    assert isinstance(error, OutOfResources)  # one except catches Triton's and vidseg's
    import pickle

    assert str(pickle.loads(pickle.dumps(error))) == str(error)


@needs_triton
def test_wrappers_launch_with_stages_that_fit(fake_kernels):
    from vidseg.ops import triton_kernels as tk
    from vidseg.ops.triton_local_tc import local_argmin_tc

    fake_kernels.limit = 232448
    query, prev = torch.randn(1, 100, 6, 9), torch.randn(1, 100, 6, 9)
    lab = torch.zeros(1, 6, 9, dtype=torch.long)
    arg = local_argmin_tc(query, prev, lab, 2, 15, 1, config={"BX": 128, "ROWS": 1, "RN": 256, "num_warps": 8})
    assert (arg == -1).all()
    assert fake_kernels.launches[-1]["num_stages"] == 1 and fake_kernels.launches[-1]["RN"] == 256
    assert tk.LAST_CONFIG["local_tc"]["shared_estimate"] == 196608
    local_argmin_tc(query, prev, lab, 2, 15, 1)  # the defaults fit with their two stages
    assert fake_kernels.launches[-1]["num_stages"] == 2 and fake_kernels.launches[-1]["BX"] == 32
    tk.global_argmin(query, prev, lab, 2)  # fp32 defaults: 196,608 B at three stages
    assert fake_kernels.launches[-1]["num_stages"] == 3 and fake_kernels.launches[-1]["RUNNING_MIN"] is True
    count = len(fake_kernels.launches)
    with pytest.raises(tk.KernelResourceError, match="estimated before launching"):
        tk.global_argmin(query, prev, lab, 2, config={"BLOCK_M": 128, "BLOCK_N": 128, "num_stages": 2})
    assert len(fake_kernels.launches) == count  # refused before launching
    fake_kernels.limit = None
    tk.global_argmin(query, prev, lab, 2, config={"BLOCK_M": 128, "BLOCK_N": 128, "num_stages": 2})
    assert fake_kernels.launches[-1]["num_stages"] == 2  # no limit known (CPU): unchanged


@needs_triton
def test_launch_names_the_setting_when_triton_runs_out_of_resources(fake_kernels):
    from vidseg.ops import triton_kernels as tk

    fake_kernels.fail = lambda name, meta: name == "correlation"
    x = torch.randn(1, 8, 4, 6)
    with pytest.raises(tk.KernelResourceError, match=r"correlation \{.*'BX': 64.*reported by Triton at launch"):
        tk.correlation_sum(x, x, 2)


@needs_triton
def test_the_defaults_halve_their_channel_chunk_on_a_gpu_with_less_shared_memory(fake_kernels):
    """99 KB per block (sm_86): global fp32 defaults need 131,072 B even at one stage; a chunk of 64
    channels fits at three. A setting asked for explicitly is refused instead of changed."""
    from vidseg.ops import triton_kernels as tk

    fake_kernels.limit = 101376
    query, ref = torch.randn(1, 100, 4, 5), torch.randn(1, 100, 4, 5)
    lab = torch.zeros(1, 4, 5, dtype=torch.long)
    assert (tk.global_argmin(query, ref, lab, 1) == -1).all()
    launched = fake_kernels.launches[-1]
    assert (launched["BLOCK_K"], launched["num_stages"], launched["CP"]) == (64, 3, 128)
    with pytest.raises(tk.KernelResourceError, match="131072 > 101376"):
        tk.global_argmin(query, ref, lab, 1, config={"BLOCK_K": 128})


# ---------------------------------------------------------------------------------------------------
# correlation backward kernel: against float64 autograd, poisoned outputs (interpreter on CPU, CUDA)

# (B, C, H, W, r, normalize, config): block sizes shrunk so small inputs cross every edge
_GRAD_CASES = [
    (2, 40, 5, 37, 2, True, {"BX": 16, "BLOCK_K": 16}),  # 3 x-blocks, 3 channel chunks (last partial)
    (1, 6, 3, 4, 3, False, {"BX": 16, "BLOCK_K": 16}),  # displacement beyond the image (every border)
    (1, 5, 4, 6, 0, True, {"BX": 16, "BLOCK_K": 16}),  # r = 0
    (1, 17, 6, 21, 4, True, {"BX": 16, "BLOCK_K": 16}),  # r = 4 (VPSNet), 2 x-blocks
    (1, 9, 4, 11, 1, False, None),  # the defaults (one block)
]
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# unit roundoff of the result's dtype; Triton's interpreter truncates fp32 -> bf16 (a full ulp, 2^-7), the
# GPU rounds to nearest even
_ROUNDING = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-7 if _INTERPRETED else 2.0**-8, torch.float16: 2.0**-11}
_SUBNORMAL = {torch.float32: 0.0, torch.bfloat16: 0.0, torch.float16: 2.0**-25}  # half the spacing below 2^-14


def _correlation_grad_reference(grad, x1, x2, r, normalize):
    """float64 autograd through the reference forward (exact input values; bf16/fp16 are exact in fp64)."""
    from vidseg.ops import reference as reference_ops

    a, b = x1.double().requires_grad_(), x2.double().requires_grad_()
    out = reference_ops.correlation_sum(a, b, r)
    if normalize:
        out = out / a.shape[1]
    return torch.autograd.grad(out, (a, b), grad.double())


def _check_correlation_grad(device, dtype, case, *, x2_dtype=None):
    """The kernel's gradients vs float64 autograd, outputs NaN-poisoned before the launches.

    Tolerance per element: the rounding of the result to ``dtype`` (unit roundoff 2^-24 / 2^-8 / 2^-11 of
    |reference|; 2^-7 for bf16 in the interpreter, which truncates; at least 2^-25 absolute for fp16's
    subnormals) plus 2^-16 of sum_d |g| |x|, which bounds an fp32 accumulation of up to 81 products with bf16
    hi + lo weights (~2^-17 each) or 3xTF32; a wrong index or border gives errors of order 1 there.
    Inputs are strided both ways; the grad is strided (normalize) or an expanded stride-0 view (not
    normalize), as autograd hands it over after ``sum``."""
    from vidseg.ops import triton_kernels as tk

    batch, channels, height, width, r, normalize, cfg = case
    x1 = tk_strided(brute.embeddings(batch, channels, height, width, seed=31, dtype=dtype)).to(device)
    x2 = brute.embeddings(batch, channels, height, width, seed=32, dtype=x2_dtype or dtype).to(device)
    x2 = x2.contiguous(memory_format=torch.channels_last)
    span2 = (2 * r + 1) ** 2
    gen = torch.Generator().manual_seed(33)
    if normalize:
        grad = tk_strided(torch.randn(batch, span2, height, width, generator=gen)).to(device)
    else:  # stride 0 along H, as autograd hands over an expanded grad
        grad = torch.randn(batch, span2, 1, width, generator=gen).to(device).expand(batch, span2, height, width)
    saved = tk.CHECK_WRITES
    tk.CHECK_WRITES = True
    try:
        got = tk.correlation_grad(grad, x1, x2, r, normalize, config=cfg)
    finally:
        tk.CHECK_WRITES = saved
    # on the kernel's device: float64 at the benchmark size takes seconds on a GPU, minutes on a CPU
    want = _correlation_grad_reference(grad, x1, x2, r, normalize)
    terms = _correlation_grad_reference(grad.abs(), x1.abs(), x2.abs(), r, normalize)
    for name, g, w, t, like in zip(("x1", "x2"), got, want, terms, (x1, x2), strict=True):
        assert g.dtype == like.dtype and g.shape == like.shape, name
        err = (g.double() - w).abs()
        bound = _ROUNDING[like.dtype] * w.abs() + _SUBNORMAL[like.dtype] + 2.0**-16 * t + 1e-30
        worst = float((err / bound).max())
        assert worst <= 1.0, (f"grad {name} {dtype} case {case}: max error {float(err.max()):.3g}, "
                              f"{worst:.3g}x the bound")


def tk_strided(x: torch.Tensor) -> torch.Tensor:
    """The same values through a non-contiguous view (W is not the innermost dimension)."""
    return x.transpose(2, 3).contiguous().transpose(2, 3)


@needs_triton
@pytest.mark.skipif(not _INTERPRETED, reason="run in a fresh process by test_correlation_backward_in_interpreter "
                                             "(TRITON_INTERPRET must be set before triton is imported)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", _GRAD_CASES)
def test_correlation_backward_kernel_interpreted(dtype, case):
    _check_correlation_grad("cpu", dtype, case)


@needs_triton
@pytest.mark.skipif(not _INTERPRETED, reason="run in a fresh process by test_correlation_backward_in_interpreter")
def test_correlation_backward_mixed_dtypes_and_public_op_interpreted():
    _check_correlation_grad("cpu", torch.bfloat16, _GRAD_CASES[0], x2_dtype=torch.float32)
    # the public op's backward runs the kernel (impl="triton") and agrees with the CPU path
    x1 = brute.embeddings(2, 7, 5, 9, seed=34).requires_grad_()
    x2 = brute.embeddings(2, 7, 5, 9, seed=35).requires_grad_()
    grads = {}
    for impl in ("triton", "cpu", "reference"):
        out = correlation_op(x1, x2, 2, impl=impl)
        grads[impl] = torch.autograd.grad(out.square().sum(), (x1, x2))
    for impl in ("cpu", "reference"):
        for got, want in zip(grads["triton"], grads[impl], strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def correlation_op(*args, **kwargs):
    from vidseg.ops import correlation

    return correlation(*args, **kwargs)


@needs_triton
def test_correlation_backward_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "interpreted",
         "tests/ops/test_triton.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    expected = 3 * len(_GRAD_CASES) + 1
    assert f"{expected} passed" in result.stdout, result.stdout[-3000:]


@needs_triton
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_correlation_backward_on_cuda_at_benchmark_size(dtype):
    """VPSNet P2 (1 x 256 x 256 x 512, r = 4) with the default blocks, outputs poisoned (two compiles per
    dtype; the fp64 reference runs on the GPU)."""
    _check_correlation_grad("cuda", dtype, (1, 256, 256, 512, 4, True, None))


@needs_triton
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_correlation_backward_on_cuda_across_block_edges(dtype):
    """The interpreter's block-edge cases compiled (3xTF32 and the bf16 hi + lo products are never compiled
    on CPU); cases with one setting (BX 16, RN 32, BLOCK_K 16): two compiles per dtype."""
    for case in (_GRAD_CASES[0], _GRAD_CASES[1], _GRAD_CASES[3]):
        _check_correlation_grad("cuda", dtype, case)


@needs_triton
def test_correlation_backward_detects_unwritten_gradients(monkeypatch):
    """The NaN poison behind the checks fires when the kernel leaves an element unwritten."""
    from vidseg.ops import triton_kernels as tk

    class WritesAllButOne:
        def __getitem__(self, grid):
            def run(g, v, out, *args, num_warps, num_stages, **meta):
                out.zero_().view(-1)[-1] = float("nan")

            return run

    monkeypatch.setattr(tk, "_correlation_grad_kernel", WritesAllButOne())
    monkeypatch.setattr(tk, "CHECK_WRITES", True)
    x = torch.randn(1, 3, 4, 5)
    with pytest.raises(RuntimeError, match=r"correlation backward: 1 of 60 elements of grad x1 unwritten"):
        tk.correlation_grad(torch.randn(1, 9, 4, 5), x, x, 1, True)


@needs_triton
def test_correlation_backward_shared_memory_and_settings(monkeypatch):
    """The estimate for the backward kernel (by analogy with the forward; not yet calibrated on a GPU), the
    launch settings, and a setting that does not fit refused before launching."""
    from vidseg.ops import triton_kernels as tk

    blocks = {"BX": 32, "RN": 64, "BLOCK_K": 64}  # the defaults at r = 4
    assert tk.shared_memory_need("correlation_grad", blocks, torch.float32, 2) == 57344
    assert tk.shared_memory_need("correlation_grad", blocks, torch.float16, 2) == 57344  # fp32 operands
    assert tk.shared_memory_need("correlation_grad", blocks, torch.bfloat16, 2) == 16384  # weights hi + lo
    launches = []

    class Recorder:
        def __getitem__(self, grid):
            def run(g, v, out, *args, num_warps, num_stages, **meta):
                launches.append({"grid": grid, "num_stages": num_stages, **meta})
                out.zero_()

            return run

    monkeypatch.setattr(tk, "_correlation_grad_kernel", Recorder())
    monkeypatch.setattr(tk, "shared_memory_limit", lambda device: 232448)
    x = torch.randn(2, 100, 6, 70)
    grads = tk.correlation_grad(torch.randn(2, 81, 6, 70), x, x.bfloat16(), 4, True)
    assert [g.dtype for g in grads] == [torch.float32, torch.bfloat16]
    assert [m["GRAD_X2"] for m in launches] == [False, True]
    first = launches[0]
    assert first["grid"] == (3, 6, 2 * 2) and (first["BX"], first["RN"], first["BLOCK_K"]) == (32, 64, 64)
    assert first["UPCAST"] is False and first["SPLIT"] is False  # mixed dtypes: fp32 operands
    assert tk.LAST_CONFIG["correlation_grad"]["shared_estimate"] == 57344
    tk.correlation_grad(torch.randn(2, 81, 6, 70), x.bfloat16(), x.bfloat16(), 4, True)
    assert launches[-1]["SPLIT"] is True
    with pytest.raises(tk.KernelResourceError, match="correlation_grad .*estimated before launching"):
        tk.correlation_grad(torch.randn(2, 81, 6, 70), x, x, 4, True, config={"BX": 256, "BLOCK_K": 128})
    count = len(launches)
    tk.correlation_grad(torch.randn(2, 81, 6, 70), x, x, 4, True, config=None)
    assert len(launches) == count + 2

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

from tests.ops import triton_checks
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
    """Every CUDA path against float64 at the benchmark sizes, outputs poisoned before each launch.

    VIDSEG_TRITON_CHECKS_JSON=<file> keeps the per-case errors (bench/gpu_check.py reports them)."""
    failures, rows = triton_checks.run_all("cuda", "real")
    out = os.environ.get("VIDSEG_TRITON_CHECKS_JSON")
    if out:
        Path(out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "failures": failures, "rows": rows},
                                        indent=1))
    assert not failures, failures


@needs_triton
@pytest.mark.cuda
def test_triton_kernels_on_cuda_at_ci_sizes():
    """The interpreter's block-edge cases, compiled (small blocks are valid on the GPU too)."""
    failures, _ = triton_checks.run_all("cuda", "ci")
    assert not failures, failures

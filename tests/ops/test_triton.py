"""Triton kernels: exactness in the interpreter on CPU (a subprocess with TRITON_INTERPRET=1, which
must be set before triton is imported) and, where a GPU is present, on CUDA."""

from __future__ import annotations

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
def test_triton_kernels_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.ops.triton_checks", "cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok") == 4, result.stdout


@needs_triton
@pytest.mark.cuda
def test_triton_kernels_on_cuda():
    triton_checks.run_all("cuda")
    x = torch.zeros(1, 2, 3, 3, device="cuda")
    assert _common.resolve_impl("auto", x) == "triton"

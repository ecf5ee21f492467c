"""Exactness checks of the Triton kernels, run by test_triton.py.

On CPU they need the interpreter: ``TRITON_INTERPRET=1 python -m tests.ops.triton_checks`` (the
variable must be set before triton is imported, hence a separate process). On CUDA, test_triton.py
calls ``run_all("cuda")`` directly.
"""

from __future__ import annotations

import sys

import torch

from tests.ops import brute
from vidseg.ops import correlation, global_matching, local_matching

TOL = dict(atol=2e-6, rtol=0)


def _labels(shape, num_objects, seed):
    """Two batch elements with different objects: element 1 has only objects 0 and 1."""
    lab = brute.labels(2, *shape, num_objects=num_objects, seed=seed)
    lab[1] = torch.where(lab[1] == brute.IGNORE, brute.IGNORE, lab[1] % 2)
    return lab


def check_global(device: str) -> None:
    n = 4
    lab = _labels((4, 9), n, seed=1)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        query = brute.embeddings(2, 6, 5, 7, seed=2, dtype=dtype)
        ref = brute.embeddings(2, 6, 4, 9, seed=3, dtype=dtype)
        out = global_matching(query.to(device), ref.to(device), lab.to(device), n, impl="triton")
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.cpu().double(), brute.global_matching(query, ref, lab, n), **TOL)
    # gathered reference pixels (B, C, 1, K), 1-pixel-high query
    query, ref = brute.embeddings(2, 3, 1, 6, seed=4), brute.embeddings(2, 3, 1, 70, seed=5)
    lab = _labels((1, 70), n, seed=6)
    out = global_matching(query.to(device), ref.to(device), lab.to(device), n, impl="triton")
    torch.testing.assert_close(out.cpu().double(), brute.global_matching(query, ref, lab, n), **TOL)


def check_local(device: str) -> None:
    cases = [  # (batch, shape, objects, k, dilation, dtype)
        (2, (7, 9), 4, 2, 1, torch.float32),
        (1, (7, 9), 4, 2, 2, torch.bfloat16),
        (1, (1, 11), 3, 3, 1, torch.float16),
        (1, (4, 5), 20, 1, 1, torch.float32),  # two groups of 16 objects
    ]
    for batch, shape, n, k, dilation, dtype in cases:
        query = brute.embeddings(batch, 5, *shape, seed=7, dtype=dtype)
        prev = brute.embeddings(batch, 5, *shape, seed=8, dtype=dtype)
        lab = _labels(shape, n, seed=9)[:batch]
        out = local_matching(query.to(device), prev.to(device), lab.to(device), n, k, dilation, impl="triton")
        expected = brute.local_matching(query, prev, lab, n, k, dilation)
        torch.testing.assert_close(out.cpu().double(), expected, **TOL)


def check_correlation(device: str) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        x1 = brute.embeddings(2, 5, 6, 7, seed=10, dtype=dtype)
        x2 = brute.embeddings(2, 5, 6, 7, seed=11, dtype=dtype)
        out = correlation(x1.to(device), x2.to(device), 2, impl="triton")
        torch.testing.assert_close(out.cpu().double(), brute.correlation(x1, x2, 2, True), atol=1e-6, rtol=1e-5)


def check_gradients(device: str) -> None:
    """The backward pass is shared; check it receives the right arg-min from the kernels."""
    n = 3
    lab = _labels((4, 5), n, seed=12).to(device)
    query = brute.embeddings(2, 3, 4, 5, seed=13).to(device)
    other = brute.embeddings(2, 3, 4, 5, seed=14).to(device)
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


def run_all(device: str) -> None:
    for check in (check_global, check_local, check_correlation, check_gradients):
        check(device)
        print(f"{check.__name__}: ok", flush=True)


if __name__ == "__main__":
    run_all(sys.argv[1] if len(sys.argv) > 1 else "cpu")

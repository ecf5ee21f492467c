"""correlation: exactness against float64 brute force, gradients, dtypes, memory and torch.compile."""

from __future__ import annotations

import pytest
import torch

from tests.ops import brute
from tests.ops.memory import peak_extra_bytes, requires_peak_memory
from vidseg.ops import _common, correlation, cpu, reference

# opcheck's aot_dispatch tests are slow; torch.compile is tested below instead
OPCHECKS = ("test_schema", "test_autograd_registration", "test_faketensor")
PATHS = ["reference", "cpu", "auto"]


@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize(
    "shape, r, normalize",
    [
        ((6, 7), 2, True),
        ((11, 13), 1, False),  # not a multiple of the cpu path's 8x8 tiles
        ((1, 9), 2, True),  # 1-pixel-high
        ((3, 2), 3, True),  # displacement larger than the image
        ((4, 4), 0, False),
    ],
)
def test_correlation_matches_brute_force(impl, shape, r, normalize):
    x1 = brute.embeddings(2, 5, *shape, seed=0)
    x2 = brute.embeddings(2, 5, *shape, seed=1)
    out = correlation(x1, x2, r, normalize=normalize, impl=impl)
    assert out.shape == (2, (2 * r + 1) ** 2, *shape) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), brute.correlation(x1, x2, r, normalize), atol=1e-6, rtol=1e-5)


def test_channel_order_is_row_major_over_dy_dx():
    x1 = torch.ones(1, 1, 5, 5)
    x2 = torch.arange(25.0).view(1, 1, 5, 5)
    out = correlation(x1, x2, 1, normalize=False)
    # channel (dy + 1) * 3 + (dx + 1) at the centre pixel (2, 2) reads x2[2 + dy, 2 + dx]
    assert out[0, :, 2, 2].tolist() == [6.0, 7.0, 8.0, 11.0, 12.0, 13.0, 16.0, 17.0, 18.0]
    assert out[0, 0, 0, 0] == 0.0  # (dy, dx) = (-1, -1) leaves the image at the corner


def test_cpu_tiny_tile_budget(monkeypatch):
    monkeypatch.setattr(_common, "TILE_BYTES", 1)
    x1, x2 = brute.embeddings(1, 3, 10, 19, seed=2), brute.embeddings(1, 3, 10, 19, seed=3)
    torch.testing.assert_close(
        cpu.correlation_sum(x1, x2, 2),
        reference.correlation_sum(x1, x2, 2),
        atol=1e-6,
        rtol=1e-5,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtypes(dtype):
    x1, x2 = (
        brute.embeddings(1, 8, 5, 6, seed=4, dtype=dtype),
        brute.embeddings(1, 8, 5, 6, seed=5, dtype=dtype),
    )
    out = correlation(x1, x2, 2)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(out.double(), brute.correlation(x1, x2, 2, True), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "cpu"])
@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck(impl, normalize):
    x1 = brute.embeddings(2, 3, 3, 4, seed=6, dtype=torch.float64).requires_grad_()
    x2 = brute.embeddings(2, 3, 3, 4, seed=7, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: correlation(a, b, 1, normalize=normalize, impl=impl), (x1, x2), fast_mode=True
    )


def test_bad_arguments_raise():
    x = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError):
        correlation(x, x[..., :2])
    with pytest.raises(ValueError):
        correlation(x, x, -1)
    with pytest.raises(TypeError):
        correlation(x.long(), x.long())


def test_opcheck_and_compile():
    x1 = brute.embeddings(1, 3, 4, 5, seed=8).requires_grad_()
    x2 = brute.embeddings(1, 3, 4, 5, seed=9).requires_grad_()
    torch.library.opcheck(torch.ops.vidseg.correlation.default, (x1, x2, 1, True, "cpu"), test_utils=OPCHECKS)
    compiled = torch.compile(lambda a, b: correlation(a, b, 1).square().sum(), backend="aot_eager", fullgraph=True)
    grads = torch.autograd.grad(compiled(x1, x2), (x1, x2))
    expected = torch.autograd.grad(correlation(x1, x2, 1).square().sum(), (x1, x2))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


@requires_peak_memory
@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_peak_memory_is_bounded(impl, monkeypatch):
    """The (2r+1)^2 * C shifted stack (85 MB here) is never built, forward or backward."""
    monkeypatch.setattr(_common, "TILE_BYTES", 1 << 20)
    x1 = brute.embeddings(1, 64, 64, 64, seed=10).requires_grad_()
    x2 = brute.embeddings(1, 64, 64, 64, seed=11).requires_grad_()
    correlation(x1[..., :8, :8], x2[..., :8, :8], 4, impl=impl).sum().backward()  # warm-up
    stack = 81 * x1.numel() * 4
    bound = 12 << 20
    assert stack >= 4 * bound

    def forward_backward():
        torch.autograd.grad(correlation(x1, x2, 4, impl=impl).sum(), (x1, x2))

    peak = peak_extra_bytes(forward_backward)
    assert peak < bound, f"{impl}: {peak / 2**20:.1f} MB"

"""correlation: exactness against float64 brute force, gradients, dtypes, memory and torch.compile."""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.ops import brute
from tests.ops.memory import peak_extra_bytes, requires_peak_memory
from vidseg.ops import _common, correlation, cpu, reference

corr_module = importlib.import_module("vidseg.ops.correlation")  # the package exports the function by that name

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


@pytest.mark.parametrize("impl", ["reference", "cpu", "cpu-tiled"])
@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck(impl, normalize, monkeypatch):
    if impl == "cpu-tiled":  # the tiled backward (used from TILED_BACKWARD_MIN_CHANNELS channels)
        monkeypatch.setattr(corr_module, "TILED_BACKWARD_MIN_CHANNELS", 0)
        impl = "cpu"
    x1 = brute.embeddings(2, 3, 3, 4, seed=6, dtype=torch.float64).requires_grad_()
    x2 = brute.embeddings(2, 3, 3, 4, seed=7, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: correlation(a, b, 1, normalize=normalize, impl=impl), (x1, x2), fast_mode=True
    )


@pytest.mark.parametrize(
    "shape, r, tile_bytes",
    [
        ((9, 10), 2, None),  # two tiles each way, partial last tiles
        ((3, 2), 3, None),  # displacement beyond the image
        ((5, 17), 0, None),
        ((4, 9), 4, 1),  # one tile per chunk
    ],
)
def test_tiled_backward_gradcheck(shape, r, tile_bytes, monkeypatch):
    """Full gradcheck (float64) of the tiled CPU backward at borders, r = 0..4 and chunked tiles."""
    monkeypatch.setattr(corr_module, "TILED_BACKWARD_MIN_CHANNELS", 0)
    if tile_bytes is not None:
        monkeypatch.setattr(_common, "TILE_BYTES", tile_bytes)
    x1 = brute.embeddings(1, 2, *shape, seed=21, dtype=torch.float64).requires_grad_()
    x2 = brute.embeddings(1, 2, *shape, seed=22, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: correlation(a, b, r, impl="cpu"), (x1, x2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape, r, normalize", [((11, 13), 2, True), ((8, 16), 4, False), ((2, 3), 3, True)])
def test_tiled_backward_matches_the_per_offset_loop(dtype, shape, r, normalize, monkeypatch):
    """Both backward paths are exact in the compute dtype (fp32 for bf16/fp16 inputs, then rounded once) and
    return the inputs' dtypes; grads with any strides (an expanded one, as after ``sum``)."""
    monkeypatch.setattr(corr_module, "TILED_BACKWARD_MIN_CHANNELS", 0)
    x1 = brute.embeddings(2, 6, *shape, seed=23, dtype=dtype)
    x2 = brute.embeddings(2, 6, *shape, seed=24, dtype=dtype)
    span2 = (2 * r + 1) ** 2
    grads = [
        torch.randn(2, span2, *shape, generator=torch.Generator().manual_seed(25), dtype=torch.float64),
        torch.ones((), dtype=torch.float64).expand(2, span2, *shape),
    ]
    for grad in grads:
        grad = grad.to(torch.float64 if dtype == torch.float64 else torch.float32)
        got = corr_module.correlation_backward(grad, x1, x2, r, normalize)
        want = corr_module.correlation_backward_reference(grad, x1, x2, r, normalize)
        for g, w, x in zip(got, want, (x1, x2), strict=True):
            assert g.dtype == x.dtype and g.shape == x.shape
            # fp32 sums in another order, then one rounding to the dtype: values may differ by that dtype's ulp
            rtol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[dtype]
            torch.testing.assert_close(g, w, atol=1e-6 if dtype != torch.float64 else 1e-12, rtol=rtol)


def test_backward_dispatch_by_channels(monkeypatch):
    """Below TILED_BACKWARD_MIN_CHANNELS the CPU path's backward is the per-offset loop, above it the tiles."""
    calls = []
    monkeypatch.setattr(corr_module, "_window_sum", lambda w, v, r: calls.append(v.shape[1]) or torch.zeros_like(v))
    for channels in (corr_module.TILED_BACKWARD_MIN_CHANNELS - 1, corr_module.TILED_BACKWARD_MIN_CHANNELS):
        x = torch.randn(1, channels, 2, 3, requires_grad=True)
        correlation(x, x.detach(), 1, impl="cpu").sum().backward()
    assert calls == [corr_module.TILED_BACKWARD_MIN_CHANNELS] * 2


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
    grad = torch.randn(1, 9, 4, 5)
    for impl in ("cpu", "reference"):  # the backward is an op too: compiled graphs keep it opaque
        torch.library.opcheck(torch.ops.vidseg.correlation_backward.default, (grad, x1.detach(), x2.detach(), 1, True,
                                                                             impl), test_utils=OPCHECKS[::2])
    compiled = torch.compile(lambda a, b: correlation(a, b, 1).square().sum(), backend="aot_eager", fullgraph=True)
    grads = torch.autograd.grad(compiled(x1, x2), (x1, x2))
    expected = torch.autograd.grad(correlation(x1, x2, 1).square().sum(), (x1, x2))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


@requires_peak_memory
@pytest.mark.parametrize("impl", ["reference", "cpu", "cpu-tiled"])
def test_peak_memory_is_bounded(impl, monkeypatch):
    """The (2r+1)^2 * C shifted stack (85 MB here) is never built, forward or backward."""
    monkeypatch.setattr(_common, "TILE_BYTES", 1 << 20)
    if impl == "cpu-tiled":
        monkeypatch.setattr(corr_module, "TILED_BACKWARD_MIN_CHANNELS", 0)
        impl = "cpu"
    x1 = brute.embeddings(1, 64, 64, 64, seed=10).requires_grad_()
    x2 = brute.embeddings(1, 64, 64, 64, seed=11).requires_grad_()
    correlation(x1[..., :8, :8], x2[..., :8, :8], 4, impl=impl).sum().backward()  # warm-up
    stack = 81 * x1.numel() * 4
    # 16 MiB: gradients, the output and one tile set (the tiled backward measured 12.7 MiB in a full-suite run,
    # up to a few MiB more than alone); still 5x below the stack, so building it would fail
    bound = 16 << 20
    assert stack >= 5 * bound

    def forward_backward():
        torch.autograd.grad(correlation(x1, x2, 4, impl=impl).sum(), (x1, x2))

    peak = peak_extra_bytes(forward_backward)
    assert peak < bound, f"{impl}: {peak / 2**20:.1f} MB"

"""Correlation (cost volume) for flow refinement, as a torch custom op."""

from __future__ import annotations

import torch

from vidseg.ops import _common as common
from vidseg.ops import cpu, reference


def _correlation_sum(impl: str):
    if impl == "triton":
        from vidseg.ops import triton_kernels

        return triton_kernels.correlation_sum
    return {"reference": reference.correlation_sum, "cpu": cpu.correlation_sum}[impl]


@torch.library.custom_op("vidseg::correlation", mutates_args=())
def _correlation_op(
    x1: torch.Tensor, x2: torch.Tensor, max_displacement: int, normalize: bool, impl: str
) -> torch.Tensor:
    common.check_float("x1", x1)
    common.check_float("x2", x2)
    if x1.dim() != 4 or x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must be (B, C, H, W) of one shape, got {tuple(x1.shape)}, {tuple(x2.shape)}")
    if max_displacement < 0:
        raise ValueError(f"max_displacement must be >= 0, got {max_displacement}")
    impl = common.resolve_impl(impl, x1, x2)
    out = _correlation_sum(impl)(x1, x2, max_displacement).to(common.compute_dtype(x1, x2))
    return out / x1.shape[1] if normalize else out


@_correlation_op.register_fake
def _(x1, x2, max_displacement, normalize, impl):
    batch, _, height, width = x1.shape
    span = 2 * max_displacement + 1
    return x1.new_empty((batch, span * span, height, width), dtype=common.compute_dtype(x1, x2))


def _setup_context(ctx, inputs, output) -> None:
    x1, x2, max_displacement, normalize, _ = inputs
    ctx.save_for_backward(x1, x2)
    ctx.max_displacement, ctx.normalize = max_displacement, normalize


def _backward(ctx, grad_out):
    x1, x2 = ctx.saved_tensors
    grad_x1, grad_x2 = correlation_backward(grad_out, x1, x2, ctx.max_displacement, ctx.normalize)
    return grad_x1, grad_x2, None, None, None


_correlation_op.register_autograd(_backward, setup_context=_setup_context)


def correlation_backward(
    grad_out: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, max_displacement: int, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the cost volume: one shifted multiply-add per offset (shared by all paths).

    Shapes: grad_out (B, (2r+1)^2, H, W), x1, x2 (B, C, H, W). Extra memory: O(B*C*H*W).
    Returns gradients in the inputs' dtypes.
    """
    dtype = common.compute_dtype(x1, x2)
    a, b = x1.to(dtype), x2.to(dtype)
    grad = grad_out.to(dtype)
    if normalize:
        grad = grad / x1.shape[1]
    grad_a, grad_b = torch.zeros_like(a), torch.zeros_like(b)
    height, width = a.shape[-2:]
    for d, (dy, dx) in enumerate(common.displacements(max_displacement)):
        (ya, yb), (xa, xb) = common.overlap(height, dy), common.overlap(width, dx)
        if ya >= yb or xa >= xb:
            continue
        g = grad[:, d : d + 1, ya:yb, xa:xb]
        grad_a[..., ya:yb, xa:xb].addcmul_(g, b[..., ya + dy : yb + dy, xa + dx : xb + dx])
        grad_b[..., ya + dy : yb + dy, xa + dx : xb + dx].addcmul_(g, a[..., ya:yb, xa:xb])
    return grad_a.to(x1.dtype), grad_b.to(x2.dtype)


def correlation(
    x1: torch.Tensor,
    x2: torch.Tensor,
    max_displacement: int = 4,
    *,
    normalize: bool = True,
    impl: str = "auto",
) -> torch.Tensor:
    """Cost volume between two feature maps over a (2r+1) x (2r+1) displacement window.

    out[b, i, p] = sum_c x1[b, c, p] * x2[b, c, p + d_i] (divided by C if ``normalize``), with
    d_i = (dy, dx) row-major from (-r, -r) to (r, r), i.e. i = (dy + r) * (2r + 1) + (dx + r);
    zero where p + d_i is outside the image.

    Args:
        x1, x2: (B, C, H, W) float16/bfloat16/float32/float64, one shape.
        max_displacement: r.
        normalize: divide by the channel count C.
        impl: "auto" (Triton on CUDA, "cpu" otherwise), "reference", "cpu" or "triton".
    Returns:
        (B, (2r+1)^2, H, W) float32 (float64 for float64 inputs), accumulated in that precision.

    Differentiable w.r.t. x1 and x2. Extra memory O(B*C*H*W), never the (2r+1)^2 * C stack: see the
    ``correlation_sum`` docstring of each path and :func:`correlation_backward`.
    """
    return _correlation_op(x1, x2, max_displacement, normalize, impl)

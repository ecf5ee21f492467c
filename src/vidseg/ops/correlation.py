"""Correlation (cost volume) for flow refinement, as a torch custom op."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


# The tiled CPU backward costs ~(side+2r)^2 = 256 dense-matrix entries and a 4x copy of the reference tiles
# per pixel whatever C, the per-offset loop 2 * 81 memory-bound multiply-adds per channel: one thread,
# 64x128 pixels, r=4, fp32: C=64 tiled 28 ms vs loop 17 ms; C=128 40 vs 47; C=256 88 vs 184.
TILED_BACKWARD_MIN_CHANNELS = 128


def _setup_context(ctx, inputs, output) -> None:
    x1, x2, max_displacement, normalize, impl = inputs
    ctx.save_for_backward(x1, x2)
    ctx.max_displacement, ctx.normalize = max_displacement, normalize
    ctx.impl = common.resolve_impl(impl, x1, x2)


def _backward(ctx, grad_out):
    x1, x2 = ctx.saved_tensors
    grad_x1, grad_x2 = _correlation_backward_op(grad_out, x1, x2, ctx.max_displacement, ctx.normalize, ctx.impl)
    return grad_x1, grad_x2, None, None, None


_correlation_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("vidseg::correlation_backward", mutates_args=())
def _correlation_backward_op(
    grad_out: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, max_displacement: int, normalize: bool, impl: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if impl == "triton":
        from vidseg.ops import triton_kernels

        return triton_kernels.correlation_grad(grad_out, x1, x2, max_displacement, normalize)
    if impl == "reference":
        return correlation_backward_reference(grad_out, x1, x2, max_displacement, normalize)
    return correlation_backward(grad_out, x1, x2, max_displacement, normalize)


@_correlation_backward_op.register_fake
def _(grad_out, x1, x2, max_displacement, normalize, impl):
    return torch.empty_like(x1, memory_format=torch.contiguous_format), torch.empty_like(
        x2, memory_format=torch.contiguous_format
    )


def correlation_backward_reference(
    grad_out: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, max_displacement: int, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the cost volume, one shifted multiply-add per offset (the reference path's backward).

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


def correlation_backward(
    grad_out: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, max_displacement: int, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the cost volume on the CPU path: the transpose of ``cpu.correlation_sum``'s tiles.

    grad_x1[p] = sum_d g[d, p] x2[p + d] and grad_x2[q] = sum_d g'[d, q] x1[q + d] with the reflected
    grad g'[d, q] = g[-d, q + d] (zero outside the image): both are :func:`_window_sum`, a batched matmul
    of each (side x side) tile's weights, scattered into a dense (side^2, (side + 2r)^2) matrix, with its
    reference tile; exact in the compute dtype (fp32 for bf16/fp16/fp32 inputs, fp64 for fp64).

    Below ``TILED_BACKWARD_MIN_CHANNELS`` channels the per-offset loop of
    :func:`correlation_backward_reference` is faster and is used instead.

    Shapes: grad_out (B, (2r+1)^2, H, W), x1, x2 (B, C, H, W). Returns gradients in the inputs' dtypes.
    Memory: tiles within ``TILE_BYTES`` as in the forward, one reflected grad (B, (2r+1)^2, H, W), one
    zero-padded copy of each input and the two gradients.
    """
    if x1.shape[1] < TILED_BACKWARD_MIN_CHANNELS:
        return correlation_backward_reference(grad_out, x1, x2, max_displacement, normalize)
    dtype = common.compute_dtype(x1, x2)
    grad = grad_out.to(dtype)
    if normalize:
        grad = grad / x1.shape[1]
    r = max_displacement
    grad_a = _window_sum(grad, x2.to(dtype), r)
    grad_b = _window_sum(_reflect(grad, r), x1.to(dtype), r)
    return grad_a.to(x1.dtype), grad_b.to(x2.dtype)


def _reflect(grad: torch.Tensor, r: int) -> torch.Tensor:
    """g'[b, d, q] = g[b, -d, q + d], zero where q + d is outside: (B, (2r+1)^2, H, W). The reversed
    channel order is d -> -d; then one shifted copy per offset of a (B, H, W) map (1/C of an input)."""
    flipped = grad.flip(1)
    out = torch.zeros_like(grad)
    height, width = grad.shape[-2:]
    for d, (dy, dx) in enumerate(common.displacements(r)):
        (ya, yb), (xa, xb) = common.overlap(height, dy), common.overlap(width, dx)
        if ya < yb and xa < xb:
            out[:, d, ya:yb, xa:xb] = flipped[:, d, ya + dy : yb + dy, xa + dx : xb + dx]
    return out


def _window_sum(weights: torch.Tensor, values: torch.Tensor, r: int) -> torch.Tensor:
    """out[b, c, p] = sum_d weights[b, d, p] * values[b, c, p + d], zero-padded values: (B, C, H, W).

    The transpose of ``cpu.correlation_sum``: per chunk of (side x side) tiles, scatter the weights into
    dense (side^2, (side + 2r)^2) matrices (the inverse of the forward's gather) and multiply them by the
    (side + 2r)^2 x C reference tiles (2r+1)^2 / (side+2r)^2 of the products are useful, as in the forward).
    """
    batch, channels, height, width = values.shape
    side = cpu.CORRELATION_TILE
    span, window = 2 * r + 1, side + 2 * r
    tiles_y, tiles_x = -(-height // side), -(-width // side)
    pad_y, pad_x = tiles_y * side - height, tiles_x * side - width
    w = F.pad(weights, (0, pad_x, 0, pad_y)) if pad_x or pad_y else weights
    v_pad = F.pad(values, (r, pad_x + r, r, pad_y + r))
    cell = torch.arange(side * side, device=values.device)
    offset = torch.arange(span * span, device=values.device)
    # reference-tile cell of query cell m shifted by offset d, as the forward's gather index
    scatter_index = (cell[:, None] // side + offset[None] // span) * window + (
        cell[:, None] % side + offset[None] % span
    )
    itemsize = torch.finfo(values.dtype).bits // 8
    per_tile = (side * side * channels + window * window * channels + side * side * window * window) * itemsize
    chunk = max(1, common.TILE_BYTES // per_tile)
    out = values.new_empty((batch, channels, height, width))
    for b in range(batch):
        for ty in range(tiles_y):
            y0, y1 = ty * side, min(height, (ty + 1) * side)
            w_band = w[b, :, ty * side : (ty + 1) * side]  # (S^2, side, Wp)
            v_band = v_pad[b, :, ty * side : ty * side + window]  # (C, window, Wp + 2r)
            for t0 in range(0, tiles_x, chunk):
                n = min(tiles_x, t0 + chunk) - t0
                w_tiles = w_band[..., t0 * side : (t0 + n) * side].reshape(span * span, side, n, side)
                w_tiles = w_tiles.permute(2, 1, 3, 0).reshape(n, side * side, span * span)
                dense = w_tiles.new_zeros((n, side * side, window * window))
                dense.scatter_(2, scatter_index.expand(n, -1, -1), w_tiles)
                v_tiles = v_band[..., t0 * side : (t0 + n) * side + 2 * r].unfold(2, window, side)  # (C, win, n, win)
                v_tiles = v_tiles.permute(2, 1, 3, 0).reshape(n, window * window, channels)
                tiles = torch.bmm(dense, v_tiles)  # (n, side^2, C)
                tiles = tiles.view(n, side, side, channels).permute(3, 1, 0, 2).reshape(channels, side, n * side)
                x0, x1_ = t0 * side, min(width, (t0 + n) * side)
                out[b, :, y0:y1, x0:x1_] = tiles[:, : y1 - y0, : x1_ - x0]
    return out


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

    Differentiable w.r.t. x1 and x2 (backward: a Triton gather kernel on the "triton" path,
    ``triton_kernels.correlation_grad``; tiled matmuls on "cpu", :func:`correlation_backward`; one
    multiply-add per offset on "reference"). Extra memory O(B*C*H*W), never the (2r+1)^2 * C stack: see
    the ``correlation_sum`` docstring of each path and the backward functions.
    """
    return _correlation_op(x1, x2, max_displacement, normalize, impl)

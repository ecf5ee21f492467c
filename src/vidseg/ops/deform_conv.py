"""Deformable convolution (DCNv1, Dai et al. 2017) with an exact fast path for CPU training.

torchvision's ``deform_conv2d`` is the reference: its CUDA kernel is fast, but its CPU backward walks every
sample of every channel serially (on the toy VPS recipe it was half of a training step: 400 ms of 800). The
"cpu" path here writes the same operator as one bilinear ``F.grid_sample`` of all kernel taps (the im2col
matrix) and one matmul, so autograd's vectorised grid_sample backward replaces that loop.

Exactness: the two paths agree up to float summation order, gradients included, also at sample positions on
integer pixels, where bilinear sampling has a kink and the offset gradient is one-sided (zero offsets, the
initial state of every offset conv, put every sample there). torchvision takes the derivative from above
(floor convention); grid_sample does too, but only if the pixel coordinate survives its normalisation to
[-1, 1] and back exactly. The input is therefore zero-padded on the right and bottom to 2^m + 1 pixels, so that
the normalisation (align_corners=True) is a scale by a power of two: every integer coordinate round-trips
exactly, and other coordinates move by float rounding only. The padding adds zeros where torchvision's
kernel reads zeros anyway (outside the image), so values are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

IMPLS = ("auto", "cpu", "torchvision")


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


def _power_of_two_plus_one(size: int) -> int:
    """The smallest 2^m + 1 >= size (2 for size 1)."""
    return 2 ** math.ceil(math.log2(max(size - 1, 1))) + 1


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    impl: str = "auto",
) -> Tensor:
    """Deformable 2-D convolution: torchvision's ``deform_conv2d`` with one offset group and no mask.

    Output pixel (y, x) of kernel tap (i, j) samples the input bilinearly (zero outside the image) at
    (y * stride - padding + i * dilation + offset[:, 2k], x * stride - padding + j * dilation + offset[:, 2k + 1]),
    k = i * kw + j (offsets in pixels, vertical first, torchvision's layout), and the taps are weighted as in a
    plain convolution.

    Args:
        input: (B, C, H, W) float. offset: (B, 2 * kh * kw, Ho, Wo), same dtype. weight: (O, C, kh, kw).
        bias: (O,) or None.
        impl: "cpu" (grid_sample + matmul in PyTorch; runs on any device), "torchvision" (its C++/CUDA kernel),
            "auto": "cpu" for CPU tensors, "torchvision" on other devices and while exporting (ONNX's DeformConv
            is torchvision's op).
    Returns:
        (B, O, Ho, Wo) in input's dtype. Differentiable w.r.t. input, offset, weight and bias on both paths.
    Memory of the "cpu" path: the sampled taps, B * C * kh * kw * Ho * Wo values (torchvision's kernel builds
    the same matrix), plus the padded input.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if impl == "auto":
        exporting = torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()
        impl = "cpu" if input.device.type == "cpu" and not exporting else "torchvision"
    if impl == "torchvision":
        return torchvision_deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding,
                                         dilation=dilation)

    batch, channels, height, width = input.shape
    out_channels, weight_channels, kernel_h, kernel_w = weight.shape
    taps = kernel_h * kernel_w
    out_h, out_w = ((size + 2 * pad - dil * (kernel - 1) - 1) // step + 1 for size, pad, dil, kernel, step in
                    zip((height, width), padding, dilation, (kernel_h, kernel_w), stride, strict=True))
    if weight_channels != channels or offset.shape != (batch, 2 * taps, out_h, out_w):
        raise ValueError(
            f"deform_conv2d(impl='cpu') takes one group and one offset group: input (B, C, H, W), offset "
            f"(B, 2*kh*kw, Ho, Wo), weight (O, C, kh, kw); got {tuple(input.shape)}, {tuple(offset.shape)}, "
            f"{tuple(weight.shape)} for an output of {out_h}x{out_w} (impl='torchvision' takes groups)")
    padded_h, padded_w = _power_of_two_plus_one(height), _power_of_two_plus_one(width)
    padded = F.pad(input, (0, padded_w - width, 0, padded_h - height))

    def coordinates(out_size: int, step: int, pad: int, dil: int, kernel: int) -> Tensor:
        """(kernel, out_size) sampling positions of the undeformed kernel taps along one axis."""
        base = torch.arange(out_size, device=input.device, dtype=offset.dtype) * step - pad
        return base[None, :] + (torch.arange(kernel, device=input.device, dtype=offset.dtype) * dil)[:, None]

    rows = coordinates(out_h, stride[0], padding[0], dilation[0], kernel_h)        # (kh, Ho)
    cols = coordinates(out_w, stride[1], padding[1], dilation[1], kernel_w)        # (kw, Wo)
    offset = offset.reshape(batch, kernel_h, kernel_w, 2, out_h, out_w)
    sample_y = rows[None, :, None, :, None] + offset[:, :, :, 0]                   # (B, kh, kw, Ho, Wo)
    sample_x = cols[None, None, :, None, :] + offset[:, :, :, 1]
    # align_corners=True: pixel p <-> p * 2 / (size - 1) - 1, a power-of-two scale for the padded sizes
    grid = torch.stack((sample_x * (2.0 / (padded_w - 1)) - 1, sample_y * (2.0 / (padded_h - 1)) - 1), dim=-1)
    sampled = F.grid_sample(padded, grid.view(batch, taps * out_h, out_w, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=True)               # (B, C, kh*kw*Ho, Wo)
    out = torch.matmul(weight.reshape(out_channels, channels * taps), sampled.view(batch, channels * taps, -1))
    out = out.view(batch, out_channels, out_h, out_w)
    return out if bias is None else out + bias.view(1, out_channels, 1, 1)

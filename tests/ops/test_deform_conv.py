"""vidseg.ops.deform_conv2d: the CPU grid_sample path against torchvision's kernel, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

from vidseg.models.vpsnet.semantic_head import DeformableConv
from vidseg.ops import deform_conv2d


def _inputs(batch, channels, out_channels, size, kernel=(3, 3), out_size=None, scale=2.0, dtype=torch.float64,
            seed=0):
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    out_h, out_w = out_size or size
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    offset = torch.randn(batch, 2 * kernel[0] * kernel[1], out_h, out_w, generator=generator, dtype=dtype) * scale
    weight = torch.randn(out_channels, channels, *kernel, generator=generator, dtype=dtype)
    bias = torch.randn(out_channels, generator=generator, dtype=dtype)
    return x, offset, weight, bias


def _value_and_grads(impl, x, offset, weight, bias, **kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in (x, offset, weight, bias)]
    out = deform_conv2d(*leaves, impl=impl, **kwargs)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return out.detach(), torch.autograd.grad(out, leaves, grad_out)


def _assert_paths_agree(x, offset, weight, bias, rtol, **kwargs):
    want, want_grads = _value_and_grads("torchvision", x, offset, weight, bias, **kwargs)
    got, got_grads = _value_and_grads("cpu", x, offset, weight, bias, **kwargs)
    for name, a, b in zip(("output", "d input", "d offset", "d weight", "d bias"), (want, *want_grads),
                          (got, *got_grads), strict=True):
        scale = a.abs().max().clamp_min(1.0)
        assert (a - b).abs().max() <= rtol * scale, f"{name}: max diff {(a - b).abs().max():.3g}"


@pytest.mark.parametrize("size", [(6, 9), (1, 1), (1, 5), (8, 8), (9, 17)])
@pytest.mark.parametrize("offset_scale", [0.0, 0.5, 3.0])
def test_cpu_path_equals_torchvision_float64(size, offset_scale):
    # offset_scale 3 sends samples outside the image (zeros there); 0 puts every sample on a pixel, where the
    # offset gradient is one-sided and both paths must take the same side
    x, offset, weight, bias = _inputs(2, 3, 4, size, scale=offset_scale)
    _assert_paths_agree(x, offset, weight, bias, rtol=1e-12, padding=1)


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"),
                         [((3, 3), 2, 1, 1), ((3, 3), 1, 2, 2), ((1, 3), 1, (0, 1), 1), ((3, 3), (2, 1), 0, (1, 2))])
def test_cpu_path_equals_torchvision_strides_paddings_dilations(kernel, stride, padding, dilation):
    size = (7, 10)
    reference = torch.nn.functional.conv2d(torch.zeros(1, 1, *size), torch.zeros(1, 1, *kernel), stride=stride,
                                           padding=padding, dilation=dilation)
    x, offset, weight, bias = _inputs(2, 3, 2, size, kernel=kernel, out_size=reference.shape[-2:], scale=1.5)
    _assert_paths_agree(x, offset, weight, bias, rtol=1e-12, stride=stride, padding=padding, dilation=dilation)


def test_integer_offsets_are_exact_shifts():
    # an integer offset moves the tap by whole pixels: the deformable conv is a plain conv of the shifted image
    x, _, weight, bias = _inputs(1, 2, 3, (8, 11), dtype=torch.float32)
    offset = torch.zeros(1, 18, 8, 11)
    offset[:, 0::2] = 1.0   # every tap one row down
    offset[:, 1::2] = -2.0  # and two columns left
    # tap (i, j) of output (y, x) reads x[y + i, x + j - 3]: a valid conv of x padded 3 left, 2 below, cropped 1 right
    want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (3, -1, 0, 2)), weight, bias)
    torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, padding=1, impl="cpu"), want)


def test_cpu_path_float32_within_rounding_and_zero_offset_grads_exactly_one_sided():
    x, offset, weight, bias = _inputs(2, 8, 8, (12, 24), dtype=torch.float32, scale=0.0)
    _assert_paths_agree(x, offset, weight, bias, rtol=1e-5, padding=1)
    x, offset, weight, bias = _inputs(2, 8, 8, (12, 24), dtype=torch.float32, scale=2.0)
    _assert_paths_agree(x, offset, weight, bias, rtol=1e-5, padding=1)


def test_auto_uses_the_cpu_path_on_cpu_and_torchvision_while_exporting(monkeypatch):
    calls = []
    import vidseg.ops.deform_conv as module

    def counted(*args, **kwargs):
        calls.append("torchvision")
        return torchvision_deform_conv2d(*args, **kwargs)

    monkeypatch.setattr(module, "torchvision_deform_conv2d", counted)
    x, offset, weight, bias = _inputs(1, 2, 2, (4, 4), dtype=torch.float32)
    deform_conv2d(x, offset, weight, bias, padding=1)
    assert calls == []
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    deform_conv2d(x, offset, weight, bias, padding=1)
    assert calls == ["torchvision"]


def test_bad_arguments_are_refused():
    x, offset, weight, bias = _inputs(1, 4, 2, (4, 4), dtype=torch.float32)
    with pytest.raises(ValueError, match="impl must be one of"):
        deform_conv2d(x, offset, weight, bias, padding=1, impl="fast")
    with pytest.raises(ValueError, match="one group and one offset group"):
        deform_conv2d(x, offset, weight[:, :2], bias, padding=1, impl="cpu")  # a grouped weight
    with pytest.raises(ValueError, match="one group and one offset group"):
        deform_conv2d(x, torch.cat([offset, offset], 1), weight, bias, padding=1, impl="cpu")
    with pytest.raises(ValueError, match="for an output of 2x2"):
        deform_conv2d(x, offset, weight, bias, padding=0, impl="cpu")  # offsets for 4x4, the output is 2x2


def test_non_contiguous_offsets_are_read_as_their_values():
    x, offset, weight, bias = _inputs(1, 2, 3, (5, 6), dtype=torch.float64)
    transposed = offset.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    assert not transposed.is_contiguous()
    torch.testing.assert_close(deform_conv2d(x, transposed, weight, bias, padding=1, impl="cpu"),
                               deform_conv2d(x, offset, weight, bias, padding=1, impl="cpu"))


def test_semantic_head_deformable_conv_keeps_torchvision_parameters_and_values():
    torch.manual_seed(0)
    layer = DeformableConv(4, 6).double()
    torch.nn.init.normal_(layer.offset.weight, std=0.3)  # non-zero offsets
    assert sorted(layer.state_dict()) == ["conv.weight", "offset.bias", "offset.weight"]  # official key map
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    want = layer.conv(x, layer.offset(x))  # torchvision's DeformConv2d module
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)

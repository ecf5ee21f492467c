"""flow_warp: the pixel-unit convention, padding modes, align_corners, gradients and dtypes."""

from __future__ import annotations

import pytest
import torch

from tests.ops import brute
from vidseg.ops import flow_warp


def bilinear_zeros(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Plain float64 bilinear sampling at (px + u, py + v), zero outside the pixel grid."""
    x, flow = x.double(), flow.double()
    batch, channels, height, width = x.shape
    out = torch.zeros(batch, channels, height, width, dtype=torch.float64)
    for b in range(batch):
        for py in range(height):
            for px in range(width):
                sx, sy = px + float(flow[b, 0, py, px]), py + float(flow[b, 1, py, px])
                x0, y0 = int(torch.floor(torch.tensor(sx))), int(torch.floor(torch.tensor(sy)))
                for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                    for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                        if 0 <= yy < height and 0 <= xx < width:
                            out[b, :, py, px] += wy * wx * x[b, :, yy, xx]
    return out


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_zero_flow_is_identity(padding_mode, align_corners):
    x = brute.embeddings(2, 3, 5, 7, seed=0)
    out = flow_warp(x, torch.zeros(2, 2, 5, 7), padding_mode=padding_mode, align_corners=align_corners)
    torch.testing.assert_close(out, x)


@pytest.mark.parametrize("align_corners", [True, False])
def test_integer_flow_is_a_shift(align_corners):
    x = brute.embeddings(1, 2, 4, 6, seed=1)
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # sample 2 px to the right, 1 px up
    out = flow_warp(x, flow, align_corners=align_corners)
    torch.testing.assert_close(out[..., 1:, :4], x[..., :3, 2:])
    assert (out[..., 0, :] == 0).all() and (out[..., :, 4:] == 0).all()  # zeros outside
    border = flow_warp(x, flow, padding_mode="border", align_corners=align_corners)
    torch.testing.assert_close(border[..., 0, :4], x[..., 0, 2:])  # clamped to the first row
    torch.testing.assert_close(border[..., 1:, 5], x[..., :3, 5])  # clamped to the last column


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (1, 6), (4, 1)])
def test_fractional_flow_matches_plain_bilinear(shape, align_corners):
    x = brute.embeddings(2, 3, *shape, seed=2)
    g = torch.Generator().manual_seed(3)
    flow = 2.5 * torch.randn(2, 2, *shape, generator=g)
    out = flow_warp(x, flow, align_corners=align_corners)
    torch.testing.assert_close(out.double(), bilinear_zeros(x, flow), atol=1e-5, rtol=0)


def test_reflection_depends_on_align_corners():
    """Reflect about the border pixel's centre (True) or the image edge (False)."""
    x = torch.arange(4.0).view(1, 1, 1, 4)
    flow = torch.zeros(1, 2, 1, 4)
    flow[0, 0, 0, 0] = -1.0  # pixel 0 samples at x = -1
    reflect_centre = flow_warp(x, flow, padding_mode="reflection", align_corners=True)[0, 0, 0, 0]
    reflect_edge = flow_warp(x, flow, padding_mode="reflection", align_corners=False)[0, 0, 0, 0]
    assert float(reflect_centre) == pytest.approx(1.0, abs=1e-5)  # -1 -> 1
    assert float(reflect_edge) == pytest.approx(0.0, abs=1e-5)  # -1 -> 0


def test_gradcheck():
    x = brute.embeddings(1, 2, 4, 5, seed=4, dtype=torch.float64).requires_grad_()
    g = torch.Generator().manual_seed(5)
    flow = (torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64) * 3 - 1.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, f: flow_warp(a, f), (x, flow))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_keeps_dtype_and_fp32_coordinates(dtype):
    x = brute.embeddings(1, 3, 6, 300, seed=6)
    flow = torch.full((1, 2, 6, 300), 0.25)
    out = flow_warp(x.to(dtype), flow.to(dtype))
    assert out.dtype == dtype
    expected = flow_warp(x.to(dtype).float(), flow)
    torch.testing.assert_close(out.float(), expected, atol=1e-2, rtol=1e-2)


def test_bad_arguments_raise():
    x = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError):
        flow_warp(x, torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError):
        flow_warp(x, torch.zeros(1, 2, 3, 3), padding_mode="wrap")

"""FlowNet2 in plain PyTorch: its three former CUDA layers against transcriptions of the CUDA kernels'
arithmetic (mcahny/vps mmdet/models/flow_modules/{correlation,channelnorm,resample2d}_package/*.cu) and
hand-computed values; the network's shapes, parameter count and flow contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidseg.models.vpsnet.flownet2 import (
    FlowNet2,
    FlowNet2Flow,
    channel_norm,
    flownet_correlation,
    resample2d,
)

# --------------------------------------------------------------------------------------------------------
# Correlation
# --------------------------------------------------------------------------------------------------------


def cuda_correlation_loop(x1: np.ndarray, x2: np.ndarray, *, pad_size: int, kernel_size: int, max_displacement: int,
                          stride1: int, stride2: int) -> np.ndarray:
    """correlation_forward_cuda + the correlation_forward kernel, one output element at a time: inputs
    zero-padded by pad_size (channels last), output size ceil((H + 2 pad - 2 border) / stride1), centre
    (y1, x1) = (oy * stride1 + max_displacement, ...), displacement (tj, ti) * stride2, channel
    (tj + R) * (2R + 1) + (ti + R), sum over the kernel window and channels divided by kernel_size^2 * C."""
    batch, channels, height, width = x1.shape
    kernel_rad = (kernel_size - 1) // 2
    border = kernel_rad + max_displacement
    p1 = np.zeros((batch, height + 2 * pad_size, width + 2 * pad_size, channels))
    p2 = np.zeros_like(p1)
    p1[:, pad_size:pad_size + height, pad_size:pad_size + width] = x1.transpose(0, 2, 3, 1)
    p2[:, pad_size:pad_size + height, pad_size:pad_size + width] = x2.transpose(0, 2, 3, 1)
    out_h = math.ceil((height + 2 * pad_size - 2 * border) / stride1)
    out_w = math.ceil((width + 2 * pad_size - 2 * border) / stride1)
    rad = max_displacement // stride2
    size = 2 * rad + 1
    nelems = kernel_size * kernel_size * channels
    out = np.zeros((batch, size * size, out_h, out_w))
    for n in range(batch):
        for oy in range(out_h):
            for ox in range(out_w):
                y1, x1_ = oy * stride1 + max_displacement, ox * stride1 + max_displacement
                for tj in range(-rad, rad + 1):
                    for ti in range(-rad, rad + 1):
                        y2, x2_ = y1 + tj * stride2, x1_ + ti * stride2
                        acc = 0.0
                        for j in range(-kernel_rad, kernel_rad + 1):
                            for i in range(-kernel_rad, kernel_rad + 1):
                                acc += float(p1[n, y1 + j, x1_ + i] @ p2[n, y2 + j, x2_ + i])
                        out[n, (tj + rad) * size + (ti + rad), oy, ox] = acc / nelems
    return out


@pytest.mark.parametrize(("height", "width"), [(6, 8), (5, 7)])  # odd sizes: unequal parity sub-grids
def test_correlation_matches_the_cuda_kernel_with_flownetc_parameters(height, width):
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 3, height, width, generator=gen, dtype=torch.float64)
    x2 = torch.randn(2, 3, height, width, generator=gen, dtype=torch.float64)
    expected = cuda_correlation_loop(x1.numpy(), x2.numpy(), pad_size=20, kernel_size=1, max_displacement=20,
                                     stride1=1, stride2=2)
    out = flownet_correlation(x1, x2)  # FlowNetC: pad 20, kernel 1, max displacement 20, stride2 2
    assert out.shape == (2, 441, height, width) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_correlation_matches_the_cuda_kernel_with_the_fuse_modules_parameters():
    # the official Fuse module: Correlation(pad 4, kernel 1, max displacement 4, stride2 1): vidseg's op itself
    gen = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn(1, 5, 6, 7, generator=gen, dtype=torch.float64) for _ in range(2))
    expected = cuda_correlation_loop(x1.numpy(), x2.numpy(), pad_size=4, kernel_size=1, max_displacement=4,
                                     stride1=1, stride2=1)
    np.testing.assert_allclose(flownet_correlation(x1, x2, max_displacement=4, stride=1).numpy(), expected,
                               rtol=1e-12, atol=1e-12)


def test_correlation_by_hand():
    # C = 2, one row of 5 pixels, max displacement 2 in steps of 2 -> displacements (dy, dx) in {-2, 0, 2}^2
    x1 = torch.tensor([[[[1.0, 2, 3, 4, 5]], [[0, 1, 0, 1, 0]]]])
    x2 = torch.tensor([[[[10.0, 20, 30, 40, 50]], [[1, 1, 1, 1, 1]]]])
    out = flownet_correlation(x1, x2, max_displacement=2, stride=2)
    assert out.shape == (1, 9, 1, 5)
    # dy = 0 row is channels 3 (dx -2), 4 (dx 0), 5 (dx +2); other rows are out of the 1-pixel-high image
    assert torch.count_nonzero(out[0, [0, 1, 2, 6, 7, 8]]) == 0
    # pixel x = 2: x1 = (3, 0); x2 at x = 0, 2, 4 = (10, 1), (30, 1), (50, 1); divided by C = 2
    assert out[0, 3:6, 0, 2].tolist() == [15.0, 45.0, 75.0]
    # pixel x = 1: x1 = (2, 1); dx = -2 is outside -> 0; x2 at 1 = (20, 1) -> 41 / 2; at 3 = (40, 1) -> 81 / 2
    assert out[0, 3:6, 0, 1].tolist() == [0.0, 20.5, 40.5]


def test_correlation_is_differentiable():
    x1 = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: flownet_correlation(a, b, max_displacement=4, stride=2), (x1, x2))


# --------------------------------------------------------------------------------------------------------
# ChannelNorm and Resample2d
# --------------------------------------------------------------------------------------------------------


def test_channel_norm_by_hand():
    x = torch.tensor([[[[3.0, 0.0]], [[4.0, -2.0]]]])  # (1, 2, 1, 2): pixel 0 = (3, 4), pixel 1 = (0, -2)
    assert channel_norm(x).tolist() == [[[[5.0, 2.0]]]]


def cuda_resample2d_loop(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """kernel_resample2d_update_output (bilinear, kernel_size 1): alpha/beta from the unclamped position,
    each corner index clamped into [0, size - 1]."""
    batch, channels, height, width = image.shape
    out = np.zeros((batch, channels, *flow.shape[-2:]))
    for b in range(batch):
        for c in range(channels):
            for y in range(flow.shape[-2]):
                for x in range(flow.shape[-1]):
                    xf, yf = x + flow[b, 0, y, x], y + flow[b, 1, y, x]
                    alpha, beta = xf - math.floor(xf), yf - math.floor(yf)
                    x_l = max(min(math.floor(xf), width - 1), 0)
                    x_r = max(min(math.floor(xf) + 1, width - 1), 0)
                    y_t = max(min(math.floor(yf), height - 1), 0)
                    y_b = max(min(math.floor(yf) + 1, height - 1), 0)
                    out[b, c, y, x] = ((1 - alpha) * (1 - beta) * image[b, c, y_t, x_l]
                                       + alpha * (1 - beta) * image[b, c, y_t, x_r]
                                       + (1 - alpha) * beta * image[b, c, y_b, x_l]
                                       + alpha * beta * image[b, c, y_b, x_r])
    return out


def test_resample2d_matches_the_cuda_kernel_inside_and_beyond_the_border():
    gen = torch.Generator().manual_seed(2)
    image = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64)
    flow = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64) * 4  # many samples land outside
    flow[0, :, 0, 0] = torch.tensor([-0.5, -0.5])  # half a pixel beyond the top-left centre
    flow[0, :, 4, 5] = torch.tensor([0.25, 0.75])  # beyond the bottom-right centre
    flow[1, :, 2, 3] = torch.tensor([2.0, -1.0])  # an integer shift inside
    expected = cuda_resample2d_loop(image.numpy(), flow.numpy())
    np.testing.assert_allclose(resample2d(image, flow).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_resample2d_by_hand():
    image = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    flow = torch.zeros(1, 2, 2, 2)
    flow[0, :, 0, 0] = torch.tensor([0.5, 0.5])  # the centre of the four pixels: their mean
    flow[0, :, 0, 1] = torch.tensor([-0.25, 0.0])  # a quarter pixel left of 10: 7.5
    flow[0, :, 1, 0] = torch.tensor([-3.0, 0.0])  # far left of 20: clamped to 20
    flow[0, :, 1, 1] = torch.tensor([0.5, 5.0])  # far below 30: clamped row, x stays at 1.5 -> clamped to 30
    assert resample2d(image, flow).tolist() == [[[[15.0, 7.5], [20.0, 30.0]]]]


# --------------------------------------------------------------------------------------------------------
# The network and the flow contract
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flownet2() -> FlowNet2Flow:
    torch.manual_seed(0)
    return FlowNet2Flow(FlowNet2(), frozen=True)


def test_flownet2_has_the_official_parameter_count_and_names(flownet2):
    # flownet2-pytorch's FlowNet2: 'Parameter count = 162,518,834'
    assert sum(p.numel() for p in flownet2.flownet2.parameters()) == 162_518_834
    names = set(flownet2.flownet2.state_dict())
    assert {"flownetc.conv1.0.weight", "flownetc.conv_redir.0.bias", "flownetc.upsampled_flow3_to_2.bias",
            "flownets_1.conv1.0.weight", "flownets_2.predict_flow2.weight", "flownets_d.inter_conv2.0.weight",
            "flownetfusion.upsampled_flow1_to_0.weight"} <= names
    assert "flownets_1.upsampled_flow6_to_5.bias" not in names  # FlowNetS's flow upsamplers have no bias
    assert tuple(flownet2.flownet2.state_dict()["flownetc.conv3_1.0.weight"].shape) == (256, 473, 3, 3)
    assert not any(p.requires_grad for p in flownet2.parameters())


@pytest.mark.parametrize(("height", "width"), [(64, 128), (96, 160)])  # 96x160 is padded to 128x192
def test_flownet2_flow_returns_stride_4_flow(flownet2, height, width):
    gen = torch.Generator().manual_seed(3)
    target, reference = torch.rand(2, 1, 3, height, width, generator=gen)
    flow = flownet2(target, reference)
    assert flow.shape == (1, 2, height // 4, width // 4) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all() and not flow.requires_grad


def test_flownet2_flow_is_the_full_resolution_flow_resized_and_scaled(flownet2):
    gen = torch.Generator().manual_seed(4)
    target, reference = torch.rand(2, 1, 3, 64, 64, generator=gen)
    with torch.no_grad():
        full = flownet2.flownet2(target, reference)  # rgb_max 1: [0, 1] input
    expected = torch.nn.functional.interpolate(full, size=(16, 16), mode="bilinear", align_corners=False) * 0.25
    torch.testing.assert_close(flownet2(target, reference), expected)


def test_flownet2_refuses_sizes_it_cannot_take(flownet2):
    with pytest.raises(ValueError, match="multiples of 64"):
        flownet2.flownet2(torch.zeros(1, 3, 64, 96), torch.zeros(1, 3, 64, 96))
    with pytest.raises(ValueError, match="multiples of 4"):
        flownet2(torch.zeros(1, 3, 62, 64), torch.zeros(1, 3, 62, 64))


def test_build_flow_registers_flownet2_and_refuses_raft_options(tmp_path):
    from vidseg.backbones.base import WeightsFileError
    from vidseg.models.vpsnet.flow import FLOW_NAMES, build_flow

    assert "flownet2" in FLOW_NAMES and "raft_small" in FLOW_NAMES and "tiny" in FLOW_NAMES
    with pytest.raises(ValueError, match="RAFT's"):
        build_flow(name="flownet2", downsample=2)
    bad = tmp_path / "FlowNet2_checkpoint.pth.tar"
    torch.save({"state_dict": {"flownetc.conv1.0.weight": torch.zeros(1)}, "epoch": 1}, bad)
    with pytest.raises(WeightsFileError, match="does not fit FlowNet2"):
        build_flow(name="flownet2", weights=str(bad))
    with pytest.raises(FileNotFoundError, match="FlowNet2 checkpoint"):
        build_flow(name="flownet2", weights=str(tmp_path / "absent.pth.tar"))


def test_vpsnet_runs_with_flownet2_as_its_initial_flow():
    from vidseg.models.vpsnet import TINY, VPSState, build_vpsnet

    torch.manual_seed(0)
    # the flow keys conf/model/vpsnet.yaml passes (RAFT's at their defaults), with model.net.flow.name=flownet2
    flow = {"name": "flownet2", "weights": None, "num_flow_updates": 12, "precision": "32", "compile": False,
            "downsample": 1}
    model = build_vpsnet(variant="fuse", backbone={"name": "resnet18"}, num_stuff=3, num_things=2, flow=flow,
                         **TINY).eval()
    assert isinstance(model.flow, FlowNet2Flow)
    state = VPSState()
    gen = torch.Generator().manual_seed(5)
    for _ in range(2):  # 60x90 frames: padded to 64x96 by the model, to 64x128 inside FlowNet2Flow
        out, state = model.infer_frame(torch.randint(0, 256, (3, 60, 90), generator=gen, dtype=torch.uint8), state)
        assert out.panoptic.shape == (60, 90)

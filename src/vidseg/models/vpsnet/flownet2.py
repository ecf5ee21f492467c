"""FlowNet2 (Ilg et al., CVPR 2017) in plain PyTorch: the initial-flow network of the official VPSNet.

The official VPSNet (mcahny/vps, ``PanopticFuseTrack``) runs NVIDIA's flownet2-pytorch, whose correlation,
channel-norm and resample layers are CUDA extensions that no longer build. Here they are plain torch ops:

- :func:`flownet_correlation`: FlowNetC's ``Correlation(pad_size=20, kernel_size=1, max_displacement=20,
  stride1=1, stride2=2)`` = dot products over channels divided by C, for displacements -20..20 in steps of 2
  (21 x 21 = 441 channels, row-major: dy outer, dx inner), zero outside the image; computed with
  :func:`vidseg.ops.correlation` on the four pixel-parity sub-grids (a stride-2 displacement never leaves its
  parity class, so each sub-grid is an ordinary radius-10 cost volume).
- :func:`channel_norm`: the L2 norm over channels, (B, C, H, W) -> (B, 1, H, W).
- :func:`resample2d`: the CUDA ``Resample2d`` (bilinear, kernel_size 1): samples x at (x + u, y + v) with pixel
  centres at integers, each of the four corner indices clamped into the image while the weights come from the
  unclamped fraction, which is exactly ``grid_sample(padding_mode="border", align_corners=True)``.

Networks (parameter names are the official ones, so a FlowNet2 checkpoint loads with a prefix change):
:class:`FlowNetC`, :class:`FlowNetS`, :class:`FlowNetSD`, :class:`FlowNetFusion` and the stack
:class:`FlowNet2` (C -> S -> S, SD, fusion; no batch norm, LeakyReLU 0.1). :class:`FlowNet2Flow` wraps it to
the contract of :mod:`vidseg.models.vpsnet.flow` as the official ``compute_flow`` uses it: full-resolution RGB
(0..255 in the official code; [0, 1] here with ``rgb_max=1``, the same network input), zero-padded at the
bottom/right to a multiple of 64, flow target -> reference from the fusion network, cropped, then resized to
stride 4 (bilinear, align_corners=False) and scaled by 0.25.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.ops import correlation, flow_warp

FLOWNET_DIV_FLOW = 20.0  # FlowNet's sub-networks predict flow / 20
FLOWNET_SIZE_DIVISOR = 64  # six stride-2 stages
FLOW_STRIDE = 4  # the Fuse module's P2


# --------------------------------------------------------------------------------------------------------
# The three CUDA layers, as torch ops
# --------------------------------------------------------------------------------------------------------


def flownet_correlation(x1: Tensor, x2: Tensor, *, max_displacement: int = 20, stride: int = 2,
                        impl: str = "auto") -> Tensor:
    """FlowNetC's correlation layer (kernel_size 1, stride1 1, pad_size = max_displacement).

    out[b, (j + R) * (2R + 1) + (i + R), y, x] = sum_c x1[b, c, y, x] * x2[b, c, y + s*j, x + s*i] / C
    with R = max_displacement // stride, s = stride, i (horizontal) and j (vertical) in -R..R; zero where
    the displaced position is outside the image.

    Args:
        x1, x2: (B, C, H, W) float, one shape.
        max_displacement, stride: 20 and 2 in FlowNetC (441 channels).
        impl: passed to :func:`vidseg.ops.correlation`.
    Returns:
        (B, (2R + 1)^2, H, W) in x1's dtype.
    """
    if max_displacement % stride:
        raise ValueError(f"max_displacement ({max_displacement}) must be a multiple of stride ({stride})")
    radius = max_displacement // stride
    if stride == 1:
        return correlation(x1, x2, radius, normalize=True, impl=impl).to(x1.dtype)
    batch, _, height, width = x1.shape
    out = x1.new_zeros(batch, (2 * radius + 1) ** 2, height, width)
    # p + s*d keeps p's residue mod s: each residue sub-grid is an ordinary radius-R cost volume, and its
    # border is exactly where p + s*d leaves the full image
    for py in range(stride):
        for px in range(stride):
            a, b = x1[..., py::stride, px::stride], x2[..., py::stride, px::stride]
            if a.numel() == 0:
                continue
            cost = correlation(a.contiguous(), b.contiguous(), radius, normalize=True, impl=impl)
            out[..., py::stride, px::stride] = cost.to(x1.dtype)
    return out


def channel_norm(x: Tensor) -> Tensor:
    """L2 norm over channels (the CUDA ChannelNorm, norm_deg 2): (B, C, H, W) -> (B, 1, H, W)."""
    return torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True)


def resample2d(x: Tensor, flow: Tensor) -> Tensor:
    """The CUDA Resample2d (bilinear, kernel_size 1): out[b, :, y, x] = x sampled at (x + u, y + v), pixel
    centres at integers, coordinates clamped into the image (border padding).

    x: (B, C, H, W) float; flow: (B, 2, H, W) float (u horizontal, v vertical, pixels) -> (B, C, H, W)."""
    return flow_warp(x, flow, padding_mode="border", align_corners=True)


# --------------------------------------------------------------------------------------------------------
# Building blocks (names as the official modules: Sequential index 0 holds the conv)
# --------------------------------------------------------------------------------------------------------


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2),
                         nn.LeakyReLU(0.1, inplace=True))


def _inter_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1))  # no activation


def _deconv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True))


def _predict_flow(in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, 2, 3, 1, 1)


def _upsample_flow(bias: bool) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=bias)


def _init(module: nn.Module) -> None:
    """The official initialisation: xavier-uniform weights, uniform [0, 1) biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.uniform_(m.bias)


class _PyramidDecoder(nn.Module):
    """The coarse-to-fine decoder shared by FlowNetC/S/SD: from the stride-64 features up to a flow at stride 4.

    At each level k = 5..2: concat [skip_k, deconv_k(previous), upsampled flow_{k+1}] -> (optional inter conv)
    -> predict_flow_k. Subclasses create ``deconv{5..2}``, ``predict_flow{6..2}``, ``upsampled_flow{k+1}_to_{k}``
    and, with ``inter_convs``, ``inter_conv{5..2}``."""

    inter_convs = False

    def _make_decoder(self, *, upsample_bias: bool) -> None:
        for level, (cin, cout) in zip((5, 4, 3, 2), ((1024, 512), (1026, 256), (770, 128), (386, 64)), strict=True):
            setattr(self, f"deconv{level}", _deconv(cin, cout))
        if self.inter_convs:
            for level, (cin, cout) in zip((5, 4, 3, 2), ((1026, 512), (770, 256), (386, 128), (194, 64)),
                                          strict=True):
                setattr(self, f"inter_conv{level}", _inter_conv(cin, cout))
            predict_in = (1024, 512, 256, 128, 64)
        else:
            predict_in = (1024, 1026, 770, 386, 194)
        for level, cin in zip((6, 5, 4, 3, 2), predict_in, strict=True):
            setattr(self, f"predict_flow{level}", _predict_flow(cin))
        for level in (6, 5, 4, 3):
            setattr(self, f"upsampled_flow{level}_to_{level - 1}", _upsample_flow(upsample_bias))

    def _make_deep_encoder(self) -> None:
        """The stride-16..64 encoder convs that C, S and SD share (official names conv4 .. conv6_1)."""
        self.conv4 = _conv(256, 512, stride=2)
        self.conv4_1 = _conv(512, 512)
        self.conv5 = _conv(512, 512, stride=2)
        self.conv5_1 = _conv(512, 512)
        self.conv6 = _conv(512, 1024, stride=2)
        self.conv6_1 = _conv(1024, 1024)

    def _encode_and_decode(self, conv3: Tensor, conv2: Tensor) -> Tensor:
        """conv3: (B, 256, H/8, W/8), conv2: (B, 128, H/4, W/4) -> flow (B, 2, H/4, W/4) / 20."""
        conv4 = self.conv4_1(self.conv4(conv3))
        conv5 = self.conv5_1(self.conv5(conv4))
        conv6 = self.conv6_1(self.conv6(conv5))
        return self._decode(conv6, {5: conv5, 4: conv4, 3: conv3, 2: conv2})

    def _decode(self, top: Tensor, skips: dict[int, Tensor]) -> Tensor:
        """top: (B, 1024, H/64, W/64); skips {5: stride 32, 4: 16, 3: 8, 2: 4} -> flow (B, 2, H/4, W/4) / 20."""
        features, flow = top, self.predict_flow6(top)
        for level in (5, 4, 3, 2):
            up_flow = getattr(self, f"upsampled_flow{level + 1}_to_{level}")(flow)
            features = torch.cat([skips[level], getattr(self, f"deconv{level}")(features), up_flow], dim=1)
            head_in = getattr(self, f"inter_conv{level}")(features) if self.inter_convs else features
            flow = getattr(self, f"predict_flow{level}")(head_in)
        return flow


class FlowNetC(_PyramidDecoder):
    """FlowNetC: (B, 6, H, W) [frame 1, frame 2] (mean-subtracted, / rgb_max) -> flow (B, 2, H/4, W/4) / 20.

    A shared 3-conv encoder (stride 8, 256 channels), correlation (441 channels, LeakyReLU) concatenated with
    a 1x1 redirect of frame 1 (32), then FlowNetS's encoder/decoder. H, W multiples of 64."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv(3, 64, 7, 2)
        self.conv2 = _conv(64, 128, 5, 2)
        self.conv3 = _conv(128, 256, 5, 2)
        self.conv_redir = _conv(256, 32, 1, 1)
        self.corr_activation = nn.LeakyReLU(0.1, inplace=True)
        self.conv3_1 = _conv(32 + 441, 256)
        self._make_deep_encoder()
        self._make_decoder(upsample_bias=True)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        # both frames through the shared encoder in one batch
        frames = torch.cat([x[:, :3], x[:, 3:]])
        conv2 = self.conv2(self.conv1(frames))
        conv3 = self.conv3(conv2)
        conv2a, _ = conv2.chunk(2)
        conv3a, conv3b = conv3.chunk(2)
        corr = self.corr_activation(flownet_correlation(conv3a, conv3b))
        conv3_1 = self.conv3_1(torch.cat([self.conv_redir(conv3a), corr], dim=1))
        return self._encode_and_decode(conv3_1, conv2a)


class FlowNetS(_PyramidDecoder):
    """FlowNetS: (B, in_channels, H, W) -> flow (B, 2, H/4, W/4) / 20. In FlowNet2 its input is
    [frame 1, frame 2, warped frame 2, flow / 20, brightness error] = 12 channels. H, W multiples of 64."""

    def __init__(self, in_channels: int = 12) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, 64, 7, 2)
        self.conv2 = _conv(64, 128, 5, 2)
        self.conv3 = _conv(128, 256, 5, 2)
        self.conv3_1 = _conv(256, 256)
        self._make_deep_encoder()
        self._make_decoder(upsample_bias=False)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        conv2 = self.conv2(self.conv1(x))
        conv3 = self.conv3_1(self.conv3(conv2))
        return self._encode_and_decode(conv3, conv2)


class FlowNetSD(_PyramidDecoder):
    """FlowNetSD (small displacements): (B, 6, H, W) -> flow (B, 2, H/4, W/4), 3x3 convs only, an extra
    full-resolution conv0 and inter convs before each flow prediction. H, W multiples of 64."""

    inter_convs = True

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = _conv(6, 64)
        self.conv1 = _conv(64, 64, stride=2)
        self.conv1_1 = _conv(64, 128)
        self.conv2 = _conv(128, 128, stride=2)
        self.conv2_1 = _conv(128, 128)
        self.conv3 = _conv(128, 256, stride=2)
        self.conv3_1 = _conv(256, 256)
        self._make_deep_encoder()
        self._make_decoder(upsample_bias=True)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        conv2 = self.conv2_1(self.conv2(self.conv1_1(self.conv1(self.conv0(x)))))
        conv3 = self.conv3_1(self.conv3(conv2))
        return self._encode_and_decode(conv3, conv2)


class FlowNetFusion(nn.Module):
    """FlowNet2's fusion network: (B, 11, H, W) [frame 1, flow SD, flow S2, |flow SD|, |flow S2|, error SD,
    error S2] -> flow (B, 2, H, W) in pixels, at full resolution. H, W multiples of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = _conv(11, 64)
        self.conv1 = _conv(64, 64, stride=2)
        self.conv1_1 = _conv(64, 128)
        self.conv2 = _conv(128, 128, stride=2)
        self.conv2_1 = _conv(128, 128)
        self.deconv1 = _deconv(128, 32)
        self.deconv0 = _deconv(162, 16)
        self.inter_conv1 = _inter_conv(162, 32)
        self.inter_conv0 = _inter_conv(82, 16)
        self.predict_flow2 = _predict_flow(128)
        self.predict_flow1 = _predict_flow(32)
        self.predict_flow0 = _predict_flow(16)
        self.upsampled_flow2_to_1 = _upsample_flow(True)
        self.upsampled_flow1_to_0 = _upsample_flow(True)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        conv0 = self.conv0(x)
        conv1 = self.conv1_1(self.conv1(conv0))
        conv2 = self.conv2_1(self.conv2(conv1))
        flow2 = self.predict_flow2(conv2)
        concat1 = torch.cat([conv1, self.deconv1(conv2), self.upsampled_flow2_to_1(flow2)], dim=1)
        flow1 = self.predict_flow1(self.inter_conv1(concat1))
        concat0 = torch.cat([conv0, self.deconv0(concat1), self.upsampled_flow1_to_0(flow1)], dim=1)
        return self.predict_flow0(self.inter_conv0(concat0))


def _upsample4(flow: Tensor, mode: str) -> Tensor:
    if mode == "nearest":
        return F.interpolate(flow, scale_factor=4, mode="nearest")
    return F.interpolate(flow, scale_factor=4, mode="bilinear", align_corners=False)


class FlowNet2(nn.Module):
    """The full FlowNet2 stack (NVIDIA flownet2-pytorch's ``FlowNet2``, as the official VPSNet runs it).

    forward(frame1: (B, 3, H, W) float RGB in [0, rgb_max], frame2: same) -> flow (B, 2, H, W) float from
    frame 1 to frame 2 in pixels: frame 2 seen at p in frame 1 is at p + flow(p). H, W multiples of 64.

    Inputs are centred by the per-channel mean over both frames (all pixels) and divided by ``rgb_max``.
    FlowNetC -> FlowNetS (on frame 2 warped by C's flow) -> FlowNetS; in parallel FlowNetSD; FlowNetFusion
    merges the SD and S2 flows. Sub-network flows are upsampled x4 (bilinear for C and S1, nearest for S2 and
    SD) and multiplied by 20, except SD's, which is divided by 20, as the released weights expect.
    """

    def __init__(self, *, rgb_max: float = 255.0, div_flow: float = FLOWNET_DIV_FLOW) -> None:
        super().__init__()
        self.rgb_max = rgb_max
        self.div_flow = div_flow
        self.flownetc = FlowNetC()
        self.flownets_1 = FlowNetS()
        self.flownets_2 = FlowNetS()
        self.flownets_d = FlowNetSD()
        self.flownetfusion = FlowNetFusion()

    def _refine_input(self, x: Tensor, x1: Tensor, x2: Tensor, flow: Tensor) -> Tensor:
        """[frame 1, frame 2, frame 2 warped by flow, flow / 20, |frame 1 - warped|]: (B, 12, H, W)."""
        warped = resample2d(x2, flow)
        return torch.cat([x, warped, flow / self.div_flow, channel_norm(x1 - warped)], dim=1)

    def forward(self, frame1: Tensor, frame2: Tensor) -> Tensor:
        if frame1.shape != frame2.shape or frame1.dim() != 4 or frame1.shape[1] != 3:
            raise ValueError(f"FlowNet2 frames must be (B, 3, H, W) of one shape, got {tuple(frame1.shape)} and "
                             f"{tuple(frame2.shape)}")
        height, width = frame1.shape[-2:]
        if height % FLOWNET_SIZE_DIVISOR or width % FLOWNET_SIZE_DIVISOR:
            raise ValueError(f"FlowNet2 needs H and W multiples of {FLOWNET_SIZE_DIVISOR}, got {height}x{width}; "
                             "pad the frames (FlowNet2Flow does)")
        mean = torch.stack([frame1, frame2], dim=2).flatten(2).mean(dim=-1)[..., None, None]  # (B, 3, 1, 1)
        x1, x2 = (frame1 - mean) / self.rgb_max, (frame2 - mean) / self.rgb_max
        x = torch.cat([x1, x2], dim=1)

        flow_c = _upsample4(self.flownetc(x) * self.div_flow, "bilinear")
        flow_s1 = _upsample4(self.flownets_1(self._refine_input(x, x1, x2, flow_c)) * self.div_flow, "bilinear")
        flow_s2 = _upsample4(self.flownets_2(self._refine_input(x, x1, x2, flow_s1)) * self.div_flow, "nearest")
        flow_sd = _upsample4(self.flownets_d(x) / self.div_flow, "nearest")
        fusion_in = torch.cat([
            x1, flow_sd, flow_s2, channel_norm(flow_sd), channel_norm(flow_s2),
            channel_norm(x1 - resample2d(x2, flow_sd)), channel_norm(x1 - resample2d(x2, flow_s2)),
        ], dim=1)
        return self.flownetfusion(fusion_in)


class FlowNet2Flow(nn.Module):
    """FlowNet2 wrapped to the flow-module contract of :mod:`vidseg.models.vpsnet.flow` (the official
    ``PanopticFuseTrack.compute_flow``).

    forward(target: (B, 3, H, W) float RGB in [0, 1], reference: same) -> (B, 2, H/4, W/4) float flow
    target -> reference in stride-4 pixels. Frames are zero-padded (black, as the official code pads the
    de-normalised images) at the bottom/right to multiples of 64, the flow is cropped back to H x W, resized to
    (H/4, W/4) (bilinear, align_corners=False) and multiplied by 0.25. H and W multiples of 4.

    Args:
        flownet2: the network (its ``rgb_max`` is set to 1: [0, 1] input, the same normalised values as the
            official 0..255 input with rgb_max 255).
        frozen: eval mode and no gradients (official: FlowNet2 is never trained inside VPSNet).
    """

    def __init__(self, flownet2: FlowNet2 | None = None, *, frozen: bool = True) -> None:
        super().__init__()
        self.flownet2 = flownet2 if flownet2 is not None else FlowNet2()
        self.flownet2.rgb_max = 1.0
        self.frozen = frozen
        if frozen:
            self.flownet2.requires_grad_(False)
            self.flownet2.eval()

    def train(self, mode: bool = True) -> FlowNet2Flow:
        super().train(mode)
        if self.frozen:
            self.flownet2.eval()
        return self

    def forward(self, target: Tensor, reference: Tensor) -> Tensor:
        if reference.shape != target.shape:
            raise ValueError(f"flow frames must have one shape, got target {tuple(target.shape)} and reference "
                             f"{tuple(reference.shape)}")
        height, width = target.shape[-2:]
        if height % FLOW_STRIDE or width % FLOW_STRIDE:
            raise ValueError(f"flow frames must have H and W multiples of {FLOW_STRIDE}, got {height}x{width}")
        pad_h, pad_w = -height % FLOWNET_SIZE_DIVISOR, -width % FLOWNET_SIZE_DIVISOR
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tgt, ref = F.pad(target, (0, pad_w, 0, pad_h)), F.pad(reference, (0, pad_w, 0, pad_h))
            flow = self.flownet2(tgt, ref)[..., :height, :width]
            out = F.interpolate(flow, size=(height // FLOW_STRIDE, width // FLOW_STRIDE), mode="bilinear",
                                align_corners=False)
        return out / FLOW_STRIDE

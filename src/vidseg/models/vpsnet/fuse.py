"""VPSNet's Fuse module (the official "BFPTcea" extra neck): align the reference frame's features to the
target frame with flow, fuse them with spatial-temporal attention and add the result back to every FPN level.

Steps (target t, reference r; all FPN levels have C channels):

1. gather: every level resized to P2 and averaged, for t and r -> (B, C, H/4, W/4). Coarser levels are
   upsampled with nearest neighbour, as the official code (refine level = P2).
2. warp r with the initial flow t -> r (from :mod:`vidseg.models.vpsnet.flow`, in P2 pixels).
3. refine: correlation (search range 4 -> 81 channels, divided by C) of t and the warped r; concat
   [t (C), correlation (81), initial flow (2)] -> convs 64, 64, 32 (3x3, LeakyReLU 0.1) -> 3x3 conv -> residual
   flow (2); warp the warped r again with the residual (official: two interpolations;
   ``compose_flow=True`` instead warps the original r once with initial + residual flow: an option).
4. spatial-temporal attention (EDVR's TSA with one spatial pyramid level, the official "TCEA"): per-pixel
   temporal attention sigmoid(<emb_i, emb_t>) on each frame (embedding convs 3x3), a 1x1 fusion conv over
   the weighted frames, and a spatial attention (1x1 conv, max+avg pool stride 2, 1x1, 3x3, upsample, 3x3)
   that scales (x 2 sigmoid) and shifts the fused map.
5. refine: 3x3 conv + ReLU.
6. redistribute: the fused map is added to every level, resized to it (P2: as is; coarser levels: adaptive
   max pooling, as the official code).

Conventions (chosen explicitly):
- Warping: :func:`vidseg.ops.flow_warp` with ``align_corners=True`` and ``padding_mode="zeros"``: a flow of
  (u, v) pixels samples exactly u, v pixel centres away, and samples beyond the border pixel centres fade to
  zero. The official code builds an align_corners=True grid but calls grid_sample with the default
  align_corners=False, which stretches every displacement by W / (W - 1) around the image centre (a
  sub-pixel, position-dependent error); exact pixel units keep the flow network's meaning. Zero padding as
  the official grid_sample default: there is nothing to see outside the reference frame.
- Resizing: nearest for upsampling in gather (official), bilinear with align_corners=False where a map is
  brought to an arbitrary size inside the attention pyramid (official uses scale_factor=2, which only
  differs for odd sizes).
- Convs use zero "same" padding.
- Initialisation: every conv Xavier-uniform with zero bias (``init="xavier"``), as the official neck's
  ``init_weights`` (called by the detector's) resets them all; ``init="edvr"`` keeps EDVR's Kaiming-normal
  (fan_out) init for the attention convs (an option).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.ops import correlation, flow_warp

FUSE_INITS = ("xavier", "edvr")


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.1, inplace=True)


def _adaptive_max_pool1d_indices(length: int, out_length: int, device: torch.device) -> Tensor:
    """Adaptive pooling windows along one axis as gather indices: (out_length, K) int64, the window of output i
    being PyTorch's [floor(i L / O), ceil((i + 1) L / O)) padded with its last index (K = the widest window)."""
    i = torch.arange(out_length, device=device)
    start = (i * length) // out_length
    end = -((-(i + 1) * length) // out_length)
    k = torch.arange(-(-length // out_length) + 1, device=device)
    return torch.minimum(start[:, None] + k[None, :], end[:, None] - 1)


def adaptive_max_pool2d(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``F.adaptive_max_pool2d(x (B, C, H, W), size)`` -> (B, C, *size), the same values (a max is exact).

    When exported (ONNX), the windows are gathered with index tensors (rows, then columns: a max over a box is
    the max over its rows' maxima), since ONNX has no adaptive max pooling to sizes known only at run time;
    in PyTorch it is ``F.adaptive_max_pool2d``.
    """
    if not (torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()):
        return F.adaptive_max_pool2d(x, size)
    batch, channels, height, width = x.shape
    rows = _adaptive_max_pool1d_indices(height, size[0], x.device)
    x = x.index_select(2, rows.flatten()).view(batch, channels, size[0], rows.shape[1], width).amax(dim=3)
    cols = _adaptive_max_pool1d_indices(width, size[1], x.device)
    return x.index_select(3, cols.flatten()).view(batch, channels, size[0], size[1], cols.shape[1]).amax(dim=4)


class FlowRefiner(nn.Module):
    """[target (C), correlation ((2r+1)^2), flow (2)] -> residual flow (B, 2, h, w), in pixels."""

    def __init__(self, in_channels: int, hidden: Sequence[int] = (64, 64, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Conv2d(in_channels, width, 3, padding=1), _lrelu()]
            in_channels = width
        layers.append(nn.Conv2d(in_channels, 2, 3, padding=1))
        self.convs = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # official init: xavier uniform, zero bias
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x)


class SpatialTemporalAttention(nn.Module):
    """Fuse N aligned frames (B, N, C, h, w), frame ``center`` being the target, into (B, C, h, w).

    EDVR's TSA fusion with one spatial-attention pyramid level (the official TCEA_Fusion): temporal attention
    = sigmoid of the per-pixel dot product of each frame's embedding with the target's; fusion 1x1 conv over
    the attention-weighted frames; spatial attention multiplies by 2 * sigmoid(att) and adds att_add.
    """

    def __init__(self, channels: int, num_frames: int = 2, center: int = 0) -> None:
        super().__init__()
        self.center = center
        self.embed_frames = nn.Conv2d(channels, channels, 3, padding=1)
        self.embed_target = nn.Conv2d(channels, channels, 3, padding=1)
        self.fusion = nn.Conv2d(num_frames * channels, channels, 1)
        self.spatial_in = nn.Conv2d(num_frames * channels, channels, 1)
        self.spatial_pooled = nn.Conv2d(2 * channels, channels, 1)
        self.spatial_mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.spatial_out = nn.Conv2d(channels, channels, 3, padding=1)
        self.spatial_add = nn.Sequential(nn.Conv2d(channels, channels, 1), _lrelu(), nn.Conv2d(channels, channels, 1))
        self.max_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg_pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.lrelu = _lrelu()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # EDVR's init (FuseModule(init="xavier") then resets it, as official)
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
                nn.init.zeros_(m.bias)

    def temporal_attention(self, frames: Tensor) -> Tensor:
        """(B, N, C, h, w) -> (B, N, h, w) in (0, 1)."""
        b, n, c, h, w = frames.shape
        target = self.embed_target(frames[:, self.center])
        emb = self.embed_frames(frames.reshape(b * n, c, h, w)).view(b, n, c, h, w)
        return torch.sigmoid((emb * target[:, None]).sum(dim=2))

    def forward(self, frames: Tensor) -> Tensor:
        b, n, c, h, w = frames.shape
        weighted = (frames * self.temporal_attention(frames)[:, :, None]).reshape(b, n * c, h, w)
        fused = self.lrelu(self.fusion(weighted))
        att = self.lrelu(self.spatial_in(weighted))
        att = self.lrelu(self.spatial_pooled(torch.cat([self.max_pool(att), self.avg_pool(att)], dim=1)))
        att = self.lrelu(self.spatial_mid(att))
        att = F.interpolate(att, size=(h, w), mode="bilinear", align_corners=False)
        att = self.spatial_out(att)
        return fused * torch.sigmoid(att) * 2 + self.spatial_add(att)


class FuseModule(nn.Module):
    """Align-and-fuse of two frames' FPN features (see the module docstring).

    forward(target: {level: (B, C, h_l, w_l)}, reference: same levels and shapes, flow: (B, 2, h_2, w_2)
        initial flow target -> reference in P2 pixels) -> {level: (B, C, h_l, w_l)} fused target features.
    ``align`` exposes steps 1-3 for tests and visualisation.

    Args:
        channels: FPN channels (256). levels: FPN levels, finest (P2) first.
        search_range: correlation search range r (4 -> 81 channels).
        flow_hidden: widths of the flow-refinement convs (64, 64, 32).
        compose_flow: False (official) warps the warped reference again with the residual flow; True warps
            the original reference once with initial + residual flow (one interpolation: an option).
        correlation_impl: passed to :func:`vidseg.ops.correlation` ("auto").
        init: "xavier" (official: every conv Xavier-uniform, zero bias) or "edvr" (the attention convs keep
            EDVR's Kaiming-normal fan_out init: an option).
    """

    def __init__(
        self,
        channels: int = 256,
        *,
        levels: Sequence[str] = ("p2", "p3", "p4", "p5", "p6"),
        search_range: int = 4,
        flow_hidden: Sequence[int] = (64, 64, 32),
        compose_flow: bool = False,
        correlation_impl: str = "auto",
        init: str = "xavier",
    ) -> None:
        super().__init__()
        if init not in FUSE_INITS:
            raise ValueError(f"init must be one of {FUSE_INITS}, got {init!r}")
        self.levels = tuple(levels)
        self.search_range = search_range
        self.compose_flow = compose_flow
        self.correlation_impl = correlation_impl
        self.flow_refiner = FlowRefiner(channels + (2 * search_range + 1) ** 2 + 2, flow_hidden)
        self.attention = SpatialTemporalAttention(channels, num_frames=2, center=0)
        self.refine = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        # official: the neck's init_weights resets every conv, the attention's included
        for m in (self if init == "xavier" else self.refine).modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def gather(self, features: Mapping[str, Tensor]) -> Tensor:
        """Average of all levels at the finest level's size (nearest upsampling): (B, C, h_2, w_2)."""
        size = features[self.levels[0]].shape[-2:]
        maps = [features[name] if features[name].shape[-2:] == size
                else F.interpolate(features[name], size=size, mode="nearest") for name in self.levels]
        return torch.stack(maps).mean(dim=0)

    def align(self, target: Tensor, reference: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """Warp ``reference`` (B, C, h, w) onto ``target`` with the initial ``flow`` (B, 2, h, w) and the
        learned residual. Returns (aligned reference (B, C, h, w), residual flow (B, 2, h, w))."""
        warped = flow_warp(reference, flow, padding_mode="zeros", align_corners=True)
        cost = correlation(target, warped, self.search_range, impl=self.correlation_impl).to(target.dtype)
        residual = self.flow_refiner(torch.cat([target, cost, flow], dim=1))
        if self.compose_flow:
            aligned = flow_warp(reference, flow + residual, padding_mode="zeros", align_corners=True)
        else:
            aligned = flow_warp(warped, residual, padding_mode="zeros", align_corners=True)
        return aligned, residual

    def forward(self, target: Mapping[str, Tensor], reference: Mapping[str, Tensor], flow: Tensor) -> dict[str, Tensor]:
        tgt, ref = self.gather(target), self.gather(reference)
        if flow.shape != (tgt.shape[0], 2, *tgt.shape[-2:]):
            raise ValueError(f"flow must be (B, 2, h, w) at the finest level {tuple(tgt.shape[-2:])}, got "
                             f"{tuple(flow.shape)}")
        aligned, _ = self.align(tgt, ref, flow.to(tgt.dtype))
        fused = self.refine(self.attention(torch.stack([tgt, aligned], dim=1)))
        out = dict(target)
        for name in self.levels:
            size = target[name].shape[-2:]
            residual = fused if fused.shape[-2:] == size else adaptive_max_pool2d(fused, tuple(size))
            out[name] = target[name] + residual
        return out

"""DeepLabv3+ decoder (torchvision's ASPP + low-level fusion) and a backbone+decoder feature extractor.

FEELVOS uses DeepLabv3+ features at stride 4: it trains at output stride 16 with ASPP rates (6, 12, 18) and
runs inference at output stride 8 with rates (12, 24, 36). Dilation and rates change no parameter shape,
so a state dict trained at one output stride loads into a model built at another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.ops import Conv2dNormActivation

from vidseg.backbones.base import Backbone, WeightsArg, check_output_stride
from vidseg.backbones.registry import get_backbone


def deeplab_atrous_rates(output_stride: int) -> tuple[int, int, int]:
    """ASPP rates for an output stride: (6, 12, 18) at 16, (12, 24, 36) at 8, (3, 6, 9) at 32.

    The rates scale with 1 / output_stride so the ASPP field of view stays the same in input pixels.
    """
    check_output_stride(output_stride)
    a, b, c = (rate * 16 // output_stride for rate in (6, 12, 18))
    return (a, b, c)


class DeepLabV3PlusDecoder(nn.Module):
    """ASPP on the high-level feature, upsampled and fused with a projected low-level feature.

    forward(high: (B, high_channels, h, w) float, low: (B, low_channels, H4, W4) float)
        -> (B, decoder_channels, H4, W4) float, where H4 x W4 is the low-level (stride 4) resolution.

    ASPP is torchvision's (1x1 + three atrous 3x3 + image pooling, then 1x1 projection and dropout 0.5).
    Its pooling branch has a BatchNorm on a 1x1 map, so training needs batch size > 1 (or frozen/eval BN).
    The fusion uses two plain 3x3 conv-BN-ReLU (the original uses separable convs; not done here).
    """

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        *,
        aspp_channels: int = 256,
        decoder_channels: int = 256,
        low_proj_channels: int = 48,
        atrous_rates: Sequence[int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        self.out_channels = decoder_channels
        self.atrous_rates = tuple(atrous_rates)
        self.aspp = ASPP(high_channels, self.atrous_rates, aspp_channels)
        # Few low-level channels so the high-level semantics dominate the concat (DeepLabv3+ paper: 48).
        self.low_proj = Conv2dNormActivation(low_channels, low_proj_channels, kernel_size=1)
        self.fuse = nn.Sequential(
            Conv2dNormActivation(aspp_channels + low_proj_channels, decoder_channels, kernel_size=3),
            Conv2dNormActivation(decoder_channels, decoder_channels, kernel_size=3),
        )

    def forward(self, high: Tensor, low: Tensor) -> Tensor:
        x = self.aspp(high)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, self.low_proj(low)], dim=1))


class DeepLabV3PlusFeatures(nn.Module):
    """Backbone + DeepLabv3+ decoder: image -> decoder features at stride 4.

    forward(x: (B, 3, H, W) float, normalised) -> (B, out_channels, ceil(H / 4), ceil(W / 4)) float.
    Uses the backbone's "c5" as the high-level and "c2" as the low-level feature.

    Attributes:
        backbone, decoder: the two parts.
        out_channels: decoder channels.
        stride: 4.
    """

    def __init__(self, backbone: Backbone, decoder: DeepLabV3PlusDecoder) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.out_channels = decoder.out_channels
        self.stride = backbone.strides["c2"]

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        return self.decoder(features["c5"], features["c2"])


def build_deeplabv3plus(
    backbone_name: str,
    *,
    output_stride: int = 16,
    weights: WeightsArg = None,
    frozen_bn: bool = False,
    decoder_channels: int = 256,
    aspp_channels: int = 256,
    low_proj_channels: int = 48,
    atrous_rates: Sequence[int] | None = None,
    **backbone_kwargs: Any,
) -> DeepLabV3PlusFeatures:
    """Build a registered backbone and a DeepLabv3+ decoder on its c5 (high) and c2 (low) features.

    `weights` and `frozen_bn` apply to the backbone only (the decoder starts random, its BN trainable).
    `atrous_rates` defaults to deeplab_atrous_rates(output_stride). `backbone_kwargs` go to the backbone
    builder.
    """
    backbone = get_backbone(
        backbone_name, weights=weights, output_stride=output_stride, frozen_bn=frozen_bn, **backbone_kwargs
    )
    decoder = DeepLabV3PlusDecoder(
        backbone.out_channels["c5"],
        backbone.out_channels["c2"],
        aspp_channels=aspp_channels,
        decoder_channels=decoder_channels,
        low_proj_channels=low_proj_channels,
        atrous_rates=deeplab_atrous_rates(output_stride) if atrous_rates is None else atrous_rates,
    )
    return DeepLabV3PlusFeatures(backbone, decoder)

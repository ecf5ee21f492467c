"""UPSNet's semantic head (Xiong et al., CVPR 2019), as used by VPSNet.

One subnetwork, shared by P2..P5: three deformable 3x3 convs (256 -> 256 -> 128 -> 128), each followed by
GroupNorm(32) and ReLU. The P3..P5 outputs are upsampled (bilinear) to P2's size, the four maps concatenated
(4 x 128 = 512 channels) and a 1x1 conv predicts every class (stuff and things) at stride 4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from vidseg.constants import IGNORE_LABEL
from vidseg.ops import deform_conv2d


class DeformableConv(nn.Module):
    """3x3 deformable conv whose offsets come from a plain 3x3 conv initialised to zero, so it starts as an
    ordinary conv (UPSNet's DeformConvWithOffset; no bias, a norm follows).

    (B, in_channels, h, w) float -> (B, out_channels, h, w) float.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(in_channels, 2 * 3 * 3, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        offset = self.offset(x)
        # torchvision's deformable conv has no bfloat16/float16 CPU kernel and no CPU autocast rule (its CUDA
        # autocast rule runs it in float32): run it outside autocast, in the weights' dtype, so mixed precision
        # (predict/evaluate precision=bf16-mixed) works on every device.
        with torch.autocast(x.device.type, enabled=False):
            dtype = self.conv.weight.dtype
            # vidseg's op: torchvision's kernel, except on CPU: an exact grid_sample path, ~10x faster to train
            return deform_conv2d(x.to(dtype), offset.to(dtype), self.conv.weight, self.conv.bias,
                                 stride=self.conv.stride, padding=self.conv.padding, dilation=self.conv.dilation)


class UPSNetSemanticHead(nn.Module):
    """FPN levels -> semantic logits at P2 resolution.

    forward(features: {"p2".."p5"}: (B, in_channels, H/2^k, W/2^k) float) -> (B, num_classes, H/4, W/4)
    float logits over all classes (stuff first, then things, in the dataset's class order).
    loss(logits, semantic (B, H, W) int64, 255 = void) -> {"loss_semantic"}: cross-entropy after bilinear
    upsampling of the logits to the label size (the official head scores at full resolution).

    Args:
        num_classes: stuff + thing classes (19 on Cityscapes).
        in_channels: FPN channels (256). channels: (first, second/third) conv widths, (256, 128) in UPSNet.
        num_groups: GroupNorm groups (32); must divide both widths (use fewer for tiny CPU widths).
        levels: the FPN levels the subnetwork is applied to, finest first.
        loss_weight: 1.0 in VPSNet.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 256,
        channels: Sequence[int] = (256, 128),
        num_groups: int = 32,
        levels: Sequence[str] = ("p2", "p3", "p4", "p5"),
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        wide, narrow = channels
        self.levels = tuple(levels)
        self.loss_weight = loss_weight
        self.subnet = nn.Sequential(
            DeformableConv(in_channels, wide), nn.GroupNorm(num_groups, wide), nn.ReLU(inplace=True),
            DeformableConv(wide, narrow), nn.GroupNorm(num_groups, narrow), nn.ReLU(inplace=True),
            DeformableConv(narrow, narrow), nn.GroupNorm(num_groups, narrow), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(narrow * len(self.levels), num_classes, 1)
        nn.init.xavier_uniform_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        maps = [self.subnet(features[name]) for name in self.levels]
        size = maps[0].shape[-2:]
        maps = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        return self.classifier(torch.cat(maps, dim=1))

    def loss(self, logits: Tensor, semantic: Tensor) -> dict[str, Tensor]:
        if not (semantic != IGNORE_LABEL).any():  # an all-void crop: zero loss, not NaN
            return {"loss_semantic": logits.sum() * 0.0}
        full = F.interpolate(logits, size=semantic.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(full, semantic, ignore_index=IGNORE_LABEL)
        return {"loss_semantic": self.loss_weight * loss}

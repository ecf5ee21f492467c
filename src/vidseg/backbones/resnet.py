"""Dilated ResNets built with torchvision's builders.

| name      | c2  | c3  | c4   | c5   |
|-----------|-----|-----|------|------|
| resnet18  | 64  | 128 | 256  | 512  |
| resnet50  | 256 | 512 | 1024 | 2048 |
| resnet101 | 256 | 512 | 1024 | 2048 |

Weights: None (random init, never downloads), a local state-dict file (of the backbone or of the full
torchvision classifier), or a torchvision weights name: resnet18 IMAGENET1K_V1; resnet50 and resnet101
IMAGENET1K_V1, IMAGENET1K_V2 (= DEFAULT). Names download from download.pytorch.org on first use (needs
internet; cached under $TORCH_HOME). The ImageNet weights expect inputs normalised with mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); the model, not the backbone, normalises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor
from torchvision import models
from torchvision.models import WeightsEnum

from vidseg.backbones.base import (
    Backbone,
    WeightsArg,
    check_output_stride,
    dilated_stages,
    freeze_batch_norm,
    load_weights_file,
    replace_stride_with_dilation,
    resolve_weights,
)
from vidseg.backbones.registry import register_backbone


class ResNetBackbone(Backbone):
    """A torchvision ResNet without its classifier: layer1..layer4 give c2..c5.

    Submodules keep torchvision's names (conv1, bn1, layer1, ...), so the state dict matches torchvision's
    minus "fc.*". forward(x: (B, 3, H, W) float) -> {"c2".."c5"}: (B, C, H/stride, W/stride) float.
    """

    def __init__(self, resnet: models.ResNet, output_stride: int) -> None:
        expansion = type(resnet.layer1[0]).expansion
        channels = {name: 64 * 2**i * expansion for i, name in enumerate(("c2", "c3", "c4", "c5"))}
        super().__init__(channels, output_stride)
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}


def _build_resnet(
    tv_builder: Callable[..., models.ResNet],
    weights_enum: type[WeightsEnum],
    *,
    weights: WeightsArg,
    output_stride: int,
    frozen_bn: bool,
    progress: bool,
    native_dilation: bool,
    **kwargs: Any,
) -> ResNetBackbone:
    check_output_stride(output_stride)
    if "replace_stride_with_dilation" in kwargs:
        raise TypeError("Use output_stride instead of replace_stride_with_dilation")
    resolved = resolve_weights(weights, weights_enum)
    tv_weights = resolved if isinstance(resolved, WeightsEnum) else None
    dilate = dilated_stages(output_stride)
    if native_dilation:
        resnet = tv_builder(
            weights=tv_weights, progress=progress, replace_stride_with_dilation=dilate, **kwargs
        )
    else:
        # torchvision's BasicBlock refuses dilation > 1: build strided, then convert. exact=True is
        # what torchvision does for Bottleneck ResNets and keeps pretrained features valid.
        resnet = tv_builder(weights=tv_weights, progress=progress, **kwargs)
        replace_stride_with_dilation([resnet.layer2, resnet.layer3, resnet.layer4], dilate, exact=True)
    backbone = ResNetBackbone(resnet, output_stride)
    if resolved is not None and tv_weights is None:
        load_weights_file(backbone, resolved, weights_enum=weights_enum, ignore_prefixes=("fc.",))
    if frozen_bn:
        freeze_batch_norm(backbone)
    return backbone


@register_backbone("resnet18")
def resnet18(
    *,
    weights: WeightsArg = None,
    output_stride: int = 16,
    frozen_bn: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> ResNetBackbone:
    """ResNet-18 backbone; see the module docstring for channels and weights. `kwargs` go to
    torchvision.models.resnet18 (e.g. zero_init_residual)."""
    return _build_resnet(
        models.resnet18,
        models.ResNet18_Weights,
        weights=weights,
        output_stride=output_stride,
        frozen_bn=frozen_bn,
        progress=progress,
        native_dilation=False,
        **kwargs,
    )


@register_backbone("resnet50")
def resnet50(
    *,
    weights: WeightsArg = None,
    output_stride: int = 16,
    frozen_bn: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> ResNetBackbone:
    """ResNet-50 backbone; see the module docstring for channels and weights. `kwargs` go to
    torchvision.models.resnet50."""
    return _build_resnet(
        models.resnet50,
        models.ResNet50_Weights,
        weights=weights,
        output_stride=output_stride,
        frozen_bn=frozen_bn,
        progress=progress,
        native_dilation=True,
        **kwargs,
    )


@register_backbone("resnet101")
def resnet101(
    *,
    weights: WeightsArg = None,
    output_stride: int = 16,
    frozen_bn: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> ResNetBackbone:
    """ResNet-101 backbone; see the module docstring for channels and weights. `kwargs` go to
    torchvision.models.resnet101."""
    return _build_resnet(
        models.resnet101,
        models.ResNet101_Weights,
        weights=weights,
        output_stride=output_stride,
        frozen_bn=frozen_bn,
        progress=progress,
        native_dilation=True,
        **kwargs,
    )

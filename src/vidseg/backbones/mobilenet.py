"""Dilated MobileNetV3 backbones built with torchvision's builders.

| name               | c2 | c3 | c4  | c5  |
|--------------------|----|----|-----|-----|
| mobilenet_v3_large | 24 | 40 | 112 | 960 |
| mobilenet_v3_small | 16 | 24 | 48  | 576 |

c5 includes the final 1x1 conv of `features` (as torchvision's DeepLabV3 / LR-ASPP MobileNet heads use).
Weights: None (random init, never downloads), a local state-dict file (of the backbone or of the full
torchvision classifier), or a torchvision weights name: mobilenet_v3_large IMAGENET1K_V1, IMAGENET1K_V2
(= DEFAULT); mobilenet_v3_small IMAGENET1K_V1 (= DEFAULT). Names download on first use (needs internet).
The ImageNet weights expect ImageNet mean/std normalisation, done by the model.
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
    is_strided,
    load_weights_file,
    replace_stride_with_dilation,
    resolve_weights,
)
from vidseg.backbones.registry import register_backbone


class MobileNetV3Backbone(Backbone):
    """A torchvision MobileNetV3 `features` trunk, tapped at the last block of each resolution.

    The submodule keeps torchvision's name (`features`), so the state dict matches torchvision's minus
    "classifier.*". forward(x: (B, 3, H, W) float) -> {"c2".."c5"}: (B, C, H/stride, W/stride) float.
    """

    def __init__(self, mobilenet: models.MobileNetV3, output_stride: int) -> None:
        features = mobilenet.features
        # Stage boundaries come from the strided blocks of the built network (strides 2, 4, 8, 16, 32).
        starts = [i for i, block in enumerate(features) if is_strided(block)]
        if len(starts) != 5:
            raise ValueError(f"Expected 5 strided blocks in MobileNetV3 features, found {len(starts)}")
        ends = [start - 1 for start in starts[2:]] + [len(features) - 1]
        names = ("c2", "c3", "c4", "c5")
        channels = {name: features[end].out_channels for name, end in zip(names, ends, strict=True)}
        super().__init__(channels, output_stride)
        stages = [features[a:b] for a, b in zip(starts[2:], starts[3:] + [len(features)], strict=True)]
        # torchvision's own `dilated=True` only reaches OS16; converting here gives 8 too, with the same
        # convention (whole stage dilated; checked against torchvision in the tests). exact=True would buy
        # nothing: the squeeze-excitation global pooling already differs between dense and strided maps.
        replace_stride_with_dilation(stages, dilated_stages(output_stride), exact=False)
        self.features = features
        self._taps = dict(zip(ends, names, strict=True))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self._taps:
                out[self._taps[i]] = x
        return out


def _build_mobilenet(
    tv_builder: Callable[..., models.MobileNetV3],
    weights_enum: type[WeightsEnum],
    *,
    weights: WeightsArg,
    output_stride: int,
    frozen_bn: bool,
    progress: bool,
    **kwargs: Any,
) -> MobileNetV3Backbone:
    check_output_stride(output_stride)
    if "dilated" in kwargs:
        raise TypeError("Use output_stride instead of dilated")
    resolved = resolve_weights(weights, weights_enum)
    tv_weights = resolved if isinstance(resolved, WeightsEnum) else None
    backbone = MobileNetV3Backbone(tv_builder(weights=tv_weights, progress=progress, **kwargs), output_stride)
    if resolved is not None and tv_weights is None:
        load_weights_file(backbone, resolved, weights_enum=weights_enum, ignore_prefixes=("classifier.",))
    if frozen_bn:
        freeze_batch_norm(backbone)
    return backbone


@register_backbone("mobilenet_v3_large")
def mobilenet_v3_large(
    *,
    weights: WeightsArg = None,
    output_stride: int = 16,
    frozen_bn: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> MobileNetV3Backbone:
    """MobileNetV3-Large backbone; see the module docstring. `kwargs` go to
    torchvision.models.mobilenet_v3_large (e.g. width_mult, reduced_tail)."""
    return _build_mobilenet(
        models.mobilenet_v3_large,
        models.MobileNet_V3_Large_Weights,
        weights=weights,
        output_stride=output_stride,
        frozen_bn=frozen_bn,
        progress=progress,
        **kwargs,
    )


@register_backbone("mobilenet_v3_small")
def mobilenet_v3_small(
    *,
    weights: WeightsArg = None,
    output_stride: int = 16,
    frozen_bn: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> MobileNetV3Backbone:
    """MobileNetV3-Small backbone; see the module docstring. `kwargs` go to
    torchvision.models.mobilenet_v3_small (e.g. width_mult, reduced_tail)."""
    return _build_mobilenet(
        models.mobilenet_v3_small,
        models.MobileNet_V3_Small_Weights,
        weights=weights,
        output_stride=output_stride,
        frozen_bn=frozen_bn,
        progress=progress,
        **kwargs,
    )

"""Backbone zoo shared by FEELVOS and VPSNet: dilated ResNets and MobileNetV3s (torchvision builders)
behind one registry, a DeepLabv3+ decoder and an FPN.

    backbone = get_backbone("resnet50", output_stride=16)        # random init, never downloads
    features = backbone(images)  # {"c2".."c5"}; backbone.out_channels, backbone.strides
"""

from vidseg.backbones.base import (
    FEATURE_NAMES,
    OUTPUT_STRIDES,
    Backbone,
    freeze_batch_norm,
    replace_stride_with_dilation,
)
from vidseg.backbones.deeplab import (
    DeepLabV3PlusDecoder,
    DeepLabV3PlusFeatures,
    build_deeplabv3plus,
    deeplab_atrous_rates,
)
from vidseg.backbones.fpn import FPN
from vidseg.backbones.mobilenet import MobileNetV3Backbone, mobilenet_v3_large, mobilenet_v3_small
from vidseg.backbones.registry import get_backbone, get_backbone_builder, list_backbones, register_backbone
from vidseg.backbones.resnet import ResNetBackbone, resnet18, resnet50, resnet101

__all__ = [
    "FEATURE_NAMES",
    "FPN",
    "OUTPUT_STRIDES",
    "Backbone",
    "DeepLabV3PlusDecoder",
    "DeepLabV3PlusFeatures",
    "MobileNetV3Backbone",
    "ResNetBackbone",
    "build_deeplabv3plus",
    "deeplab_atrous_rates",
    "freeze_batch_norm",
    "get_backbone",
    "get_backbone_builder",
    "list_backbones",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "register_backbone",
    "replace_stride_with_dilation",
    "resnet18",
    "resnet50",
    "resnet101",
]

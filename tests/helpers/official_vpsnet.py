"""The official VPSNet checkpoint's parameter list (name -> shape), for converter tests without the real file.

Derived by reading the official code (github mcahny/vps, mmdetection v1; read for facts, nothing copied), not
from vidseg's model, so the converter is checked against an independent description:

- configs/cityscapes/fusetrack.py: ``PanopticFuseTrack``; ResNet depth 50; FPN in [256, 512, 1024, 2048] ->
  256, 5 outputs (P6 by max pooling: no extra convs); ``BFPTcea`` extra neck (in 256, nframes 2); UPSNetFPN
  (in 256, out 128, 19 classes); RPNHead (256, 3 anchors: scale 8, ratios 0.5/1/2); SharedFCBBoxHead
  (2 FCs of 1024 over 256x7x7, 9 classes, class-specific regression); TrackHead (2 FCs of 1024); FCNMaskHead
  (4 convs 256, deconv upsample x2, 9 classes).
- mmdet/models/detectors/two_stage.py: attribute names backbone, neck, extra_neck, panopticFPN, rpn_head,
  bbox_head, track_head, mask_head (RoI extractors hold no weights); panoptic_fusetrack.py: ``self.flownet2 =
  FlowNet2(...)`` is a registered submodule, so its weights are in the saved state_dict.
- mmdet/models/backbones/resnet.py (torchvision-like names, bn1/bn2/bn3, downsample.0/.1; BatchNorm2d with
  num_batches_tracked); necks/fpn.py + utils/conv_module.py (ConvModule.conv, bias when no norm);
  extra_necks/bfp_tcea.py, flow_modules/flow_modules.py (LiteFlowNetCorr: flow_estimator.convs = 3 x
  Sequential(conv, LeakyReLU) + conv, input 256 + 2 + 81), utils/tcea_modules.py (TCEA_Fusion: tAtt_1/2,
  fea_fusion, sAtt_1..4, sAtt_add_1/2); panoptic/upsnetFPN.py + utils/deform_conv_with_offset.py
  (deform_convs.0 = Sequential(DCN, GN, ReLU) x 3; DCN = conv_offset (18 ch) + mmdet DeformConv weight only);
  anchor_heads/rpn_head.py (rpn_conv, rpn_cls, rpn_reg); bbox_heads/convfc_bbox_head.py (shared_fcs, fc_cls,
  fc_reg); track_heads/track_head.py (fcs); mask_heads/fcn_mask_head.py (convs, upsample, conv_logits).
- mmdet/models/flow_modules/{flownet2,FlowNetC,FlowNetS,FlowNetSD,FlowNetFusion,submodules}.py: FlowNet2 with
  batchNorm=False (conv = Sequential(Conv2d(bias), LeakyReLU), i_conv = Sequential(Conv2d), deconv =
  Sequential(ConvTranspose2d(k4, s2), LeakyReLU)); FlowNetS's flow upsamplers have no bias. The official
  parameter count, 162,518,834, is checked by the tests.
"""

from __future__ import annotations

import torch

Shapes = dict[str, tuple[int, ...]]


def _conv(shapes: Shapes, name: str, cin: int, cout: int, k: int, *, bias: bool = True) -> None:
    shapes[f"{name}.weight"] = (cout, cin, k, k)
    if bias:
        shapes[f"{name}.bias"] = (cout,)


def _bn(shapes: Shapes, name: str, channels: int) -> None:
    for field in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{name}.{field}"] = (channels,)
    shapes[f"{name}.num_batches_tracked"] = ()


def _linear(shapes: Shapes, name: str, cin: int, cout: int) -> None:
    shapes[f"{name}.weight"] = (cout, cin)
    shapes[f"{name}.bias"] = (cout,)


def _deconv(shapes: Shapes, name: str, cin: int, cout: int, k: int, *, bias: bool = True) -> None:
    shapes[f"{name}.weight"] = (cin, cout, k, k)  # ConvTranspose2d: (in, out, k, k)
    if bias:
        shapes[f"{name}.bias"] = (cout,)


def resnet50_shapes(prefix: str = "backbone.") -> Shapes:
    shapes: Shapes = {}
    _conv(shapes, prefix + "conv1", 3, 64, 7, bias=False)
    _bn(shapes, prefix + "bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True), start=1):
        for block in range(blocks):
            name = f"{prefix}layer{stage}.{block}"
            _conv(shapes, f"{name}.conv1", inplanes, planes, 1, bias=False)
            _bn(shapes, f"{name}.bn1", planes)
            _conv(shapes, f"{name}.conv2", planes, planes, 3, bias=False)
            _bn(shapes, f"{name}.bn2", planes)
            _conv(shapes, f"{name}.conv3", planes, planes * 4, 1, bias=False)
            _bn(shapes, f"{name}.bn3", planes * 4)
            if block == 0:
                _conv(shapes, f"{name}.downsample.0", inplanes, planes * 4, 1, bias=False)
                _bn(shapes, f"{name}.downsample.1", planes * 4)
            inplanes = planes * 4
    return shapes


def _flownet_decoder(shapes: Shapes, prefix: str, *, inter_convs: bool, upsample_bias: bool) -> None:
    for level, cin, cout in ((5, 1024, 512), (4, 1026, 256), (3, 770, 128), (2, 386, 64)):
        _deconv(shapes, f"{prefix}deconv{level}.0", cin, cout, 4)
    if inter_convs:
        for level, cin, cout in ((5, 1026, 512), (4, 770, 256), (3, 386, 128), (2, 194, 64)):
            _conv(shapes, f"{prefix}inter_conv{level}.0", cin, cout, 3)
        predict_in = (1024, 512, 256, 128, 64)
    else:
        predict_in = (1024, 1026, 770, 386, 194)
    for level, cin in zip((6, 5, 4, 3, 2), predict_in, strict=True):
        _conv(shapes, f"{prefix}predict_flow{level}", cin, 2, 3)
    for level in (6, 5, 4, 3):
        _deconv(shapes, f"{prefix}upsampled_flow{level}_to_{level - 1}", 2, 2, 4, bias=upsample_bias)


def _flownet_tail(shapes: Shapes, prefix: str) -> None:
    """conv4 .. conv6_1, shared by FlowNetC/S/SD."""
    for name, cin, cout, _stride in (("conv4", 256, 512, 2), ("conv4_1", 512, 512, 1), ("conv5", 512, 512, 2),
                                     ("conv5_1", 512, 512, 1), ("conv6", 512, 1024, 2), ("conv6_1", 1024, 1024, 1)):
        _conv(shapes, f"{prefix}{name}.0", cin, cout, 3)


def flownet2_shapes(prefix: str = "flownet2.") -> Shapes:
    """NVIDIA flownet2-pytorch's FlowNet2 (batchNorm=False) parameter shapes."""
    shapes: Shapes = {}
    c = prefix + "flownetc."
    for name, cin, cout, k in (("conv1", 3, 64, 7), ("conv2", 64, 128, 5), ("conv3", 128, 256, 5),
                               ("conv_redir", 256, 32, 1), ("conv3_1", 473, 256, 3)):
        _conv(shapes, f"{c}{name}.0", cin, cout, k)
    _flownet_tail(shapes, c)
    _flownet_decoder(shapes, c, inter_convs=False, upsample_bias=True)
    for s in (prefix + "flownets_1.", prefix + "flownets_2."):
        for name, cin, cout, k in (("conv1", 12, 64, 7), ("conv2", 64, 128, 5), ("conv3", 128, 256, 5),
                                   ("conv3_1", 256, 256, 3)):
            _conv(shapes, f"{s}{name}.0", cin, cout, k)
        _flownet_tail(shapes, s)
        _flownet_decoder(shapes, s, inter_convs=False, upsample_bias=False)
    d = prefix + "flownets_d."
    for name, cin, cout in (("conv0", 6, 64), ("conv1", 64, 64), ("conv1_1", 64, 128), ("conv2", 128, 128),
                            ("conv2_1", 128, 128), ("conv3", 128, 256), ("conv3_1", 256, 256)):
        _conv(shapes, f"{d}{name}.0", cin, cout, 3)
    _flownet_tail(shapes, d)
    _flownet_decoder(shapes, d, inter_convs=True, upsample_bias=True)
    f = prefix + "flownetfusion."
    for name, cin, cout in (("conv0", 11, 64), ("conv1", 64, 64), ("conv1_1", 64, 128), ("conv2", 128, 128),
                            ("conv2_1", 128, 128)):
        _conv(shapes, f"{f}{name}.0", cin, cout, 3)
    _deconv(shapes, f"{f}deconv1.0", 128, 32, 4)
    _deconv(shapes, f"{f}deconv0.0", 162, 16, 4)
    _conv(shapes, f"{f}inter_conv1.0", 162, 32, 3)
    _conv(shapes, f"{f}inter_conv0.0", 82, 16, 3)
    for level, cin in ((2, 128), (1, 32), (0, 16)):
        _conv(shapes, f"{f}predict_flow{level}", cin, 2, 3)
    _deconv(shapes, f"{f}upsampled_flow2_to_1", 2, 2, 4)
    _deconv(shapes, f"{f}upsampled_flow1_to_0", 2, 2, 4)
    return shapes


def official_fusetrack_shapes(*, with_flownet2: bool = True) -> Shapes:
    """The official Cityscapes-VPS fusetrack ``state_dict``: {name: shape} (num_batches_tracked: shape ())."""
    shapes = resnet50_shapes()
    for i, cin in enumerate((256, 512, 1024, 2048)):
        _conv(shapes, f"neck.lateral_convs.{i}.conv", cin, 256, 1)
        _conv(shapes, f"neck.fpn_convs.{i}.conv", 256, 256, 3)
    flow_in = 256 + 2 + 81
    for i, (cin, cout) in enumerate(((flow_in, 64), (64, 64), (64, 32))):
        _conv(shapes, f"extra_neck.liteflownet.flow_estimator.convs.{i}.0", cin, cout, 3)
    _conv(shapes, "extra_neck.liteflownet.flow_estimator.convs.3", 32, 2, 3)
    t = "extra_neck.tcea_fusion."
    for name, cin, k in (("tAtt_1", 256, 3), ("tAtt_2", 256, 3), ("fea_fusion", 512, 1), ("sAtt_1", 512, 1),
                         ("sAtt_2", 512, 1), ("sAtt_3", 256, 3), ("sAtt_4", 256, 3), ("sAtt_add_1", 256, 1),
                         ("sAtt_add_2", 256, 1)):
        _conv(shapes, t + name, cin, 256, k)
    _conv(shapes, "extra_neck.refine.conv", 256, 256, 3)
    for index, cin, cout in ((0, 256, 256), (3, 256, 128), (6, 128, 128)):
        _conv(shapes, f"panopticFPN.deform_convs.0.{index}.conv_offset", cin, 18, 3)
        _conv(shapes, f"panopticFPN.deform_convs.0.{index}.conv", cin, cout, 3, bias=False)
        shapes[f"panopticFPN.deform_convs.0.{index + 1}.weight"] = (cout,)  # GroupNorm(32, cout)
        shapes[f"panopticFPN.deform_convs.0.{index + 1}.bias"] = (cout,)
    _conv(shapes, "panopticFPN.conv_pred.conv", 512, 19, 1)
    _conv(shapes, "rpn_head.rpn_conv", 256, 256, 3)
    _conv(shapes, "rpn_head.rpn_cls", 256, 3, 1)
    _conv(shapes, "rpn_head.rpn_reg", 256, 12, 1)
    _linear(shapes, "bbox_head.shared_fcs.0", 256 * 7 * 7, 1024)
    _linear(shapes, "bbox_head.shared_fcs.1", 1024, 1024)
    _linear(shapes, "bbox_head.fc_cls", 1024, 9)
    _linear(shapes, "bbox_head.fc_reg", 1024, 9 * 4)
    _linear(shapes, "track_head.fcs.0", 256 * 7 * 7, 1024)
    _linear(shapes, "track_head.fcs.1", 1024, 1024)
    for i in range(4):
        _conv(shapes, f"mask_head.convs.{i}.conv", 256, 256, 3)
    _deconv(shapes, "mask_head.upsample", 256, 256, 2)
    _conv(shapes, "mask_head.conv_logits", 256, 9, 1)
    if with_flownet2:
        shapes.update(flownet2_shapes())
    return shapes


def synthetic_state(shapes: Shapes, *, device: str = "cpu", seed: int = 0, scale: float = 0.01
                    ) -> dict[str, torch.Tensor]:
    """Random tensors of ``shapes`` (device "meta": no memory); counters are int64 as BatchNorm's."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000, dtype=torch.int64, device=device)
        elif name.endswith("running_var"):
            state[name] = torch.ones(shape, device=device)
        elif device == "meta":
            state[name] = torch.empty(shape, device="meta")
        else:
            state[name] = torch.randn(shape, generator=gen) * scale
    return state


def official_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """An mmcv v0.x ``save_checkpoint`` file's layout around ``state``."""
    return {"meta": {"mmdet_version": "1.0rc0+unknown", "config": "model = dict(type='PanopticFuseTrack')",
                     "CLASSES": ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"),
                     "epoch": 12, "iter": 48000, "time": "Mon Mar 16 00:00:00 2020"},
            "state_dict": state, "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005, "momentum": 0.9}]}}

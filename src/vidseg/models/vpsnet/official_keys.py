"""The official VPSNet checkpoint (mcahny/vps, mmdetection v1) -> vidseg's VPSNet: parameter names and checks.

The official Cityscapes-VPS model (configs/cityscapes/fusetrack.py, ``PanopticFuseTrack``) is the paper's
fusetrack variant: ResNet-50 + FPN, the ``BFPTcea`` fuse neck, the UPSNet semantic head, RPN / box / mask /
track heads and a frozen FlowNet2 registered as the submodule ``flownet2`` (so ``latest.pth`` holds its
weights too, copied there from FlowNet2_checkpoint.pth.tar when the model was built). :data:`OFFICIAL_NET`
is that model as :func:`vidseg.models.vpsnet.build_vpsnet` arguments; :func:`convert_official_state` renames
every official key, checks every shape and returns a state dict that loads strictly.

What maps to what (official -> vidseg; the tensors are copied as they are, no reordering):

- ``backbone.*`` (mmdet ResNet-50, torchvision names) -> ``backbone.*`` (frozen BN: mmdet v1 trains with
  ``norm_eval``, so its BatchNorm statistics never change; the ``num_batches_tracked`` counters are dropped).
- ``neck.lateral_convs.i.conv`` / ``neck.fpn_convs.i.conv`` -> ``fpn.fpn.inner_blocks.i.0`` /
  ``fpn.fpn.layer_blocks.i.0`` (i = 0 is C2; P6 is a stride-2 max pool in both).
- ``extra_neck.liteflownet.flow_estimator.convs.{0,1,2}.0 / .3`` -> ``fuse.flow_refiner.convs.{0,2,4} / .6``
  (input [target 256, correlation 81, flow 2] in both); ``extra_neck.tcea_fusion.{tAtt_1, tAtt_2, fea_fusion,
  sAtt_1, sAtt_2, sAtt_3, sAtt_4, sAtt_add_1, sAtt_add_2}`` -> ``fuse.attention.{embed_frames, embed_target,
  fusion, spatial_in, spatial_pooled, spatial_mid, spatial_out, spatial_add.0, spatial_add.2}``;
  ``extra_neck.refine.conv`` -> ``fuse.refine.0``.
- ``panopticFPN.deform_convs.0.{0,3,6}.conv_offset`` / ``.conv.weight`` -> ``semantic_head.subnet.{0,3,6}
  .offset`` / ``.conv.weight``: mmdet's DeformConv and torchvision's DeformConv2d read the offset channels in
  one layout (2 * (i * kw + j) = dy, + 1 = dx of kernel tap (i, j)); GroupNorms ``.{1,4,7}`` as they are;
  ``panopticFPN.conv_pred.conv`` -> ``semantic_head.classifier`` (19 classes in trainId order).
- ``rpn_head.{rpn_conv, rpn_cls, rpn_reg}`` -> ``detector.rpn.head.{conv.0.0, cls_logits, bbox_pred}``: one
  sigmoid logit per anchor and (dx, dy, dw, dh) per anchor, anchors ordered by ratio (0.5, 1, 2) in both.
- ``bbox_head.{shared_fcs.0, shared_fcs.1, fc_cls, fc_reg}`` -> ``detector.roi_heads.{box_head.fc6, box_head.fc7,
  box_predictor.cls_score, box_predictor.bbox_pred}``: mmdetection v1 and torchvision both put background at
  class index 0 and things 1..8 (person .. bicycle = trainIds 11..18, the official ``class_mapping``);
  class-specific box deltas at [4c, 4c + 4) in both, with the official target_stds (0.1, 0.1, 0.2, 0.2) =
  torchvision's weights (10, 10, 5, 5).
- ``mask_head.convs.i.conv`` / ``.upsample`` / ``.conv_logits`` -> ``detector.roi_heads.mask_head.i.0`` /
  ``mask_predictor.conv5_mask`` / ``mask_predictor.mask_fcn_logits``.
- ``track_head.fcs.{0,1}`` -> ``track_head.{fc1, fc2}``.
- ``flownet2.*`` -> ``flow.flownet2.*`` (:mod:`vidseg.models.vpsnet.flownet2` keeps the official names).

Not reproduced by the weights alone (documented differences, not key problems): mmdetection v1's legacy
"+1" box widths and its anchor centres at ((stride - 1) / 2) versus torchvision's box coder and anchors, so
boxes can differ by about a pixel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from vidseg.errors import DataError

#: The official Cityscapes-VPS fusetrack model as :func:`vidseg.models.vpsnet.build_vpsnet` keyword arguments.
OFFICIAL_NET: dict[str, Any] = {
    "variant": "fusetrack",
    "backbone": {"name": "resnet50", "weights": None, "frozen_bn": True},
    "num_stuff": 11,
    "num_things": 8,
    "flow": {"name": "flownet2", "weights": None, "frozen": True},
    "fpn_channels": 256,
    "semantic_channels": [256, 128],
    "num_groups": 32,
    "track_hidden": 1024,
    "frozen_stages": 1,
    "coco_checkpoint": None,
    "detector": {"score_thresh": 0.6, "nms_thresh": 0.5, "detections_per_img": 100},
}

FLOWNET2_PREFIX = "flownet2."

_TCEA = {"tAtt_1": "embed_frames", "tAtt_2": "embed_target", "fea_fusion": "fusion", "sAtt_1": "spatial_in",
         "sAtt_2": "spatial_pooled", "sAtt_3": "spatial_mid", "sAtt_4": "spatial_out", "sAtt_add_1": "spatial_add.0",
         "sAtt_add_2": "spatial_add.2"}
_ROI = "detector.roi_heads."

#: (official key pattern, vidseg key template): the first full match wins.
KEY_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), t) for p, t in (
    (r"backbone\.(.+)", r"backbone.\1"),
    (r"neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)", r"fpn.fpn.inner_blocks.\1.0.\2"),
    (r"neck\.fpn_convs\.(\d+)\.conv\.(weight|bias)", r"fpn.fpn.layer_blocks.\1.0.\2"),
    (r"extra_neck\.liteflownet\.flow_estimator\.convs\.0\.0\.(weight|bias)", r"fuse.flow_refiner.convs.0.\1"),
    (r"extra_neck\.liteflownet\.flow_estimator\.convs\.1\.0\.(weight|bias)", r"fuse.flow_refiner.convs.2.\1"),
    (r"extra_neck\.liteflownet\.flow_estimator\.convs\.2\.0\.(weight|bias)", r"fuse.flow_refiner.convs.4.\1"),
    (r"extra_neck\.liteflownet\.flow_estimator\.convs\.3\.(weight|bias)", r"fuse.flow_refiner.convs.6.\1"),
    *((rf"extra_neck\.tcea_fusion\.{name}\.(weight|bias)", rf"fuse.attention.{ours}.\1")
      for name, ours in _TCEA.items()),
    (r"extra_neck\.refine\.conv\.(weight|bias)", r"fuse.refine.0.\1"),
    (r"panopticFPN\.deform_convs\.0\.([036])\.conv_offset\.(weight|bias)", r"semantic_head.subnet.\1.offset.\2"),
    (r"panopticFPN\.deform_convs\.0\.([036])\.conv\.weight", r"semantic_head.subnet.\1.conv.weight"),
    (r"panopticFPN\.deform_convs\.0\.([147])\.(weight|bias)", r"semantic_head.subnet.\1.\2"),
    (r"panopticFPN\.conv_pred\.conv\.(weight|bias)", r"semantic_head.classifier.\1"),
    (r"rpn_head\.rpn_conv\.(weight|bias)", r"detector.rpn.head.conv.0.0.\1"),
    (r"rpn_head\.rpn_cls\.(weight|bias)", r"detector.rpn.head.cls_logits.\1"),
    (r"rpn_head\.rpn_reg\.(weight|bias)", r"detector.rpn.head.bbox_pred.\1"),
    (r"bbox_head\.shared_fcs\.0\.(weight|bias)", _ROI + r"box_head.fc6.\1"),
    (r"bbox_head\.shared_fcs\.1\.(weight|bias)", _ROI + r"box_head.fc7.\1"),
    (r"bbox_head\.fc_cls\.(weight|bias)", _ROI + r"box_predictor.cls_score.\1"),
    (r"bbox_head\.fc_reg\.(weight|bias)", _ROI + r"box_predictor.bbox_pred.\1"),
    (r"mask_head\.convs\.(\d+)\.conv\.(weight|bias)", _ROI + r"mask_head.\1.0.\2"),
    (r"mask_head\.upsample\.(weight|bias)", _ROI + r"mask_predictor.conv5_mask.\1"),
    (r"mask_head\.conv_logits\.(weight|bias)", _ROI + r"mask_predictor.mask_fcn_logits.\1"),
    (r"track_head\.fcs\.0\.(weight|bias)", r"track_head.fc1.\1"),
    (r"track_head\.fcs\.1\.(weight|bias)", r"track_head.fc2.\1"),
    (r"flownet2\.(.+)", r"flow.flownet2.\1"),
))

#: Official keys with no vidseg counterpart, dropped on purpose: BatchNorm batch counters (the backbone's BN is
#: frozen in both, a FrozenBatchNorm2d keeps no counter).
DROPPED = re.compile(r"backbone\..+\.num_batches_tracked")


class OfficialCheckpointError(DataError):
    """An official checkpoint whose keys or shapes do not fit the official VPSNet (another config, a truncated
    or edited file, a FlowNet2 checkpoint of another network)."""


def vidseg_key(official_key: str) -> str | None:
    """The vidseg VPSNet key of an official key; None if it is dropped on purpose (:data:`DROPPED`).

    Raises KeyError for a key no rule knows."""
    if DROPPED.fullmatch(official_key):
        return None
    for pattern, template in KEY_RULES:
        if pattern.fullmatch(official_key):
            return pattern.sub(template, official_key)
    raise KeyError(official_key)


def _listed(keys: list[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def convert_official_state(
    official: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    *,
    source: str,
    flownet2: Mapping[str, Tensor] | None = None,
    flownet2_source: str | None = None,
) -> dict[str, Tensor]:
    """Rename an official ``state_dict`` to vidseg's VPSNet keys, checking names and shapes.

    Args:
        official: the ``state_dict`` of the official checkpoint ({"meta", "state_dict", "optimizer"}["state_dict"]).
        expected: the vidseg model's state dict (only names and shapes are read: a model on the meta device
            will do), built from :data:`OFFICIAL_NET`.
        source: how messages name the official file.
        flownet2: optional FlowNet2 weights (keys of NVIDIA's ``FlowNet2``, without the ``flownet2.`` prefix, as
            FlowNet2_checkpoint.pth.tar["state_dict"]); when given they replace the official file's
            ``flownet2.*`` keys, which are then not required.
        flownet2_source: how messages name the FlowNet2 file.
    Returns:
        {vidseg key: tensor} holding exactly the keys of ``expected`` (a strict load fits).
    Raises:
        OfficialCheckpointError: one line naming official keys left over (no rule, or a rule whose vidseg key
            the model lacks), vidseg keys that nothing filled, or shape mismatches.
    """
    items = [(k, v, source) for k, v in official.items() if flownet2 is None or not k.startswith(FLOWNET2_PREFIX)]
    if flownet2 is not None:
        items += [(FLOWNET2_PREFIX + k, v, flownet2_source or "the FlowNet2 checkpoint") for k, v in flownet2.items()]
    converted: dict[str, Tensor] = {}
    left_over, shapes = [], []
    for key, value, origin in items:
        try:
            target = vidseg_key(key)
        except KeyError:
            left_over.append(f"{key} (in {origin})")
            continue
        if target is None:
            continue
        if target not in expected:
            left_over.append(f"{key} (in {origin}; would be {target})")
            continue
        if tuple(value.shape) != tuple(expected[target].shape):
            shapes.append(f"{key} {tuple(value.shape)} -> {target} {tuple(expected[target].shape)}")
            continue
        converted[target] = value
    missing = [k for k in expected if k not in converted and not _shape_failed(k, shapes)]
    problems = []
    if left_over:
        problems.append(f"{len(left_over)} official key(s) left over with no vidseg counterpart: {_listed(left_over)}")
    if missing:
        flow_hint = (" (FlowNet2's weights are not in the file: give --flownet2 FlowNet2_checkpoint.pth.tar)"
                     if any(k.startswith("flow.flownet2.") for k in missing) and flownet2 is None else "")
        problems.append(f"{len(missing)} vidseg key(s) missing, filled by no official key: {_listed(missing)}"
                        + flow_hint)
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) official -> vidseg: {_listed(shapes)}")
    if problems:
        raise OfficialCheckpointError(
            f"{source}: not the official VPSNet Cityscapes-VPS fusetrack checkpoint (configs/cityscapes/fusetrack.py, "
            f"ResNet-50-FPN, 19 classes, FlowNet2): {'; '.join(problems)}; convert the checkpoint of that config "
            "(work_dirs/cityscapes_vps/fusetrack_vpct/latest.pth)")
    return converted


def _shape_failed(vidseg_name: str, shapes: list[str]) -> bool:
    """Whether ``vidseg_name`` already appears in a shape-mismatch line (not reported twice as missing)."""
    return any(f" -> {vidseg_name} (" in line for line in shapes)

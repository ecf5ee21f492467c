"""Keyword-only builder of VPSNet and the COCO Mask R-CNN initialisation.

    model = build_vpsnet(variant="fusetrack")                       # the paper: ResNet-50-FPN, RAFT-small flow
    model = build_vpsnet(variant="image", backbone={"name": "resnet18"}, flow=None, **TINY)   # CPU tests
    load_coco_maskrcnn(model, "maskrcnn_resnet50_fpn_coco.pth")      # torchvision layout, local file
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from vidseg.backbones import FPN, get_backbone
from vidseg.backbones.base import read_state_dict
from vidseg.models.vpsnet.detector import build_detector
from vidseg.models.vpsnet.flow import build_flow
from vidseg.models.vpsnet.fuse import FuseModule
from vidseg.models.vpsnet.model import VARIANTS, VPSNet
from vidseg.models.vpsnet.panoptic_head import UPSNetPanopticHead
from vidseg.models.vpsnet.semantic_head import UPSNetSemanticHead
from vidseg.models.vpsnet.track_head import TrackHead

DEFAULT_BACKBONE: dict[str, Any] = {"name": "resnet50", "weights": None, "frozen_bn": None}
DEFAULT_FLOW: dict[str, Any] = {"name": "raft_small", "weights": None}

#: Narrow widths for CPU tests and the toy demo (the paper's are 256 / (256, 128) / 32 / 1024 / 256 / 1024).
TINY: dict[str, Any] = {
    "fpn_channels": 32,
    "semantic_channels": (32, 16),
    "num_groups": 8,
    "detector": {"box_fc_channels": 64, "mask_channels": 32, "box_batch_size_per_image": 64,
                 "rpn_batch_size_per_image": 64,
                 "rpn_pre_nms_top_n": {"training": 200, "testing": 100},
                 "rpn_post_nms_top_n": {"training": 100, "testing": 50}},
    "track_hidden": 64,
    "fuse": {"flow_hidden": (16, 16, 8)},
}


def build_vpsnet(
    *,
    variant: str = "fusetrack",
    backbone: Mapping[str, Any] | None = None,
    num_things: int = 8,
    num_stuff: int = 11,
    flow: Mapping[str, Any] | None = DEFAULT_FLOW,
    fpn_channels: int = 256,
    semantic_channels: Sequence[int] = (256, 128),
    num_groups: int = 32,
    detector: Mapping[str, Any] | None = None,
    fuse: Mapping[str, Any] | None = None,
    track_hidden: int = 1024,
    track_loss_normalizer: str = "positives",
    track_loss_skip_single_positive: bool = True,
    frozen_stages: int = 1,
    coco_checkpoint: str | os.PathLike | None = None,
    **kwargs: Any,
) -> VPSNet:
    """Build a VPSNet variant with the paper's defaults.

    Args:
        variant: "image" | "fuse" | "track" | "fusetrack".
        backbone: kwargs of :func:`vidseg.backbones.get_backbone` with "name" (default resnet50, random init);
            output_stride is always 32 (the FPN needs strides 4..32). ``frozen_bn`` None (default) =
            "statistics" (official ``norm_eval``: BN statistics frozen, affine trained) exactly when pretrained
            weights (``weights`` or ``coco_checkpoint``) are given, trained BN otherwise: frozen statistics of a
            random init (mean 0, var 1) normalise nothing and a deep ResNet's activations blow up. True freezes
            statistics and affine (FrozenBatchNorm2d, an option); False trains both.
        num_things, num_stuff: 8 and 11 on Cityscapes-VPS, 10 and 13 on VIPER.
        flow: kwargs of :func:`vidseg.models.vpsnet.flow.build_flow` ({"name": "raft_small"|"raft_large"|
            "tiny"|"none", "weights", ...}); None = zero initial flow. Ignored without the Fuse module.
        fpn_channels (256), semantic_channels ((256, 128)), num_groups (32), track_hidden (1024): widths.
        detector: kwargs of :func:`vidseg.models.vpsnet.detector.build_detector` (thresholds, sampling, widths).
        fuse: kwargs of :class:`vidseg.models.vpsnet.fuse.FuseModule` (search_range, flow_hidden, compose_flow).
        track_loss_normalizer: "positives" (official) or "sampled"; track_loss_skip_single_positive: True
            (official) = images with one positive RoI add 0 (:class:`TrackHead`).
        frozen_stages: ResNet stages whose parameters stay fixed: -1 none, 0 the stem, k the stem and
            layer1..k (official 1). Ignored for backbones without ResNet stages.
        coco_checkpoint: a local torchvision maskrcnn_resnet50_fpn state dict to initialise the detector with
            (:func:`load_coco_maskrcnn`).
        kwargs: post-processing / tracking numbers of :class:`VPSNet` (stuff_area_limit, overlap_threshold,
            per_class_overlap, associate_without_track_head, mask_iou_threshold, track_coefficients,
            max_tracks, size_divisibility).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    with_fuse, with_track = variant in ("fuse", "fusetrack"), variant in ("track", "fusetrack")
    backbone_kwargs = {**DEFAULT_BACKBONE, **(backbone or {})}
    name = backbone_kwargs.pop("name")
    if backbone_kwargs.get("frozen_bn") is None:
        pretrained = backbone_kwargs.get("weights") is not None or coco_checkpoint is not None
        backbone_kwargs["frozen_bn"] = "statistics" if pretrained else False
    if backbone_kwargs.pop("output_stride", 32) != 32:
        raise ValueError("VPSNet's FPN needs backbone output_stride=32")
    body = get_backbone(name, output_stride=32, **backbone_kwargs)
    _freeze_stages(body, frozen_stages)
    num_classes = num_stuff + num_things
    model = VPSNet(
        backbone=body,
        fpn=FPN(body.out_channels, fpn_channels),
        detector=build_detector(num_things=num_things, in_channels=fpn_channels, **(detector or {})),
        semantic_head=UPSNetSemanticHead(num_classes, in_channels=fpn_channels, channels=semantic_channels,
                                         num_groups=num_groups),
        panoptic_head=UPSNetPanopticHead(num_stuff),
        num_stuff=num_stuff,
        num_things=num_things,
        fuse=FuseModule(fpn_channels, **(fuse or {})) if with_fuse else None,
        flow=build_flow(**flow) if with_fuse and flow is not None else None,
        track_head=TrackHead(fpn_channels, hidden=track_hidden, loss_normalizer=track_loss_normalizer,
                             skip_single_positive=track_loss_skip_single_positive) if with_track else None,
        **kwargs,
    )
    if coco_checkpoint is not None:
        load_coco_maskrcnn(model, coco_checkpoint)
    return model


def _freeze_stages(backbone: nn.Module, frozen_stages: int) -> None:
    if frozen_stages < 0 or not hasattr(backbone, "layer1"):
        return
    parts = [backbone.conv1, backbone.bn1] + [getattr(backbone, f"layer{k}") for k in range(1, frozen_stages + 1)]
    for part in parts:
        part.requires_grad_(False)


# torchvision maskrcnn_resnet50_fpn key prefix -> VPSNet key prefix
COCO_PREFIXES: tuple[tuple[str, str], ...] = (
    ("backbone.body.", "backbone."),
    ("backbone.fpn.", "fpn.fpn."),
    ("rpn.", "detector.rpn."),
    ("roi_heads.", "detector.roi_heads."),
)
# Class-specific layers: skipped when the class count differs from COCO's (91).
COCO_CLASS_LAYERS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


def coco_key(key: str) -> str | None:
    """The VPSNet parameter name of a torchvision Mask R-CNN state-dict key (None if it has none)."""
    for source, target in COCO_PREFIXES:
        if key.startswith(source):
            return target + key[len(source):]
    return None


def load_coco_maskrcnn(model: VPSNet, state_dict: Mapping[str, Tensor] | str | os.PathLike) -> dict[str, list[str]]:
    """Initialise backbone, FPN, RPN, box and mask heads from a torchvision ``maskrcnn_resnet50_fpn`` state
    dict (a mapping or a local file). Class predictors are skipped when their shapes differ (other class
    count); the semantic, fuse and track parts keep their initialisation.

    Returns {"loaded": VPSNet keys set, "skipped": checkpoint keys left out}. Raises ValueError, naming
    the keys, when the checkpoint does not fit (e.g. another backbone than ResNet-50, or FPN width != 256).
    """
    source = "state dict"
    if isinstance(state_dict, (str, os.PathLike)):
        source = str(state_dict)
        if not Path(state_dict).is_file():
            raise FileNotFoundError(f"COCO Mask R-CNN checkpoint {source!r} does not exist; expected a state dict "
                                    "of torchvision's maskrcnn_resnet50_fpn (torch.save(model.state_dict(), path))")
        # torchvision reference scripts save {"model": ..., ...}
        state_dict = read_state_dict(state_dict, what="COCO Mask R-CNN checkpoint", key="model.net.coco_checkpoint",
                                     unwrap="model")
    own = model.state_dict()
    loaded: dict[str, Tensor] = {}
    skipped, unexpected, mismatched = [], [], []
    for key, value in state_dict.items():
        target = coco_key(key)
        if target is None or target not in own:
            # frozen-BN backbones have no batch counters; anything else is a layout problem
            (skipped if key.endswith("num_batches_tracked") else unexpected).append(key)
            continue
        if own[target].shape != value.shape:
            if key.startswith(COCO_CLASS_LAYERS):
                skipped.append(key)
            else:
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[target].shape)}")
            continue
        loaded[target] = value
    expected = [k for k in own
                if k.startswith(("backbone.", "fpn.", "detector.")) and not k.endswith("num_batches_tracked")]
    skipped_targets = {coco_key(k) for k in skipped}
    missing = [k for k in expected if k not in loaded and k not in skipped_targets]
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
                for label, keys in (("unexpected keys", unexpected), ("shape mismatches", mismatched),
                                    ("model keys not in the checkpoint", missing)) if keys]
    if problems:
        raise ValueError(f"COCO Mask R-CNN checkpoint {source!r} does not fit this VPSNet (needs a resnet50 "
                         "backbone and fpn_channels=256, box_fc_channels=1024, mask_channels=256): "
                         + "; ".join(problems))
    model.load_state_dict(loaded, strict=False)
    return {"loaded": sorted(loaded), "skipped": skipped}

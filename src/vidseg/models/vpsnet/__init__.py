"""VPSNet (Kim et al., "Video Panoptic Segmentation", CVPR 2020) as plain PyTorch modules.

    from vidseg.models.vpsnet import build_vpsnet
    model = build_vpsnet(variant="fusetrack")            # ResNet-50-FPN, RAFT-small initial flow, random init
    losses = model.forward_train(batch)                  # batch of vidseg.data.vps_common.collate_train
    model.eval(); state = None
    for frame in frames:                                 # (3, H, W) uint8
        out, state = model.infer_frame(frame, state)     # out.panoptic (H, W) int64, out.segments_info

Parts: detector (Mask R-CNN from torchvision), semantic_head (UPSNet), panoptic_head (UPSNet), flow (RAFT, tiny),
flownet2 (the official flow network in plain PyTorch), fuse, track_head (+ association rules), postprocess (pure
functions), model (VPSNet), builder, official_keys (the official checkpoint's key map, ``vidseg.convert``).
"""

from vidseg.models.vpsnet.builder import TINY, build_vpsnet, coco_key, load_coco_maskrcnn
from vidseg.models.vpsnet.detector import MaskRCNNDetector, PanopticRoIHeads, build_detector
from vidseg.models.vpsnet.flow import RAFTFlow, TinyFlow, build_flow
from vidseg.models.vpsnet.flownet2 import FlowNet2, FlowNet2Flow
from vidseg.models.vpsnet.fuse import FuseModule, SpatialTemporalAttention
from vidseg.models.vpsnet.model import VARIANTS, VPSFrameOutput, VPSNet, VPSState
from vidseg.models.vpsnet.panoptic_head import UPSNetPanopticHead, crop_semantic_logits, paste_mask_logits
from vidseg.models.vpsnet.postprocess import (
    assign_segment_ids,
    merge_panoptic,
    panoptic_postprocess,
    remove_overlapping_masks,
    stuff_segment_id,
    thing_segment_id,
)
from vidseg.models.vpsnet.semantic_head import UPSNetSemanticHead
from vidseg.models.vpsnet.track_head import (
    MaskTrackMemory,
    TrackHead,
    TrackMemory,
    assign_tracks,
    associate_by_mask_iou,
    association_scores,
    match_targets,
    update_tracks,
)

__all__ = [
    "TINY",
    "VARIANTS",
    "FlowNet2",
    "FlowNet2Flow",
    "FuseModule",
    "MaskRCNNDetector",
    "MaskTrackMemory",
    "PanopticRoIHeads",
    "RAFTFlow",
    "SpatialTemporalAttention",
    "TinyFlow",
    "TrackHead",
    "TrackMemory",
    "UPSNetPanopticHead",
    "UPSNetSemanticHead",
    "VPSFrameOutput",
    "VPSNet",
    "VPSState",
    "assign_segment_ids",
    "assign_tracks",
    "associate_by_mask_iou",
    "association_scores",
    "build_detector",
    "build_flow",
    "build_vpsnet",
    "coco_key",
    "crop_semantic_logits",
    "load_coco_maskrcnn",
    "match_targets",
    "merge_panoptic",
    "panoptic_postprocess",
    "paste_mask_logits",
    "remove_overlapping_masks",
    "stuff_segment_id",
    "thing_segment_id",
    "update_tracks",
]

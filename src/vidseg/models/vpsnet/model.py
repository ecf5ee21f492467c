"""VPSNet (Kim et al., "Video Panoptic Segmentation", CVPR 2020): the network, its training losses and its
frame-by-frame inference with a constant-size per-video state.

    frames -> backbone -> FPN P2..P6 -> [Fuse with the reference frame] -> semantic head (UPSNet)
                                                                        -> RPN -> box / mask heads
                                                                        -> [track head]
           -> panoptic head (UPSNet, no unknown class) -> post-processing -> ids stable within the video

Variants (``VPSNet.variant``): "image" (no fuse module, no track head), "fuse" (+ Fuse module), "track"
(+ learned track head), "fusetrack" (both). Without a track head, ids follow ``associate_without_track_head``:
"rank" (official: the k-th kept instance of a class continues the k-th of earlier frames) or "mask_iou".

Classes: the dataset's class ids, stuff ``0 .. num_stuff - 1`` then things ``num_stuff .. num_stuff +
num_things - 1`` (Cityscapes trainIds: 11 stuff, 8 things). The detector numbers things 1..num_things
(0 = background).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.constants import IGNORE_LABEL, IMAGENET_MEAN, IMAGENET_MEAN_UINT8, IMAGENET_STD
from vidseg.models.vpsnet.detector import MaskRCNNDetector
from vidseg.models.vpsnet.fuse import FuseModule
from vidseg.models.vpsnet.panoptic_head import UPSNetPanopticHead, paste_mask_logits
from vidseg.models.vpsnet.postprocess import assign_segment_ids, merge_panoptic, remove_overlapping_masks
from vidseg.models.vpsnet.semantic_head import UPSNetSemanticHead
from vidseg.models.vpsnet.track_head import (
    MaskTrackMemory,
    TrackHead,
    TrackMemory,
    assign_tracks,
    associate_by_mask_iou,
    association_scores,
    match_targets,
    rank_track_ids,
    update_tracks,
)
from vidseg.utils.padding import pad_to_multiple

VARIANTS = ("image", "fuse", "track", "fusetrack")
ASSOCIATIONS_WITHOUT_TRACK_HEAD = ("rank", "mask_iou")


@dataclass
class VPSState:
    """What one video's inference keeps between frames (constant size in video length).

    image: (1, 3, Hp, Wp) uint8 padded previous frame (the flow network's reference); features: its FPN
    levels before fusion {"p2".."p6"}: (1, C, h, w) (the Fuse module's reference); flow_encoding: the flow
    network's encoding of that frame (RAFT's feature-encoder output (1, C, Hp/8, Wp/8), reused as the
    reference's; None for flow networks that keep none); tracks: the learned
    association's :class:`TrackMemory`; mask_tracks: the mask-IoU association's :class:`MaskTrackMemory`;
    frame_index: frames seen; size: (H, W) of the video's frames. A fresh ``VPSState()`` starts a video (its
    first frame is its own reference). Fields a variant does not use stay None.
    """

    image: Tensor | None = None
    features: dict[str, Tensor] | None = None
    flow_encoding: Tensor | None = None
    tracks: TrackMemory | None = None
    mask_tracks: MaskTrackMemory | None = None
    frame_index: int = 0
    size: tuple[int, int] | None = None


@dataclass
class VPSFrameOutput:
    """One frame's prediction at the input size (H, W).

    panoptic (H, W) int64 segment ids and segments_info (:mod:`vidseg.models.vpsnet.postprocess`);
    semantic (H, W) int64 argmax of the semantic head; the instances kept after mask-overlap removal:
    boxes (K, 4) float xyxy, scores (K,) float, labels (K,) int64 class ids, track_ids (K,) int64 (unique in
    the frame; with a track head, a track of the video; without one, see ``VPSNet.associate_without_track_head``:
    "rank" gives ``rank * num_things + (class - num_stuff)``, "mask_iou" an id matched by mask IoU).
    """

    panoptic: Tensor
    segments_info: list[dict[str, Any]]
    semantic: Tensor
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    track_ids: Tensor
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class VPSNetworkOutput:
    """The learned part of one inference frame (:meth:`VPSNet.run_network`); the rest of the frame has no
    parameters.

    features: the frame's FPN levels before fusion {"p2".."p6"}: (1, C, h, w) float (the next frame's Fuse
    reference; kept only with a Fuse module); flow_encoding: the flow network's encoding of the frame or None;
    semantic_logits: (1, num_classes, Hp/4, Wp/4) float; the detections (decreasing score): boxes (N, 4) float
    xyxy in padded-frame pixels, scores (N,) float, labels (N,) int64 detector labels 1..num_things,
    mask_logits (N, 28, 28) float of each detection's class, embeddings (N, D) float track-head embeddings
    (None without a track head).
    """

    features: dict[str, Tensor]
    flow_encoding: Tensor | None
    semantic_logits: Tensor
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    mask_logits: Tensor
    embeddings: Tensor | None


class VPSNet(nn.Module):
    """VPSNet from built parts (use :func:`vidseg.models.vpsnet.build_vpsnet`).

    Training: ``forward_train(batch)`` (also ``forward``) with the VPS datamodule's training batch
    (:func:`vidseg.data.vps_common.collate_train`): images (B, 2, 3, H, W) uint8 [target, reference],
    semantic (B, 2, H, W) int64 (255 void), instances: B x [target, reference] dicts {"boxes" (N, 4) float32
    xyxy, "labels" (N,) int64 class ids, "masks" (N, H, W) uint8, "track_ids" (N,) int64}. Returns weighted
    losses (their sum is the objective): loss_semantic (x1), loss_objectness, loss_rpn_box_reg,
    loss_classifier, loss_box_reg, loss_mask (x1), loss_panoptic (x0.5), and loss_track (x0.5) with a track
    head. Losses are computed on the target frame; the reference frame only feeds the Fuse module and the
    track head's reference embeddings (as the official code).

    Inference: ``model.eval()``; ``output, state = model.infer_frame(image (3, H, W) uint8, state)`` frame
    by frame, starting each video with ``state=None`` or ``VPSState()``. The state holds only the previous
    frame (image and FPN features) and the track memory.

    Args:
        backbone: image (B, 3, Hp, Wp) normalised -> {"c2".."c5"}. fpn: -> {"p2".."p6"}, ``out_channels`` C.
        detector, semantic_head, panoptic_head: the heads. fuse / flow: Fuse module and initial-flow network
        (flow None = zero initial flow); track_head: learned association (None: ``associate_without_track_head``).
        num_stuff, num_things: class counts. size_divisibility: pad to this multiple (32).
        stuff_area_limit (2048), stuff_fraction (0.5), overlap_threshold (0.3), per_class_overlap (True):
            post-processing.
        associate_without_track_head: ids without a track head. "rank" (official): an instance's id follows its
            rank among the frame's kept detections (score order) and its class, what the official PNGs encode
            (:func:`rank_track_ids`); "mask_iou": greedy same-class mask-IoU matching with the previous frame
            (an option; mask_iou_threshold 0.5).
        track_coefficients ((1, 2, 10)): association score weights. max_tracks (None): keep at most this
            many tracks per video (an option; the paper keeps all).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        fpn: nn.Module,
        detector: MaskRCNNDetector,
        semantic_head: UPSNetSemanticHead,
        panoptic_head: UPSNetPanopticHead,
        num_stuff: int,
        num_things: int,
        fuse: FuseModule | None = None,
        flow: nn.Module | None = None,
        track_head: TrackHead | None = None,
        size_divisibility: int = 32,
        stuff_area_limit: int = 2048,
        stuff_fraction: float = 0.5,
        overlap_threshold: float = 0.3,
        per_class_overlap: bool = True,
        associate_without_track_head: str = "rank",
        mask_iou_threshold: float = 0.5,
        track_coefficients: Sequence[float] = (1.0, 2.0, 10.0),
        max_tracks: int | None = None,
    ) -> None:
        super().__init__()
        if associate_without_track_head not in ASSOCIATIONS_WITHOUT_TRACK_HEAD:
            raise ValueError(f"associate_without_track_head must be one of {ASSOCIATIONS_WITHOUT_TRACK_HEAD}, got "
                             f"{associate_without_track_head!r}")
        if flow is not None and fuse is None:
            raise ValueError("a flow network is only used by the Fuse module: pass fuse too, or flow=None")
        self.backbone = backbone
        self.fpn = fpn
        self.detector = detector
        self.semantic_head = semantic_head
        self.panoptic_head = panoptic_head
        self.fuse = fuse
        self.flow = flow
        self.track_head = track_head
        self.num_stuff = num_stuff
        self.num_things = num_things
        self.size_divisibility = size_divisibility
        self.stuff_area_limit = stuff_area_limit
        self.stuff_fraction = stuff_fraction
        self.overlap_threshold = overlap_threshold
        self.per_class_overlap = per_class_overlap
        self.associate_without_track_head = associate_without_track_head
        self.mask_iou_threshold = mask_iou_threshold
        self.track_coefficients = tuple(track_coefficients)
        self.max_tracks = max_tracks
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    @property
    def variant(self) -> str:
        return {(False, False): "image", (True, False): "fuse", (False, True): "track",
                (True, True): "fusetrack"}[(self.fuse is not None, self.track_head is not None)]

    # ------------------------------------------------------------------------------------------------------
    # Shared pieces
    # ------------------------------------------------------------------------------------------------------

    def pad(self, images: Tensor) -> Tensor:
        """(..., 3, H, W) uint8 -> padded at the bottom/right to the size divisibility with the ImageNet mean
        colour (normalises to ~0)."""
        return pad_to_multiple(images, self.size_divisibility, value=IMAGENET_MEAN_UINT8)

    def normalize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 RGB -> float normalised with the ImageNet mean / std."""
        return (images.float() - self.pixel_mean) / self.pixel_std

    def extract(self, normalized: Tensor) -> dict[str, Tensor]:
        """(B, 3, Hp, Wp) normalised -> FPN {"p2".."p6"}: (B, C, Hp / 2^k, Wp / 2^k)."""
        return self.fpn(self.backbone(normalized))

    def initial_flow(self, target: Tensor, reference: Tensor, size: tuple[int, int],
                     reference_encoding: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B, 3, Hp, Wp) uint8 frames -> ((B, 2, h2, w2) flow target -> reference in P2 pixels (zero without
        a flow network), the target's flow encoding or None). ``reference_encoding``: the encoding this returned
        when ``reference`` was the target (flow networks with ``keeps_encoding``, e.g. RAFT; exact reuse)."""
        if self.flow is None:
            return torch.zeros(target.shape[0], 2, *size, device=target.device), None
        if not getattr(self.flow, "keeps_encoding", False):
            return self.flow(target.float() / 255, reference.float() / 255), None
        return self.flow(target.float() / 255, reference.float() / 255, reference_encoding, return_encoding=True)

    def to_detector_labels(self, labels: Tensor) -> Tensor:
        """Class ids of things -> detector labels 1..num_things."""
        out = labels - self.num_stuff + 1
        if len(out) and (out.min() < 1 or out.max() > self.num_things):
            raise ValueError(f"instance labels must be thing classes in [{self.num_stuff}, "
                             f"{self.num_stuff + self.num_things}), got {labels.tolist()}")
        return out

    # ------------------------------------------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------------------------------------------

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return self.forward_train(batch)

    def forward_train(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        images = batch["images"]
        if images.dim() != 5 or images.shape[1] != 2 or images.shape[2] != 3:
            raise ValueError(f"batch['images'] must be (B, 2, 3, H, W) uint8 [target, reference], got "
                             f"{tuple(images.shape)}")
        num_images, _, _, height, width = images.shape
        with_reference = self.fuse is not None or self.track_head is not None
        frames = self.pad(images[:, : 2 if with_reference else 1])
        num_frames = frames.shape[1]
        normalized = self.normalize(frames.flatten(0, 1))
        features = self.extract(normalized)
        target = {k: v[0::num_frames] for k, v in features.items()}
        reference = {k: v[1::num_frames] for k, v in features.items()} if with_reference else None
        if self.fuse is not None:
            flow, _ = self.initial_flow(frames[:, 0], frames[:, 1], tuple(target["p2"].shape[-2:]))
            target = self.fuse(target, reference, flow)

        losses: dict[str, Tensor] = {}
        semantic_logits = self.semantic_head(target)
        semantic = pad_to_multiple(batch["semantic"][:, 0], self.size_divisibility, value=IGNORE_LABEL)
        losses.update(self.semantic_head.loss(semantic_logits, semantic))

        instances = [pair[0] for pair in batch["instances"]]
        targets = [
            {"boxes": inst["boxes"].float(), "labels": self.to_detector_labels(inst["labels"]),
             "masks": pad_to_multiple(inst["masks"], self.size_divisibility, value=0)}
            for inst in instances
        ]
        image_sizes = [(height, width)] * num_images
        detector_losses, samples = self.detector.forward_train(target, normalized[0::num_frames], image_sizes,
                                                               targets)
        losses.update(detector_losses)
        losses.update(self._panoptic_loss(target, semantic_logits, semantic, targets, instances, image_sizes))
        if self.track_head is not None:
            losses.update(self._track_loss(reference, samples, instances,
                                           [pair[1] for pair in batch["instances"]], image_sizes))
        return losses

    def _panoptic_loss(self, features, semantic_logits, semantic, targets, instances, image_sizes):
        """UPSNet panoptic loss at the semantic head's resolution, with the ground-truth boxes and classes."""
        stride = semantic.shape[-1] // semantic_logits.shape[-1]
        size = tuple(semantic_logits.shape[-2:])
        boxes = [t["boxes"] for t in targets]
        counts = [len(b) for b in boxes]
        if sum(counts):
            mask_logits = self.detector.roi_heads.mask_logits(features, boxes, image_sizes)
            own = torch.cat([t["labels"] for t in targets])
            mask_logits = mask_logits[torch.arange(len(own), device=own.device), own].split(counts)
        else:
            mask_logits = [semantic_logits.new_zeros(0, 28, 28)] * len(boxes)
        logits, goals = [], []
        for b, (t, inst) in enumerate(zip(targets, instances, strict=True)):
            scaled = t["boxes"] / stride
            pasted = paste_mask_logits(mask_logits[b], scaled, size)
            logits.append(self.panoptic_head(semantic_logits[b], scaled, inst["labels"], pasted))
            goals.append(self.panoptic_head.targets(semantic[b, ::stride, ::stride], t["masks"][:, ::stride, ::stride]))
        return self.panoptic_head.loss(logits, goals)

    def _track_loss(self, reference, samples, instances, ref_instances, image_sizes):
        """Each positive sampled RoI of the target frame classified among the reference frame's instances."""
        ref_boxes = [inst["boxes"].float() for inst in ref_instances]
        counts = [len(b) for b in ref_boxes]
        ref_embeddings = self.track_head.embed(
            self.detector.roi_heads.box_roi_pool(reference, ref_boxes, image_sizes)).split(counts)
        affinities, goals = [], []
        for sample, inst, ref_inst, ref_emb in zip(samples, instances, ref_instances, ref_embeddings, strict=True):
            affinities.append(self.track_head.affinity(self.track_head.embed(sample["roi_features"]), ref_emb))
            positive = sample["labels"] > 0
            if len(inst["track_ids"]):
                roi_tracks = inst["track_ids"][sample["matched_idxs"]]
                roi_tracks = torch.where(positive, roi_tracks, torch.full_like(roi_tracks, -1))
            else:
                roi_tracks = torch.full_like(sample["labels"], -1)
            goals.append(match_targets(roi_tracks, ref_inst["track_ids"]))
        return self.track_head.loss(affinities, goals)

    # ------------------------------------------------------------------------------------------------------
    # Inference
    # ------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def infer_frame(self, image: Tensor, state: VPSState | None = None, *,
                    network: Callable[[Tensor, VPSState, tuple[int, int]], VPSNetworkOutput] | None = None,
                    ) -> tuple[VPSFrameOutput, VPSState]:
        """One frame of a video: image (3, H, W) uint8 RGB and the video's state (None for its first frame)
        -> (VPSFrameOutput at (H, W), the state for the next frame). The input state is not modified.

        ``network``: what computes the learned part (:meth:`run_network`'s contract); None = this module in
        PyTorch. The ONNX backend (:mod:`vidseg.onnx.vpsnet`) passes its graphs here, so proposal selection,
        post-processing and association are this one implementation whatever runs the network."""
        if self.training:
            raise RuntimeError("VPSNet.infer_frame needs eval mode: call model.eval() first")
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W) uint8 RGB, got {tuple(image.shape)}")
        state = state if state is not None else VPSState()
        height, width = int(image.shape[-2]), int(image.shape[-1])
        if state.size is not None and state.size != (height, width):
            raise ValueError(f"frame size {(height, width)} differs from the previous frames' {state.size}; start a "
                             "new VPSState for a new video")
        padded = self.pad(image[None].to(self.pixel_mean.device))
        out = (network or self.run_network)(padded, state, (height, width))
        return self._finish_frame(out, padded, state, (height, width))

    def run_network(self, padded: Tensor, state: VPSState, size: tuple[int, int]) -> VPSNetworkOutput:
        """The learned part of one inference frame. padded: (1, 3, Hp, Wp) uint8 (:meth:`pad`); state: the
        video's state (the Fuse module's reference frame); size: the unpadded (H, W)."""
        normalized = self.normalize(padded)
        raw = self.extract(normalized)
        features, flow_encoding = raw, None
        if self.fuse is not None:
            first = state.features is None
            ref_image = padded if first else state.image
            ref_features = raw if first else state.features  # the first frame is its own reference
            flow, flow_encoding = self.initial_flow(padded, ref_image, tuple(raw["p2"].shape[-2:]),
                                                    None if first else state.flow_encoding)
            features = self.fuse(raw, ref_features, flow)

        semantic_logits = self.semantic_head(features)
        det = self.detector.detect(features, normalized, [size])[0]
        embeddings = self.track_head.embed(det["roi_features"]) if self.track_head is not None else None
        return VPSNetworkOutput(features=raw, flow_encoding=flow_encoding, semantic_logits=semantic_logits,
                                boxes=det["boxes"], scores=det["scores"], labels=det["labels"],
                                mask_logits=det["mask_logits"], embeddings=embeddings)

    def _finish_frame(self, out: VPSNetworkOutput, padded: Tensor, state: VPSState,
                      size: tuple[int, int]) -> tuple[VPSFrameOutput, VPSState]:
        """Association, mask pasting, panoptic head and post-processing (no parameters) for :meth:`infer_frame`."""
        height, width = size
        raw, flow_encoding, semantic_logits = out.features, out.flow_encoding, out.semantic_logits
        det = {"boxes": out.boxes, "scores": out.scores, "labels": out.labels, "mask_logits": out.mask_logits}
        labels = det["labels"] + self.num_stuff - 1  # class ids
        tracks = state.tracks
        det_track_ids = None
        if self.track_head is not None:
            embeddings = out.embeddings
            if tracks is None:
                tracks = TrackMemory.empty(embeddings.shape[1], embeddings.device, embeddings.dtype)
            scores = association_scores(self.track_head.affinity(embeddings, tracks.features), det["scores"],
                                        det["boxes"], labels, tracks.boxes, tracks.labels,
                                        coefficients=self.track_coefficients)
            tracks, det_track_ids = update_tracks(tracks, assign_tracks(scores), embeddings, det["boxes"], labels,
                                                  max_tracks=self.max_tracks)

        padded_size = tuple(padded.shape[-2:])
        semantic_full = F.interpolate(semantic_logits, size=padded_size, mode="bilinear", align_corners=False)[0]
        pasted = paste_mask_logits(det["mask_logits"], det["boxes"], padded_size)
        keep = remove_overlapping_masks(pasted > 0, det["scores"], labels, overlap_threshold=self.overlap_threshold,
                                        per_class=self.per_class_overlap)
        boxes, scores, labels, pasted = det["boxes"][keep], det["scores"][keep], labels[keep], pasted[keep]
        panoptic_logits = self.panoptic_head(semantic_full, boxes, labels, pasted)
        panoptic = panoptic_logits.argmax(dim=0)[:height, :width]
        semantic = semantic_full.argmax(dim=0)[:height, :width]
        category, instance = merge_panoptic(panoptic, semantic, labels, num_stuff=self.num_stuff,
                                            stuff_area_limit=self.stuff_area_limit, stuff_fraction=self.stuff_fraction)
        mask_tracks = state.mask_tracks
        if self.track_head is not None:
            track_ids = det_track_ids[keep]
        elif self.associate_without_track_head == "rank":
            track_ids = rank_track_ids(labels, num_stuff=self.num_stuff, num_things=self.num_things)
        else:
            masks = instance[None] == torch.arange(len(keep), device=instance.device)[:, None, None]
            if mask_tracks is None:
                mask_tracks = MaskTrackMemory.empty((height, width), device=instance.device)
            present = masks.flatten(1).any(dim=1)  # instances merged into stuff leave no mask to track
            mask_tracks, present_ids = associate_by_mask_iou(masks[present], labels[present], mask_tracks,
                                                             iou_threshold=self.mask_iou_threshold)
            track_ids = torch.full_like(labels, -1)
            track_ids[present] = present_ids
        panoptic_ids, segments = assign_segment_ids(category, instance, track_ids, scores, num_stuff=self.num_stuff)
        output = VPSFrameOutput(panoptic=panoptic_ids, segments_info=segments, semantic=semantic, boxes=boxes,
                                scores=scores, labels=labels, track_ids=track_ids)
        keep_frame = self.fuse is not None  # only the Fuse module looks back at the previous frame
        new_state = replace(state, image=padded if keep_frame else None,
                            features={k: v.detach() for k, v in raw.items()} if keep_frame else None,
                            flow_encoding=flow_encoding.detach() if flow_encoding is not None else None,
                            tracks=tracks, mask_tracks=mask_tracks, frame_index=state.frame_index + 1,
                            size=(height, width))
        return output, new_state

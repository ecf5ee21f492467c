"""VPSNet's track head (after MaskTrack R-CNN) and the association rules used at inference.

Head: RoIAlign 7x7 x C features -> FC 1024 + ReLU -> FC 1024, the same weights for both frames (Siamese).
Affinity between N target RoIs and M reference objects = dot products (not cosine), with a zero column
prepended meaning "new object": (N, M + 1). Training (official MaskTrack R-CNN loss): every sampled RoI of
the target frame (the box head's 512, 25 % positive, ground-truth boxes added) is embedded; each positive one
is classified among the reference frame's ground-truth instances (+ new), cross-entropy summed over the
positives and divided by their number, weight 0.5, averaged over the images of the batch. An image with
exactly one positive RoI adds 0 (the official loss skips it: ``torch.nonzero(...).squeeze()`` of one index is
0-d); ``skip_single_positive=False`` scores it (an option).

Inference (pure functions, :func:`association_scores`, :func:`assign_tracks`, :func:`update_tracks`):

    score[i, j] = log_softmax(affinity)[i, j] + 1 * log(det_score[i]) + 2 * IoU(box_i, track_box_j)
                  + 10 * [class_i == track_class_j]

with the "new" column given IoU 0 and the class bonus (official ``bbox_dummy_iou=0``, label dummy 1). Each
detection takes its argmax; when several pick one track, the highest score keeps it and the others open new
tracks. Matched tracks take the detection's features and box (their class stays); tracks are kept for the
whole video (``max_tracks`` optionally forgets the least recently seen ones: an option, off in the paper).

Without a track head ("image", "fuse"), ids follow ``VPSNet.associate_without_track_head``: "rank"
(official, :func:`rank_track_ids`) or "mask_iou" (:func:`associate_by_mask_iou` matches each instance to the
previous frame's instance of the same class with the highest mask IoU, greedy, IoU > threshold: an option).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

NEW_TRACK = -1
TRACK_LOSS_NORMALIZERS = ("positives", "sampled")


class TrackHead(nn.Module):
    """RoI features -> tracking embeddings, affinities and the matching loss.

    embed(roi_features (N, C, 7, 7) float) -> (N, D) float.
    affinity(embeddings (N, D), reference (M, D)) -> (N, M + 1) float; column 0 = new object (zero).
    loss(affinities: list of (N_i, M_i + 1), targets: list of (N_i,) int64 in [0, M_i] or -1 = not scored)
        -> {"loss_track"}.

    Args:
        in_channels, roi_size: pooled RoI shape (256, 7). hidden: FC widths (1024).
        loss_weight: 0.5. loss_normalizer: "positives" (official: the summed cross-entropy of the positive RoIs
            is divided by their number; the official head calls its loss with ``reduce=True``, whose branch
            averages over the non-zero weights) or "sampled" (divided by all sampled RoIs of the image, an option).
        skip_single_positive: True (official) = an image with exactly one positive RoI adds 0 to the loss.
    """

    def __init__(self, in_channels: int = 256, *, roi_size: int = 7, hidden: int = 1024, loss_weight: float = 0.5,
                 loss_normalizer: str = "positives", skip_single_positive: bool = True) -> None:
        super().__init__()
        if loss_normalizer not in TRACK_LOSS_NORMALIZERS:
            raise ValueError(f"loss_normalizer must be one of {TRACK_LOSS_NORMALIZERS}, got {loss_normalizer!r}")
        self.fc1 = nn.Linear(in_channels * roi_size * roi_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        for fc in (self.fc1, self.fc2):  # official init
            nn.init.normal_(fc.weight, 0.0, 0.01)
            nn.init.zeros_(fc.bias)
        self.loss_weight = loss_weight
        self.loss_normalizer = loss_normalizer
        self.skip_single_positive = skip_single_positive

    def embed(self, roi_features: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(roi_features.flatten(1))))

    @staticmethod
    def affinity(embeddings: Tensor, reference: Tensor) -> Tensor:
        dots = embeddings @ reference.T
        return torch.cat([dots.new_zeros(len(embeddings), 1), dots], dim=1)

    def loss(self, affinities: Sequence[Tensor], targets: Sequence[Tensor]) -> dict[str, Tensor]:
        losses = []
        for aff, tgt in zip(affinities, targets, strict=True):
            valid = tgt >= 0
            if self.skip_single_positive and int(valid.sum()) == 1:
                valid = torch.zeros_like(valid)
            total = F.cross_entropy(aff[valid], tgt[valid], reduction="sum") if valid.any() else aff.sum() * 0.0
            count = len(tgt) if self.loss_normalizer == "sampled" else int(valid.sum())
            losses.append(total / max(count, 1))
        return {"loss_track": self.loss_weight * torch.stack(losses).mean()}


def match_targets(target_track_ids: Tensor, reference_track_ids: Tensor) -> Tensor:
    """Classification target of each target RoI: 1 + index of its track in the reference frame, 0 if new.

    target_track_ids: (N,) int64 track id of each RoI's matched ground truth; -1 for negatives (-> -1, not
    scored). reference_track_ids: (M,) int64. Returns (N,) int64.
    """
    same = target_track_ids[:, None] == reference_track_ids[None, :]
    if same.shape[1] == 0:  # no reference instances: everything is new
        target = torch.zeros_like(target_track_ids)
    else:
        target = torch.where(same.any(dim=1), same.float().argmax(dim=1) + 1, torch.zeros_like(target_track_ids))
    return torch.where(target_track_ids < 0, torch.full_like(target, -1), target)


def association_scores(
    affinity: Tensor,
    det_scores: Tensor,
    det_boxes: Tensor,
    det_labels: Tensor,
    track_boxes: Tensor,
    track_labels: Tensor,
    *,
    coefficients: Sequence[float] = (1.0, 2.0, 10.0),
) -> Tensor:
    """Comprehensive matching score (N, M + 1) of N detections vs M tracks (column 0 = new track).

    Args:
        affinity: (N, M + 1) float from :meth:`TrackHead.affinity`. det_scores: (N,) float in (0, 1].
        det_boxes: (N, 4) float xyxy. det_labels: (N,) int64. track_boxes: (M, 4). track_labels: (M,) int64.
        coefficients: weights of log(det score), box IoU and same class (1, 2, 10).
    """
    w_score, w_iou, w_class = coefficients
    n = len(det_boxes)
    iou = torch.cat([det_boxes.new_zeros(n, 1), box_iou(det_boxes, track_boxes)], dim=1)
    same = torch.cat([det_boxes.new_ones(n, 1), (det_labels[:, None] == track_labels[None, :]).to(det_boxes.dtype)],
                     dim=1)
    return (F.log_softmax(affinity, dim=1) + w_score * torch.log(det_scores)[:, None] + w_iou * iou
            + w_class * same)


def assign_tracks(scores: Tensor) -> Tensor:
    """Resolve (N, M + 1) association scores into one track index per detection (NEW_TRACK = -1 for new).

    Each detection picks its best column; a track chosen by several detections goes to the one with the
    highest score (the first one on ties) and the others become new tracks. Returns (N,) int64.
    """
    best_score, best = scores.max(dim=1)
    assignment = best - 1  # column 0 -> -1 = new
    for track in assignment.unique().tolist():
        if track < 0:
            continue
        rivals = torch.where(assignment == track)[0]
        if len(rivals) > 1:
            winner = rivals[best_score[rivals].argmax()]
            assignment[rivals[rivals != winner]] = NEW_TRACK
    return assignment


@dataclass(frozen=True)
class TrackMemory:
    """The tracks of one video (M tracks): what the learned association needs from past frames.

    features (M, D) float: embedding of each track's latest detection; boxes (M, 4) float: its box;
    labels (M,) int64: class when the track started; ids (M,) int64 track ids (unique in the video);
    last_seen (M,) int64: frame of the latest detection; next_id: the next new track's id; frame: frames seen.
    """

    features: Tensor
    boxes: Tensor
    labels: Tensor
    ids: Tensor
    last_seen: Tensor
    next_id: int = 0
    frame: int = 0

    @classmethod
    def empty(cls, dim: int, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> TrackMemory:
        long = dict(dtype=torch.int64, device=device)
        return cls(torch.zeros(0, dim, device=device, dtype=dtype), torch.zeros(0, 4, device=device, dtype=dtype),
                   torch.zeros(0, **long), torch.zeros(0, **long), torch.zeros(0, **long))

    def __len__(self) -> int:
        return len(self.ids)


def update_tracks(
    memory: TrackMemory,
    assignment: Tensor,
    det_features: Tensor,
    det_boxes: Tensor,
    det_labels: Tensor,
    *,
    max_tracks: int | None = None,
) -> tuple[TrackMemory, Tensor]:
    """Apply an assignment (from :func:`assign_tracks`) to the memory; returns (new memory, (N,) track ids).

    Matched tracks take their detection's features and box; unmatched detections open tracks with fresh ids
    in detection order. ``max_tracks`` (None in the paper) then keeps only the most recently seen tracks.
    The input memory is not modified.
    """
    frame = memory.frame
    features, boxes = memory.features.clone(), memory.boxes.clone()
    last_seen = memory.last_seen.clone()
    matched = assignment >= 0
    idx = assignment[matched]
    features[idx] = det_features[matched].to(features.dtype)
    boxes[idx] = det_boxes[matched].to(boxes.dtype)
    last_seen[idx] = frame
    track_ids = torch.empty_like(assignment)
    track_ids[matched] = memory.ids[idx]
    new = ~matched
    num_new = int(new.sum())
    new_ids = torch.arange(memory.next_id, memory.next_id + num_new, device=assignment.device)
    track_ids[new] = new_ids
    out = TrackMemory(
        features=torch.cat([features, det_features[new].to(features.dtype)]),
        boxes=torch.cat([boxes, det_boxes[new].to(boxes.dtype)]),
        labels=torch.cat([memory.labels, det_labels[new]]),
        ids=torch.cat([memory.ids, new_ids]),
        last_seen=torch.cat([last_seen, torch.full((num_new,), frame, dtype=torch.int64, device=assignment.device)]),
        next_id=memory.next_id + num_new,
        frame=frame + 1,
    )
    if max_tracks is not None and len(out) > max_tracks:
        keep = torch.argsort(out.last_seen, descending=True, stable=True)[:max_tracks].sort().values
        out = replace(out, features=out.features[keep], boxes=out.boxes[keep], labels=out.labels[keep],
                      ids=out.ids[keep], last_seen=out.last_seen[keep])
    return out, track_ids


def rank_track_ids(labels: Tensor, *, num_stuff: int, num_things: int) -> Tensor:
    """Track ids of a model without track head, as the official PNGs encode them: (K,) int64 class ids of the
    frame's kept instances, in decreasing score order -> (K,) int64 ``rank * num_things + (class - num_stuff)``.

    The official panoptic inference without track ids writes each instance's panoptic channel (its rank among
    the kept detections) as its id, and one colour per (class, id) for the whole video: the k-th kept instance
    continues the k-th of every earlier frame when their classes agree. These ids give the same segments the
    same panoptic ids, unique within a frame.
    """
    rank = torch.arange(len(labels), dtype=torch.int64, device=labels.device)
    return rank * num_things + (labels - num_stuff)


@dataclass(frozen=True)
class MaskTrackMemory:
    """The image variant's memory: the previous frame's instances as one map (constant size per frame).

    track_map (H, W) int64: track id of each pixel, -1 where no instance; ids (M,) int64 and labels (M,)
    int64: the tracks in the map and their classes; next_id: the next new track's id.
    """

    track_map: Tensor
    ids: Tensor
    labels: Tensor
    next_id: int = 0

    @classmethod
    def empty(cls, size: tuple[int, int], device: torch.device | str | None = None) -> MaskTrackMemory:
        long = dict(dtype=torch.int64, device=device)
        return cls(torch.full(size, NEW_TRACK, **long), torch.zeros(0, **long), torch.zeros(0, **long))

    def __len__(self) -> int:
        return len(self.ids)


def mask_iou(masks: Tensor, other: Tensor) -> Tensor:
    """(N, H, W) bool vs (M, H, W) bool -> (N, M) float IoU (0 where both are empty)."""
    a, b = masks.flatten(1).float(), other.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


def associate_by_mask_iou(
    masks: Tensor, labels: Tensor, memory: MaskTrackMemory, *, iou_threshold: float = 0.5
) -> tuple[MaskTrackMemory, Tensor]:
    """Image-variant association: greedy, highest mask IoU first, same class only, IoU > ``iou_threshold``.

    masks (N, H, W) bool (non-overlapping), labels (N,) int64: the current frame's instances. Unmatched
    instances get new ids. Returns (memory holding this frame's instances, (N,) int64 track ids).
    """
    n = len(masks)
    track_ids = torch.full((n,), NEW_TRACK, dtype=torch.int64, device=masks.device)
    if n and len(memory):
        previous = memory.track_map[None] == memory.ids[:, None, None]
        iou = mask_iou(masks, previous)
        iou = torch.where(labels[:, None] == memory.labels[None, :], iou, torch.zeros_like(iou))
        while True:
            value, flat = iou.flatten().max(dim=0)
            if value <= iou_threshold:
                break
            i, j = divmod(int(flat), iou.shape[1])
            track_ids[i] = memory.ids[j]
            iou[i, :] = -1.0
            iou[:, j] = -1.0
    new = track_ids == NEW_TRACK
    num_new = int(new.sum())
    track_ids[new] = torch.arange(memory.next_id, memory.next_id + num_new, device=masks.device)
    track_map = torch.full(masks.shape[1:], NEW_TRACK, dtype=torch.int64, device=masks.device)
    for mask, track in zip(masks, track_ids.tolist(), strict=True):
        track_map[mask.bool()] = track
    return MaskTrackMemory(track_map, track_ids.clone(), labels.clone(), memory.next_id + num_new), track_ids

"""VPSNet post-processing as pure functions (UPSNet's rules, official ``get_unified_pan_result``).

1. :func:`remove_overlapping_masks` (before the panoptic head): in decreasing score order, a mask is dropped
   when more than 30 % of it is already covered by kept higher-scored masks (of its class: the official
   MaskRemoval keeps one occupancy map per class; ``per_class=False`` is a class-agnostic option) or when
   it is empty.
2. :func:`merge_panoptic` (after the argmax of the panoptic logits): an instance whose region is at least
   50 % one stuff class according to the semantic head becomes that stuff class; then each stuff class whose
   total area is below ``stuff_area_limit`` (2048 px at full Cityscapes resolution, a config value; scale it
   with the image area) becomes void.
3. :func:`assign_segment_ids`: ids stable within a video, so VPQ tubes and overlay colours follow tracks:

       void                        0                       (PANOPTIC_VOID_ID)
       stuff class c               c + 1                   (< PANOPTIC_LABEL_DIVISOR)
       thing of class c, track t   (t + 1) * 1000 + c      (class = id % 1000, track = id // 1000 - 1)

   :func:`panoptic_postprocess` runs 2 and 3.

Output everywhere: ``(panoptic (H, W) int64 ids, segments_info list of {"id", "category_id", "isthing",
"track_id", "score", "area"})``; stuff segments have ``track_id`` and ``score`` None.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vidseg.constants import IGNORE_LABEL, PANOPTIC_LABEL_DIVISOR, PANOPTIC_VOID_ID

MAX_SEGMENT_ID = 256**3 - 1  # COCO-panoptic RGB


def stuff_segment_id(category: int) -> int:
    """Segment id of stuff class ``category`` (0-based): ``category + 1``."""
    if not 0 <= category < PANOPTIC_LABEL_DIVISOR - 1:
        raise ValueError(f"stuff class must be in [0, {PANOPTIC_LABEL_DIVISOR - 1}), got {category}")
    return category + 1


def thing_segment_id(track_id: int, category: int) -> int:
    """Segment id of the instance of track ``track_id`` (>= 0) and class ``category``:
    ``(track_id + 1) * 1000 + category``."""
    if track_id < 0 or not 0 <= category < PANOPTIC_LABEL_DIVISOR:
        raise ValueError(f"need track_id >= 0 and a class in [0, {PANOPTIC_LABEL_DIVISOR}), got {track_id}, {category}")
    segment = (track_id + 1) * PANOPTIC_LABEL_DIVISOR + category
    if segment > MAX_SEGMENT_ID:
        raise ValueError(f"track id {track_id} is too large for a COCO-panoptic id (at most "
                         f"{MAX_SEGMENT_ID // PANOPTIC_LABEL_DIVISOR - 1} tracks per video); cap the tracks with "
                         "max_tracks or split the video")
    return segment


def remove_overlapping_masks(
    masks: Tensor, scores: Tensor, labels: Tensor, *, overlap_threshold: float = 0.3, per_class: bool = True
) -> Tensor:
    """Indices (K,) int64 of the masks kept, in decreasing score order.

    Args:
        masks: (N, H, W) bool. scores: (N,) float. labels: (N,) int64 classes.
        overlap_threshold: drop a mask when |mask & covered| / |mask| > this (0.3).
        per_class: covered = kept masks of the same class (official) or of any class.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    covered: dict[int, Tensor] = {}
    keep = []
    for i in order.tolist():
        mask = masks[i]
        area = int(mask.sum())
        key = int(labels[i]) if per_class else 0
        occupied = covered.get(key)
        if area == 0:
            continue
        if occupied is not None and int((mask & occupied).sum()) / area > overlap_threshold:
            continue
        keep.append(i)
        covered[key] = mask if occupied is None else occupied | mask
    return torch.tensor(keep, dtype=torch.int64, device=masks.device)


def merge_panoptic(
    panoptic: Tensor,
    semantic: Tensor,
    instance_labels: Tensor,
    *,
    num_stuff: int,
    stuff_area_limit: int = 2048,
    stuff_fraction: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Class and instance maps from the panoptic argmax, with the stuff relabelling and small-stuff rules.

    Args:
        panoptic: (H, W) int64 argmax of the panoptic logits: stuff class (< num_stuff) or num_stuff + k.
        semantic: (H, W) int64 argmax of the semantic head (all classes).
        instance_labels: (K,) int64 class of each instance channel.
        stuff_area_limit: stuff classes with fewer pixels become void. stuff_fraction: 0.5.
    Returns:
        category (H, W) int64 (255 = void) and instance (H, W) int64 (k, or -1 for stuff / void).
    """
    is_instance = panoptic >= num_stuff
    instance = torch.where(is_instance, panoptic - num_stuff, torch.full_like(panoptic, -1))
    if len(instance_labels):
        thing_class = instance_labels[instance.clamp(min=0)]
    else:
        thing_class = torch.zeros_like(panoptic)
    category = torch.where(is_instance, thing_class, panoptic)
    for k in range(len(instance_labels)):
        region = instance == k
        if not region.any():
            continue
        counts = torch.bincount(semantic[region].clamp(max=IGNORE_LABEL))
        majority = int(counts.argmax())
        if majority < num_stuff and counts[majority] >= stuff_fraction * counts.sum():
            category[region] = majority
            instance[region] = -1
    stuff = instance < 0
    for cls in torch.unique(category[stuff]).tolist():
        region = stuff & (category == cls)
        if cls < num_stuff and int(region.sum()) < stuff_area_limit:
            category[region] = IGNORE_LABEL
    return category, instance


def assign_segment_ids(
    category: Tensor,
    instance: Tensor,
    track_ids: Tensor,
    scores: Tensor,
    *,
    num_stuff: int,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Segment ids (see the module docstring) for the maps of :func:`merge_panoptic`.

    Args:
        category, instance: (H, W) int64 from :func:`merge_panoptic`. track_ids: (K,) int64 track of each
            instance (unique in the frame). scores: (K,) float detection scores.
    Returns:
        panoptic (H, W) int64 ids (0 = void) and segments_info, stuff first (by class) then things (by
        instance index).
    """
    panoptic = torch.full_like(category, PANOPTIC_VOID_ID)
    segments: list[dict[str, Any]] = []
    stuff = (instance < 0) & (category != IGNORE_LABEL)
    for cls in torch.unique(category[stuff]).tolist():
        region = stuff & (category == cls)
        segment = stuff_segment_id(cls)
        panoptic[region] = segment
        segments.append({"id": segment, "category_id": cls, "isthing": False, "track_id": None, "score": None,
                         "area": int(region.sum())})
    for k in torch.unique(instance[instance >= 0]).tolist():
        region = instance == k
        cls, track = int(category[region][0]), int(track_ids[k])
        segment = thing_segment_id(track, cls)
        panoptic[region] = segment
        segments.append({"id": segment, "category_id": cls, "isthing": True, "track_id": track,
                         "score": float(scores[k]), "area": int(region.sum())})
    return panoptic, segments


def panoptic_postprocess(
    panoptic: Tensor,
    semantic: Tensor,
    instance_labels: Tensor,
    instance_scores: Tensor,
    track_ids: Tensor,
    *,
    num_stuff: int,
    stuff_area_limit: int = 2048,
    stuff_fraction: float = 0.5,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """:func:`merge_panoptic` then :func:`assign_segment_ids`: (panoptic (H, W) int64, segments_info)."""
    category, instance = merge_panoptic(panoptic, semantic, instance_labels, num_stuff=num_stuff,
                                        stuff_area_limit=stuff_area_limit, stuff_fraction=stuff_fraction)
    return assign_segment_ids(category, instance, track_ids, instance_scores, num_stuff=num_stuff)

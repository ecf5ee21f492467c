"""UPSNet's parameter-free panoptic head without the "unknown" class, as used by VPSNet.

For one image with N instances the panoptic logits are ``num_stuff + N`` maps:

    channel s < num_stuff      the semantic head's logit of stuff class s
    channel num_stuff + i      inside instance i's box: semantic logit of its class + its mask logit;
                               zero outside the box

The instance's 28x28 mask logits are resized (bilinear) to its integer box and pasted there. The integer box
of a float box (x1, y1, x2, y2) is columns floor(x1) .. ceil(x2) - 1 and rows floor(y1) .. ceil(y2) - 1
(at least one pixel), clipped to the image; the semantic crop and the mask paste use the same region.
(The official code rounds the two differently by up to a pixel; one region is simpler and equivalent.)

Training uses the ground-truth boxes and classes, at the semantic head's stride-4 resolution; the target is
stuff class, instance slot ``num_stuff + i``, or 255 (void and thing pixels that belong to no instance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.constants import IGNORE_LABEL


def box_regions(boxes: Tensor) -> list[tuple[int, int, int, int]]:
    """Integer regions (x0, y0, x1, y1), x1/y1 exclusive, of (N, 4) float boxes; not clipped."""
    regions = []
    for x1, y1, x2, y2 in boxes.detach().cpu().tolist():
        x0, y0 = math.floor(x1), math.floor(y1)
        regions.append((x0, y0, max(math.ceil(x2), x0 + 1), max(math.ceil(y2), y0 + 1)))
    return regions


def _clip(region: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = region
    height, width = size
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def _pad_to(crop: Tensor, clipped: tuple[int, int, int, int], size: tuple[int, int]) -> Tensor:
    """Place a (h, w) crop covering the clipped region into a zero (H, W) map (differentiable)."""
    cx0, cy0, cx1, cy1 = clipped
    if cx0 >= cx1 or cy0 >= cy1:
        return crop.new_zeros(size)
    return F.pad(crop, (cx0, size[1] - cx1, cy0, size[0] - cy1))


def paste_mask_logits(mask_logits: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize each (M, M) mask logit map to its integer box and paste it into a zero (H, W) map.

    Args:
        mask_logits: (N, M, M) float. boxes: (N, 4) float xyxy in the output's pixels. size: (H, W).
    Returns:
        (N, H, W) float, differentiable w.r.t. ``mask_logits``. ``> 0`` gives the binary masks.
    """
    size = (int(size[0]), int(size[1]))
    out = []
    for logits, region in zip(mask_logits, box_regions(boxes), strict=True):
        x0, y0, x1, y1 = region
        resized = F.interpolate(logits[None, None], size=(y1 - y0, x1 - x0), mode="bilinear",
                                align_corners=False)[0, 0]
        cx0, cy0, cx1, cy1 = clipped = _clip(region, size)
        out.append(_pad_to(resized[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], clipped, size))
    if not out:
        return mask_logits.new_zeros((0, *size))
    return torch.stack(out)


def crop_semantic_logits(semantic_logits: Tensor, boxes: Tensor, classes: Tensor) -> Tensor:
    """Each instance's class logit inside its integer box, zero outside.

    Args:
        semantic_logits: (C, H, W) float. boxes: (N, 4) float xyxy in its pixels. classes: (N,) int64 class ids.
    Returns:
        (N, H, W) float.
    """
    size = (semantic_logits.shape[-2], semantic_logits.shape[-1])
    out = []
    for cls, region in zip(classes.tolist(), box_regions(boxes), strict=True):
        cx0, cy0, cx1, cy1 = clipped = _clip(region, size)
        out.append(_pad_to(semantic_logits[cls, cy0:cy1, cx0:cx1], clipped, size))
    if not out:
        return semantic_logits.new_zeros((0, *size))
    return torch.stack(out)


class UPSNetPanopticHead(nn.Module):
    """Panoptic logits from semantic logits and instance masks (no parameters).

    forward(semantic_logits (C, H, W), boxes (N, 4), classes (N,) int64, mask_logits (N, H, W) pasted)
        -> (num_stuff + N, H, W) float; argmax gives stuff class or ``num_stuff + instance index``.
    targets(semantic (H, W) int64, masks (N, H, W) bool/uint8) -> (H, W) int64.
    loss(logits list, targets list) -> {"loss_panoptic"}: cross-entropy (ignore 255) per image, averaged over
    images, times ``loss_weight`` (0.5).

    Stuff classes are ``0 .. num_stuff - 1`` of the semantic head; thing classes follow.
    """

    def __init__(self, num_stuff: int, *, loss_weight: float = 0.5) -> None:
        super().__init__()
        self.num_stuff = num_stuff
        self.loss_weight = loss_weight

    def forward(self, semantic_logits: Tensor, boxes: Tensor, classes: Tensor, mask_logits: Tensor) -> Tensor:
        instance = crop_semantic_logits(semantic_logits, boxes, classes) + mask_logits
        return torch.cat([semantic_logits[: self.num_stuff], instance], dim=0)

    def targets(self, semantic: Tensor, masks: Tensor) -> Tensor:
        target = torch.where(semantic < self.num_stuff, semantic, torch.full_like(semantic, IGNORE_LABEL))
        for i, mask in enumerate(masks):  # later instances win on overlaps, as in the official code
            target = torch.where(mask.bool(), torch.full_like(target, self.num_stuff + i), target)
        return target

    def loss(self, logits: Sequence[Tensor], targets: Sequence[Tensor]) -> dict[str, Tensor]:
        losses = []
        for lg, tg in zip(logits, targets, strict=True):
            if (tg != IGNORE_LABEL).any():
                losses.append(F.cross_entropy(lg[None], tg[None], ignore_index=IGNORE_LABEL))
            else:
                losses.append(lg.sum() * 0.0)
        return {"loss_panoptic": self.loss_weight * torch.stack(losses).mean()}

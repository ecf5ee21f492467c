"""Padding to a stride multiple, shared by every model and inference session."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, divisor: int, value: float | Sequence[float] = 0) -> torch.Tensor:
    """Pad ``(..., H, W)`` at the bottom/right with ``value`` up to multiples of ``divisor``.

    Label maps are padded with IGNORE_LABEL (255) so padding never matches an object; frames with the
    value the caller chooses: a number, or one value per channel for ``(..., C, H, W)`` images (e.g.
    IMAGENET_MEAN_UINT8, the training crops' pad colour, which normalises to ~0).
    """
    height, width = x.shape[-2:]
    pad_h = math.ceil(height / divisor) * divisor - height
    pad_w = math.ceil(width / divisor) * divisor - width
    if not (pad_h or pad_w):
        return x
    if isinstance(value, (int, float)):
        return F.pad(x, (0, pad_w, 0, pad_h), value=value)
    fill = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if x.ndim < 3 or fill.numel() != x.shape[-3]:
        raise ValueError(f"{fill.numel()} per-channel pad values for a tensor of shape {tuple(x.shape)} (..., C, H, W)")
    shape = (*x.shape[:-2], height + pad_h, width + pad_w)
    out = fill.view(-1, 1, 1).expand(shape).clone()
    out[..., :height, :width] = x
    return out


def padded_size(height: int, width: int, divisor: int) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``divisor``."""
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor

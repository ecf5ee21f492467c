"""Padding to a stride multiple, shared by every model and inference session."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, divisor: int, value: float = 0) -> torch.Tensor:
    """Pad ``(..., H, W)`` at the bottom/right with ``value`` up to multiples of ``divisor``.

    Label maps are padded with IGNORE_LABEL (255) so padding never matches an object; frames with the
    value the caller chooses.
    """
    height, width = x.shape[-2:]
    pad_h = math.ceil(height / divisor) * divisor - height
    pad_w = math.ceil(width / divisor) * divisor - width
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), value=value)
    return x


def padded_size(height: int, width: int, divisor: int) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``divisor``."""
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor

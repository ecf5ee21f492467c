"""Backward warping with optical flow (a thin, convention-fixing wrapper over F.grid_sample)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidseg.ops import _common as common

PADDING_MODES = ("zeros", "border", "reflection")


def flow_warp(
    x: torch.Tensor, flow: torch.Tensor, *, padding_mode: str = "zeros", align_corners: bool = True
) -> torch.Tensor:
    """Backward-warp ``x`` with ``flow``: out[b, :, y, x] = x[b, :] sampled bilinearly at
    (x + u, y + v), in pixel units with pixel centres at integer coordinates, where
    u = flow[b, 0, y, x] (horizontal) and v = flow[b, 1, y, x] (vertical).

    The pixel-unit convention holds for both ``align_corners`` values: the flow is normalised to
    grid_sample's [-1, 1] coordinates with the matching formula (2x / (W-1) - 1 for True,
    (2x + 1) / W - 1 for False), so a zero flow is the identity and an integer flow is an exact shift
    either way. ``align_corners`` only decides where "outside" starts for ``padding_mode``:
    - "zeros": samples blend with zeros beyond the border pixels' centres (same for both values);
    - "border": coordinates are clamped to the border pixels (same for both values);
    - "reflection": reflected about the border pixels' centres (True) or the image edges (False).

    Args:
        x: (B, C, H, W) float. flow: (B, 2, H, W) float, in pixels.
    Returns:
        (B, C, H, W) in x's dtype. Sampling coordinates are computed in fp32 (fp64 for fp64) and
        fp16/bf16 inputs are sampled in fp32: low-precision grids are off by up to a pixel.
    Differentiable w.r.t. x and flow (grid_sample's autograd); memory O(B*(C + 2)*H*W).
    """
    common.check_float("x", x)
    common.check_float("flow", flow)
    if x.dim() != 4 or flow.shape != (x.shape[0], 2, *x.shape[2:]):
        raise ValueError(f"x must be (B, C, H, W) and flow (B, 2, H, W), got {tuple(x.shape)}, {tuple(flow.shape)}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    dtype = common.compute_dtype(x, flow)
    height, width = x.shape[-2:]
    # With align_corners=True a size-1 axis degenerates (grid_sample maps every coordinate to 0); for
    # "zeros" the False formula gives the same pixel-unit sampling and keeps out-of-image zeros.
    if align_corners and padding_mode == "zeros" and min(height, width) == 1:
        align_corners = False
    ys = torch.arange(height, dtype=dtype, device=x.device)[:, None]
    xs = torch.arange(width, dtype=dtype, device=x.device)[None, :]
    px = xs + flow[:, 0].to(dtype)
    py = ys + flow[:, 1].to(dtype)
    if align_corners:
        gx, gy = 2 * px / max(width - 1, 1) - 1, 2 * py / max(height - 1, 1) - 1
    else:
        gx, gy = (2 * px + 1) / width - 1, (2 * py + 1) / height - 1
    grid = torch.stack((gx, gy), dim=-1)  # (B, H, W, 2), x first as grid_sample expects
    out = F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    return out.to(x.dtype)

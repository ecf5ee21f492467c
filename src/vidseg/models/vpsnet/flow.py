"""Initial optical flow for the Fuse module: target frame -> reference frame, at P2 (stride 4).

Every flow module here has one contract::

    forward(target: (B, 3, H, W) float RGB in [0, 1], reference: same) -> (B, 2, H/4, W/4) float

H and W multiples of 32 (the model pads). The output is backward flow in stride-4 pixels: the reference pixel
seen at target position p is at p + flow(p) (channel 0 horizontal, 1 vertical), the convention of
:func:`vidseg.ops.flow_warp`, so ``flow_warp(reference_features, flow)`` aligns them with the target.

- :class:`RAFTFlow` (the paper's role, filled by torchvision's RAFT instead of FlowNet2): full-resolution flow,
  bilinearly resized to stride 4 and scaled by 0.25 as the official code does with FlowNet2. Frozen (eval mode,
  no gradients) when pretrained weights are given, as FlowNet2 is; trained with the rest otherwise.
- :class:`TinyFlow` (an option that differs from the paper, for CPU tests and the demo): a small trainable
  correlation network computed directly at stride 4; it starts as zero flow.
- ``build_flow(name="none")`` returns None: the model then uses zero initial flow.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import WeightsEnum, optical_flow

from vidseg.backbones.base import resolve_weights
from vidseg.ops import correlation

FLOW_STRIDE = 4
RAFT_MIN_SIZE = 128
FLOW_NAMES = ("raft_small", "raft_large", "tiny", "none")


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a (B, 2, H, W) flow to ``size`` (bilinear, align_corners=False) and scale its values by the
    same factors (x0.25 for full resolution -> P2)."""
    height, width = flow.shape[-2:]
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[1] / width, size[0] / height], dtype=flow.dtype, device=flow.device)
    return out * scale.view(1, 2, 1, 1)


class RAFTFlow(nn.Module):
    """torchvision RAFT wrapped to the module contract above.

    Args:
        raft: a torchvision ``RAFT`` (raft_small / raft_large).
        num_flow_updates: RAFT's recurrent iterations (12, torchvision's default).
        frozen: keep RAFT in eval mode without gradients (True when pretrained weights were loaded).
    """

    def __init__(self, raft: nn.Module, *, num_flow_updates: int = 12, frozen: bool = False) -> None:
        super().__init__()
        self.raft = raft
        self.num_flow_updates = num_flow_updates
        self.frozen = frozen
        if frozen:
            self.raft.requires_grad_(False)
            self.raft.eval()

    def train(self, mode: bool = True) -> RAFTFlow:
        super().train(mode)
        if self.frozen:
            self.raft.eval()  # a frozen RAFT never updates its BatchNorm statistics
        return self

    def forward(self, target: Tensor, reference: Tensor) -> Tensor:
        height, width = target.shape[-2:]
        # RAFT's correlation pyramid needs >= 128 px per side: pad small frames (replicate) and crop the flow
        pad_h, pad_w = max(RAFT_MIN_SIZE - height, 0), max(RAFT_MIN_SIZE - width, 0)
        frames = torch.cat([target, reference]) * 2 - 1  # RAFT expects RGB in [-1, 1]
        if pad_h or pad_w:
            frames = F.pad(frames, (0, pad_w, 0, pad_h), mode="replicate")
        tgt, ref = frames.chunk(2)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            flows = self.raft(tgt, ref, num_flow_updates=self.num_flow_updates)
        flow = flows[-1][..., :height, :width]
        return resize_flow(flow, (height // FLOW_STRIDE, width // FLOW_STRIDE))


class TinyFlow(nn.Module):
    """A small flow network at stride 4 (an option differing from the paper; for CPU tests and the demo).

    Shared 3-conv encoder (stride 4, ``channels`` wide) for both frames, correlation with search range
    ``search_range`` (cost volume of (2r+1)^2 channels, :func:`vidseg.ops.correlation`), two convs to the
    flow. The last conv starts at zero, so the initial flow is zero (identity warp) until it learns.
    """

    def __init__(self, *, channels: int = 32, search_range: int = 4) -> None:
        super().__init__()
        self.search_range = search_range
        self.encoder = nn.Sequential(
            nn.Conv2d(3, channels // 2, 3, stride=2, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        span = (2 * search_range + 1) ** 2
        self.decoder = nn.Sequential(
            nn.Conv2d(channels + span, channels, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, 2, 3, padding=1),
        )
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, target: Tensor, reference: Tensor) -> Tensor:
        features = self.encoder(torch.cat([target, reference]) * 2 - 1)
        tgt, ref = features.chunk(2)
        cost = correlation(tgt, ref, self.search_range)
        return self.decoder(torch.cat([tgt, cost.to(tgt.dtype)], dim=1))


def build_flow(
    *,
    name: str = "raft_small",
    weights: str | os.PathLike | WeightsEnum | None = None,
    num_flow_updates: int = 12,
    frozen: bool | None = None,
    channels: int = 32,
) -> nn.Module | None:
    """The initial-flow module by name (see the module docstring); ``name="none"`` gives None (zero flow).

    Args:
        weights (RAFT only): None (random init), a torchvision weights name ("C_T_V2", "DEFAULT", ...; downloads
            on first use) or a local state-dict file of torchvision's RAFT.
        frozen: None = frozen exactly when weights are given.
        channels (tiny only): encoder width.
    """
    if name not in FLOW_NAMES:
        raise ValueError(f"flow name must be one of {FLOW_NAMES}, got {name!r}")
    if name == "none":
        return None
    if name == "tiny":
        if weights is not None:
            raise ValueError("flow name 'tiny' has no pretrained weights; use weights=None")
        return TinyFlow(channels=channels, search_range=4)
    builder, enum = {
        "raft_small": (optical_flow.raft_small, optical_flow.Raft_Small_Weights),
        "raft_large": (optical_flow.raft_large, optical_flow.Raft_Large_Weights),
    }[name]
    resolved = resolve_weights(weights, enum)
    raft = builder(weights=resolved if isinstance(resolved, WeightsEnum) else None)
    if isinstance(resolved, Path):
        if not resolved.is_file():
            raise FileNotFoundError(
                f"flow weights file {str(resolved)!r} does not exist; expected a state dict of torchvision's "
                f"{name} or one of the {enum.__name__} names: {', '.join(enum.__members__)}"
            )
        raft.load_state_dict(torch.load(resolved, map_location="cpu", weights_only=True))
    return RAFTFlow(raft, num_flow_updates=num_flow_updates, frozen=weights is not None if frozen is None else frozen)

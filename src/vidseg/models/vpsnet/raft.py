"""A RAFT forward for streaming inference on the GPU: torchvision's RAFT network and weights, the same
arithmetic as ``torchvision.models.optical_flow.RAFT.forward`` (equal to float rounding), fewer launches.

What differs from torchvision's forward, and why each is exact:

- No host tensors per iteration: torchvision's ``CorrBlock.index_pyramid`` builds its neighbourhood offsets
  with ``torch.linspace`` on the CPU and copies them to the device on every update (12 blocking copies per
  frame), and ``make_coords_grid`` builds the pixel grid on the CPU. Here both are built once per call on the
  input's device, and nothing in the update loop depends on tensor values from Python (no ``.item()``, no
  data-dependent branches): the loop can be captured whole (CUDA graphs, ``torch.compile(fullgraph=True)``).
- Only the last update is upsampled to full resolution (its callers use ``flows[-1]`` only); raft_large's
  mask predictor runs once, on the last hidden state.
- The reference frame's feature-encoder output can be passed in (``fmap2``): RAFT's feature encoder uses
  instance norm (per sample, no running statistics), so frame t's features, computed when t was the target,
  are those frame t+1 needs for its reference.
- Optional, off by default (they change numerics): the correlation matmul in TF32 or bf16 (fp32 accumulation
  and output; the pyramid and its sampling stay fp32, since bf16 sampling coordinates would be off by pixels).

Shapes: images (B, 3, H, W) float RGB in [-1, 1] (RAFT's input convention), H and W multiples of 8 and >= 128;
features (B, C, H/8, W/8); flow (B, 2, H, W) in full-resolution pixels, channel 0 horizontal.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CORRELATION_PRECISIONS = ("32", "tf32", "bf16")


def coords_grid(batch_size: int, height: int, width: int, device: torch.device) -> Tensor:
    """(B, 2, H, W) float pixel coordinates (x, y), built on ``device`` (torchvision's ``make_coords_grid``
    builds them on the CPU)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([xs, ys]).float()[None].repeat(batch_size, 1, 1, 1)


def neighbourhood(radius: int, device: torch.device) -> Tensor:
    """(1, 2r+1, 2r+1, 2) float offsets -r..r in torchvision's CorrBlock order (first offset varies along dim 1)."""
    d = torch.linspace(-radius, radius, 2 * radius + 1, device=device)
    return torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1)[None]


def pair(first: float, second: float, device: torch.device) -> Tensor:
    """(2,) float32 [first, second] filled on ``device`` (``torch.tensor(..., device=cuda)`` would copy from the
    host, a blocking copy that also breaks CUDA graph capture)."""
    out = torch.empty(2, device=device)
    out[0] = first
    out[1] = second
    return out


@contextlib.contextmanager
def matmul_precision(precision: str):
    """TF32 for float32 CUDA matmuls inside the block when ``precision == "tf32"`` (restored after); no-op
    otherwise. RAFT has no other matmul than the correlation (its convolutions follow ``cudnn``'s own flag)."""
    if precision not in CORRELATION_PRECISIONS:
        raise ValueError(f"flow precision must be one of {CORRELATION_PRECISIONS}, got {precision!r}")
    if precision != "tf32":
        yield
        return
    # the legacy flag, as the rest of vidseg (bench/ops.py): mixing it with ``fp32_precision`` raises in torch
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def correlation_pyramid(fmap1: Tensor, fmap2: Tensor, num_levels: int, *, precision: str = "32") -> list[Tensor]:
    """All-pairs correlation of (B, C, h, w) features, divided by sqrt(C), average-pooled ``num_levels - 1``
    times: [(B*h*w, 1, h / 2^k, w / 2^k) float]. ``precision="bf16"`` multiplies in bf16 (fp32 accumulation
    and output); "32" and "tf32" multiply the inputs as they are (TF32 is set by :func:`matmul_precision`)."""
    if fmap1.shape != fmap2.shape:
        raise ValueError(f"feature maps must have one shape, got {tuple(fmap1.shape)} and {tuple(fmap2.shape)}")
    batch_size, channels, height, width = fmap1.shape
    min_size = 2 * 2 ** (num_levels - 1)  # torchvision's limit: the coarsest level keeps >= 2 pixels a side
    if height < min_size or width < min_size:
        raise ValueError(f"RAFT features of {height}x{width} are too small for {num_levels} correlation levels; "
                         f"frames must be at least {8 * min_size} px a side (RAFTFlow pads smaller frames)")
    left = fmap1.reshape(batch_size, channels, height * width).transpose(1, 2)
    right = fmap2.reshape(batch_size, channels, height * width)
    if precision == "bf16":
        left, right = left.bfloat16(), right.bfloat16()
        if left.device.type == "cuda":
            corr = torch.bmm(left, right, out_dtype=torch.float32)  # fp32 output without a bf16 round trip
        else:
            corr = torch.bmm(left, right).float()
    else:
        corr = torch.matmul(left, right)
    level = corr.reshape(batch_size * height * width, 1, height, width) / math.sqrt(channels)
    pyramid = [level]
    for _ in range(num_levels - 1):
        level = F.avg_pool2d(level, kernel_size=2, stride=2)
        pyramid.append(level)
    return pyramid


def index_pyramid(pyramid: list[Tensor], coords: Tensor, delta: Tensor, half_sizes: list[Tensor]) -> Tensor:
    """Correlation features around ``coords`` (B, 2, h, w): (B, levels * (2r+1)^2, h, w).

    ``delta``: :func:`neighbourhood`; ``half_sizes``: per level (2,) float ``[(w_k - 1) / 2, (h_k - 1) / 2]``,
    built once per call: absolute pixels p -> grid_sample's [-1, 1] (align_corners=True) as p / half - 1, which
    is bitwise torchvision's 2 * p / (w_k - 1) - 1 (both halvings are exact)."""
    batch_size, _, height, width = coords.shape
    centroids = coords.permute(0, 2, 3, 1).reshape(batch_size * height * width, 1, 1, 2)
    sampled = []
    for level, half in zip(pyramid, half_sizes, strict=True):
        grid = (centroids + delta) / half - 1
        sampled.append(F.grid_sample(level, grid, mode="bilinear", align_corners=True)
                       .view(batch_size, height, width, -1))
        centroids = centroids / 2
    return torch.cat(sampled, dim=-1).permute(0, 3, 1, 2).contiguous()


def upsample_flow(flow: Tensor, up_mask: Tensor | None = None, factor: int = 8) -> Tensor:
    """(B, 2, h, w) flow -> (B, 2, h*factor, w*factor): bilinear (raft_small) or RAFT's convex upsampling with
    ``up_mask`` (B, 9*factor^2, h, w) (raft_large); torchvision's ``upsample_flow``."""
    batch_size, channels, height, width = flow.shape
    if up_mask is None:
        return factor * F.interpolate(flow, size=(height * factor, width * factor), mode="bilinear",
                                      align_corners=True)
    up_mask = torch.softmax(up_mask.view(batch_size, 1, 9, factor, factor, height, width), dim=2)
    patches = F.unfold(factor * flow, kernel_size=3, padding=1).view(batch_size, channels, 9, 1, 1, height, width)
    up = torch.sum(up_mask * patches, dim=2)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(batch_size, channels, height * factor, width * factor)


def encode_features(raft: nn.Module, image1: Tensor, image2: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """RAFT's feature encoder on image1 (and image2 in the same batch, as torchvision does): (fmap1, fmap2)."""
    if image2 is None:
        return raft.feature_encoder(image1), None
    fmap1, fmap2 = raft.feature_encoder(torch.cat([image1, image2])).chunk(2)
    return fmap1, fmap2


def raft_flow(raft: nn.Module, image1: Tensor, image2: Tensor | None = None, *, fmap2: Tensor | None = None,
              num_flow_updates: int = 12, precision: str = "32") -> tuple[Tensor, Tensor]:
    """Flow image1 -> image2 with a torchvision ``RAFT`` module, equal (to float rounding) to
    ``raft(image1, image2, num_flow_updates)[-1]``.

    Args:
        raft: torchvision ``RAFT`` (raft_small / raft_large, any weights).
        image1, image2: (B, 3, H, W) float in [-1, 1]. image2 may be None when ``fmap2`` is given.
        fmap2: image2's feature-encoder output (B, C, H/8, W/8), e.g. the ``fmap1`` this function returned
            when image2 was the first image of the previous call; then image2 is not encoded again.
        precision: the correlation matmul: "32" (as torchvision), "tf32" (the caller sets TF32 with
            :func:`matmul_precision`) or "bf16".

    Returns (flow (B, 2, H, W) float, fmap1 (B, C, H/8, W/8): image1's features, to reuse as a later fmap2).
    """
    if precision not in CORRELATION_PRECISIONS:
        raise ValueError(f"flow precision must be one of {CORRELATION_PRECISIONS}, got {precision!r}")
    batch_size, _, height, width = image1.shape
    if height % 8 or width % 8:
        raise ValueError(f"RAFT input height and width must be multiples of 8, got {height}x{width}")
    if fmap2 is None:
        if image2 is None:
            raise ValueError("raft_flow needs image2 or its features fmap2")
        if image2.shape != image1.shape:
            raise ValueError(f"images must have one shape, got {tuple(image1.shape)} and {tuple(image2.shape)}")
        fmap1, fmap2 = encode_features(raft, image1, image2)
    else:
        fmap1, _ = encode_features(raft, image1)
    h8, w8 = height // 8, width // 8
    if fmap1.shape[-2:] != (h8, w8) or fmap2.shape != fmap1.shape:
        raise ValueError(f"RAFT features must be {tuple(fmap1.shape[:2])} x {h8}x{w8} for {height}x{width} frames, "
                         f"got fmap1 {tuple(fmap1.shape)} and fmap2 {tuple(fmap2.shape)}")
    corr_block = raft.corr_block
    pyramid = correlation_pyramid(fmap1, fmap2, corr_block.num_levels, precision=precision)

    context_out = raft.context_encoder(image1)
    hidden_size = raft.update_block.hidden_state_size
    hidden, context = torch.split(context_out, [hidden_size, context_out.shape[1] - hidden_size], dim=1)
    hidden, context = torch.tanh(hidden), F.relu(context)

    device = image1.device
    delta = neighbourhood(corr_block.radius, device)
    half_sizes = [pair((level.shape[-1] - 1) / 2, (level.shape[-2] - 1) / 2, device) for level in pyramid]
    coords0 = coords_grid(batch_size, h8, w8, device)
    coords1 = coords0
    for _ in range(num_flow_updates):
        coords1 = coords1.detach()  # as torchvision (and the paper): no gradient through the coordinates
        corr = index_pyramid(pyramid, coords1, delta, half_sizes)
        hidden, delta_flow = raft.update_block(hidden, context, corr, coords1 - coords0)
        coords1 = coords1 + delta_flow
    up_mask = None if raft.mask_predictor is None else raft.mask_predictor(hidden)
    return upsample_flow(coords1 - coords0, up_mask), fmap1

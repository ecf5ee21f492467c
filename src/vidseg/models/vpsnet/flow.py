"""Initial optical flow for the Fuse module: target frame -> reference frame, at P2 (stride 4).

Every flow module here has one contract::

    forward(target: (B, 3, H, W) float RGB in [0, 1], reference: same) -> (B, 2, H/4, W/4) float

H and W multiples of 32 (the model pads). The output is backward flow in stride-4 pixels: the reference pixel
seen at target position p is at p + flow(p) (channel 0 horizontal, 1 vertical), the convention of
:func:`vidseg.ops.flow_warp`, so ``flow_warp(reference_features, flow)`` aligns them with the target.

- :class:`RAFTFlow` (the paper's role, filled by torchvision's RAFT instead of FlowNet2): full-resolution flow,
  bilinearly resized to stride 4 and scaled by 0.25 as the official code does with FlowNet2. Frozen (eval mode,
  no gradients) when pretrained weights are given, as FlowNet2 is; trained with the rest otherwise. Its
  forward (:mod:`vidseg.models.vpsnet.raft`) has no host copies per iteration, upsamples only the last update,
  and can take the reference frame's encoder features from the previous frame (``keeps_encoding``:
  ``forward(target, reference, reference_encoding=None, *, return_encoding=False)``, which VPSNet's
  inference state uses).
- :class:`vidseg.models.vpsnet.flownet2.FlowNet2Flow` (``name="flownet2"``, the official network): FlowNet2 in
  plain PyTorch on full-resolution frames, resized to stride 4 and scaled by 0.25; ``weights`` = a local
  FlowNet2 checkpoint (NVIDIA flownet2-pytorch's FlowNet2_checkpoint.pth.tar). Frozen when weights are given.
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

from vidseg.backbones.base import WeightsFileError, read_state_dict, resolve_weights
from vidseg.models.vpsnet.flownet2 import FlowNet2, FlowNet2Flow
from vidseg.models.vpsnet.raft import CORRELATION_PRECISIONS, matmul_precision, pair, raft_flow
from vidseg.ops import correlation

FLOW_STRIDE = 4
RAFT_MIN_SIZE = 128
FLOW_NAMES = ("raft_small", "raft_large", "flownet2", "tiny", "none")
RAFT_IMPLEMENTATIONS = ("vidseg", "torchvision")


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a (B, 2, H, W) flow to ``size`` (bilinear, align_corners=False) and scale its values by the
    same factors (x0.25 for full resolution -> P2)."""
    height, width = flow.shape[-2:]
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = pair(size[1] / width, size[0] / height, flow.device).to(flow.dtype)  # no host copy
    return out * scale.view(1, 2, 1, 1)


class RAFTFlow(nn.Module):
    """torchvision RAFT wrapped to the module contract above.

    With ``implementation="vidseg"`` (default) the forward is :func:`vidseg.models.vpsnet.raft.raft_flow`:
    the same network, weights, iterations and resolution as torchvision's forward and the same flow to float
    rounding, with no host copies in the update loop and only the last update upsampled. It can also reuse the
    reference frame's feature-encoder output (``reference_encoding``, see :meth:`forward`), which the VPSNet
    inference state keeps from the previous frame. ``implementation="torchvision"`` calls ``RAFT.forward``
    itself (the reference the tests and ``bench/vpsnet_fps.py`` compare against).

    Args:
        raft: a torchvision ``RAFT`` (raft_small / raft_large).
        num_flow_updates: RAFT's recurrent iterations (12, torchvision's default; fewer is a speed option that
            changes the flow).
        frozen: keep RAFT in eval mode without gradients (True when pretrained weights were loaded).
        implementation: "vidseg" or "torchvision" (see above).
        precision: the correlation matmul: "32" (exact, default), "tf32" (CUDA TF32) or "bf16" (bf16 inputs,
            fp32 accumulation and output); both change the flow slightly. Under bf16 autocast the matmul runs in
            bf16 whatever this says (autocast casts it, as it does torchvision's).
        compile: on CUDA, without gradients, run the flow through ``torch.compile(mode="reduce-overhead",
            fullgraph=True)`` (CUDA graphs, one per frame size; the first frames of a size compile). Ignored on
            the CPU and while training.
        downsample: 1 (default, the paper's full resolution), 2 or 4: run RAFT on frames resized by 1/downsample
            (a speed option that changes the flow; padded sizes are multiples of 32, so H/4 stays a multiple of 8).
    """

    keeps_encoding = True  # forward(..., reference_encoding=, return_encoding=) is supported (see VPSNet)

    def __init__(self, raft: nn.Module, *, num_flow_updates: int = 12, frozen: bool = False,
                 implementation: str = "vidseg", precision: str = "32", compile: bool = False,
                 downsample: int = 1) -> None:
        super().__init__()
        if implementation not in RAFT_IMPLEMENTATIONS:
            raise ValueError(f"flow implementation must be one of {RAFT_IMPLEMENTATIONS}, got {implementation!r}")
        if precision not in CORRELATION_PRECISIONS:
            raise ValueError(f"flow precision must be one of {CORRELATION_PRECISIONS}, got {precision!r}")
        if implementation == "torchvision" and (precision != "32" or compile):
            raise ValueError("flow precision and compile need implementation='vidseg' (torchvision's RAFT forward "
                             "has neither)")
        if downsample not in (1, 2, 4):
            raise ValueError(f"flow downsample must be 1, 2 or 4, got {downsample!r}")
        self.raft = raft
        self.num_flow_updates = num_flow_updates
        self.frozen = frozen
        self.implementation = implementation
        self.precision = precision
        self.compile = compile
        self.downsample = downsample
        self._compiled = None  # the torch.compile'd _flow, built on first use on CUDA
        if frozen:
            self.raft.requires_grad_(False)
            self.raft.eval()

    def train(self, mode: bool = True) -> RAFTFlow:
        super().train(mode)
        if self.frozen:
            self.raft.eval()  # a frozen RAFT never updates its BatchNorm statistics
        return self

    def _prepare(self, frames: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> RAFT's input: [-1, 1], resized by 1/downsample, padded to >= 128 px."""
        if self.downsample > 1:
            frames = F.interpolate(frames, scale_factor=1 / self.downsample, mode="bilinear", align_corners=False,
                                   antialias=True)
        frames = frames * 2 - 1  # RAFT expects RGB in [-1, 1]
        height, width = frames.shape[-2:]
        # RAFT's correlation pyramid needs >= 128 px per side: pad small frames (replicate) and crop the flow
        # (sym_max, and an unconditional pad when exported: an ONNX graph then pads exactly the frames that need it,
        # instead of the exporter fixing the branch its example frame took)
        pad_h, pad_w = torch.sym_max(RAFT_MIN_SIZE - height, 0), torch.sym_max(RAFT_MIN_SIZE - width, 0)
        if torch.compiler.is_exporting() or pad_h or pad_w:
            frames = F.pad(frames, (0, pad_w, 0, pad_h), mode="replicate")
        return frames

    def _flow(self, target: Tensor, reference: Tensor, reference_encoding: Tensor | None) -> tuple[Tensor, Tensor]:
        """The vidseg forward: (flow at P2, the target's RAFT features)."""
        height, width = target.shape[-2:]
        if reference_encoding is None:
            frames = self._prepare(torch.cat([target, reference]))
            tgt, ref = frames.chunk(2)
            flow, encoding = raft_flow(self.raft, tgt, ref, num_flow_updates=self.num_flow_updates,
                                       precision=self.precision)
        else:
            flow, encoding = raft_flow(self.raft, self._prepare(target), fmap2=reference_encoding,
                                       num_flow_updates=self.num_flow_updates, precision=self.precision)
        flow = flow[..., : height // self.downsample, : width // self.downsample]
        return resize_flow(flow, (height // FLOW_STRIDE, width // FLOW_STRIDE)), encoding

    def forward(self, target: Tensor, reference: Tensor, reference_encoding: Tensor | None = None, *,
                return_encoding: bool = False) -> Tensor | tuple[Tensor, Tensor | None]:
        """target, reference: (B, 3, H, W) float RGB in [0, 1] -> flow (B, 2, H/4, W/4) (module contract).

        reference_encoding: the reference frame's RAFT features, as returned with ``return_encoding=True`` by
        the call where that frame was the target (same size, same module); the reference image is then not
        encoded again (exact: RAFT's feature encoder normalises each sample on its own; implementation=
        "torchvision" ignores it). return_encoding: also return the target's features (B, C, H/8, W/8) (None
        with implementation="torchvision")."""
        if reference.shape != target.shape:
            raise ValueError(f"flow frames must have one shape, got target {tuple(target.shape)} and reference "
                             f"{tuple(reference.shape)}")
        grad = torch.is_grad_enabled() and not self.frozen
        if self.implementation == "torchvision":  # encodes both frames whatever reference_encoding holds
            height, width = target.shape[-2:]
            frames = self._prepare(torch.cat([target, reference]))
            tgt, ref = frames.chunk(2)
            with torch.set_grad_enabled(grad):
                flows = self.raft(tgt, ref, num_flow_updates=self.num_flow_updates)
            flow = flows[-1][..., : height // self.downsample, : width // self.downsample]
            flow = resize_flow(flow, (height // FLOW_STRIDE, width // FLOW_STRIDE))
            return (flow, None) if return_encoding else flow
        with torch.set_grad_enabled(grad), matmul_precision(self.precision):
            if self.compile and target.device.type == "cuda" and not torch.is_grad_enabled():
                if self._compiled is None:
                    self._compiled = torch.compile(self._flow, mode="reduce-overhead", fullgraph=True,
                                                   dynamic=False)
                torch.compiler.cudagraph_mark_step_begin()
                flow, encoding = self._compiled(target, reference, reference_encoding)
                # CUDA graph outputs are overwritten by the next replay: the caller keeps both past it
                flow, encoding = flow.clone(), encoding.clone()
            else:
                flow, encoding = self._flow(target, reference, reference_encoding)
        return (flow, encoding) if return_encoding else flow


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
    implementation: str = "vidseg",
    precision: str = "32",
    compile: bool = False,
    downsample: int = 1,
) -> nn.Module | None:
    """The initial-flow module by name (see the module docstring); ``name="none"`` gives None (zero flow).

    Args:
        weights (RAFT, FlowNet2): None (random init), a torchvision weights name ("C_T_V2", "DEFAULT", ...; downloads
            on first use) or a local state-dict file of torchvision's RAFT; for FlowNet2 a local FlowNet2
            checkpoint ({"state_dict": ...} of NVIDIA's flownet2-pytorch, or a bare state dict).
        frozen: None = frozen exactly when weights are given.
        channels (tiny only): encoder width.
        implementation, precision, compile, downsample (RAFT only): see :class:`RAFTFlow`; the defaults are the
            paper's flow (full resolution, fp32 correlation), computed without per-iteration host copies.
    """
    if name not in FLOW_NAMES:
        raise ValueError(f"flow name must be one of {FLOW_NAMES}, got {name!r}")
    precision = str(precision)  # a command-line override model.net.flow.precision=32 arrives as an int
    if name == "none":
        return None
    if name in ("tiny", "flownet2") and (implementation, precision, compile, downsample) != ("vidseg", "32", False, 1):
        raise ValueError(f"flow options implementation/precision/compile/downsample are RAFT's; the {name!r} flow "
                         "network has none of them")
    if name == "flownet2":
        return _build_flownet2(weights, frozen)
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
        raft.load_state_dict(read_state_dict(resolved, what="flow weights file", key="model.net.flow.weights"))
    return RAFTFlow(raft, num_flow_updates=num_flow_updates, frozen=weights is not None if frozen is None else frozen,
                    implementation=implementation, precision=precision, compile=compile, downsample=downsample)


def _build_flownet2(weights: str | os.PathLike | None, frozen: bool | None) -> FlowNet2Flow:
    net = FlowNet2()
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"flow weights file {str(path)!r} does not exist; expected a FlowNet2 checkpoint "
                                    "(FlowNet2_checkpoint.pth.tar of NVIDIA's flownet2-pytorch) or null")
        state = read_state_dict(path, what="FlowNet2 weights file", key="model.net.flow.weights", unwrap="state_dict")
        own = net.state_dict()
        problems = [f"{label} ({len(keys)}, e.g. {', '.join(keys[:3])})" for label, keys in (
            ("missing", [k for k in own if k not in state]),
            ("unexpected", [k for k in state if k not in own]),
            ("of another shape", [k for k in own if k in state and state[k].shape != own[k].shape])) if keys]
        if problems:
            raise WeightsFileError(f"FlowNet2 weights file {str(path)!r} does not fit FlowNet2: weights "
                                   f"{'; '.join(problems)}; give model.net.flow.weights=<FlowNet2_checkpoint.pth.tar "
                                   "of NVIDIA's flownet2-pytorch> or null")
        net.load_state_dict(state)
    return FlowNet2Flow(net, frozen=weights is not None if frozen is None else frozen)

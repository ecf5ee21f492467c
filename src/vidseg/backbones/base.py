"""The interface every backbone implements, and the module surgery the builders share:
stride -> dilation conversion, BatchNorm freezing, weight resolution and loading."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path

import torch
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.ops import FrozenBatchNorm2d

from vidseg.errors import DataError
from vidseg.utils.torch_files import load_failure_reason

FEATURE_NAMES: tuple[str, ...] = ("c2", "c3", "c4", "c5")
NOMINAL_STRIDES: dict[str, int] = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)

WeightsArg = str | os.PathLike | WeightsEnum | None


class Backbone(nn.Module):
    """Base class: image -> multi-scale features.

    forward(x: (B, 3, H, W) float, already normalised) -> {"c2", "c3", "c4", "c5"}: (B, out_channels[k],
    ceil(H / strides[k]), ceil(W / strides[k])) float. Nominal strides are 4, 8, 16, 32; with
    output_stride 16 (8) the last one (two) stages are dilated instead of strided, so strides[k] is
    min(nominal, output_stride).

    Attributes:
        out_channels: feature name -> channels.
        strides: feature name -> actual stride relative to the input.
        output_stride: stride of "c5" (8, 16 or 32).
    """

    out_channels: dict[str, int]
    strides: dict[str, int]
    output_stride: int

    def __init__(self, out_channels: Mapping[str, int], output_stride: int) -> None:
        super().__init__()
        check_output_stride(output_stride)
        self.output_stride = output_stride
        self.out_channels = {name: int(out_channels[name]) for name in FEATURE_NAMES}
        self.strides = {name: min(NOMINAL_STRIDES[name], output_stride) for name in FEATURE_NAMES}


def check_output_stride(output_stride: int) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")


def dilated_stages(output_stride: int) -> list[bool]:
    """For the stages at nominal strides 8, 16, 32: whether each trades its stride for dilation."""
    check_output_stride(output_stride)
    return [nominal > output_stride for nominal in (8, 16, 32)]


def is_strided(block: nn.Module) -> bool:
    """Whether any convolution in `block` has a stride above 1."""
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in block.modules())


def replace_stride_with_dilation(
    stages: Sequence[Sequence[nn.Module]],
    dilate: Sequence[bool],
    *,
    exact: bool,
) -> None:
    """Trade the stride of whole stages for dilation, in place, on an already built network.

    Dilation changes no parameter shape, so pretrained weights still load. Used where torchvision has no
    dilation option (BasicBlock ResNets) or only OS16 (MobileNetV3). Convolutions must use 'same' padding.

    Args:
        stages: consecutive stages, each a sequence of blocks, the first one holding a stride-2 conv.
        dilate: per stage, whether to dilate it; once a stage is dilated all later ones must be.
        exact: True: the formerly strided conv (and any conv before it) keeps the previous dilation and
            every later conv of the stage gets the new one, so the dense output subsampled by the removed
            stride equals the strided network's output (a trous; torchvision's ResNet convention).
            False: every conv of the stage gets the new dilation (torchvision's MobileNetV3 `dilated`).
    """
    if len(stages) != len(dilate):
        raise ValueError(f"{len(stages)} stages but {len(dilate)} dilate flags")
    if any(a and not b for a, b in pairwise(dilate)):
        raise ValueError(f"Once a stage is dilated every later stage must be: {list(dilate)}")
    dilation = 1
    for stage, flag in zip(stages, dilate, strict=True):
        if not flag:
            continue
        previous, dilation = dilation, dilation * 2
        past_stride = False
        for block in stage:
            for conv in block.modules():
                if not isinstance(conv, nn.Conv2d):
                    continue
                strided = max(conv.stride) > 1
                keep_previous = exact and (strided or not past_stride)
                _set_dilation(conv, previous if keep_previous else dilation)
                past_stride = past_stride or strided


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    conv.stride = (1, 1)
    kh, kw = conv.kernel_size
    if kh == 1 and kw == 1:
        return
    if conv.padding != ((kh - 1) // 2 * conv.dilation[0], (kw - 1) // 2 * conv.dilation[1]):
        raise ValueError(f"Cannot dilate {conv}: it does not use 'same' padding")
    conv.dilation = (dilation, dilation)
    conv.padding = ((kh - 1) // 2 * dilation, (kw - 1) // 2 * dilation)


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a FrozenBatchNorm2d with the same statistics, in place.

    Frozen BN keeps affine and running statistics as buffers: nothing is trained and train mode does not
    update them (useful with the small per-GPU batches of video training). Returns `module`.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            # A BN without affine terms or running statistics keeps the frozen defaults (1, 0, 0, 1).
            for key in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(child, key)
                if value is not None:
                    setattr(frozen, key, value.detach().clone())
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


class StatisticsFrozenBatchNorm2d(FrozenBatchNorm2d):
    """A FrozenBatchNorm2d whose affine weight and bias are trainable parameters: the statistics stay fixed in
    train mode too (mmdetection's ``norm_eval=True`` with ``requires_grad=True``, the official VPSNet backbone).

    forward(x: (B, C, H, W) float) -> (B, C, H, W) float. State-dict keys: weight, bias, running_mean,
    running_var (a BatchNorm2d state loads: its ``num_batches_tracked`` is dropped). Not a ``_BatchNorm``, so
    DDP's ``sync_batchnorm`` conversion leaves it alone.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps)
        weight, bias = self.weight, self.bias
        del self.weight, self.bias  # buffers of FrozenBatchNorm2d -> parameters
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)


def freeze_batch_norm_statistics(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a :class:`StatisticsFrozenBatchNorm2d` with the same state, in
    place: statistics frozen, affine trained (the official VPSNet backbone's ``norm_eval``). Returns `module`."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = StatisticsFrozenBatchNorm2d(child.num_features, eps=child.eps)
            # A BN without affine terms or running statistics keeps the frozen defaults (1, 0, 0, 1).
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    value = getattr(child, key)
                    if value is not None:
                        getattr(frozen, key).copy_(value.detach())
            frozen.requires_grad_(all(p.requires_grad for p in child.parameters()))
            setattr(module, name, frozen)
        else:
            freeze_batch_norm_statistics(child)
    return module


def resolve_weights(weights: WeightsArg, weights_enum: type[WeightsEnum]) -> WeightsEnum | Path | None:
    """Turn a `weights` argument into None, a torchvision weights entry, or a local file path.

    A string that names an entry of `weights_enum` ("IMAGENET1K_V1", "DEFAULT", or with the enum's class
    prefix) is taken as that entry; any other string or path-like is a local state-dict file.
    """
    if weights is None:
        return None
    if isinstance(weights, WeightsEnum):
        return weights_enum.verify(weights)
    if isinstance(weights, str):
        member = weights.removeprefix(weights_enum.__name__ + ".")
        if member in weights_enum.__members__:
            return weights_enum[member]
        return Path(weights)
    if isinstance(weights, os.PathLike):
        return Path(weights)
    raise TypeError(f"weights must be None, a path or a {weights_enum.__name__} name, got {weights!r}")


class WeightsFileError(DataError):
    """A weights file given by the user that is not a loadable state dict, or does not fit the network."""


def read_state_dict(path: str | os.PathLike, *, what: str, key: str,
                    unwrap: str | tuple[str, ...] | None = None) -> Mapping[str, torch.Tensor]:
    """A state dict from a local file, loaded with ``torch.load(weights_only=True)``: a pickle that would run
    code, a truncated or foreign file, or anything but a mapping of tensors is refused naming ``path``.

    Args:
        what: how the messages name the file, e.g. "Backbone weights file".
        key: the config key that gave it, e.g. "backbone.weights" (for the fix).
        unwrap: the key(s) under which some scripts nest the state dict (torchvision's references save
            ``{"model": state_dict, ...}``, timm's ``{"state_dict": ...}``): the first present is taken.

    Raises:
        WeightsFileError: the file cannot be loaded as a state dict.
    """
    import pickle
    import zipfile

    fix = f"give {key}=<a file written by torch.save(model.state_dict(), path)>, a torchvision weights name, or null"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            AttributeError, TypeError) as err:
        raise WeightsFileError(f"{what} {str(path)!r} cannot be loaded as a state dict ({load_failure_reason(err)}); "
                               f"the file is truncated, not a PyTorch file, or holds more than tensors; {fix}") from err
    for name in (unwrap,) if isinstance(unwrap, str) else (unwrap or ()):
        if isinstance(state, Mapping) and isinstance(state.get(name), Mapping):
            state = state[name]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = type(state).__name__ if not isinstance(state, Mapping) else "a mapping holding non-tensor values"
        raise WeightsFileError(f"{what} {str(path)!r} holds {found}, not a state dict of tensors; {fix}")
    return state


def load_weights_file(
    module: nn.Module,
    path: Path,
    *,
    weights_enum: type[WeightsEnum],
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Strictly load a local state dict (torch.load(weights_only=True)) into `module`.

    Keys starting with `ignore_prefixes` (a torchvision classifier head, e.g. "fc.") are dropped, so both a
    backbone state dict and a full torchvision classifier state dict load. Missing BatchNorm
    `num_batches_tracked` counters are tolerated (a frozen-BN backbone does not store them). Any other
    missing, unexpected or mis-shaped key raises a ValueError that names the file.
    """
    if not path.is_file():
        from vidseg.utils.config_check import describe_missing_path

        names = ", ".join(weights_enum.__members__)
        what = "is a folder, not a file" if path.is_dir() else describe_missing_path(path) or "is not a regular file"
        error = FileNotFoundError if what == "does not exist" else WeightsFileError
        raise error(
            f"Backbone weights file {str(path)!r} {what}. weights must be None, a local state-dict "
            f"file, or one of the {weights_enum.__name__} names: {names}"
        )
    state = read_state_dict(path, what="Backbone weights file", key="backbone.weights")
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if keys
    ]
    if problems:
        raise WeightsFileError(
            f"Backbone weights file {str(path)!r} does not match {type(module).__name__}: "
            + "; ".join(problems)
        )
    module.load_state_dict(state, strict=False)  # strictness checked above, bar num_batches_tracked

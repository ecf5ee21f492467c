"""Name -> builder registry for backbones, in the style of torchvision's register_model / get_model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from vidseg.backbones.base import freeze_batch_norm_statistics

BuilderT = TypeVar("BuilderT", bound=Callable[..., nn.Module])

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[BuilderT], BuilderT]:
    """Decorator that registers a keyword-only backbone builder under `name`.

    Example::

        @register_backbone("resnet50")
        def resnet50(*, weights=None, output_stride=16, frozen_bn=False, **kwargs) -> ResNetBackbone: ...
    """

    def decorator(builder: BuilderT) -> BuilderT:
        if name in _BACKBONES:
            raise ValueError(f"Backbone {name!r} is already registered")
        _BACKBONES[name] = builder
        return builder

    return decorator


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(_BACKBONES)


def get_backbone_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered under `name`; ValueError listing the available names otherwise."""
    try:
        return _BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"Unknown backbone {name!r}; available backbones: {', '.join(list_backbones())}"
        ) from None


# Other libraries' model zoos, selected with library=<key>: their builders take the library's model name.
LIBRARIES = ("timm",)


def get_backbone(name: str, *, library: str | None = None, **kwargs: Any) -> nn.Module:
    """Build the backbone registered under `name`; `kwargs` go to its builder (weights, output_stride...).

    ``library="timm"``: `name` is a timm model name instead (see vidseg.backbones.timm_encoder).
    ``frozen_bn``: True (FrozenBatchNorm2d: statistics and affine frozen), False (trained), or "statistics"
    (statistics frozen, affine trained: :func:`vidseg.backbones.base.freeze_batch_norm_statistics`).
    """
    if kwargs.get("frozen_bn") == "statistics":
        return freeze_batch_norm_statistics(get_backbone(name, library=library, **{**kwargs, "frozen_bn": False}))
    if library is None:
        return get_backbone_builder(name)(**kwargs)
    if library == "timm":
        from vidseg.backbones.timm_encoder import timm_backbone

        return timm_backbone(name, **kwargs)
    raise ValueError(f"unknown backbone library {library!r}; use one of {', '.join(LIBRARIES)} or none (vidseg's "
                     f"registry: {', '.join(list_backbones())})")

"""Encoders from timm in the backbone zoo: any timm model with ``features_only`` and a dilated output stride.

    backbone = get_backbone("convnext_tiny", library="timm", output_stride=16)   # random init, never downloads
    python -m vidseg.train task=vos backbone=timm backbone.name=xception65         # the paper's Xception-65

The four feature levels at nominal strides 4, 8, 16, 32 become c2..c5 (timm's ``output_stride`` argument
dilates the deepest stages, like the torchvision backbones). Weights:
- None: random init (what tests and ``for_inference`` copies use; nothing is downloaded);
- a local file (``.pth``, ``.pt``, ``.bin``, ``.safetensors`` or any existing path): loaded by timm's own
  pretrained loader, offline, classifier keys dropped;
- "DEFAULT" or a pretrained tag ("ra3_in1k", or "xception65.ra3_in1k"): timm downloads it from the Hugging
  Face hub on first use (needs internet; cached under $HF_HOME).
Inputs are normalised with the ImageNet mean/std by the model; timm weights trained with another
normalisation (``timm.get_pretrained_cfg(name).mean``) then see slightly shifted inputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from vidseg.backbones.base import Backbone, check_output_stride, read_state_dict

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def _weights_arguments(name: str, weights: str | os.PathLike | None) -> tuple[str, dict[str, Any]]:
    """(model name for timm.create_model, its pretrained keywords) for a ``weights`` argument."""
    if weights is None:
        return name, {"pretrained": False}
    path = Path(weights)
    if path.is_file() or path.suffix in WEIGHT_FILE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(
                f"timm weights file {str(path)!r} does not exist; weights must be null, a local file, or DEFAULT / a "
                f"timm pretrained tag of {name!r} (downloads)"
            )
        if path.suffix != ".safetensors":  # a pickle: refused in one line if truncated, foreign or running code
            read_state_dict(path, what="timm weights file", key="backbone.weights", unwrap=("state_dict", "model"))
        return name, {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path.resolve())}}
    tag = str(weights)
    if tag.upper() == "DEFAULT":
        return name, {"pretrained": True}
    return (tag if "." in tag else f"{name}.{tag}"), {"pretrained": True}


class TimmBackbone(Backbone):
    """A timm ``features_only`` model tapped at nominal strides 4, 8, 16, 32.

    forward(x: (B, 3, H, W) float, normalised) -> {"c2".."c5"}: (B, out_channels[k], ceil(H / strides[k]),
    ceil(W / strides[k])) float, strides[k] = min(nominal, output_stride).

    Args:
        name: a timm model name (``timm.list_models()``), e.g. "resnet50", "xception65", "convnext_tiny".
        output_stride: 8, 16 or 32 (the model must accept timm's ``output_stride``).
        weights: see the module docstring.
        frozen_bn: replace its BatchNorms by frozen ones (timm.layers.freeze_batch_norm_2d).
        kwargs: passed to ``timm.create_model``.
    """

    def __init__(self, name: str, *, output_stride: int = 16, weights: str | os.PathLike | None = None,
                 frozen_bn: bool = False, **kwargs: Any) -> None:
        import timm  # imported on use: importing vidseg.backbones stays fast

        check_output_stride(output_stride)
        if not timm.is_model(name.split(".")[0]):
            raise ValueError(f"{name!r} is not a timm model; see timm.list_models(), e.g. resnet50, xception65, "
                             "convnext_tiny, efficientnet_b3")
        model_name, pretrained = _weights_arguments(name, weights)
        extra = {} if output_stride == 32 else {"output_stride": output_stride}
        try:
            body = timm.create_model(model_name, features_only=True, **extra, **pretrained, **kwargs)
        except (TypeError, ValueError, AssertionError, NotImplementedError) as err:
            raise ValueError(f"timm model {name!r} cannot be built as a features_only encoder at output stride "
                             f"{output_stride}: {err}") from err
        except Exception as err:  # noqa: BLE001  network / hub errors while fetching weights by name
            if not pretrained.get("pretrained") or "pretrained_cfg_overlay" in pretrained:
                raise
            raise RuntimeError(f"cannot get the timm weights {model_name!r} ({err}); weights by name are downloaded "
                               "from the Hugging Face hub (online only): give a local file instead") from err
        reductions = list(body.feature_info.reduction())
        channels = list(body.feature_info.channels())
        if 4 not in reductions or reductions.index(4) + 4 > len(reductions):
            raise ValueError(f"timm model {name!r} has no features at strides 4, 8, 16, 32 (its feature strides at "
                             f"output stride {output_stride}: {reductions})")
        first = reductions.index(4)
        taps = list(range(first, first + 4))
        expected = [min(4 * 2**i, output_stride) for i in range(4)]
        if [reductions[i] for i in taps] != expected:
            raise ValueError(f"timm model {name!r} gives feature strides {[reductions[i] for i in taps]} at output "
                             f"stride {output_stride}, expected {expected} (it may not support dilation)")
        super().__init__({f"c{k + 2}": channels[i] for k, i in enumerate(taps)}, output_stride)
        if frozen_bn:
            from timm.layers import freeze_batch_norm_2d

            body = freeze_batch_norm_2d(body)
        self.body = body
        self.timm_name = name
        self._taps = taps

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.body(x)
        return {f"c{k + 2}": features[i] for k, i in enumerate(self._taps)}


def timm_backbone(name: str, **kwargs: Any) -> TimmBackbone:
    """Builder behind ``get_backbone(name, library="timm", ...)``; see :class:`TimmBackbone`."""
    return TimmBackbone(name, **kwargs)

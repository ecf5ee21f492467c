"""Datasets, datamodules, clip transforms, toy data and video I/O.

Names are imported lazily, so ``python -m vidseg.data.toy`` or ``vidseg.data.io`` do not pull in torch and
Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DavisDataModule": "davis",
    "DavisEvalDataset": "davis",
    "DavisTrainDataset": "davis",
    "check_sequence": "davis",
    "collate_single": "collate",
    "collate_train": "davis",
    "list_sequences": "davis",
    "sequence_paths": "davis",
    "generate_toy_davis": "toy",
    "build_clip_transform": "transforms",
    "remap_to_reference": "transforms",
    "OverlayVideoWriter": "video",
    "VideoError": "video",
    "VideoWriter": "video",
    "count_frames": "video",
    "overlay": "video",
    "read_video_frames": "video",
    "write_video": "video",
    "DAVIS_PALETTE": "io",
    "MaskFormatError": "io",
    "read_image": "io",
    "read_mask": "io",
    "write_image": "io",
    "write_mask": "io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

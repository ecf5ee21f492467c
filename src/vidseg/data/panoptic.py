"""COCO-panoptic PNG and JSON I/O shared by the VPS datasets, the submission reader and the writers.

A panoptic PNG is ``(H, W, 3) uint8`` RGB whose colour encodes a segment id, ``id = R + 256 G + 256^2 B``;
id 0 (black) is void. The segments of a frame are listed in a JSON record
``{"segments_info": [{"id", "category_id", "iscrowd", "area", ...}]}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from vidseg.data.io import atomic_path
from vidseg.errors import DataError, MaskFormatError

# A palette or grayscale PNG stores one byte per pixel: its values are class or instance ids, not the
# COCO-panoptic colour code. Reading it as RGB would silently turn every id into a grey colour.
_PANOPTIC_HINT = (
    "expected a COCO-panoptic RGB PNG (segment id = R + 256*G + 256^2*B, 0 = void). Convert id maps with "
    "vidseg.data.panoptic.write_panoptic_png(path, ids)"
)


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` COCO-panoptic colours -> ``(H, W) int64`` segment ids."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """``(H, W)`` integer segment ids in [0, 256^3) -> ``(H, W, 3) uint8`` COCO-panoptic colours."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"segment ids must be in [0, 16777216) to be stored as RGB, got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """Read a COCO-panoptic RGB PNG as ``(H, W) int64`` segment ids (0 = void).

    Raises:
        FileNotFoundError: the file does not exist.
        MaskFormatError: corrupt or truncated file, or a grayscale/palette/RGBA PNG.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"panoptic PNG not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now so truncated files fail here
            mode = img.mode
            if mode != "RGB":
                raise MaskFormatError(f"{path}: PNG mode is {mode!r} ({_describe_mode(mode)}), {_PANOPTIC_HINT}")
            rgb = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise MaskFormatError(f"{path}: cannot decode PNG ({err}); the file is corrupt or truncated, "
                              "write or copy it again") from err
    return rgb_to_id(rgb)


def _describe_mode(mode: str) -> str:
    return {"P": "palette", "L": "grayscale", "I": "32-bit grayscale", "I;16": "16-bit grayscale",
            "RGBA": "RGB with alpha", "LA": "grayscale with alpha", "1": "binary"}.get(mode, "not RGB")


def write_panoptic_png(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write ``(H, W)`` segment ids as a COCO-panoptic RGB PNG, atomically."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"segment ids must be (H, W), got shape {ids.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(id_to_rgb(ids), mode="RGB").save(tmp, format="PNG")


def read_json(path: str | os.PathLike, *, what: str = "JSON file") -> Any:
    """Load a JSON file; a missing or corrupt file raises :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: {what} is not valid JSON ({err}); the file is corrupt or truncated, "
                        "write or copy it again") from err

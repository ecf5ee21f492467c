"""Tiny toy Cityscapes-VPS / VIPER-VPS sets for tests, generated once per session and parameter set.

Tests use the fixtures of tests/conftest.py built on this: ``make_toy_vps(format="viper", seed=3)`` -> root
Path, or the ready ``toy_cityscapes_vps_root`` / ``toy_viper_root`` (every set is generated once per session).
The sets are read-only: copy one (``copy_toy_vps``) before modifying files. Defaults (TOY_VPS_PARAMS):
2 train + 2 val clips at 64x128, up to 5 things, seed 0; Cityscapes-VPS clips have 30 frames (every 5th
annotated), VIPER videos 10 (val: every frame annotated, train: every 5th).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

TOY_VPS_PARAMS = dict(seed=0, videos=2, val_videos=2, height=64, width=128, frames=10, max_objects=5)

_CACHE: dict[tuple, Path] = {}  # shared by every module that imports the fixtures: one set per parameters


def make_toy_vps_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make(format=..., **params) -> root`` generating each parameter set once per session."""
    from vidseg.data.toy_vps import generate_toy_vps

    def make(format: str = "cityscapes_vps", **params) -> Path:
        full = {**TOY_VPS_PARAMS, **params}
        key = (format, *sorted(full.items()))
        if key not in _CACHE or not _CACHE[key].is_dir():
            _CACHE[key] = generate_toy_vps(tmp_path_factory.mktemp(f"toy_{format}") / "root", format=format, **full)
        return _CACHE[key]

    return make


def copy_toy_vps(root: Path, dest: Path) -> Path:
    """A writable copy of a toy set (for tests that damage files)."""
    return Path(shutil.copytree(root, dest))

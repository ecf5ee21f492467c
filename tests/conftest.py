"""Shared fixtures: tiny data generated on the fly (never downloaded), once per test session.

- ``toy_davis_root``: a toy DAVIS 2017-format set (see vidseg.data.toy), parameters in TOY_DAVIS_PARAMS:
  3 train + 2 val sequences of 8 frames at 64x112, up to 3 objects, seed 0. Read-only: copy it
  (``shutil.copytree``) before modifying files.
- ``make_toy_davis(**params)``: the same generator with other parameters (cached per parameter set).
- ``toy_video_path``: an H.264 mp4 of the first toy val sequence (8 frames, 64x112, 10 fps).
- ``make_toy_vps(format="cityscapes_vps"|"viper"|"vipseg", **params)``, ``toy_cityscapes_vps_root``,
  ``toy_viper_root``, ``toy_vipseg_root``:
  tiny toy VPS sets in the official layouts (see tests/helpers/toy_vps.py), cached per parameter set.
- ``toy_youtube_vos_root``: a toy YouTube-VOS-format set (vidseg.data.toy.generate_toy_youtube_vos), parameters
  in TOY_YOUTUBE_VOS_PARAMS: 3 train + 3 valid videos of 8 frames at 64x112, 2..3 objects, seed 0; valid has
  objects that appear after the first frame and sparse annotations. Read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TOY_DAVIS_PARAMS = dict(num_train=3, num_val=2, frames=8, height=64, width=112, max_objects=3, seed=0)
TOY_YOUTUBE_VOS_PARAMS = dict(num_train=3, num_valid=3, frames=8, height=64, width=112, max_objects=3, seed=0)


@pytest.fixture(scope="session")
def make_toy_davis(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    from vidseg.data.toy import generate_toy_davis

    cache: dict[tuple, Path] = {}

    def make(**params) -> Path:
        full = {**TOY_DAVIS_PARAMS, **params}
        key = tuple(sorted(full.items()))
        if key not in cache:
            cache[key] = generate_toy_davis(tmp_path_factory.mktemp("toy_davis"), **full)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def toy_davis_root(make_toy_davis: Callable[..., Path]) -> Path:
    return make_toy_davis()


@pytest.fixture(scope="session")
def toy_video_path(toy_davis_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidseg.data.io import read_image
    from vidseg.data.video import write_video

    seq = (toy_davis_root / "ImageSets" / "2017" / "val.txt").read_text().split()[0]
    frames = sorted((toy_davis_root / "JPEGImages" / "480p" / seq).glob("*.jpg"))
    out = tmp_path_factory.mktemp("toy_video") / f"{seq}.mp4"
    return write_video(out, (read_image(f) for f in frames), fps=10)


@pytest.fixture(scope="session")
def make_toy_vps(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_toy_vps(format="cityscapes_vps"|"viper", **params) -> root; tiny sets, cached per parameter set."""
    from tests.helpers.toy_vps import make_toy_vps_factory

    return make_toy_vps_factory(tmp_path_factory)


@pytest.fixture(scope="session")
def toy_cityscapes_vps_root(make_toy_vps: Callable[..., Path]) -> Path:
    return make_toy_vps("cityscapes_vps")


@pytest.fixture(scope="session")
def toy_viper_root(make_toy_vps: Callable[..., Path]) -> Path:
    return make_toy_vps("viper")


@pytest.fixture(scope="session")
def toy_vipseg_root(make_toy_vps: Callable[..., Path]) -> Path:
    return make_toy_vps("vipseg")


@pytest.fixture(scope="session")
def toy_youtube_vos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidseg.data.toy import generate_toy_youtube_vos

    return generate_toy_youtube_vos(tmp_path_factory.mktemp("toy_youtube_vos"), **TOY_YOUTUBE_VOS_PARAMS)

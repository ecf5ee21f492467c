"""The toy VIPSeg writer (``--format vipseg``): the official original layout, its 720p conversion, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.data.toy_vps import _STUFF, _THING_CLASS, generate_toy_vps, main
from vidseg.data.vipseg import VIPSegDataModule
from vidseg.data.vipseg_layout import (
    VIPSEG_720P_LAYOUT,
    VIPSEG_ORIGINAL_LAYOUT,
    panomask_category,
    read_panomask,
    read_panoptic_video_gt,
    read_split,
)
from vidseg.errors import DataError

TINY = dict(seed=0, videos=1, val_videos=1, height=32, width=64, frames=3, max_objects=3)


@pytest.fixture(scope="module")
def toy_vipseg(make_toy_vps) -> Path:
    return make_toy_vps("vipseg")


def test_original_layout_values_and_lists(toy_vipseg: Path):
    train, val = read_split(toy_vipseg, "train"), read_split(toy_vipseg, "val")
    assert len(train) == 2 and len(val) == 2 and not set(train) & set(val)
    roles = set(_STUFF["vipseg"].values()) | set(_THING_CLASS["vipseg"].values())
    things = 0
    for video in train + val:
        frames = VIPSEG_ORIGINAL_LAYOUT.frames(toy_vipseg, video)
        assert len(frames) == 10 and frames[0] == "00000000"
        for frame in frames:
            png = VIPSEG_ORIGINAL_LAYOUT.panomask_path(toy_vipseg, video, frame)
            assert Image.open(png).mode.startswith("I")  # 16-bit grayscale: thing values exceed 255
            values = read_panomask(png)
            assert Image.open(VIPSEG_ORIGINAL_LAYOUT.image_path(toy_vipseg, video, frame)).size == (128, 64)
            cats = set(panomask_category(values).ravel().tolist()) - {-1}
            assert cats <= roles and (values == 0).any()  # the hood is void
            things += int((values > 124).any())
    assert things > 0
    assert json.loads((toy_vipseg / "panoVIPSeg_categories.json").read_text())[60]["name"] == "person"


def test_720p_layout_is_the_converted_toy_at_its_own_size(toy_vipseg: Path):
    video = read_split(toy_vipseg, "val")[0]
    original = read_panomask(VIPSEG_ORIGINAL_LAYOUT.panomask_path(toy_vipseg, video, "00000003"))
    converted = read_panomask(VIPSEG_720P_LAYOUT.panomask_path(toy_vipseg, video, "00000003"))
    assert np.array_equal(original, converted)
    gt = read_panoptic_video_gt(VIPSEG_720P_LAYOUT.panoptic_gt_json(toy_vipseg, "val"))
    assert [v.video_id for v in gt.videos] == sorted(read_split(toy_vipseg, "val")) and gt.num_frames == 20
    assert (gt.videos[0].frames[0].height, gt.videos[0].frames[0].width) == (64, 128)
    dm = VIPSegDataModule(toy_vipseg, split="val", crop_size=(64, 128))
    dm.setup("fit")
    assert len(dm.train_dataset) == 20 and len(dm.val_dataset) == 20


def test_same_parameters_same_files_and_other_parameters_refused(tmp_path: Path):
    a = generate_toy_vps(tmp_path / "a", format="vipseg", **TINY)
    main(["--root", str(tmp_path / "b"), "--format", "vipseg", *(f"--{k.replace('_', '-')}={v}"
                                                                 for k, v in TINY.items())])
    files = lambda root: {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))  # noqa: E731
                          if p.is_file() and p.name != ".vidseg-outputs.json"}
    assert files(a) == files(tmp_path / "b") and len(files(a)) > 20
    assert generate_toy_vps(a, format="vipseg", **TINY) == a  # complete: untouched
    with pytest.raises(DataError, match="other parameters"):
        generate_toy_vps(a, format="vipseg", **{**TINY, "seed": 1})

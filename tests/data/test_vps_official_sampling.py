"""VPS training samples follow the official pipeline by default: every instance with pixels in the crop is kept
(mmdetection keeps every box left after cropping), and a crop whose target or reference frame keeps no
instance is replaced by another random sample (RandomCrop returns None, the dataset draws again). The area
filter is an option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vidseg.data.cityscapes_vps import CityscapesVPSTrainDataset
from vidseg.data.vps_common import MAX_REDRAWS

CROP = (48, 96)


def _train(root: Path, **kw) -> CityscapesVPSTrainDataset:
    return CityscapesVPSTrainDataset(root, **{"crop_size": CROP, "seed": 0, **kw})


def _packed(thing: int) -> tuple[np.ndarray, list[dict]]:
    """A 10x10 label map (class | slot << 8) with a 3-pixel instance (slot 1) and a 20-pixel one (slot 2)."""
    semantic = np.zeros((10, 10), np.uint16)
    slots = np.zeros((10, 10), np.uint16)
    slots[0, :3] = 1
    slots[5:7, :] = 2
    semantic[slots > 0] = thing
    anns = [{"category_id": thing, "inst_id": 0}, {"category_id": thing, "inst_id": 1}]
    return semantic | (slots << 8), anns


def test_every_instance_with_pixels_is_kept_by_default(toy_cityscapes_vps_root: Path) -> None:
    ds = _train(toy_cityscapes_vps_root)
    thing = ds.info.thing_ids[0]
    packed, anns = _packed(thing)
    _, panoptic, instances = ds._targets(packed, anns)
    assert instances["labels"].tolist() == [thing, thing]
    assert instances["boxes"].tolist()[0] == [0, 0, 3, 1]
    filtered = _train(toy_cityscapes_vps_root, min_instance_area=16)
    _, panoptic, instances = filtered._targets(packed, anns)
    assert instances["track_ids"].tolist() == [thing * 1000 + 1]
    assert (panoptic[0, :3] == thing).all()  # the dropped fragment keeps the bare class id (ignored)


def test_crops_without_instances_are_redrawn(toy_cityscapes_vps_root: Path, monkeypatch) -> None:
    ds = _train(toy_cityscapes_vps_root)
    draws: list[int] = []

    def draw(i, rng, empty_draws=2):
        draws.append(i)
        n = 0 if len(draws) <= empty_draws else 1
        return {"instances": [{"labels": torch.zeros(1)}, {"labels": torch.zeros(n)}], "draw": len(draws)}

    monkeypatch.setattr(ds, "_draw", draw)
    assert ds[0]["draw"] == 3 and len(draws) == 3  # an empty reference crop is skipped too
    first_redraws = list(draws)
    draws.clear()
    assert ds[0]["draw"] == 3 and draws == first_redraws  # the redraws are part of the item's seeded draw
    draws.clear()
    monkeypatch.setattr(ds, "_draw", lambda i, rng: draw(i, rng, empty_draws=10**6))
    assert ds[0]["draw"] == MAX_REDRAWS + 1  # a set without instances does not loop forever
    draws.clear()
    monkeypatch.setattr(ds, "skip_crops_without_instances", False)
    monkeypatch.setattr(ds, "_draw", draw)
    assert ds[0]["draw"] == 1

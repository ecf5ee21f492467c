"""VIPER-VPS datasets and datamodule on the toy set (the machinery shared with Cityscapes-VPS is tested
in test_cityscapes_vps.py; here: what differs — file names, 23 classes, every val frame annotated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.toy_vps import copy_toy_vps
from vidseg.constants import IGNORE_LABEL
from vidseg.data.viper import VIPER_CATEGORIES, ViperDataModule, ViperEvalDataset, ViperTrainDataset
from vidseg.data.vps_layout import VIPER
from vidseg.errors import MaskFormatError


def test_train_samples(toy_viper_root: Path) -> None:
    ds = ViperTrainDataset(toy_viper_root, crop_size=(48, 96), min_instance_area=4)
    assert len(ds) == 4
    offsets = set()
    for _ in range(4):
        for index in range(len(ds)):
            item = ds[index]
            assert item["images"].shape == (2, 3, 48, 96) and item["panoptic"].shape == (2, 48, 96)
            frames = [VIPER.frame_index_of(n) for n in item["file_names"]]
            offsets.add(frames[1] - frames[0])
            for inst in item["instances"]:
                assert ((inst["labels"] >= 13) & (inst["labels"] <= 22)).all()
                assert (inst["track_ids"] // 1000 == inst["labels"]).all()
            assert set(torch.unique(item["semantic"]).tolist()) <= set(range(23)) | {IGNORE_LABEL}
    assert offsets == {-5, 5}  # the neighbouring annotated frame (train annotates every 5th frame)


def test_eval_every_frame_annotated(toy_viper_root: Path) -> None:
    ds = ViperEvalDataset(toy_viper_root)
    assert len(ds) == 20
    for index in range(len(ds)):
        item = ds[index]
        assert item["annotated"] and item["num_frames"] == 10
        assert item["panoptic_image_id"] == Path(item["file_name"]).stem == item["image_id"]
        labels = np.array(Image.open(toy_viper_root / "val_day" / "labelmap" / VIPER.gt_png_name(item["file_name"])))
        assert (item["semantic"].numpy() == labels).all()
        if item["is_first"]:
            assert torch.equal(item["images"][0], item["images"][1])


def test_datamodule_defaults_and_class_layout(toy_viper_root: Path) -> None:
    assert ViperDataModule.layout is VIPER and len(VIPER_CATEGORIES) == 23
    dm = ViperDataModule(toy_viper_root, crop_size=(32, 64), batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (2, 2, 3, 32, 64)
    from omegaconf import OmegaConf

    import vidseg.conf

    cfg = OmegaConf.load(Path(vidseg.conf.__file__).parent / "data" / "viper.yaml")
    assert cfg._target_ == "vidseg.data.viper.ViperDataModule" and cfg.root == "data/viper_vps"
    assert cfg.split == "val" and list(cfg.crop_size) == [800, 1600]


def test_missing_root_says_where_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        ViperDataModule().setup("validate")
    msg = str(err.value)
    assert "data/viper_vps" in msg and "on request" in msg
    assert "python -m vidseg.data.toy_vps --root data/toy_viper_vps --format viper --seed 0" in msg


def test_rgb_label_map_is_an_error(tmp_path: Path, toy_viper_root: Path) -> None:
    root = copy_toy_vps(toy_viper_root, tmp_path / "damaged")
    for path in (root / "train" / "labelmap").iterdir():
        Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(path)
    with pytest.raises(MaskFormatError, match="label map PNG is mode 'RGB'"):
        ViperTrainDataset(root, crop_size=(32, 64))[0]

"""Cityscapes-VPS (Kim et al., CVPR 2020): datasets and the Lightning datamodule for VPS (VPSNet).

Layout (the authors' release + Cityscapes ``leftImg8bit_sequence`` frames; see data/README.md)::

    <root>/instances_train_city_vps_rle.json      training: images, COCO RLE instances with inst_id
    <root>/train/img/<file_name>                  annotated frames (every 5th of each 30-frame clip)
    <root>/train/labelmap/<gt png>                uint8 trainId, 255 void
    <root>/im_all_info_val_city_vps.json          every frame of the val clips, id = vid * 10000 + frame
    <root>/val/img_all/<file_name>                30 frames per clip
    <root>/panoptic_gt_val_city_vps.json          + val/panoptic_video/<gt png>: evaluation ground truth

Classes are the 19 Cityscapes trainIds: 0-10 stuff, 11-18 things. Item keys and shapes, and the
``panoptic`` encoding: :mod:`vidseg.data.vps_common`.
"""

from __future__ import annotations

from pathlib import Path

from vidseg.data.vps_common import (
    MIN_INSTANCE_AREA,
    VPSDataModule,
    VPSDatasetInfo,
    VPSEvalDataset,
    VPSTrainDataset,
    collate_train,
)
from vidseg.data.vps_layout import CITYSCAPES_VPS

__all__ = ["CITYSCAPES_VPS_CATEGORIES", "CITYSCAPES_VPS_INFO", "CityscapesVPSDataModule", "CityscapesVPSEvalDataset",
           "CityscapesVPSTrainDataset", "MIN_INSTANCE_AREA", "collate_train"]

CITYSCAPES_VPS_URL = "https://github.com/mcahny/vps/blob/master/docs/DATASET.md"
_CLASSES = [  # (trainId name, colour) in trainId order; 11-18 are things
    ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)), ("fence", (190, 153, 153)), ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)), ("traffic sign", (220, 220, 0)), ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)), ("sky", (70, 130, 180)), ("person", (220, 20, 60)), ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)), ("truck", (0, 0, 70)), ("bus", (0, 60, 100)), ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)), ("bicycle", (119, 11, 32)),
]
CITYSCAPES_VPS_CATEGORIES = tuple(
    {"id": i, "name": name, "isthing": int(i >= 11), "color": list(color)} for i, (name, color) in enumerate(_CLASSES)
)


def _missing_root_message(root: Path, looked_for: Path) -> str:
    return (
        f"Cityscapes-VPS not found: {Path(root).resolve()} (looked for {looked_for}). Get it in two parts: "
        f"the authors' release (cityscapes-vps-dataset-1.0.zip, linked from {CITYSCAPES_VPS_URL}) unzipped to "
        "<root>, and Cityscapes' leftImg8bit_sequence + gtFine (val only) from https://www.cityscapes-dataset.com, "
        "merged in with the official prepare_data scripts (see data/README.md); then set data.root=<root>. "
        "For a quick CPU run use the toy set: `python -m vidseg.data.toy_vps --root data/toy_cityscapes_vps "
        "--format cityscapes_vps --seed 0` and data.root=data/toy_cityscapes_vps."
    )


CITYSCAPES_VPS_INFO = VPSDatasetInfo(
    layout=CITYSCAPES_VPS, categories=CITYSCAPES_VPS_CATEGORIES, frames_per_clip=30,
    missing_root_message=_missing_root_message,
)


class CityscapesVPSTrainDataset(VPSTrainDataset):
    """:class:`VPSTrainDataset` on Cityscapes-VPS (``train`` split); arguments as there, without ``info``."""

    def __init__(self, root=None, **kwargs) -> None:
        super().__init__(root, CITYSCAPES_VPS_INFO, **kwargs)


class CityscapesVPSEvalDataset(VPSEvalDataset):
    """:class:`VPSEvalDataset` on Cityscapes-VPS: the 30 frames of each ``val`` (or ``test``) clip."""

    def __init__(self, root=None, **kwargs) -> None:
        super().__init__(root, CITYSCAPES_VPS_INFO, **kwargs)


class CityscapesVPSDataModule(VPSDataModule):
    """Cityscapes-VPS for VPSNet: see :class:`VPSDataModule` (defaults: crop 800x1600, scale 0.8-1.5)."""

    info = CITYSCAPES_VPS_INFO
    layout = CITYSCAPES_VPS

"""VIPER-VPS (the "day" split of VIPER in the VPS format, Kim et al. 2020): datasets and datamodule.

Layout (released by the authors on request; see data/README.md)::

    <root>/instances_train_05_viper_coco.json   training: every 5th frame, COCO RLE instances with inst_id
    <root>/train/img/<file_name>                training frames (jpg)
    <root>/train/labelmap/<file_name .png>      uint8 class ids 0-22, 255 void
    <root>/viper_panoptic_val_day_video.json    evaluation: every frame of the val_day videos
    <root>/val_day/img/<file_name>              + val_day/panoptic_video/<file_name .png> (COCO-panoptic RGB)
    <root>/instances_val_day_01_viper_coco.json every val_day frame (not needed by vidseg)

The official code reads images of every split from ``<root>/<split>/img`` (tools/dataset/viper.py) and
ships no VIPER training config; ``train/labelmap`` follows the Cityscapes-VPS training layout
(``seg_prefix=train/labelmap``). 23 classes: 0-12 stuff, 13-22 things; evaluation leaves out class 11
(mobilebarrier). Item keys and shapes: :mod:`vidseg.data.vps_common`.
"""

from __future__ import annotations

from pathlib import Path

from vidseg.data.vps_common import VPSDataModule, VPSDatasetInfo, VPSEvalDataset, VPSTrainDataset
from vidseg.data.vps_layout import VIPER

__all__ = ["VIPER_CATEGORIES", "VIPER_INFO", "ViperDataModule", "ViperEvalDataset", "ViperTrainDataset"]

_CLASSES = [  # class order inferred from the official palette (tools/dataset/viper.py); 13-22 are things
    ("sky", (70, 130, 180)), ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("terrain", (152, 251, 152)),
    ("tree", (87, 182, 35)), ("vegetation", (35, 142, 35)), ("building", (70, 70, 70)),
    ("infrastructure", (153, 153, 153)), ("fence", (190, 153, 153)), ("billboard", (150, 20, 20)),
    ("trafficsign", (220, 220, 0)), ("mobilebarrier", (180, 180, 100)), ("trash", (81, 0, 21)),
    ("trafficlight", (250, 170, 30)), ("firehydrant", (173, 153, 153)), ("chair", (168, 153, 153)),
    ("trashcan", (81, 0, 81)), ("person", (220, 20, 60)), ("motorcycle", (0, 0, 230)), ("car", (0, 0, 142)),
    ("van", (0, 80, 100)), ("bus", (0, 60, 100)), ("truck", (0, 0, 70)),
]
VIPER_CATEGORIES = tuple(
    {"id": i, "name": name, "isthing": int(i >= 13), "color": list(color)} for i, (name, color) in enumerate(_CLASSES)
)
# The official VIPER evaluation excludes this class from every average.
VIPER_EXCLUDED_CLASS = 11


def _missing_root_message(root: Path, looked_for: Path) -> str:
    return (
        f"VIPER-VPS not found: {Path(root).resolve()} (looked for {looked_for}). The converted VIPER 'day' split "
        "is released by the VPSNet authors on request (mcahny@kaist.ac.kr, see https://github.com/mcahny/vps); "
        "VIPER itself is at https://playing-for-benchmarks.org. Unpack it so that <root>/val_day/img and "
        "<root>/viper_panoptic_val_day_video.json exist (layout in data/README.md), then set data.root=<root>. "
        "For a quick CPU run use the toy set: `python -m vidseg.data.toy_vps --root data/toy_viper_vps "
        "--format viper --seed 0` and data.root=data/toy_viper_vps."
    )


VIPER_INFO = VPSDatasetInfo(layout=VIPER, categories=VIPER_CATEGORIES, frames_per_clip=None,
                            missing_root_message=_missing_root_message)


class ViperTrainDataset(VPSTrainDataset):
    """:class:`VPSTrainDataset` on VIPER-VPS (``train`` split); arguments as there, without ``info``."""

    def __init__(self, root=None, **kwargs) -> None:
        super().__init__(root, VIPER_INFO, **kwargs)


class ViperEvalDataset(VPSEvalDataset):
    """:class:`VPSEvalDataset` on VIPER-VPS: every frame of each ``val_day`` video."""

    def __init__(self, root=None, **kwargs) -> None:
        super().__init__(root, VIPER_INFO, **kwargs)


class ViperDataModule(VPSDataModule):
    """VIPER-VPS for VPSNet: see :class:`VPSDataModule`."""

    info = VIPER_INFO
    layout = VIPER

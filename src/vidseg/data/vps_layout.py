"""Where the published VPS datasets keep their evaluation files, and how their names map to each other.

The facts below follow the official releases (vpsnet.md; mcahny/vps docs/DATASET.md, tools/eval_vpq.py,
tools/dataset/viper.py). Datasets, the toy generator and the submission evaluator all read them from here.

Cityscapes-VPS (``<root>`` = data/cityscapes_vps)::

    panoptic_gt_<split>_city_vps.json     images[{id, width, height, file_name}], annotations[{image_id,
                                          file_name, segments_info[{id, category_id, iscrowd, area}]}],
                                          categories[{id, name, isthing, color}]
    <split>/panoptic_video/<gt png>       COCO-panoptic RGB; thing ids constant within a video
    image file_name  0005_0025_frankfurt_000000_001736_leftImg8bit.png   (<vid>_<frame 1..30>_<city>_...)
    gt png           ..._gtFine_color.png (from _leftImg8bit.png) or ..._final_mask.png (from _newImg8bit.png)
    image id         0005_0025_frankfurt_000000_001736 -> the submission's pan_pred/<image id>.png
    video            the first 4 characters of file_name; 6 annotated frames per video (every 5th frame)

VIPER-VPS (``<root>`` = data/viper_vps)::

    viper_panoptic_<split>_video.json     the same keys; split "val_day"
    <split>/panoptic_video/<gt png>       gt png = basename of the image file_name with .png
    image file_name  e.g. 001/001_00000.jpg; video = its folder, else the basename up to the first "_";
                     every frame is annotated

VIPSeg (``<root>`` = data/vipseg, the folder holding ``VIPSeg_720P/``; all facts in
:mod:`vidseg.data.vipseg_layout`)::

    VIPSeg_720P/panoptic_gt_VIPSeg_<split>.json   nested per video: videos[{video_id, images}],
                                                  annotations[{video_id, annotations[...]}]
    VIPSeg_720P/panomasksRGB/<video>/<file_name>  COCO-panoptic RGB; the submission's pan_pred/<video>/<file_name>
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vidseg.data.names import check_name, checked_join
from vidseg.data.vipseg_layout import VIPSegLayout


@dataclass(frozen=True)
class VPSLayout:
    """File naming of one VPS dataset's panoptic ground truth (see the module docstring).

    Attributes:
        name: "cityscapes_vps", "viper" or "vipseg".
        default_root: where the dataset is looked for without ``data.root``.
        split_names: user-facing split -> the split name in the dataset's files ("val" -> "val_day" for VIPER).
        datamodule: the ``_target_`` of its datamodule, so an evaluator can find the layout of a data config
            without importing the datamodule (and with it torch and Lightning).
    """

    name: str
    default_root: str
    split_names: dict
    datamodule: str

    def split_name(self, split: str) -> str:
        """The split's name in the dataset's files; one folder/file name part (a config value: checked)."""
        return check_name(self.split_names.get(split, split), source="data.split", what="split")

    @staticmethod
    def _join(root: str | Path, *names: str) -> Path:
        return checked_join(root, *names, source="data.split", what="split")

    def panoptic_gt_json(self, root: str | Path, split: str) -> Path:
        split = self.split_name(split)
        if self.name == "vipseg":
            return VIPSegLayout.panoptic_gt_json(root, split)
        if self.name == "cityscapes_vps":
            return self._join(root, f"panoptic_gt_{split}_city_vps.json")
        return self._join(root, f"viper_panoptic_{split}_video.json")

    def panoptic_gt_dir(self, root: str | Path, split: str) -> Path:
        if self.name == "vipseg":  # one folder for all splits; PNGs are <video>/<file_name>
            return VIPSegLayout.panoptic_rgb_dir(root)
        return self._join(root, self.split_name(split), "panoptic_video")

    def gt_png_name(self, file_name: str) -> str:
        """The ground-truth PNG name of an image ``file_name`` (as listed in the GT JSON's images)."""
        if self.name == "cityscapes_vps":
            return file_name.replace("_newImg8bit.png", "_final_mask.png").replace("_leftImg8bit.png",
                                                                                   "_gtFine_color.png")
        return PurePosixPath(file_name).with_suffix(".png").name

    def video_of(self, image: dict) -> str:
        """The video an image record belongs to (windows never cross videos)."""
        if "video_id" in image:
            return str(image["video_id"])
        file_name = PurePosixPath(image["file_name"])
        if self.name == "cityscapes_vps":
            return file_name.name[:4]
        if len(file_name.parts) > 1:
            return file_name.parts[-2]
        return file_name.name.split("_")[0]

    # ---- training and dense-frame files (added for the VPS datasets; same naming rules as above) ----

    def instances_json(self, root: str | Path, split: str) -> Path:
        """COCO instances (RLE masks, per-annotation ``inst_id``) of the annotated frames of ``split``."""
        if self.name == "cityscapes_vps":
            return self._join(root, f"instances_{self.split_name(split)}_city_vps_rle.json")
        # VIPER: train lists every 5th frame ("_05"), val_day every frame ("_01").
        split = self.split_name(split)
        return self._join(root, f"instances_{split}_{'05' if split == 'train' else '01'}_viper_coco.json")

    def frames_json(self, root: str | Path, split: str) -> Path:
        """The JSON listing every frame of ``split`` to run inference on, in video order.

        Cityscapes-VPS: ``im_all_info_<split>_city_vps.json`` (30 frames per clip, id = vid * 10000 + frame);
        VIPER annotates every frame, so its panoptic ground-truth JSON lists them all.
        """
        if self.name == "cityscapes_vps":
            return self._join(root, f"im_all_info_{self.split_name(split)}_city_vps.json")
        return self.panoptic_gt_json(root, split)

    def image_dir(self, root: str | Path, split: str, *, all_frames: bool = False) -> Path:
        """Images of the annotated frames (``<split>/img``) or, Cityscapes-VPS only, of all frames (``img_all``)."""
        sub = "img_all" if all_frames and self.name == "cityscapes_vps" else "img"
        return self._join(root, self.split_name(split), sub)

    def labelmap_dir(self, root: str | Path, split: str) -> Path:
        """uint8 class-id PNGs (255 void) of the annotated frames, named by :meth:`gt_png_name`."""
        return self._join(root, self.split_name(split), "labelmap")

    def panoptic_inst_dir(self, root: str | Path, split: str) -> Path:
        """Cityscapes-VPS 16-bit PNGs: stuff class, thing class * 1000 + instance, 255 void (by-product)."""
        return self._join(root, self.split_name(split), "panoptic_inst")

    @staticmethod
    def frame_index_of(file_name: str) -> int:
        """The frame number within its video: the second ``_`` field (``0005_0025_...`` -> 25, ``001_00010`` -> 10)."""
        parts = PurePosixPath(file_name).name.split("_")
        if len(parts) < 2 or not parts[1].split(".")[0].isdigit():
            raise ValueError(f"cannot read a frame number from {file_name!r} (expected <video>_<frame>_...)")
        return int(parts[1].split(".")[0])

    @staticmethod
    def image_id_of(file_name: str) -> str:
        """The image id (and pan_pred PNG stem) of an image file: its name without the frame-type suffix."""
        stem = PurePosixPath(file_name).name
        for suffix in ("_leftImg8bit", "_newImg8bit"):
            stem = stem.replace(suffix, "")
        return PurePosixPath(stem).stem


CITYSCAPES_VPS = VPSLayout("cityscapes_vps", "data/cityscapes_vps", {},
                           "vidseg.data.cityscapes_vps.CityscapesVPSDataModule")
VIPER = VPSLayout("viper", "data/viper_vps", {"val": "val_day", "train": "train"}, "vidseg.data.viper.ViperDataModule")
VIPSEG = VPSLayout("vipseg", "data/vipseg", {}, "vidseg.data.vipseg.VIPSegDataModule")
LAYOUTS = {layout.name: layout for layout in (CITYSCAPES_VPS, VIPER, VIPSEG)}


def layout_of_datamodule(target: str) -> VPSLayout:
    """The layout of the dataset whose datamodule is ``target`` (a data config's ``_target_``)."""
    for layout in LAYOUTS.values():
        if layout.datamodule == target:
            return layout
    known = ", ".join(layout.datamodule for layout in LAYOUTS.values())
    raise ValueError(f"data._target_={target} is not a VPS datamodule; use data=cityscapes_vps, data=viper or "
                     f"data=vipseg ({known})")

"""VIPSeg (Miao et al., CVPR 2022): file layouts, the 124 categories, the panoptic video GT JSON and the masks.

Facts from the official release (VIPSeg-Dataset/VIPSeg-Dataset: README, ``change2_720p.py``,
``create_panoptic_video_labels.py``, ``splitjson.py``, ``panoVIPSeg_categories.json``, ``{train,val,test}.txt``).
Datasets, the converter, the toy writer and the submission evaluator read them from here. ``<root>`` is the
folder the official scripts run in (``data.root``)::

    <root>/{train,val,test}.txt                      video ids of each split, one per line
    <root>/imgs/<video>/<frame>.jpg                  original resolution ("original" layout)
    <root>/panomasks/<video>/<frame>.png             single channel: 0 void, stuff = class value,
                                                     thing = class value * 100 + instance (see below)
    <root>/VIPSeg_720P/images/<video>/<frame>.jpg    resized to 720 px high (bilinear) ("720p" layout)
    <root>/VIPSeg_720P/panomasks/<video>/<frame>.png the single-channel masks resized (nearest)
    <root>/VIPSeg_720P/panomasksRGB/<video>/<frame>.png   COCO-panoptic RGB (id = R + 256 G + 256^2 B)
    <root>/VIPSeg_720P/panoptic_gt_VIPSeg_<split>.json    the panoptic video GT JSON (below)
    <root>/VIPSeg_720P/panoVIPSeg_categories.json         the 124 categories (:data:`VIPSEG_CATEGORIES`)

Single-channel masks (``panomasks``): a pixel value ``v`` is void if ``v == 0``; a stuff (or instance-less)
segment of class value ``v`` if ``0 < v < 125``; else the thing instance ``v % 100`` of class value
``v // 100``. Class values are 1-based: the category id (as in the JSON) is the class value minus 1, so
ids run 0..123 (:func:`panomask_category`).

The panoptic video GT JSON (one per split; a submission's ``pred.json`` has the same ``annotations``)::

    {"videos":      [{"video_id": str, "images": [{"id": <frame>, "width", "height", "file_name": "<frame>.png"}]}],
     "annotations": [{"video_id": str, "annotations": [{"image_id": <frame>, "file_name": "<frame>.png",
                                                        "segments_info": [{"id", "category_id", "iscrowd",
                                                                           "area"}]}]}],
     "categories":  [{"id": 0..123, "name", "isthing": 0|1, "color": [r, g, b]}]}

The official converter writes ``file_name`` = the mask's name (``.png``), ``image_id`` = its stem, one
segment id per (video, mask value): constant within a video, ``iscrowd`` always 0. The official evaluators
pair a video's ``annotations`` with its ``images`` by position and read
``panomasksRGB/<video_id>/<file_name>`` and ``<submission>/pan_pred/<video_id>/<file_name>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from vidseg.data.io import decoding
from vidseg.data.names import check_name, checked_join
from vidseg.data.panoptic import (
    check_categories,
    check_segments_info,
    json_get,
    json_id,
    json_int,
    json_list,
    json_object,
    read_json,
)
from vidseg.errors import DataError, MaskFormatError

# --------------------------------------------------------------------------------------------- categories
# (id, name, isthing, colour) from panoVIPSeg_categories.json, in its order (ids 0..123; 58 things, 66 stuff).
# One colour is shared: Playground_slide (6, stuff) and car (48, thing).
_CATEGORY_TABLE: tuple[tuple[int, str, int, tuple[int, int, int]], ...] = (
    (0, "wall", 0, (120, 120, 120)),
    (1, "ceiling", 0, (180, 120, 120)),
    (2, "door", 1, (6, 230, 230)),
    (3, "stair", 0, (80, 50, 50)),
    (4, "ladder", 1, (4, 200, 3)),
    (5, "escalator", 0, (120, 120, 80)),
    (6, "Playground_slide", 0, (140, 140, 140)),
    (7, "handrail_or_fence", 0, (204, 5, 255)),
    (8, "window", 1, (230, 230, 230)),
    (9, "rail", 0, (4, 250, 7)),
    (10, "goal", 1, (224, 5, 255)),
    (11, "pillar", 0, (235, 255, 7)),
    (12, "pole", 0, (150, 5, 61)),
    (13, "floor", 0, (120, 120, 70)),
    (14, "ground", 0, (8, 255, 51)),
    (15, "grass", 0, (255, 6, 82)),
    (16, "sand", 0, (143, 255, 140)),
    (17, "athletic_field", 0, (204, 255, 4)),
    (18, "road", 0, (255, 51, 7)),
    (19, "path", 0, (204, 70, 3)),
    (20, "crosswalk", 0, (0, 102, 200)),
    (21, "building", 0, (61, 230, 250)),
    (22, "house", 0, (255, 6, 51)),
    (23, "bridge", 0, (11, 102, 255)),
    (24, "tower", 0, (255, 7, 71)),
    (25, "windmill", 0, (255, 9, 224)),
    (26, "well_or_well_lid", 0, (9, 7, 230)),
    (27, "other_construction", 0, (220, 220, 220)),
    (28, "sky", 0, (255, 9, 92)),
    (29, "mountain", 0, (112, 9, 255)),
    (30, "stone", 0, (8, 255, 214)),
    (31, "wood", 0, (7, 255, 224)),
    (32, "ice", 0, (255, 184, 6)),
    (33, "snowfield", 0, (10, 255, 71)),
    (34, "grandstand", 0, (255, 41, 10)),
    (35, "sea", 0, (7, 255, 255)),
    (36, "river", 0, (224, 255, 8)),
    (37, "lake", 0, (102, 8, 255)),
    (38, "waterfall", 0, (255, 61, 6)),
    (39, "water", 0, (255, 194, 7)),
    (40, "billboard_or_Bulletin_Board", 0, (255, 122, 8)),
    (41, "sculpture", 1, (0, 255, 20)),
    (42, "pipeline", 0, (255, 8, 41)),
    (43, "flag", 1, (255, 5, 153)),
    (44, "parasol_or_umbrella", 1, (6, 51, 255)),
    (45, "cushion_or_carpet", 0, (235, 12, 255)),
    (46, "tent", 1, (160, 150, 20)),
    (47, "roadblock", 1, (0, 163, 255)),
    (48, "car", 1, (140, 140, 140)),
    (49, "bus", 1, (250, 10, 15)),
    (50, "truck", 1, (20, 255, 0)),
    (51, "bicycle", 1, (31, 255, 0)),
    (52, "motorcycle", 1, (255, 31, 0)),
    (53, "wheeled_machine", 0, (255, 224, 0)),
    (54, "ship_or_boat", 1, (153, 255, 0)),
    (55, "raft", 1, (0, 0, 255)),
    (56, "airplane", 1, (255, 71, 0)),
    (57, "tyre", 0, (0, 235, 255)),
    (58, "traffic_light", 0, (0, 173, 255)),
    (59, "lamp", 0, (31, 0, 255)),
    (60, "person", 1, (11, 200, 200)),
    (61, "cat", 1, (255, 82, 0)),
    (62, "dog", 1, (0, 255, 245)),
    (63, "horse", 1, (0, 61, 255)),
    (64, "cattle", 1, (0, 255, 112)),
    (65, "other_animal", 1, (0, 255, 133)),
    (66, "tree", 0, (255, 0, 0)),
    (67, "flower", 0, (255, 163, 0)),
    (68, "other_plant", 0, (255, 102, 0)),
    (69, "toy", 0, (194, 255, 0)),
    (70, "ball_net", 0, (0, 143, 255)),
    (71, "backboard", 0, (51, 255, 0)),
    (72, "skateboard", 1, (0, 82, 255)),
    (73, "bat", 0, (0, 255, 41)),
    (74, "ball", 1, (0, 255, 173)),
    (75, "cupboard_or_showcase_or_storage_rack", 0, (10, 0, 255)),
    (76, "box", 1, (173, 255, 0)),
    (77, "traveling_case_or_trolley_case", 1, (0, 255, 153)),
    (78, "basket", 1, (255, 92, 0)),
    (79, "bag_or_package", 1, (255, 0, 255)),
    (80, "trash_can", 0, (255, 0, 245)),
    (81, "cage", 0, (255, 0, 102)),
    (82, "plate", 1, (255, 173, 0)),
    (83, "tub_or_bowl_or_pot", 1, (255, 0, 20)),
    (84, "bottle_or_cup", 1, (255, 184, 184)),
    (85, "barrel", 1, (0, 31, 255)),
    (86, "fishbowl", 1, (0, 255, 61)),
    (87, "bed", 1, (0, 71, 255)),
    (88, "pillow", 1, (255, 0, 204)),
    (89, "table_or_desk", 1, (0, 255, 194)),
    (90, "chair_or_seat", 1, (0, 255, 82)),
    (91, "bench", 1, (0, 10, 255)),
    (92, "sofa", 1, (0, 112, 255)),
    (93, "shelf", 0, (51, 0, 255)),
    (94, "bathtub", 0, (0, 194, 255)),
    (95, "gun", 1, (0, 122, 255)),
    (96, "commode", 1, (0, 255, 163)),
    (97, "roaster", 1, (255, 153, 0)),
    (98, "other_machine", 0, (0, 255, 10)),
    (99, "refrigerator", 1, (255, 112, 0)),
    (100, "washing_machine", 1, (143, 255, 0)),
    (101, "Microwave_oven", 1, (82, 0, 255)),
    (102, "fan", 1, (163, 255, 0)),
    (103, "curtain", 0, (255, 235, 0)),
    (104, "textiles", 0, (8, 184, 170)),
    (105, "clothes", 0, (133, 0, 255)),
    (106, "painting_or_poster", 1, (0, 255, 92)),
    (107, "mirror", 1, (184, 0, 255)),
    (108, "flower_pot_or_vase", 1, (255, 0, 31)),
    (109, "clock", 1, (0, 184, 255)),
    (110, "book", 0, (0, 214, 255)),
    (111, "tool", 0, (255, 0, 112)),
    (112, "blackboard", 0, (92, 255, 0)),
    (113, "tissue", 0, (0, 224, 255)),
    (114, "screen_or_television", 1, (112, 224, 255)),
    (115, "computer", 1, (70, 184, 160)),
    (116, "printer", 1, (163, 0, 255)),
    (117, "Mobile_phone", 1, (153, 0, 255)),
    (118, "keyboard", 1, (71, 255, 0)),
    (119, "other_electronic_product", 0, (255, 0, 163)),
    (120, "fruit", 0, (255, 204, 0)),
    (121, "food", 0, (255, 0, 143)),
    (122, "instrument", 1, (0, 255, 235)),
    (123, "train", 1, (133, 255, 0)),
)


@dataclass(frozen=True)
class VIPSegCategory:
    """One VIPSeg category: ``id`` 0..123 (the JSON's; the mask class value is ``id + 1``)."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]

    def as_json(self) -> dict[str, Any]:
        """The record of ``panoVIPSeg_categories.json``."""
        return {"id": self.id, "name": self.name, "isthing": int(self.isthing), "color": list(self.color)}


VIPSEG_CATEGORIES: tuple[VIPSegCategory, ...] = tuple(
    VIPSegCategory(cid, name, bool(isthing), color) for cid, name, isthing, color in _CATEGORY_TABLE)
NUM_CLASSES = 124  # the official STQ script's confusion matrix has 124 classes + ignore
THING_IDS: tuple[int, ...] = tuple(c.id for c in VIPSEG_CATEGORIES if c.isthing)
STUFF_IDS: tuple[int, ...] = tuple(c.id for c in VIPSEG_CATEGORIES if not c.isthing)


def vipseg_categories() -> list[dict[str, Any]]:
    """The 124 categories as the GT JSON's ``categories`` list (fresh dicts)."""
    return [c.as_json() for c in VIPSEG_CATEGORIES]


# ------------------------------------------------------------------------------------------ mask values
PANOMASK_VOID = 0
PANOMASK_MAX_CLASS_VALUE = 124  # values 1..124 are class values (stuff, or things without an instance)
PANOMASK_THING_DIVISOR = 100    # thing value = class value * 100 + instance


def panomask_category(values: Any) -> np.ndarray:
    """Category id (0..123, the JSON's) of single-channel mask values; -1 for void.

    Args:
        values: ``(...)`` integer mask values (a ``panomasks`` PNG as read by :func:`read_panomask`).
    Returns:
        ``(...) int64``: ``-1`` where ``v == 0``, ``v - 1`` where ``v < 125``, else ``v // 100 - 1``.
    """
    v = np.asarray(values).astype(np.int64)
    cls = np.where(v <= PANOMASK_MAX_CLASS_VALUE, v, v // PANOMASK_THING_DIVISOR)
    return np.where(v == PANOMASK_VOID, -1, cls - 1)


def panomask_value(category_id: int, instance: int | None = None) -> int:
    """The mask value of a stuff segment (``instance=None``) or of thing instance ``instance`` (0..99)."""
    if not 0 <= category_id < NUM_CLASSES:
        raise ValueError(f"VIPSeg category ids are 0..{NUM_CLASSES - 1}, got {category_id}")
    if instance is None:
        return category_id + 1
    if not 0 <= instance < PANOMASK_THING_DIVISOR or (category_id + 1) * PANOMASK_THING_DIVISOR <= \
            PANOMASK_MAX_CLASS_VALUE:
        raise ValueError(f"thing instances are 0..99 of a class value >= 2, got category {category_id}, "
                         f"instance {instance}")
    return (category_id + 1) * PANOMASK_THING_DIVISOR + instance


def panomask_segments(values: Any) -> list[tuple[int, int]]:
    """``[(mask value, category id)]`` of every non-void value present, in increasing value order (the order
    the official converter visits them)."""
    uniq = np.unique(np.asarray(values))
    uniq = uniq[uniq != PANOMASK_VOID]
    return list(zip(uniq.astype(np.int64).tolist(), panomask_category(uniq).tolist(), strict=True))


def read_panomask(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel VIPSeg mask (8- or 16-bit grayscale, or palette, PNG) as ``(H, W) int64`` values.

    Raises:
        FileNotFoundError: the file does not exist.
        MaskFormatError: corrupt file, an RGB(A) PNG (that is the ``panomasksRGB`` format), a value whose class
            is not a VIPSeg class (above 12499, or a class value above 124).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VIPSeg mask not found: {path}")
    with decoding(path, what="VIPSeg mask", fix="the file is corrupt or truncated, copy it again"), \
            Image.open(path) as img:
        if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise MaskFormatError(f"{path}: VIPSeg mask is {img.mode!r}, expected a single-channel PNG (0 void, "
                                  "stuff = class value, thing = class value * 100 + instance); COCO-panoptic RGB "
                                  "masks belong in VIPSeg_720P/panomasksRGB")
        values = np.array(img).astype(np.int64)
    cats = panomask_category(values)
    bad = (cats >= NUM_CLASSES) | (cats < -1)
    if bad.any():
        raise MaskFormatError(f"{path}: mask value {int(values[bad].flat[0])} is no VIPSeg class (0 void, 1..124 "
                              "class values, class value * 100 + instance for things); is it a VIPSeg mask?")
    return values


# ---------------------------------------------------------------------------------------------- layouts
VIPSEG_720P = "VIPSeg_720P"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VIPSegLayout:
    """Paths of one VIPSeg copy: ``resolution`` "720p" (``<root>/VIPSeg_720P/...``, what the official
    evaluators and the COCO-video JSON use) or "original" (``<root>/imgs``, ``<root>/panomasks``). Every
    name from a file or config (video, frame, split) goes through :func:`vidseg.data.names.checked_join`."""

    resolution: str = "720p"

    def __post_init__(self) -> None:
        if self.resolution not in ("720p", "original"):
            raise ValueError(f"VIPSeg resolution must be '720p' or 'original', got {self.resolution!r}")

    def _base(self, root: str | os.PathLike) -> Path:
        return Path(root) / VIPSEG_720P if self.resolution == "720p" else Path(root)

    def image_dir(self, root: str | os.PathLike) -> Path:
        """``<root>/VIPSeg_720P/images`` or ``<root>/imgs``; frames are ``<video>/<frame>.jpg``."""
        return self._base(root) / ("images" if self.resolution == "720p" else "imgs")

    def panomask_dir(self, root: str | os.PathLike) -> Path:
        """The single-channel masks, ``<video>/<frame>.png``."""
        return self._base(root) / "panomasks"

    def image_path(self, root: str | os.PathLike, video: str, frame: str) -> Path:
        return checked_join(self.image_dir(root), video, f"{frame}.jpg", source=root, what="VIPSeg video/frame")

    def panomask_path(self, root: str | os.PathLike, video: str, frame: str) -> Path:
        return checked_join(self.panomask_dir(root), video, f"{frame}.png", source=root, what="VIPSeg video/frame")

    @staticmethod
    def split_file(root: str | os.PathLike, split: str) -> Path:
        """``<root>/<split>.txt`` (the official lists sit beside the data, where ``splitjson.py`` reads them)."""
        return checked_join(root, f"{check_name(split, source='data.split', what='split')}.txt",
                            source="data.split", what="split")

    @staticmethod
    def panoptic_rgb_dir(root: str | os.PathLike) -> Path:
        """``<root>/VIPSeg_720P/panomasksRGB`` (the evaluators' ``--truth_dir``), ``<video>/<file_name>``."""
        return Path(root) / VIPSEG_720P / "panomasksRGB"

    @staticmethod
    def panoptic_gt_json(root: str | os.PathLike, split: str) -> Path:
        """``<root>/VIPSeg_720P/panoptic_gt_VIPSeg_<split>.json`` (the evaluators' ``--pan_gt_json_file``)."""
        name = check_name(split, source="data.split", what="split")
        return checked_join(Path(root) / VIPSEG_720P, f"panoptic_gt_VIPSeg_{name}.json", source="data.split",
                            what="split")

    @staticmethod
    def categories_json(root: str | os.PathLike) -> Path:
        return Path(root) / VIPSEG_720P / "panoVIPSeg_categories.json"

    def frames(self, root: str | os.PathLike, video: str) -> list[str]:
        """Frame names (stems) of ``video`` from its mask folder, sorted (the official converters' order)."""
        folder = checked_join(self.panomask_dir(root), video, source=root, what="VIPSeg video id")
        if not folder.is_dir():
            raise DataError(f"VIPSeg mask folder not found: {folder}; expected {self.panomask_dir(root)}/<video>/"
                            "<frame>.png (data.root must be the folder holding imgs/, panomasks/ and VIPSeg_720P/)")
        return sorted(p.stem for p in folder.iterdir() if p.suffix == ".png" and not p.name.startswith("."))


VIPSEG_720P_LAYOUT = VIPSegLayout("720p")
VIPSEG_ORIGINAL_LAYOUT = VIPSegLayout("original")


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Video ids of ``<root>/<split>.txt`` in file order (blank lines skipped; each id checked as a name)."""
    path = VIPSegLayout.split_file(root, split)
    if not path.is_file():
        raise DataError(f"VIPSeg split list not found: {path}; copy train.txt/val.txt/test.txt of the official "
                        "release into data.root")
    videos = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    for v in videos:
        check_name(v, source=path, what="video id")
    if len(set(videos)) != len(videos):
        raise DataError(f"{path}: a video id is listed twice; list each video once")
    return videos


# --------------------------------------------------------------------------------------- the GT JSON
@dataclass(frozen=True)
class VIPSegFrame:
    """One annotated frame of the panoptic video JSON.

    Attributes:
        image_id: the image ``id`` (as a string; the frame stem in the official JSON).
        file_name: the PNG name inside ``panomasksRGB/<video>/`` (and ``pan_pred/<video>/``).
        height, width: from the image record (None if absent).
        segments_info: checked segments ``[{"id", "category_id", "iscrowd", "area", ...}]``.
    """

    image_id: str
    file_name: str
    height: int | None
    width: int | None
    segments_info: list[dict]


@dataclass(frozen=True)
class VIPSegVideo:
    video_id: str
    frames: tuple[VIPSegFrame, ...]


@dataclass
class VIPSegGT:
    """A checked panoptic video GT JSON: ``categories`` ``{id: record}`` in JSON order, ``videos`` in the order
    of its ``videos`` list (the evaluators' order)."""

    json_path: Path
    categories: dict[int, dict]
    videos: list[VIPSegVideo]

    @property
    def num_frames(self) -> int:
        return sum(len(v.frames) for v in self.videos)


_FIX = ("use the split's panoptic_gt_VIPSeg_<split>.json written by the official create_panoptic_video_labels.py "
        "+ splitjson.py (or vidseg's converter)")


def _check_category_ids(categories: dict[int, dict], json_path: Path) -> None:
    bad = [c for c in categories if not 0 <= c < NUM_CLASSES]
    if bad:
        # The official STQ script counts classes in a 124 x 124 (+ ignore) matrix indexed by the category id.
        raise DataError(f"{json_path}: categories: VIPSeg category ids are 0..{NUM_CLASSES - 1}, found {bad[:5]}; "
                        "the official STQ script indexes a 124-class matrix by them: renumber the categories")


def read_panoptic_video_gt(json_path: str | os.PathLike) -> VIPSegGT:
    """Read and check a VIPSeg panoptic video GT JSON (the module docstring's format).

    Refused with one :class:`DataError` naming the file, the field and the fix (each would stop the official
    evaluators or pair the wrong files): missing or mistyped fields; category ids outside 0..123; a video
    listed twice or without an ``annotations`` entry; a video whose annotation count differs from its image
    count (the official scripts pair them by position); an annotation whose ``image_id``/``file_name`` names
    another image than the one at its position; two images of one video with one id or file name; segment
    lists as :func:`vidseg.data.panoptic.check_segments_info` checks them (ground truth); no segment at all.
    Annotations of videos not in ``videos`` are ignored, as the official scripts ignore them.
    """
    json_path = Path(json_path)
    doc = json_object(read_json(json_path, what="VIPSeg panoptic GT JSON"), json_path, "top level", _FIX)
    categories = check_categories(json_get(doc, "categories", json_path, "top level", _FIX), json_path, _FIX)
    _check_category_ids(categories, json_path)
    videos = json_list(json_get(doc, "videos", json_path, "top level", _FIX), json_path, "videos", _FIX)
    annotations = json_list(json_get(doc, "annotations", json_path, "top level", _FIX), json_path, "annotations",
                            _FIX)
    if not videos:
        raise DataError(f"{json_path}: videos is empty: nothing to score; {_FIX}")
    ann_of: dict[str, tuple[int, list]] = {}
    for i, ann in enumerate(annotations):
        at = f"annotations[{i}]"
        ann = json_object(ann, json_path, at, _FIX)
        vid = json_id(json_get(ann, "video_id", json_path, at, _FIX), json_path, f"{at}.video_id", _FIX)
        frames = json_list(json_get(ann, "annotations", json_path, at, _FIX), json_path, f"{at}.annotations", _FIX)
        if vid in ann_of:
            raise DataError(f"{json_path}: {at}.video_id: video {vid!r} is also annotated by "
                            f"annotations[{ann_of[vid][0]}]; give each video one annotations entry")
        ann_of[vid] = (i, frames)
    out: list[VIPSegVideo] = []
    seen: dict[str, int] = {}
    num_segments = 0
    for i, video in enumerate(videos):
        at = f"videos[{i}]"
        video = json_object(video, json_path, at, _FIX)
        vid = check_name(json_id(json_get(video, "video_id", json_path, at, _FIX), json_path, f"{at}.video_id",
                                 _FIX), source=json_path, what="video id")
        if vid in seen:
            raise DataError(f"{json_path}: {at}.video_id: video {vid!r} is also videos[{seen[vid]}]; list each "
                            "video once")
        seen[vid] = i
        images = json_list(json_get(video, "images", json_path, at, _FIX), json_path, f"{at}.images", _FIX)
        if vid not in ann_of:
            raise DataError(f"{json_path}: {at}: video {vid!r} has no entry in annotations (the official scripts "
                            f"stop with a KeyError); {_FIX}")
        k, frame_anns = ann_of[vid]
        if len(frame_anns) != len(images):
            raise DataError(f"{json_path}: annotations[{k}] (video {vid!r}) has {len(frame_anns)} frame annotations "
                            f"for {len(images)} images; the evaluators pair them by position: one per image")
        frames = []
        ids_seen: dict[str, int] = {}
        files_seen: dict[str, int] = {}
        for j, (image, fa) in enumerate(zip(images, frame_anns, strict=True)):
            iat, aat = f"{at}.images[{j}]", f"annotations[{k}].annotations[{j}]"
            image = json_object(image, json_path, iat, _FIX)
            image_id = json_id(json_get(image, "id", json_path, iat, _FIX), json_path, f"{iat}.id", _FIX)
            file_name = json_get(image, "file_name", json_path, iat, _FIX)
            if not isinstance(file_name, str):
                raise DataError(f"{json_path}: {iat}.file_name: expected a PNG file name string, found "
                                f"{file_name!r}; {_FIX}")
            check_name(file_name, source=json_path, what="frame file name")
            for name, first, what in ((image_id, ids_seen, "id"), (file_name, files_seen, "file_name")):
                if name in first:
                    raise DataError(f"{json_path}: {iat}.{what}: {name!r} is also {at}.images[{first[name]}]; "
                                    "each frame once")
                first[name] = j
            size = [json_int(image[key], json_path, f"{iat}.{key}", _FIX, minimum=1) if key in image else None
                    for key in ("height", "width")]
            fa = json_object(fa, json_path, aat, _FIX)
            _check_pairing(fa, image_id, file_name, json_path, aat, iat)
            segments = check_segments_info(json_get(fa, "segments_info", json_path, aat, _FIX), json_path,
                                           f"{aat}.segments_info", categories, ground_truth=True)
            num_segments += len(segments)
            frames.append(VIPSegFrame(image_id, file_name, size[0], size[1], segments))
        if not frames:
            raise DataError(f"{json_path}: {at} (video {vid!r}) has no images; {_FIX}")
        out.append(VIPSegVideo(vid, tuple(frames)))
    if num_segments == 0:
        raise DataError(f"{json_path}: no frame lists any segment: nothing to score; {_FIX}")
    return VIPSegGT(json_path, categories, out)


def frame_stem(name: Any) -> str:
    """The frame a name designates: ``00000015``, ``00000015.png`` and ``.../00000015.jpg`` -> ``00000015``."""
    return PurePosixPath(str(name)).stem


def _check_pairing(ann: Mapping[str, Any], image_id: str, file_name: str, json_path: Path, aat: str,
                   iat: str) -> None:
    """The GT annotation at a position must describe the image at that position (when it names one)."""
    if "image_id" in ann and str(ann["image_id"]) != image_id:
        raise DataError(f"{json_path}: {aat}.image_id is {ann['image_id']!r} but {iat} is image {image_id!r}; the "
                        "evaluators pair a video's annotations and images by position: put them in the same order")
    if "file_name" in ann and frame_stem(ann["file_name"]) != frame_stem(file_name):
        raise DataError(f"{json_path}: {aat}.file_name is {ann['file_name']!r} but {iat} is {file_name!r}; the "
                        "evaluators pair a video's annotations and images by position: put them in the same order")


def panoptic_video_json(videos: Sequence[VIPSegVideo],
                        categories: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The GT JSON document (module docstring's format) of ``videos``; ``categories`` default to VIPSeg's."""
    return {
        "videos": [{"video_id": v.video_id, "images": [
            {"id": f.image_id, "file_name": f.file_name,
             **({"height": f.height} if f.height is not None else {}),
             **({"width": f.width} if f.width is not None else {})} for f in v.frames]} for v in videos],
        "annotations": [{"video_id": v.video_id, "annotations": [
            {"image_id": f.image_id, "file_name": f.file_name, "segments_info": [dict(s) for s in f.segments_info]}
            for f in v.frames]} for v in videos],
        "categories": [dict(c) for c in categories] if categories is not None else vipseg_categories(),
    }

"""VIPSeg (Miao et al., CVPR 2022) for VPSNet: the 720p conversion command, datasets and the datamodule.

Layouts, categories and mask values: :mod:`vidseg.data.vipseg_layout`. ``data.root`` is the folder holding
``VIPSeg_720P/`` (and the official ``train.txt`` / ``val.txt`` / ``test.txt``).

**Which layout the datamodule reads.** Only the 720p layout (``VIPSeg_720P/images`` + ``VIPSeg_720P/panomasks``),
the frames every published VIPSeg number is computed on. A root holding only the original layout (``imgs/``,
``panomasks/``) is refused with one line naming the command that converts it, without panopticapi::

    python -m vidseg.data.vipseg convert --root <root> [--height 720] [--workers N] [--overwrite]

**The conversion** does what the official ``change2_720p.py`` + ``create_panoptic_video_labels.py`` +
``splitjson.py`` do (learned from them, written anew):

- every frame ``imgs/<video>/<name>.jpg`` resized to ``height`` px high, width ``int(height * w / h)``, bilinear
  (PIL), saved as JPEG with PIL's default quality (75) to ``VIPSeg_720P/images/<video>/<name>.jpg``; its mask
  ``panomasks/<video>/<stem>.png`` resized nearest to ``VIPSeg_720P/panomasks/<video>/<stem>.png`` (16-bit);
  frames without a mask (the test split) get their image only (the official script skips them entirely);
- ``VIPSeg_720P/panomasksRGB/<video>/<stem>.png``: COCO-panoptic RGB, one segment id per (video, mask value):
  a stuff category's colour for stuff, for things the category colour the first time it is free in the video,
  then colours jittered by up to +-30 per channel (panopticapi's ``IdGenerator`` rule; vidseg draws the jitter
  from a generator seeded by the video name, so a rerun writes the same ids, where the official script's
  are random); ``iscrowd`` is always 0;
- ``panoptic_gt_VIPSeg.json`` (every video with masks, sorted by name) and ``panoptic_gt_VIPSeg_<split>.json``
  for each ``<split>.txt`` whose videos have masks (videos in the full JSON's order, as ``splitjson.py``
  filters it): ``images[{id: stem, width, height, file_name: <stem>.png}]``, ``segments_info`` in increasing mask
  value order ``{id, category_id: class value - 1, iscrowd: 0, area: pixel count}``;
- ``panoVIPSeg_categories.json``: the release's copy (``<root>/`` or ``<root>/VIPSeg_720P/``) is checked
  against :data:`vidseg.data.vipseg_layout.VIPSEG_CATEGORIES`; without one, vidseg writes it.

It is resumable (a video is done once its record ``VIPSeg_720P/.convert/<video>.json`` exists; the JSONs are
assembled from the records) and writes only folders it made (:mod:`vidseg.utils.outputs`; ``--overwrite``
replaces another tool's ``VIPSeg_720P/images`` etc.).

**Classes.** VPSNet wants stuff classes first (``0 .. num_stuff - 1``) then things; VIPSeg's ids interleave
them. vidseg class ``c`` is therefore VIPSeg category ``VIPSEG_CLASSES[c]["vipseg_id"]``: the 66 stuff
categories in id order, then the 58 things. Names are VIPSeg's, so ``evaluate ckpt=...`` writes the official
category ids (:func:`vidseg.tasks.vps_entry.json_category_ids` matches by name).

**Samples** are those of :mod:`vidseg.data.vps_common` (the same keys, shapes and ``panoptic`` encoding: stuff
class, thing class * 1000 + instance, 255 void). A thing painted with its bare class value (no instance
number; the official converter makes it an ordinary segment) is instance :data:`BARE_THING_INSTANCE`. Every
VIPSeg frame is annotated, so a training item's reference is the previous or next frame of its video (as the
VPS datasets' annotated neighbours; ClipPanoFCN trains on runs of consecutive frames); a one-frame video is
its own reference. Validation streams every frame of each ``<split>.txt`` video.
"""

from __future__ import annotations

import argparse
import json
import os
import zlib
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vidseg.constants import IGNORE_LABEL, PANOPTIC_LABEL_DIVISOR
from vidseg.data.io import atomic_path, decoding, read_image, write_json_atomic
from vidseg.data.names import check_name, checked_join
from vidseg.data.panoptic import read_json, write_panoptic_png
from vidseg.data.transforms import build_clip_transform
from vidseg.data.vipseg_layout import (
    NUM_CLASSES,
    PANOMASK_MAX_CLASS_VALUE,
    PANOMASK_THING_DIVISOR,
    SPLITS,
    VIPSEG_720P,
    VIPSEG_720P_LAYOUT,
    VIPSEG_CATEGORIES,
    VIPSEG_ORIGINAL_LAYOUT,
    VIPSegLayout,
    panomask_category,
    read_panomask,
    read_split,
    vipseg_categories,
)
from vidseg.data.vps_common import (
    MIN_INSTANCE_AREA,
    VPSDataModule,
    VPSDatasetInfo,
    VPSTrainDataset,
    _check_size,
    _Frame,
)
from vidseg.data.vps_layout import VIPSEG
from vidseg.errors import DataError, DatasetLayoutError
from vidseg.utils.outputs import NotWrittenByVidsegError, open_output_folder

__all__ = ["BARE_THING_INSTANCE", "PanopticColours", "VIPSEG_CLASSES", "VIPSEG_INFO", "VIPSegDataModule",
           "VIPSegEvalDataset", "VIPSegTrainDataset", "convert_vipseg", "panomask_to_panoptic"]

VIPSEG_URL = "https://github.com/VIPSeg-Dataset/VIPSeg-Dataset"
CONVERT_VERSION = 1
CONVERT_DIR = ".convert"  # per-video records of the conversion (resume) and its parameters
CATEGORIES_JSON = "panoVIPSeg_categories.json"
JPEG_QUALITY = 75  # PIL's default, what the official change2_720p.py saves with
# A thing painted with its bare class value has no instance number (0..99); it gets this one.
BARE_THING_INSTANCE = 100

# ------------------------------------------------------------------------------------------------ classes
_ORDER = [c for c in VIPSEG_CATEGORIES if not c.isthing] + [c for c in VIPSEG_CATEGORIES if c.isthing]
VIPSEG_CLASSES: tuple[dict, ...] = tuple(
    {"id": k, "name": c.name, "isthing": int(c.isthing), "color": list(c.color), "vipseg_id": c.id}
    for k, c in enumerate(_ORDER))
# VIPSeg category id (0..123) -> vidseg class id (stuff first).
_CLASS_OF_CATEGORY = np.zeros(NUM_CLASSES, dtype=np.int64)
for _c in VIPSEG_CLASSES:
    _CLASS_OF_CATEGORY[_c["vipseg_id"]] = _c["id"]
_IS_THING_CATEGORY = np.array([c.isthing for c in VIPSEG_CATEGORIES], dtype=bool)


def panomask_to_panoptic(values: np.ndarray) -> np.ndarray:
    """VIPSeg mask values -> the vidseg ``panoptic`` encoding in vidseg class ids.

    Args:
        values: ``(H, W)`` integer values of a ``panomasks`` PNG (:func:`read_panomask`).
    Returns:
        ``(H, W) int64``: 255 void; stuff class (several stuff values of one class merge); thing instance
        ``class * 1000 + value % 100``, or ``class * 1000 + BARE_THING_INSTANCE`` for a bare thing class value.
    """
    values = np.asarray(values).astype(np.int64)
    category = panomask_category(values)
    void = category < 0
    category = np.where(void, 0, category)
    cls = _CLASS_OF_CATEGORY[category]
    instance = np.where(values > PANOMASK_MAX_CLASS_VALUE, values % PANOMASK_THING_DIVISOR, BARE_THING_INSTANCE)
    out = np.where(_IS_THING_CATEGORY[category], cls * PANOPTIC_LABEL_DIVISOR + instance, cls)
    return np.where(void, IGNORE_LABEL, out)


def _missing_root_message(root: Path, looked_for: Path) -> str:
    return (
        f"VIPSeg not found: {Path(root).resolve()} (looked for {looked_for}). Download VIPSeg from {VIPSEG_URL} "
        "(non-commercial licence), unpack it so that <root>/imgs, <root>/panomasks and <root>/train.txt exist, "
        "convert it with `python -m vidseg.data.vipseg convert --root <root>` and set data.root=<root>. For a "
        "quick CPU run use the toy set: `python -m vidseg.data.toy_vps --root data/toy_vipseg --format vipseg "
        "--seed 0` and data.root=data/toy_vipseg."
    )


VIPSEG_INFO = VPSDatasetInfo(layout=VIPSEG, categories=VIPSEG_CLASSES, frames_per_clip=None,
                             missing_root_message=_missing_root_message)


def vipseg_root(root: str | os.PathLike | None) -> Path:
    """``root`` (default ``data/vipseg``) if it holds the 720p layout; one-line errors otherwise."""
    root = Path(root if root is not None else VIPSEG.default_root)
    images = VIPSEG_720P_LAYOUT.image_dir(root)
    if not root.is_dir():
        raise FileNotFoundError(_missing_root_message(root, images))
    if not images.is_dir():
        if VIPSEG_ORIGINAL_LAYOUT.image_dir(root).is_dir():
            raise DataError(f"{root} holds VIPSeg in its original layout (imgs/, panomasks/) but no {images}; "
                            "vidseg trains and scores on the 720p layout: run `python -m vidseg.data.vipseg convert "
                            f"--root {root}` once")
        raise FileNotFoundError(_missing_root_message(root, images))
    return root


def _video_frames(folder: Path, suffix: str) -> list[str]:
    """Sorted stems of the ``suffix`` files of a video folder (hidden files skipped, as the official scripts)."""
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix)
                  and not p.name.startswith("."))


# ----------------------------------------------------------------------------------------------- training
class VIPSegTrainDataset(VPSTrainDataset):
    """Every frame of the ``split`` videos (720p layout) with its previous or next frame as reference.

    Augmentation, instance rules, redraws and item keys as :class:`vidseg.data.vps_common.VPSTrainDataset`;
    labels come from ``VIPSeg_720P/panomasks`` (:func:`panomask_to_panoptic`). ``max_videos`` keeps the first
    videos of the split list (quick runs).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        split: str = "train",
        crop_size: Sequence[int] = (720, 1280),
        scale: Sequence[float] = (0.8, 1.5),
        hflip: bool = True,
        min_instance_area: int = MIN_INSTANCE_AREA,
        skip_crops_without_instances: bool = True,
        repeat: int = 1,
        seed: int = 0,
        max_videos: int | None = None,
    ) -> None:
        # Not VPSTrainDataset.__init__: that one indexes a COCO instances JSON, VIPSeg has masks only.
        self.info = VIPSEG_INFO
        self.root = vipseg_root(root)
        self.image_dir = VIPSEG_720P_LAYOUT.image_dir(self.root)
        self.label_dir = VIPSEG_720P_LAYOUT.panomask_dir(self.root)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.min_instance_area = int(min_instance_area)
        self.skip_crops_without_instances = bool(skip_crops_without_instances)
        self.repeat = int(repeat)
        self.seed = int(seed)
        self.frames, self.neighbours = self._index_videos(split, max_videos)
        self.transform = build_clip_transform(self.crop_size, (float(scale[0]), float(scale[1])), hflip=hflip)

    def _index_videos(self, split: str, max_videos: int | None) -> tuple[list[_Frame], list[list[int]]]:
        videos = read_split(self.root, split)[:max_videos] if max_videos else read_split(self.root, split)
        frames: list[_Frame] = []
        neighbours: list[list[int]] = []
        for video in videos:
            masks = checked_join(self.label_dir, video, source=VIPSegLayout.split_file(self.root, split),
                                 what="video id")
            if not masks.is_dir():
                raise DatasetLayoutError(f"{masks}: no masks for video {video} of {split}.txt; is the conversion "
                                         f"complete? Rerun `python -m vidseg.data.vipseg convert --root {self.root}`")
            names = _video_frames(masks, ".png")
            if not names:
                raise DatasetLayoutError(f"{masks} holds no <frame>.png; rerun the conversion")
            first = len(frames)
            for t, name in enumerate(names):
                image = VIPSEG_720P_LAYOUT.image_path(self.root, video, name)
                if not image.is_file():
                    raise DatasetLayoutError(f"image of {masks / (name + '.png')} not found: {image}; rerun "
                                             f"`python -m vidseg.data.vipseg convert --root {self.root}`")
                # image_id: a running number (training items carry int ids); height/width: checked on reading.
                frames.append(_Frame(len(frames), f"{video}/{name}", video, t, 0, 0, []))
            n = len(names)
            neighbours += [[first + j for j in (t - 1, t + 1) if 0 <= j < n] or [first + t] for t in range(n)]
        if not frames:
            raise DatasetLayoutError(f"{VIPSegLayout.split_file(self.root, split)} lists no video")
        return frames, neighbours

    def _read(self, frame: _Frame) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """image (H, W, 3) uint8, labels (H, W) uint16 = class | (instance slot << 8), the kept instances."""
        name = frame.file_name.rsplit("/", 1)[1]
        image_path = VIPSEG_720P_LAYOUT.image_path(self.root, frame.video, name)
        mask_path = VIPSEG_720P_LAYOUT.panomask_path(self.root, frame.video, name)
        image = read_image(image_path)
        panoptic = panomask_to_panoptic(read_panomask(mask_path))
        _check_size(mask_path, panoptic.shape, image.shape[:2], image_path)
        semantic = np.where(panoptic >= PANOPTIC_LABEL_DIVISOR, panoptic // PANOPTIC_LABEL_DIVISOR, panoptic)
        slots = np.zeros(panoptic.shape, dtype=np.uint16)
        kept = []
        for value in np.unique(panoptic[panoptic >= PANOPTIC_LABEL_DIVISOR]).tolist():
            if len(kept) == 254:
                raise DatasetLayoutError(f"{mask_path}: more than 254 instances in one frame")
            cls, inst = divmod(int(value), PANOPTIC_LABEL_DIVISOR)
            kept.append({"category_id": cls, "inst_id": inst})
            slots[panoptic == value] = len(kept)
        return image, semantic.astype(np.uint16) | (slots << 8), kept


# --------------------------------------------------------------------------------------------- evaluation
class VIPSegEvalDataset(Dataset):
    """Every frame of every ``split`` video (``<root>/<split>.txt``, 720p layout), video by video, in order.

    Items as :class:`vidseg.data.vps_common.VPSEvalDataset` (``images (2, 3, H, W) uint8`` = [frame t,
    frame t - 1], ``panoptic``/``semantic`` from ``VIPSeg_720P/panomasks``, ``annotated`` where a mask
    exists); ``panoptic_image_id`` is ``<video>/<frame>``, the scorer's image id. Videos in sorted order (the
    GT JSON's). ``require_ground_truth`` (default: unless ``split == "test"``) refuses a video without masks.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, split: str = "val", max_videos: int | None = None,
                 require_ground_truth: bool | None = None) -> None:
        self.info = VIPSEG_INFO
        self.root = vipseg_root(root)
        self.split = split
        if require_ground_truth is None:
            require_ground_truth = split != "test"
        videos = sorted(read_split(self.root, split))
        videos = videos[:max_videos] if max_videos else videos
        source = VIPSegLayout.split_file(self.root, split)
        self.items: list[tuple[str, str, int, int, bool]] = []  # (video, frame, index, length, annotated)
        for video in videos:
            folder = checked_join(VIPSEG_720P_LAYOUT.image_dir(self.root), video, source=source, what="video id")
            if not folder.is_dir():
                raise DatasetLayoutError(f"{folder}: no frames for video {video} of {source.name}; rerun "
                                         f"`python -m vidseg.data.vipseg convert --root {self.root}`")
            names = _video_frames(folder, ".jpg")
            mask_folder = checked_join(VIPSEG_720P_LAYOUT.panomask_dir(self.root), video, source=source,
                                       what="video id")
            masks = set(_video_frames(mask_folder, ".png")) if mask_folder.is_dir() else set()
            if require_ground_truth and not masks:
                raise DatasetLayoutError(f"video {video} of {source.name} has no masks in "
                                         f"{mask_folder}; validation needs "
                                         "them (rerun the conversion, or use data.split=test to predict only)")
            self.items += [(video, name, t, len(names), name in masks) for t, name in enumerate(names)]
        if not self.items:
            raise DatasetLayoutError(f"{source} lists no video with frames")

    def __len__(self) -> int:
        return len(self.items)

    def videos(self) -> list[str]:
        """The video of every item, in item order (clips are contiguous)."""
        return [item[0] for item in self.items]

    def __getitem__(self, index: int) -> dict[str, Any]:
        video, name, t, length, annotated = self.items[index]
        ref_name = self.items[index - 1][1] if t > 0 else name
        path = VIPSEG_720P_LAYOUT.image_path(self.root, video, name)
        ref_path = VIPSEG_720P_LAYOUT.image_path(self.root, video, ref_name)
        image, ref = read_image(path), read_image(ref_path)
        _check_size(ref_path, ref.shape[:2], image.shape[:2], f"the next frame {path}")
        if annotated:
            mask_path = VIPSEG_720P_LAYOUT.panomask_path(self.root, video, name)
            panoptic = panomask_to_panoptic(read_panomask(mask_path))
            _check_size(mask_path, panoptic.shape, image.shape[:2], path)
            semantic = np.where(panoptic >= PANOPTIC_LABEL_DIVISOR, panoptic // PANOPTIC_LABEL_DIVISOR, panoptic)
        else:
            panoptic = np.full(image.shape[:2], IGNORE_LABEL, dtype=np.int64)
            semantic = panoptic.copy()
        return {
            "images": torch.from_numpy(np.ascontiguousarray(np.stack([image, ref]).transpose(0, 3, 1, 2))),
            "panoptic": torch.from_numpy(panoptic),
            "semantic": torch.from_numpy(semantic),
            "annotated": annotated,
            "is_first": t == 0,
            "video": video,
            "frame_index": t,
            "num_frames": length,
            "image_id": name,
            "panoptic_image_id": f"{video}/{name}",
            "file_name": f"{name}.png",
        }


class VIPSegDataModule(VPSDataModule):
    """VIPSeg (720p layout) for VPSNet: see :class:`vidseg.data.vps_common.VPSDataModule`; trains on ``train``,
    validates on ``split``. ``train_max_videos`` / ``val_max_videos`` keep the first videos (quick runs)."""

    info = VIPSEG_INFO
    layout = VIPSEG

    def __init__(self, root: str | os.PathLike | None = None, *, train_max_videos: int | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("crop_size", (720, 1280))
        super().__init__(root, **kwargs)
        self.train_max_videos = train_max_videos

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = VIPSegTrainDataset(
                self.root, crop_size=self.crop_size, scale=self.scale, hflip=self.hflip,
                min_instance_area=self.min_instance_area,
                skip_crops_without_instances=self.skip_crops_without_instances, repeat=self.repeat, seed=self.seed,
                max_videos=self.train_max_videos)
        if stage in (None, "fit", "validate", "test", "predict") and self.val_dataset is None:
            self.val_dataset = VIPSegEvalDataset(self.root, split=self.split, max_videos=self.val_max_videos)


# ---------------------------------------------------------------------------------------------- conversion
class PanopticColours:
    """COCO-panoptic segment ids from category colours, by panopticapi's ``IdGenerator`` rule.

    Stuff: the category colour. Thing: the category colour if no segment took it yet, else the colour jittered
    by a uniform integer in [-30, 30] per channel (clipped to 0..255) until one is free. Black (void) and every
    stuff colour are taken from the start. ``rng`` makes the jitter reproducible.
    """

    def __init__(self, categories: Sequence[dict], rng: np.random.Generator) -> None:
        self.categories = {int(c["id"]): c for c in categories}
        self.rng = rng
        self.taken = {(0, 0, 0)} | {tuple(c["color"]) for c in categories if not c["isthing"]}

    def get(self, category_id: int) -> int:
        """A new segment id (``R + 256 G + 256^2 B``) of category ``category_id``."""
        base = tuple(self.categories[category_id]["color"])
        if self.categories[category_id]["isthing"] and base in self.taken:
            while True:
                c = tuple(int(v) for v in np.clip(np.array(base) + self.rng.integers(-30, 31, size=3), 0, 255))
                if c not in self.taken:
                    break
            base = c
        self.taken.add(base)
        r, g, b = base
        return r + 256 * g + 256 * 256 * b


def _categories_file(root: Path) -> Path | None:
    """The release's panoVIPSeg_categories.json (beside the data, or where the official scripts read it)."""
    for path in (root / CATEGORIES_JSON, root / VIPSEG_720P / CATEGORIES_JSON):
        if path.is_file():
            return path
    return None


def _check_categories_file(path: Path) -> None:
    found = read_json(path, what="VIPSeg categories JSON")
    want = vipseg_categories()
    key = lambda c: (c.get("id"), c.get("name"), int(bool(c.get("isthing"))), list(c.get("color", [])))  # noqa: E731
    if not isinstance(found, list) or [key(c) for c in found if isinstance(c, dict)] != [key(c) for c in want]:
        raise DataError(f"{path}: not VIPSeg's 124 categories (ids 0..123 with their names, isthing and colours, "
                        "in order); use the panoVIPSeg_categories.json of the official release")


def _resize_frame(args: tuple[Path, Path | None, Path, Path | None, int]) -> tuple[int, int] | None:
    """Resize one image (bilinear) and its mask (nearest) to ``height``; returns the mask's (H, W) or None."""
    src_image, src_mask, dst_image, dst_mask, height = args
    with decoding(src_image, what="VIPSeg image", fix="the file is corrupt, extract it again"), \
            Image.open(src_image) as img:
        w, h = img.size
        size = (int(height * w / h), height)  # the official rounding
        img = img.convert("RGB") if img.mode not in ("RGB", "L") else img
        out = img.resize(size, Image.BILINEAR)
    with atomic_path(dst_image) as tmp:
        out.save(tmp, format="JPEG", quality=JPEG_QUALITY)
    if src_mask is None:
        return None
    values = read_panomask(src_mask)  # checked: single channel, VIPSeg values only
    if values.shape != (h, w):
        raise DataError(f"size mismatch: {src_mask} is {values.shape[0]}x{values.shape[1]} (HxW) but its image "
                        f"{src_image} is {h}x{w}; the files belong to different frames")
    mask = Image.fromarray(values.astype(np.uint16)).resize(size, Image.NEAREST)
    with atomic_path(dst_mask) as tmp:
        mask.save(tmp, format="PNG")
    return size[1], size[0]


def _convert_video(job: tuple[str, str, int]) -> dict:
    """Convert one video; returns (and saves) its record: images and per-frame segments of the GT JSON."""
    root_text, video, height = job
    root = Path(root_text)
    out = root / VIPSEG_720P
    src_images = checked_join(VIPSEG_ORIGINAL_LAYOUT.image_dir(root), video, source=root, what="video id")
    src_masks = checked_join(VIPSEG_ORIGINAL_LAYOUT.panomask_dir(root), video, source=root, what="video id")
    names = sorted(p.name for p in src_images.iterdir() if not p.name.startswith("."))
    mask_names = set(_video_frames(src_masks, ".png")) if src_masks.is_dir() else set()
    stems = [n.split(".")[0] for n in names]  # the official scripts' stem (up to the first dot)
    orphans = sorted(mask_names - set(stems))
    if orphans:
        raise DataError(f"{src_masks / (orphans[0] + '.png')}: a mask without an image in {src_images}; restore "
                        "the image or remove the mask")
    colours = PanopticColours(vipseg_categories(), np.random.default_rng(zlib.crc32(video.encode())))
    segment_of: dict[int, int] = {}  # mask value -> segment id, constant within the video
    images, annotations = [], []
    out_images, out_masks, out_rgb = (checked_join(out, kind, video, source=root, what="video id")
                                      for kind in ("images", "panomasks", "panomasksRGB"))
    for name, stem in zip(names, stems, strict=True):
        # names are listed from the folder; checked as names all the same (a frame name becomes an output path)
        image, mask_name = (checked_join(src_images, name, source=src_images, what="frame file name"),
                            check_name(f"{stem}.png", source=src_images, what="frame file name"))
        has_mask = stem in mask_names
        size = _resize_frame((image, src_masks / mask_name if has_mask else None, out_images / image.name,
                              out_masks / mask_name if has_mask else None, height))
        if size is None:
            continue
        values = read_panomask(out_masks / mask_name)
        uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        ids = np.zeros(len(uniq), dtype=np.int64)
        segments = []
        for k, (value, category, area) in enumerate(zip(uniq.tolist(), panomask_category(uniq).tolist(),
                                                         counts.tolist(), strict=True)):
            if value == 0:
                continue
            if value not in segment_of:
                segment_of[value] = colours.get(category)
            ids[k] = segment_of[value]
            segments.append({"id": ids[k].item(), "category_id": category, "iscrowd": 0, "area": area})
        write_panoptic_png(out_rgb / mask_name, ids[inverse].reshape(values.shape))
        images.append({"id": stem, "width": size[1], "height": size[0], "file_name": f"{stem}.png"})
        annotations.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": segments})
    record = {"video_id": video, "height": height, "version": CONVERT_VERSION, "images": images,
              "annotations": annotations}
    write_json_atomic(checked_join(out / CONVERT_DIR, f"{video}.json", source=root, what="video id"), record)
    return record


def convert_vipseg(root: str | os.PathLike, *, height: int = 720, workers: int = 0, overwrite: bool = False,
                   log: Callable[[str], None] = print) -> Path:
    """Convert ``<root>/imgs`` + ``<root>/panomasks`` to ``<root>/VIPSeg_720P`` (see the module docstring).

    Args:
        height: frame height of the converted set (official: 720).
        workers: processes converting videos in parallel (0: in this process).
        overwrite: replace ``VIPSeg_720P`` folders and JSONs vidseg did not write (e.g. the official scripts').
    Returns:
        ``<root>/VIPSeg_720P``.
    Raises:
        DataError: no original layout, bad masks or categories, a split list naming a missing video, a
            conversion at another height in the folder, or outputs vidseg did not write (without ``overwrite``).
    """
    root = Path(root)
    src_images, src_masks = VIPSEG_ORIGINAL_LAYOUT.image_dir(root), VIPSEG_ORIGINAL_LAYOUT.panomask_dir(root)
    if not src_images.is_dir() or not src_masks.is_dir():
        raise DataError(f"{root}: expected the original VIPSeg layout ({src_images}/<video>/<frame>.jpg and "
                        f"{src_masks}/<video>/<frame>.png) of the release ({VIPSEG_URL}); give --root the folder "
                        "that holds imgs/ and panomasks/")
    if height < 1 or workers < 0:
        raise DataError(f"--height must be >= 1 and --workers >= 0, got {height} and {workers}")
    categories_file = _categories_file(root)
    if categories_file is not None:
        _check_categories_file(categories_file)
    videos = sorted(p.name for p in src_images.iterdir() if p.is_dir() and not p.name.startswith("."))
    for video in videos:
        check_name(video, source=src_images, what="video id")
    if not videos:
        raise DataError(f"{src_images} holds no video folder; give --root the folder of the unpacked release")
    splits = {s: read_split(root, s) for s in SPLITS if VIPSegLayout.split_file(root, s).is_file()}
    known = set(videos)
    for split, listed in splits.items():
        missing = [v for v in listed if v not in known]
        if missing:
            raise DataError(f"{VIPSegLayout.split_file(root, split)} lists {len(missing)} videos without frames in "
                            f"{src_images} (e.g. {missing[0]}); unpack the whole release or fix the list")
    out = root / VIPSEG_720P
    params = {"height": int(height), "version": CONVERT_VERSION}
    json_names = ["panoptic_gt_VIPSeg.json", *(f"panoptic_gt_VIPSeg_{s}.json" for s in splits)]
    names = json_names + ([CATEGORIES_JSON] if categories_file is None else [])  # the release's copy is kept
    try:
        with open_output_folder(out, key="convert", overwrite=overwrite, option="--root",
                                inputs={"imgs": src_images, "panomasks": src_masks}) as folder:
            folder.claim(names, fresh=["images", "panomasks", "panomasksRGB", CONVERT_DIR])
            params_path = out / CONVERT_DIR / "params.json"
            if params_path.is_file() and read_json(params_path, what="conversion parameters") != params:
                raise DataError(f"{out} was converted with other parameters ({params_path}); convert into another "
                                "root, or remove VIPSeg_720P and convert again")
            write_json_atomic(params_path, params)
            records = _convert_all(root, out, videos, height, workers, log)
            with_masks = [r for r in records if r["images"]]
            full = {"videos": [{"video_id": r["video_id"], "images": r["images"]} for r in with_masks],
                    "annotations": [{"video_id": r["video_id"], "annotations": r["annotations"]} for r in with_masks],
                    "categories": vipseg_categories()}
            written = []
            if CATEGORIES_JSON in names:
                write_json_atomic(out / CATEGORIES_JSON, vipseg_categories())
                written.append(CATEGORIES_JSON)
            _write_json(out / "panoptic_gt_VIPSeg.json", full)
            written.append("panoptic_gt_VIPSeg.json")
            for split, listed in splits.items():
                keep = set(listed)
                doc = {key: value if key == "categories" else [v for v in value if v["video_id"] in keep]
                       for key, value in full.items()}
                if not doc["videos"]:
                    log(f"{split}.txt: no video has masks (the test split): no panoptic_gt_VIPSeg_{split}.json")
                    continue
                _write_json(checked_join(out, f"panoptic_gt_VIPSeg_{split}.json", source="the split lists",
                                         what="split"), doc)
                written.append(f"panoptic_gt_VIPSeg_{split}.json")
            folder.record(["images", "panomasks", "panomasksRGB", CONVERT_DIR, *written])
            folder.retire(["images", "panomasks", "panomasksRGB", CONVERT_DIR, *written])
    except NotWrittenByVidsegError as err:  # the library's message names overwrite=true, a Hydra option
        raise DataError(str(err).split("; vidseg replaces")[0] + "; the converter replaces only what it wrote: "
                        "pass --overwrite to replace it, or convert into another root") from None
    log(f"VIPSeg converted: {len(with_masks)} videos with masks, {len(records)} in all, in {out}")
    return out


def _write_json(path: Path, doc: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc))  # compact: the full JSON of the release is large


def _convert_all(root: Path, out: Path, videos: list[str], height: int, workers: int,
                 log: Callable[[str], None]) -> list[dict]:
    """Every video's record, converting those without one (``workers`` processes)."""
    records: dict[str, dict] = {}
    todo = []
    for video in videos:
        path = checked_join(out / CONVERT_DIR, f"{video}.json", source=root, what="video id")
        record = read_json(path, what="conversion record") if path.is_file() else None
        if isinstance(record, dict) and record.get("version") == CONVERT_VERSION and record.get("height") == height:
            records[video] = record
        else:
            todo.append((str(root), video, height))
    if records:
        log(f"{len(records)} videos already converted, kept")
    if workers > 0 and len(todo) > 1:
        with get_context("spawn").Pool(workers) as pool:
            for k, record in enumerate(pool.imap_unordered(_convert_video, todo), start=1):
                records[record["video_id"]] = record
                log(f"[{k}/{len(todo)}] {record['video_id']}: {len(record['images'])} frames with masks")
    else:
        for k, job in enumerate(todo, start=1):
            record = _convert_video(job)
            records[record["video_id"]] = record
            log(f"[{k}/{len(todo)}] {record['video_id']}: {len(record['images'])} frames with masks")
    return [records[v] for v in videos]


# --------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> Path | None:
    """``python -m vidseg.data.vipseg convert --root <root> [--height 720] [--workers N] [--overwrite]``."""
    from vidseg.utils.cli import run_cli

    parser = argparse.ArgumentParser(prog="python -m vidseg.data.vipseg",
                                     description="VIPSeg tools (the dataset: " + VIPSEG_URL + ")")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="original layout (imgs/, panomasks/) -> VIPSeg_720P (images, panomasks, "
                                          "panomasksRGB, panoptic_gt_VIPSeg_<split>.json), without panopticapi")
    conv.add_argument("--root", required=True, help="the folder holding imgs/, panomasks/ and train.txt/val.txt")
    conv.add_argument("--height", type=int, default=720, help="frame height of the converted set (official: 720)")
    conv.add_argument("--workers", type=int, default=0, help="processes converting videos in parallel")
    conv.add_argument("--overwrite", action="store_true",
                      help="replace VIPSeg_720P files that vidseg did not write (e.g. the official scripts')")
    args = parser.parse_args(argv)
    return run_cli(lambda: convert_vipseg(args.root, height=args.height, workers=args.workers,
                                          overwrite=args.overwrite), user_paths=lambda: [args.root])


if __name__ == "__main__":
    main()

"""What Cityscapes-VPS and VIPER-VPS share: COCO RLE, label PNG reading, the VPS datasets and datamodule.

Both datasets are published in the same "VPS format" (vpsnet.md; file names in :mod:`vidseg.data.vps_layout`).
:mod:`vidseg.data.cityscapes_vps` and :mod:`vidseg.data.viper` only add their classes, default root and
download instructions.

The ``panoptic`` encoding of every vidseg VPS label tensor (the ``panoptic_inst`` encoding of Cityscapes-VPS)::

    stuff pixel                     stuff class id                    (< 1000)
    pixel of a thing instance       class * 1000 + instance id        (>= 1000; == the instance's track id)
    crowd / thing without instance  the bare thing class id           (< 1000: losses ignore it; VPQ uses it
                                                                       for the crowd rule)
    void                            255

Instance ids are per video and per class (0 is valid, as in Cityscapes-VPS), so ``class * 1000 + id``
is unique within a video: vidseg uses it as the track id.

Samples (all tensors on CPU):

- :class:`VPSTrainDataset` item: an annotated frame (target, index 0) and its reference frame (index 1,
  the previous or next annotated frame of the same video), one augmentation draw for both::

      images     (2, 3, H, W) uint8    RGB, not normalised; (H, W) = crop_size
      semantic   (2, H, W) int64       class ids, 255 void (padding too)
      panoptic   (2, H, W) int64       the encoding above
      instances  [target, reference]   each {"boxes": (N, 4) float32 xyxy (x2, y2 exclusive),
                                        "labels": (N,) int64 class id, "masks": (N, H, W) uint8,
                                        "track_ids": (N,) int64 class * 1000 + instance id}
      image_ids  (2,) int64            ids in the instances JSON
      file_names [str, str]; video str

- :class:`VPSEvalDataset` item: one raw frame of a clip, clips in order, frames in order::

      images     (2, 3, H, W) uint8    [frame t, reference = frame t - 1 (t for the first frame)]
      panoptic   (H, W) int64          ground truth in the encoding above; all 255 where not annotated
      semantic   (H, W) int64          class ids (255 void / not annotated)
      annotated bool; is_first bool; video str; frame_index int (0-based in the clip); num_frames int;
      image_id (the frames JSON id: int vid * 10000 + frame for Cityscapes-VPS); panoptic_image_id str
      (the ground-truth / pan_pred id, :meth:`VPSLayout.image_id_of`); file_name str
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vidseg.constants import IGNORE_LABEL, PANOPTIC_LABEL_DIVISOR
from vidseg.data.collate import collate_single
from vidseg.data.io import decoding, read_image
from vidseg.data.loading import check_loader_settings, loader_options, resolve_pin_memory
from vidseg.data.names import check_name, check_relative_path, checked_join
from vidseg.data.panoptic import (
    check_panoptic_gt,
    json_flag,
    json_get,
    json_id,
    json_int,
    json_object,
    read_json,
    read_panoptic_png,
)
from vidseg.data.sampling import split_epoch_index, train_sampler
from vidseg.data.transforms import build_clip_transform
from vidseg.data.vps_layout import VPSLayout
from vidseg.errors import DatasetLayoutError, MaskFormatError
from vidseg.utils.seeding import ReseedableRNG, worker_init_fn

# Official: every instance with pixels in the crop is kept. A larger value (e.g. 16, an option) drops smaller
# fragments from every loss (their pixels keep the bare class id, i.e. ignored).
MIN_INSTANCE_AREA = 0
# Official: a crop whose target or reference frame keeps no instance is skipped (mmdetection draws another
# random sample); after this many redraws the last one is used as it is (a set without instances would loop).
MAX_REDRAWS = 50


@dataclass(frozen=True)
class VPSDatasetInfo:
    """What differs between the VPS datasets.

    Attributes:
        layout: file naming (vps_layout).
        categories: [{"id", "name", "isthing", "color"}] in class-id order (ids 0..C-1).
        frames_per_clip: raw frames every evaluation clip must have (30 for Cityscapes-VPS), None = any.
        missing_root_message: ``f(root, looked_for) -> str`` saying how to get the data and the toy command.
    """

    layout: VPSLayout
    categories: tuple
    frames_per_clip: int | None
    missing_root_message: Any

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(c["id"] for c in self.categories if c["isthing"])


# ----------------------------------------------------------------------------------------------------------
# COCO RLE (pycocotools is not a dependency)
# ----------------------------------------------------------------------------------------------------------


def rle_encode(mask: np.ndarray, *, compressed: bool = True) -> dict:
    """COCO run-length encoding of a binary mask.

    Args:
        mask: (H, W) bool or 0/1 integers.
        compressed: True -> ``counts`` is the compact string form pycocotools writes; False -> a list of
            ints (the "uncompressed RLE" COCO uses for crowd annotations).
    Returns:
        {"size": [H, W], "counts": str | list[int]}; runs go down the columns (Fortran order) and start with
        a run of zeros (0 when the first pixel is set).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    flat = mask.ravel(order="F").astype(bool)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    if not flat.size:
        counts = []
    return {"size": [int(mask.shape[0]), int(mask.shape[1])],
            "counts": _counts_to_string(counts) if compressed else [int(c) for c in counts]}


def _counts_to_string(counts: Sequence[int]) -> str:
    # pycocotools' rleToString: each count (minus the count two places back, from the 4th on) as 5-bit
    # groups, least significant first, +48; bit 0x20 marks "more groups follow"; 0x10 is the sign.
    out = []
    for i, x in enumerate(counts):
        x = int(x) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def _string_to_counts(text: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(rle: dict, *, where: str = "RLE") -> np.ndarray:
    """Decode a COCO RLE (string or list ``counts``) to an ``(H, W) uint8`` 0/1 mask.

    Raises:
        MaskFormatError: polygons, malformed counts, or counts that do not add up to H * W (names ``where``).
    """
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        kind = "a polygon list" if isinstance(rle, list) else type(rle).__name__
        raise MaskFormatError(f"{where}: segmentation is {kind}, expected COCO RLE {{'size': [H, W], 'counts': "
                              "...}} (the *_rle.json / *_coco.json files of the VPS release use RLE)")
    h, w = (int(v) for v in rle["size"])
    raw = rle["counts"]
    try:
        counts = _string_to_counts(raw) if isinstance(raw, str) else [int(c) for c in raw]
    except (IndexError, TypeError, ValueError) as err:
        raise MaskFormatError(f"{where}: malformed RLE counts ({err})") from err
    counts_arr = np.asarray(counts, dtype=np.int64)
    if (counts_arr < 0).any() or counts_arr.sum() != h * w:
        raise MaskFormatError(f"{where}: RLE counts sum to {int(counts_arr.sum())}, expected H*W = {h}*{w} = "
                              f"{h * w}; the annotation is corrupt or belongs to an image of another size")
    values = (np.arange(len(counts_arr)) % 2).astype(np.uint8)
    return np.repeat(values, counts_arr).reshape(w, h).T.copy()


# ----------------------------------------------------------------------------------------------------------
# Label PNGs
# ----------------------------------------------------------------------------------------------------------


def read_label_png(path: str | os.PathLike, *, num_classes: int) -> np.ndarray:
    """Read a ``labelmap`` PNG: ``(H, W) uint8`` class ids 0..num_classes-1, 255 void.

    Raises:
        FileNotFoundError: missing file.
        MaskFormatError: corrupt/truncated file, an RGB/RGBA (colour) or 16-bit PNG, or values that are not
            class ids (names the file, the value found and the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label map not found: {path}")
    with decoding(path, what="PNG", fix="the file is corrupt or truncated, copy or regenerate it"), \
            Image.open(path) as img:
        img.load()
        mode = img.mode
        if mode not in ("L", "P"):
            raise MaskFormatError(
                f"{path}: label map PNG is mode {mode!r}; expected an 8-bit grayscale PNG whose values are "
                f"class ids (0..{num_classes - 1}, 255 void), as prepare_data/create_panoptic_labels.py "
                "writes. A colour (RGB) file is a visualisation, not a label map: regenerate labelmap/ "
                "with the official script or save Image.fromarray(ids.astype('uint8'))")
        labels = np.array(img)
    bad = (labels >= num_classes) & (labels != IGNORE_LABEL)
    if bad.any():
        raise MaskFormatError(
            f"{path}: value {int(labels[bad][0])} is not a class id (expected 0..{num_classes - 1} or 255); "
            "is this an original Cityscapes labelId map? Use the labelmap/ written by the official scripts")
    return labels


# ----------------------------------------------------------------------------------------------------------
# Shared checks
# ----------------------------------------------------------------------------------------------------------


def _json_list(data: Any, key: str, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetLayoutError(f"{path}: expected a JSON object with a list {key!r}, found keys {found}; "
                                 "is this the right file of the release?")
    return data[key]


def _require_file(path: Path, what: str, fix: str) -> None:
    if not path.is_file():
        raise DatasetLayoutError(f"{what} not found: {path} ({fix})")


def _check_size(path: Path, got: tuple[int, int], want: tuple[int, int], want_from: str) -> None:
    if got != want:
        raise DatasetLayoutError(f"size mismatch: {path} is {got[0]}x{got[1]} (HxW) but {want_from} is "
                                 f"{want[0]}x{want[1]}; the files belong to different frames or were resized")


def _category_map(categories: list, info: VPSDatasetInfo, path: Path) -> dict[int, int]:
    """JSON category id -> vidseg class id, by name (releases number things differently), else by id."""
    by_name = {c["name"]: c["id"] for c in info.categories}
    ours = {c["id"] for c in info.categories}
    mapping = {}
    for cat in categories:
        if cat.get("name") in by_name:
            mapping[int(cat["id"])] = by_name[cat["name"]]
        elif int(cat["id"]) in ours:
            mapping[int(cat["id"])] = int(cat["id"])
        else:
            raise DatasetLayoutError(f"{path}: category {cat} is not a {info.layout.name} class "
                                     f"({', '.join(by_name)})")
    return mapping


def _root_or_message(root: str | os.PathLike | None, info: VPSDatasetInfo, looked_for: Path | None = None) -> Path:
    root = Path(root if root is not None else info.layout.default_root)
    if not root.is_dir():
        raise FileNotFoundError(info.missing_root_message(root, looked_for or root))
    return root


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Frame:
    image_id: int
    file_name: str
    video: str
    frame: int
    height: int
    width: int
    annotations: list


class VPSTrainDataset(ReseedableRNG, Dataset):
    """Annotated frame + reference frame (the previous or next annotated frame of its video), augmented once.

    Reads the published training files: ``instances_<split>..json`` (images, COCO RLE instance masks with
    ``inst_id``), ``<split>/img/<file_name>`` and ``<split>/labelmap/<gt png name>``. The reference is
    drawn like the official offsets [-1, +1] but within the video, ordered by frame number (the first and
    last annotated frames use the one neighbour they have). Augmentation (one draw for both frames):
    random scale in ``scale``, pad to ``crop_size`` (image: ImageNet mean, labels: 255), random crop,
    horizontal flip. Item keys and shapes: see the module docstring; ``len = repeat * annotated frames``.

    Instances (official rules by default): an instance is kept when at least ``max(min_instance_area, 1)``
    of its pixels are in the crop (default 0: every non-empty one); with ``skip_crops_without_instances``
    (default True) a draw whose target or reference crop keeps no instance is replaced by a draw of another
    random annotated frame (at most ``MAX_REDRAWS`` times), as the official pipeline skips such crops.

    Randomness (reference choice and augmentation) comes from the dataset's own RNG, seeded from ``seed``,
    the torch seed and the rank, and reseeded per DataLoader worker by ``worker_init_fn`` via :meth:`reseed`.
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        info: VPSDatasetInfo,
        *,
        split: str = "train",
        crop_size: Sequence[int] = (800, 1600),
        scale: Sequence[float] = (0.8, 1.5),
        hflip: bool = True,
        min_instance_area: int = MIN_INSTANCE_AREA,
        skip_crops_without_instances: bool = True,
        repeat: int = 1,
        seed: int = 0,
    ) -> None:
        self.info = info
        layout = info.layout
        ann_path = layout.instances_json(root if root is not None else layout.default_root, split)
        self.root = _root_or_message(root, info, ann_path)
        ann_path = layout.instances_json(self.root, split)
        self.image_dir = layout.image_dir(self.root, split)
        self.label_dir = layout.labelmap_dir(self.root, split)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.min_instance_area = int(min_instance_area)
        self.skip_crops_without_instances = bool(skip_crops_without_instances)
        self.repeat = int(repeat)
        self.seed = int(seed)
        self.frames, self.neighbours = self._index(ann_path)
        self.transform = build_clip_transform(self.crop_size, (float(scale[0]), float(scale[1])), hflip=hflip)

    def _index(self, ann_path: Path) -> tuple[list[_Frame], list[list[int]]]:
        data = read_json(ann_path, what=f"{self.info.layout.name} instances JSON")
        images = _json_list(data, "images", ann_path)
        annotations = _json_list(data, "annotations", ann_path)
        cat_map = _category_map(_json_list(data, "categories", ann_path), self.info, ann_path)
        by_image = defaultdict(list)
        fix = "fix the entry (re-extract the release / rerun the official preparation scripts)"
        for k, ann in enumerate(annotations):
            where = f"annotations[{k}]"
            json_object(ann, ann_path, where, fix, DatasetLayoutError)
            category = json_int(json_get(ann, "category_id", ann_path, where, fix, DatasetLayoutError), ann_path,
                                f"{where}.category_id", fix, error=DatasetLayoutError)
            json_get(ann, "image_id", ann_path, where, fix, DatasetLayoutError)
            json_get(ann, "segmentation", ann_path, where, fix, DatasetLayoutError)  # decoded when the frame is read
            crowd = json_flag(ann.get("iscrowd", 0), ann_path, f"{where}.iscrowd", fix, DatasetLayoutError)
            if not crowd:  # the track id of a thing comes from inst_id
                json_int(json_get(ann, "inst_id", ann_path, where, fix, DatasetLayoutError), ann_path,
                         f"{where}.inst_id", fix, minimum=0, maximum=PANOPTIC_LABEL_DIVISOR - 1,
                         error=DatasetLayoutError)
            ann = dict(ann, category_id=cat_map.get(category, -1))
            if ann["category_id"] not in self.info.thing_ids:
                raise DatasetLayoutError(f"{ann_path}: annotation {ann.get('id')} has category "
                                         f"{ann['category_id']}, which is not a thing class")
            by_image[ann["image_id"]].append(ann)
        layout = self.info.layout
        frames = []
        for k, im in enumerate(images):
            where = f"images[{k}]"
            json_object(im, ann_path, where, fix, DatasetLayoutError)
            image_id = json_get(im, "id", ann_path, where, fix, DatasetLayoutError)
            json_id(image_id, ann_path, f"{where}.id", fix, DatasetLayoutError)
            file_name = json_get(im, "file_name", ann_path, where, fix, DatasetLayoutError)
            height, width = (json_int(json_get(im, key, ann_path, where, fix, DatasetLayoutError), ann_path,
                                      f"{where}.{key}", fix, minimum=1, error=DatasetLayoutError)
                             for key in ("height", "width"))
            name = check_relative_path(file_name, source=ann_path, what="image file name")
            check_name(layout.video_of(im), source=ann_path, what="video id")
            try:
                frame_index = layout.frame_index_of(name)
            except ValueError as err:
                raise DatasetLayoutError(f"{ann_path}: {where}.file_name: {err}; {fix}") from None
            frames.append(_Frame(image_id, name, layout.video_of(im), frame_index, height, width,
                                 by_image.get(image_id, [])))
            _require_file(checked_join(self.image_dir, name, source=ann_path, what="image file name"),
                          f"image of {ann_path.name} entry {im['id']}", fix)
            _require_file(checked_join(self.label_dir, layout.gt_png_name(name), source=ann_path,
                                       what="label map name"), f"label map of {name}", fix)
        if not frames:
            raise DatasetLayoutError(f"{ann_path} lists no images")
        frames.sort(key=lambda f: (f.video, f.frame))
        neighbours: list[list[int]] = []
        for i, f in enumerate(frames):
            near = [j for j in (i - 1, i + 1) if 0 <= j < len(frames) and frames[j].video == f.video]
            if not near:
                raise DatasetLayoutError(
                    f"{ann_path}: video {f.video} has a single annotated frame ({f.file_name}), so it has no "
                    "reference frame (the previous or next annotated frame); add its neighbours or remove it")
            neighbours.append(near)
        return frames, neighbours

    def __len__(self) -> int:
        return self.repeat * len(self.frames)

    def _read(self, frame: _Frame) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """image (H, W, 3) uint8, labels (H, W) uint16 = class | (instance slot << 8), kept annotations."""
        image_path = checked_join(self.image_dir, frame.file_name, source=self.image_dir, what="image file name")
        label_path = checked_join(self.label_dir, self.info.layout.gt_png_name(frame.file_name), source=self.image_dir,
                                  what="label map name")
        image = read_image(image_path)
        semantic = read_label_png(label_path, num_classes=self.info.num_classes)
        _check_size(label_path, semantic.shape, image.shape[:2], image_path)
        _check_size(image_path, image.shape[:2], (frame.height, frame.width), "its entry in the instances JSON")
        slots = np.zeros(semantic.shape, dtype=np.uint16)
        kept = []
        for ann in frame.annotations:
            if ann.get("iscrowd", 0):
                continue  # crowd pixels keep the bare class id in ``panoptic`` (ignored, as in the official code)
            if len(kept) == 254:
                raise DatasetLayoutError(f"{frame.file_name}: more than 254 instances in one frame")
            mask = rle_decode(ann["segmentation"], where=f"annotation {ann.get('id')} of {frame.file_name}")
            _check_size(image_path, mask.shape, image.shape[:2], f"the RLE of annotation {ann.get('id')}")
            kept.append(ann)
            slots[mask.astype(bool)] = len(kept)  # non-overlapping in the release; the later one wins
        # Packing class and instance slot into one uint16 map lets albumentations move them with one draw
        # and nearest interpolation; padding with 255 reads back as void and "no instance".
        return image, semantic.astype(np.uint16) | (slots << 8), kept

    def _targets(self, packed: np.ndarray, anns: list[dict]) -> tuple[np.ndarray, np.ndarray, dict]:
        semantic = (packed & 0xFF).astype(np.int64)
        slots = (packed >> 8).astype(np.int64)
        panoptic = semantic.copy()  # stuff: class; thing pixels without a kept instance: bare class (ignored)
        areas = np.bincount(slots.ravel(), minlength=len(anns) + 1)
        boxes, labels, masks, track_ids = [], [], [], []
        for k, ann in enumerate(anns, start=1):
            if areas[k] < max(self.min_instance_area, 1):  # an empty mask has no box
                continue
            mask = slots == k
            cls = int(ann["category_id"])
            track = cls * PANOPTIC_LABEL_DIVISOR + int(ann["inst_id"])
            panoptic[mask] = track
            ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
            boxes.append([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1])
            labels.append(cls)
            masks.append(mask)
            track_ids.append(track)
        h, w = packed.shape
        instances = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks).astype(np.uint8) if masks else np.zeros((0, h, w), np.uint8)),
            "track_ids": torch.tensor(track_ids, dtype=torch.int64),
        }
        return semantic, panoptic, instances

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = split_epoch_index(index)
        rng = self.item_generator(epoch, index)
        i = index % len(self.frames)
        for _ in range(MAX_REDRAWS):
            item = self._draw(i, rng)
            if not self.skip_crops_without_instances or all(len(inst["labels"]) for inst in item["instances"]):
                return item
            i = int(rng.integers(len(self.frames)))  # official: another random sample
        return self._draw(i, rng)

    def _draw(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        """Annotated frame ``i`` and a reference drawn with ``rng``, augmented once (an item)."""
        near = self.neighbours[i]
        j = near[int(rng.integers(len(near)))]
        pair = [self.frames[i], self.frames[j]]
        reads = [self._read(f) for f in pair]
        if reads[0][0].shape != reads[1][0].shape:
            raise DatasetLayoutError(f"size mismatch: {self.image_dir}/{pair[0].file_name} and its reference "
                                     f"{self.image_dir}/{pair[1].file_name} differ in size")
        images = np.stack([r[0] for r in reads])
        packed = np.stack([r[1] for r in reads])
        out = self.transform(images=images, masks=packed)  # images=/masks=: one draw for both frames
        images, packed = np.ascontiguousarray(out["images"]), np.asarray(out["masks"])
        targets = [self._targets(packed[k], reads[k][2]) for k in range(2)]
        return {
            "images": torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
            "semantic": torch.from_numpy(np.stack([t[0] for t in targets])),
            "panoptic": torch.from_numpy(np.stack([t[1] for t in targets])),
            "instances": [t[2] for t in targets],
            "image_ids": torch.tensor([int(f.image_id) for f in pair], dtype=torch.int64),
            "file_names": [f.file_name for f in pair],
            "video": pair[0].video,
        }


def collate_train(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack training items: images (B, 2, 3, H, W) uint8, semantic / panoptic (B, 2, H, W) int64,
    image_ids (B, 2) int64; instances list (B) of [target, reference] dicts (N varies); file_names, video lists."""
    return {
        "images": torch.stack([b["images"] for b in batch]),
        "semantic": torch.stack([b["semantic"] for b in batch]),
        "panoptic": torch.stack([b["panoptic"] for b in batch]),
        "image_ids": torch.stack([b["image_ids"] for b in batch]),
        "instances": [b["instances"] for b in batch],
        "file_names": [b["file_names"] for b in batch],
        "video": [b["video"] for b in batch],
    }


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------


class VPSEvalDataset(Dataset):
    """Every raw frame of every clip of ``split``, clip by clip, frames in order (one item per frame).

    Frames come from the frames JSON (Cityscapes-VPS ``im_all_info_<split>_city_vps.json`` with images in
    ``<split>/img_all``; VIPER: the panoptic GT JSON with images in ``<split>/img``). The reference of frame t
    is frame t - 1; the first frame of a clip is its own reference. Annotated frames (those in the panoptic
    ground-truth JSON, matched by :meth:`VPSLayout.image_id_of`) carry ``panoptic``/``semantic`` ground truth
    decoded from ``panoptic_video`` PNGs; instance ids are numbered per video and class from the JSON.
    Keep ``batch_size=1`` and no shuffling: a streaming model resets on ``is_first``.
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        info: VPSDatasetInfo,
        *,
        split: str = "val",
        max_videos: int | None = None,
        require_ground_truth: bool | None = None,
    ) -> None:
        self.info = info
        layout = info.layout
        frames_path = layout.frames_json(root if root is not None else layout.default_root, split)
        self.root = _root_or_message(root, info, frames_path)
        self.split = split
        frames_path = layout.frames_json(self.root, split)
        self.image_dir = layout.image_dir(self.root, split, all_frames=True)
        self.gt_dir = layout.panoptic_gt_dir(self.root, split)
        gt_path = layout.panoptic_gt_json(self.root, split)
        if require_ground_truth is None:
            require_ground_truth = split != "test"
        data = read_json(frames_path, what=f"{layout.name} frames JSON")
        images = _json_list(data, "images", frames_path)
        clips: dict[str, list[dict]] = defaultdict(list)
        for im in images:
            check_relative_path(im["file_name"], source=frames_path, what="image file name")
            clips[check_name(layout.video_of(im), source=frames_path, what="video id")].append(im)
        videos = sorted(clips)[:max_videos] if max_videos else sorted(clips)
        if not videos:
            raise DatasetLayoutError(f"{frames_path} lists no images")
        self.gt: dict[str, dict] = {}
        self.segment_map: dict[str, dict[int, int]] = {}  # per video: segment id -> panoptic encoding value
        if require_ground_truth or gt_path.is_file():
            self._index_ground_truth(gt_path, {v for v in videos}, clips)
        self.items: list[tuple[dict, int, int]] = []  # (image record, index in clip, clip length)
        for video in videos:
            clip = sorted(clips[video], key=lambda im: layout.frame_index_of(im["file_name"]))
            want = info.frames_per_clip
            if want is not None and len(clip) != want:
                raise DatasetLayoutError(
                    f"{frames_path}: clip {video} has {len(clip)} frames, expected {want} (every clip of "
                    f"{layout.name} is {want} consecutive frames); fetch the missing frames into "
                    f"{self.image_dir} (prepare_data/fetch_city_images.py) and use the release's JSON")
            for t, im in enumerate(clip):
                _require_file(checked_join(self.image_dir, im["file_name"], source=frames_path, what="image file name"),
                              f"frame {t + 1} of clip {video}",
                              "fetch the sequence frames (Cityscapes leftImg8bit_sequence) into this folder")
                self.items.append((im, t, len(clip)))

    def _index_ground_truth(self, gt_path: Path, videos: set[str], clips: dict[str, list[dict]]) -> None:
        layout = self.info.layout
        data = read_json(gt_path, what=f"{layout.name} panoptic ground-truth JSON")
        # The scorer's checks (types, duplicate ids, empty GT...): one place, so validation during training
        # refuses exactly what `evaluate` refuses, with the same message.
        categories, checked = check_panoptic_gt(data, gt_path)
        cat_map = _category_map(list(categories.values()), self.info, gt_path)
        frame_ids = {layout.image_id_of(im["file_name"]) for v in videos for im in clips[v]}
        next_inst: dict[tuple[str, int], int] = defaultdict(int)
        for entry in sorted(checked, key=lambda e: e.annotation_index):  # annotation order: stable numbering
            image, ann = entry.image, entry.annotation
            pid = layout.image_id_of(image["file_name"])
            video = layout.video_of(image)
            if video not in videos:
                continue
            if pid not in frame_ids:
                raise DatasetLayoutError(f"{gt_path}: annotated image {image['file_name']} is not among the "
                                         f"frames of clip {video} in the frames JSON")
            for key in ("height", "width"):
                if key not in image:
                    raise DatasetLayoutError(f"{gt_path}: images entry of {image['file_name']} has no {key!r}; "
                                             "the GT JSON of the release gives every image its height and width")
            png = checked_join(self.gt_dir, ann.get("file_name", layout.gt_png_name(image["file_name"])),
                               source=gt_path, what="panoptic PNG name")
            _require_file(png, f"ground-truth PNG of {image['file_name']}",
                          "regenerate panoptic_video/ with prepare_data/create_panoptic_video_labels.py")
            seg_map = self.segment_map.setdefault(video, {})
            # Stable instance numbering within the video: by segment id (ids are constant within a video).
            for seg in sorted(entry.segments, key=lambda s: s["id"]):
                sid, cls = seg["id"], cat_map[seg["category_id"]]
                if sid in seg_map:
                    continue
                if cls in self.info.thing_ids and not seg["iscrowd"]:
                    seg_map[sid] = cls * PANOPTIC_LABEL_DIVISOR + next_inst[(video, cls)]
                    next_inst[(video, cls)] += 1
                else:
                    seg_map[sid] = cls
            self.gt[pid] = {"png": png, "segments": {s["id"] for s in entry.segments},
                            "size": (int(image["height"]), int(image["width"])), "video": video}

    def __len__(self) -> int:
        return len(self.items)

    def videos(self) -> list[str]:
        """The video of every item, in item order (clips are contiguous)."""
        return [self.info.layout.video_of(record) for record, _, _ in self.items]

    def _read_gt(self, pid: str, shape: tuple[int, int], image_path: Path) -> np.ndarray:
        gt = self.gt[pid]
        ids = read_panoptic_png(gt["png"])
        _check_size(gt["png"], ids.shape, shape, image_path)
        uniq, inverse = np.unique(ids, return_inverse=True)
        seg_map = self.segment_map[gt["video"]]
        values = np.empty(len(uniq), dtype=np.int64)
        for k, sid in enumerate(uniq.tolist()):
            if sid == 0:
                values[k] = IGNORE_LABEL
            elif sid in gt["segments"]:
                values[k] = seg_map[sid]
            else:
                raise DatasetLayoutError(f"{gt['png']}: segment id {sid} is in the PNG but not in the JSON's "
                                         f"segments_info of this frame; PNG and JSON are out of sync")
        return values[inverse].reshape(ids.shape)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_rec, t, length = self.items[index]
        ref_rec = self.items[index - 1][0] if t > 0 else image_rec
        path, ref_path = (checked_join(self.image_dir, rec["file_name"], source=self.image_dir, what="image file name")
                          for rec in (image_rec, ref_rec))
        image, ref = read_image(path), read_image(ref_path)
        _check_size(ref_path, ref.shape[:2], image.shape[:2], f"the next frame {path}")
        pid = self.info.layout.image_id_of(image_rec["file_name"])
        annotated = pid in self.gt
        if annotated:
            panoptic = self._read_gt(pid, image.shape[:2], path)
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
            "video": self.info.layout.video_of(image_rec),
            "frame_index": t,
            "num_frames": length,
            "image_id": image_rec["id"],
            "panoptic_image_id": pid,
            "file_name": image_rec["file_name"],
        }


# ----------------------------------------------------------------------------------------------------------
# Datamodule
# ----------------------------------------------------------------------------------------------------------


def video_index_ranges(videos: Sequence[str]) -> list[range]:
    """Contiguous index ranges of equal consecutive video names (a clip-ordered frame list -> its clips)."""
    ranges, start = [], 0
    for i in range(1, len(videos) + 1):
        if i == len(videos) or videos[i] != videos[start]:
            ranges.append(range(start, i))
            start = i
    return ranges


class VideoShardSampler(DistributedSampler):
    """Frames of whole clips, in order, for one rank: clip k goes to rank k % world_size.

    A subclass of DistributedSampler, so Lightning keeps it as it is instead of cutting the frame list into
    interleaved shards (which would split every clip across processes and break streaming). Ranks may get
    different numbers of frames: validation has no collective operation before the metrics' final sync.
    """

    def __init__(self, videos: Sequence[str], *, num_replicas: int, rank: int) -> None:
        # DistributedSampler's constructor only needs a sized dataset; indices come from the clip ranges.
        super().__init__(list(videos), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.ranges = video_index_ranges(list(videos))
        self.indices = [i for k, r in enumerate(self.ranges) if k % num_replicas == rank for i in r]
        self.num_samples = len(self.indices)
        self.total_size = len(videos)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class VPSDataModule(pl.LightningDataModule):
    """Training pairs (shuffled) and frame-by-frame evaluation of one VPS dataset; subclasses set ``info``.

    ``root=None`` looks in ``info.layout.default_root``; a missing folder stops ``setup()`` with a message
    saying where it looked, how to get the data and how to generate the toy set. ``min_instance_area`` and
    ``skip_crops_without_instances`` go to :class:`VPSTrainDataset` (official defaults 0 and True).
    """

    info: VPSDatasetInfo
    layout: VPSLayout  # a class attribute: the evaluate entry point reads it from the class

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        split: str = "val",
        crop_size: Sequence[int] = (800, 1600),
        scale: Sequence[float] = (0.8, 1.5),
        hflip: bool = True,
        min_instance_area: int = MIN_INSTANCE_AREA,
        skip_crops_without_instances: bool = True,
        repeat: int = 1,
        batch_size: int = 1,
        num_workers: int = 0,
        val_max_videos: int | None = None,
        pin_memory: bool | str = "auto",
        prefetch_factor: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root) if root is not None else None
        self.split = str(split)
        # Plain tuples: Hydra passes ListConfig, which must not leak into datasets or checkpoints.
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.hflip = bool(hflip)
        self.min_instance_area = int(min_instance_area)
        self.skip_crops_without_instances = bool(skip_crops_without_instances)
        self.repeat = int(repeat)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.val_max_videos = val_max_videos
        resolve_pin_memory(pin_memory)  # a bad value stops here, not at the first loader
        check_loader_settings(self.num_workers, prefetch_factor)
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor  # see vidseg.data.loading
        self.seed = int(seed)
        self.train_dataset: VPSTrainDataset | None = None
        self.val_dataset: VPSEvalDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = VPSTrainDataset(
                self.root, self.info, crop_size=self.crop_size, scale=self.scale, hflip=self.hflip,
                min_instance_area=self.min_instance_area,
                skip_crops_without_instances=self.skip_crops_without_instances, repeat=self.repeat, seed=self.seed,
            )
        if stage in (None, "fit", "validate", "test", "predict") and self.val_dataset is None:
            self.val_dataset = VPSEvalDataset(self.root, self.info, split=self.split, max_videos=self.val_max_videos)

    def _require(self, dataset: Dataset | None, stage: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(f"call setup({stage!r}) before asking for its dataloader")
        return dataset

    def _loader_options(self) -> dict[str, Any]:
        return loader_options(self.trainer, num_workers=self.num_workers, pin_memory=self.pin_memory,
                              prefetch_factor=self.prefetch_factor)

    def train_dataloader(self) -> DataLoader:
        dataset = self._require(self.train_dataset, "fit")
        return DataLoader(
            dataset, batch_size=self.batch_size, drop_last=True,
            sampler=train_sampler(self.trainer, len(dataset), self.batch_size, seed=self.seed),
            worker_init_fn=worker_init_fn, collate_fn=collate_train, **self._loader_options(),
        )

    def val_dataloader(self) -> DataLoader:
        # Frames in order, one per batch: the model streams them and resets on ``is_first``. Under DDP each
        # rank gets whole clips (Lightning keeps a DistributedSampler it is given instead of interleaving frames).
        dataset = self._require(self.val_dataset, "validate")
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if world > 1:
                sampler = VideoShardSampler(dataset.videos(), num_replicas=world, rank=torch.distributed.get_rank())
        return DataLoader(
            dataset, batch_size=1, shuffle=False, sampler=sampler,
            worker_init_fn=worker_init_fn, collate_fn=collate_single, **self._loader_options(),
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

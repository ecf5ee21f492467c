"""COCO-panoptic PNG and JSON I/O shared by the VPS datasets, the submission reader and the writers.

A panoptic PNG is ``(H, W, 3) uint8`` RGB whose colour encodes a segment id, ``id = R + 256 G + 256^2 B``;
id 0 (black) is void. The segments of a frame are listed in a JSON record
``{"segments_info": [{"id", "category_id", "iscrowd", "area", ...}]}``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vidseg.data.io import atomic_path, decoding, read_png_header, warn_user
from vidseg.data.names import check_relative_path
from vidseg.errors import DataError, MaskFormatError

# A palette or grayscale PNG stores one byte per pixel: its values are class or instance ids, not the
# COCO-panoptic colour code. Reading it as RGB would silently turn every id into a grey colour.
_PANOPTIC_HINT = (
    "expected a COCO-panoptic RGB PNG (segment id = R + 256*G + 256^2*B, 0 = void). Convert id maps with "
    "vidseg.data.panoptic.write_panoptic_png(path, ids)"
)


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` COCO-panoptic colours -> ``(H, W) int64`` segment ids."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """``(H, W)`` integer segment ids in [0, 256^3) -> ``(H, W, 3) uint8`` COCO-panoptic colours."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"segment ids must be in [0, 16777216) to be stored as RGB, got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """Read a COCO-panoptic RGB PNG as ``(H, W) int64`` segment ids (0 = void).

    Raises:
        FileNotFoundError: the file does not exist.
        MaskFormatError: corrupt or truncated file, a 16-bit, grayscale or palette PNG (RGBA is read from
            its RGB channels with a warning, as the official eval_vpq.py reads it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"panoptic PNG not found: {path}")
    header = read_png_header(path)
    if header is not None and header[3] == 2 and header[2] != 8:
        # PIL (and the official eval_vpq.py, which reads through PIL) keeps only the high byte of each 16-bit
        # channel: every id would silently become another one (small ids all become 0, void).
        raise MaskFormatError(f"{path}: PNG is RGB with {header[2]} bits per channel, {_PANOPTIC_HINT} with 8 "
                              "bits per channel; PIL reads only the high byte of 16-bit channels, so the ids "
                              "would be wrong. Save it again as 8-bit RGB")
    with decoding(path, what="PNG", fix="the file is corrupt or truncated, write or copy it again"), \
            Image.open(path) as img:
        img.load()  # decode now so truncated files fail here
        mode = img.mode
        if mode == "RGBA":
            # The official eval_vpq.py reads the colour channels and ignores alpha: score the same ids, but
            # say so once per process, since an alpha channel may have meant "void" to whoever wrote it.
            _warn_rgba_once(path)
            img = img.convert("RGB")
            mode = "RGB"
        if mode != "RGB":
            raise MaskFormatError(f"{path}: PNG mode is {mode!r} ({_describe_mode(mode)}), {_PANOPTIC_HINT}")
        rgb = np.asarray(img)
    return rgb_to_id(rgb)


_RGBA_WARNED: list[bool] = []


def _warn_rgba_once(path: Path) -> None:
    if not _RGBA_WARNED:
        _RGBA_WARNED.append(True)
        warn_user(f"{path}: PNG is RGBA; scored from its RGB channels with alpha ignored, as the official "
                  "eval_vpq.py does (other RGBA PNGs of this run are read the same way without another warning)")


def _describe_mode(mode: str) -> str:
    return {"P": "palette", "L": "grayscale", "I": "32-bit grayscale", "I;16": "16-bit grayscale",
            "RGBA": "RGB with alpha", "LA": "grayscale with alpha", "1": "binary"}.get(mode, "not RGB")


def write_panoptic_png(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write ``(H, W)`` segment ids as a COCO-panoptic RGB PNG, atomically."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"segment ids must be (H, W), got shape {ids.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(id_to_rgb(ids), mode="RGB").save(tmp, format="PNG")


def read_json(path: str | os.PathLike, *, what: str = "JSON file") -> Any:
    """Load a JSON file; a missing or corrupt file raises :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
        # json.load keeps the last of two equal keys without a word: two "annotations" lists, or two
        # entries for one video, would silently drop data.
        out: dict = {}
        for key, value in pairs:
            if key in out:
                raise DataError(f"{path}: {what} has the key {key!r} twice in one object; every key must be "
                                "unique (JSON readers keep only one of them): merge or remove the duplicate")
            out[key] = value
        return out

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise DataError(f"{path}: {what} is not valid JSON ({type(err).__name__}: {err}); the file is corrupt or "
                        "truncated, write or copy it again") from err


# ---------------------------------------------------------------------------------------- JSON field checks
# Every field of a GT JSON or pred.json that scoring reads is checked here before scoring, so a wrong type
# (a string area, a NaN, a missing key) is one error naming the file, the field's JSON path and the fix,
# never a traceback or, worse, a silently wrong number.


def json_field_error(path: object, where: str, expected: str, found: Any, fix: str,
                     error: type[DataError] = DataError) -> DataError:
    """``<file>: <json path>: expected <what>, found <value>; fix ...`` as ``error``."""
    shown = "nothing (the key is missing)" if found is _MISSING else _short(found)
    return error(f"{path}: {where}: expected {expected}, found {shown}; {fix}")


_MISSING = object()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_get(record: dict, key: str, path: object, where: str, fix: str,
             error: type[DataError] = DataError) -> Any:
    """``record[key]``; a missing key raises naming ``where.key``."""
    if key not in record:
        raise json_field_error(path, f"{where}.{key}", f"a {key!r} field", _MISSING, fix, error)
    return record[key]


def json_list(value: Any, path: object, where: str, fix: str, error: type[DataError] = DataError) -> list:
    if not isinstance(value, list):
        raise json_field_error(path, where, "a list", value, fix, error)
    return value


def json_object(value: Any, path: object, where: str, fix: str, error: type[DataError] = DataError) -> dict:
    if not isinstance(value, dict):
        raise json_field_error(path, where, "an object {...}", value, fix, error)
    return value


def json_int(value: Any, path: object, where: str, fix: str, *, minimum: int | None = None,
             maximum: int | None = None, error: type[DataError] = DataError) -> int:
    """An integer (JSON ``5``; also ``5.0``, which Python's json reads as a float) within the bounds.

    Refused: strings ("5"), booleans, NaN/inf, fractions, null.
    """
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value, ok = int(value), True
    if ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    bounds = ("" if minimum is None and maximum is None else
              f" >= {minimum}" if maximum is None else f" in [{minimum}, {maximum}]")
    raise json_field_error(path, where, f"an integer{bounds}", value, fix, error)


def json_number(value: Any, path: object, where: str, fix: str, *, minimum: float | None = None,
                error: type[DataError] = DataError) -> float:
    """A finite number (not a string, boolean, NaN or inf), at least ``minimum``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (minimum is None or value >= minimum):
        return float(value)
    bound = "" if minimum is None else f" >= {minimum}"
    raise json_field_error(path, where, f"a finite number{bound}", value, fix, error)


def json_flag(value: Any, path: object, where: str, fix: str, error: type[DataError] = DataError) -> int:
    """0 or 1 (``false``/``true`` too: the official code compares ``== 1``, which they pass identically)."""
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return int(value)
    raise json_field_error(path, where, "0 or 1", value, fix, error)


def json_id(value: Any, path: object, where: str, fix: str, error: type[DataError] = DataError) -> str:
    """An image or video id: a non-empty string or an integer (returned as its string)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise json_field_error(path, where, "a non-empty string or an integer id", value, fix, error)


def json_bbox(value: Any, path: object, where: str, fix: str, error: type[DataError] = DataError) -> None:
    """A COCO box ``[x, y, width, height]`` of four finite numbers, width and height >= 0."""
    if not (isinstance(value, list) and len(value) == 4):
        raise json_field_error(path, where, "a list [x, y, width, height]", value, fix, error)
    for k, v in enumerate(value):
        json_number(v, path, f"{where}[{k}]", fix, minimum=0 if k >= 2 else None, error=error)


MAX_SEGMENT_ID = (1 << 24) - 1  # an id is an RGB colour


def _well_formed_segment(seg: Any, categories: dict, seen: dict, ground_truth: bool) -> dict | None:
    """The checked copy of a segment whose fields are all plain, valid values; None when anything is unusual
    (the caller then checks field by field and names the bad one). Accepts nothing the full check refuses."""
    if type(seg) is not dict:
        return None
    sid, cid = seg.get("id"), seg.get("category_id")
    if type(sid) is not int or not 0 < sid <= MAX_SEGMENT_ID or sid in seen or type(cid) is not int \
            or cid not in categories:
        return None
    crowd, area = seg.get("iscrowd", 0), seg.get("area", 0)
    if type(crowd) is not int or crowd not in (0, 1) or type(area) is not int or area < 0:
        return None
    if ground_truth and ("iscrowd" not in seg or "area" not in seg):
        return None
    box = seg.get("bbox")
    if box is not None and not (type(box) is list and len(box) == 4 and all(type(v) is int for v in box)
                                and box[2] >= 0 and box[3] >= 0):
        return None
    if "bbox" in seg and box is None:
        return None
    clean = dict(seg)
    if not ground_truth:
        clean.pop("area", None)  # the official script replaces it by the PNG's pixel count
    return clean


def check_segments_info(segments: Any, path: object, where: str, categories: dict[int, Any], *,
                        ground_truth: bool, error: type[DataError] = DataError) -> list[dict]:
    """Check one frame's ``segments_info`` list and return it with every field as a plain int.

    Every entry needs an integer ``id`` in [1, 2^24) and a ``category_id`` of ``categories``, listed once
    per frame. Ground truth also needs ``iscrowd`` (0/1) and ``area`` (integer >= 0): the official scripts
    read both for every GT segment. In predictions ``iscrowd`` is optional (0/1) and ``area`` (recomputed
    from the PNG, as the official script does) must be a finite number >= 0 when given; ``bbox``, when
    given, must be ``[x, y, w, h]``.
    """
    who = "the GT JSON" if ground_truth else "pred.json"
    fix = (f"fix this entry of {who} (each segment: id = R + 256 G + 256^2 B of its PNG colour, category_id "
           "of the GT categories" + (", iscrowd 0/1, area = pixel count)" if ground_truth else ")"))
    segments = json_list(segments, path, where, fix, error)
    out, seen = [], {}
    for j, seg in enumerate(segments):
        clean = _well_formed_segment(seg, categories, seen, ground_truth)
        if clean is not None:  # the common case, checked without building messages (150k segments: 0.6 s)
            seen[clean["id"]] = j
            out.append(clean)
            continue
        at = f"{where}[{j}]"
        seg = json_object(seg, path, at, fix, error)
        sid = json_int(json_get(seg, "id", path, at, fix, error), path, f"{at}.id", fix, minimum=1,
                       maximum=MAX_SEGMENT_ID, error=error)
        cid = json_int(json_get(seg, "category_id", path, at, fix, error), path, f"{at}.category_id", fix,
                       error=error)
        if cid not in categories:
            raise error(f"{path}: {at}.category_id: unknown category_id {cid}; expected one of the GT category "
                        f"ids {sorted(categories)}: map your class ids to the dataset's")
        if sid in seen:
            raise error(f"{path}: {at}.id: segment id {sid} is listed twice in one frame (also at "
                        f"{where}[{seen[sid]}]); list each segment once")
        seen[sid] = j
        clean = dict(seg, id=sid, category_id=cid)
        if ground_truth or "iscrowd" in seg:
            clean["iscrowd"] = json_flag(json_get(seg, "iscrowd", path, at, fix, error), path, f"{at}.iscrowd",
                                         fix, error)
        if ground_truth:
            clean["area"] = json_int(json_get(seg, "area", path, at, fix, error), path, f"{at}.area", fix,
                                     minimum=0, error=error)
        elif "area" in seg:
            json_number(seg["area"], path, f"{at}.area", fix, minimum=0, error=error)
            clean.pop("area")  # the official script replaces it by the PNG's pixel count
        if "bbox" in seg:
            json_bbox(seg["bbox"], path, f"{at}.bbox", fix, error)
        out.append(clean)
    return out


@dataclass(frozen=True)
class PanopticGTFrame:
    """One image of a checked panoptic GT JSON: its id (as a string), image record, annotation record
    (at ``annotations[annotation_index]``, :attr:`where`) and checked ``segments_info``."""

    image_id: str
    image: dict
    annotation: dict
    annotation_index: int
    segments: list[dict]

    @property
    def where(self) -> str:
        return f"annotations[{self.annotation_index}]"


def check_panoptic_gt(doc: Any, json_path: Path) -> tuple[dict[int, dict], list[PanopticGTFrame]]:
    """Check every field of a COCO-panoptic (video) GT JSON that scoring reads; return its categories
    (``{id: record}``) and its images in JSON order with their annotations.

    Refused (one :class:`DataError` naming the file, the JSON path of the field and the fix), because each
    would make a number silently wrong or stop the official script: ``images``/``annotations``/``categories``
    that are not lists; an empty ``images`` list or no segment in any frame (nothing to score: the official
    script divides by zero); two images with one ``id`` or one ``file_name``; two categories with one id;
    an annotation whose ``image_id`` is not an image's, two annotations of one image, an image without one;
    wrong field types (:func:`check_segments_info`; ``height``/``width`` positive integers when given).
    Annotations are matched by ``image_id`` when every one has it, else one per image in the images' order.
    """
    fix = "use the GT JSON of the release (COCO-panoptic video format: images, annotations, categories)"
    json_object(doc, json_path, "top level", fix)
    images = json_list(json_get(doc, "images", json_path, "top level", fix), json_path, "images", fix)
    annotations = json_list(json_get(doc, "annotations", json_path, "top level", fix), json_path, "annotations",
                            fix)
    categories = check_categories(json_get(doc, "categories", json_path, "top level", fix), json_path, fix)
    if not images:
        raise DataError(f"{json_path}: images is empty: a ground truth without images cannot be scored (the "
                        "official script divides by zero); use the split's GT JSON")

    # Images: id, file_name, optional height/width/video_id; ids and file names unique.
    records: list[tuple[str, dict]] = []
    first_of_id: dict[str, int] = {}
    first_of_file: dict[str, int] = {}
    for i, image in enumerate(images):
        at = f"images[{i}]"
        image = json_object(image, json_path, at, fix)
        image_id = json_id(json_get(image, "id", json_path, at, fix), json_path, f"{at}.id", fix)
        if image_id in first_of_id:
            raise DataError(f"{json_path}: {at}.id: image id {image_id!r} is also the id of "
                            f"images[{first_of_id[image_id]}]; every image needs its own id (its prediction is "
                            "pan_pred/<id>.png): fix the GT JSON")
        first_of_id[image_id] = i
        file_name = json_get(image, "file_name", json_path, at, fix)
        if not isinstance(file_name, str) or not file_name:
            raise json_field_error(json_path, f"{at}.file_name", "a file name string", file_name, fix)
        check_relative_path(file_name, source=json_path, what="image file name")
        if file_name in first_of_file:
            raise DataError(f"{json_path}: {at}.file_name: {file_name!r} is also the file of "
                            f"images[{first_of_file[file_name]}]; each frame is listed once: fix the GT JSON")
        first_of_file[file_name] = i
        for key in ("height", "width"):
            if key in image:
                json_int(image[key], json_path, f"{at}.{key}", fix, minimum=1)
        if "video_id" in image:
            json_id(image["video_id"], json_path, f"{at}.video_id", fix)
        records.append((image_id, image))

    # Annotations: all matched by image_id, or (none has one) one per image in the images' order.
    with_id = [i for i, a in enumerate(annotations) if isinstance(a, dict) and "image_id" in a]
    by_image: dict[str, tuple[int, dict]] = {}
    if with_id and len(with_id) != len(annotations):
        missing = next(i for i, a in enumerate(annotations) if i not in set(with_id))
        raise DataError(f"{json_path}: annotations[{missing}] has no image_id but {len(with_id)} other "
                        "annotations have one; give every annotation the id of its image")
    for i, ann in enumerate(annotations):
        at = f"annotations[{i}]"
        ann = json_object(ann, json_path, at, fix)
        if with_id:
            image_id = json_id(ann["image_id"], json_path, f"{at}.image_id", fix)
            if image_id not in first_of_id:
                raise DataError(f"{json_path}: {at}.image_id: {image_id!r} is not the id of any image; fix the "
                                "annotation's image_id or add its image")
            if image_id in by_image:
                raise DataError(f"{json_path}: {at}.image_id: image {image_id!r} is also annotated by "
                                f"annotations[{by_image[image_id][0]}]; give each image one annotation")
            by_image[image_id] = (i, ann)
    if not with_id and len(annotations) != len(images):
        raise DataError(f"{json_path}: {len(annotations)} annotations for {len(images)} images, and no annotation "
                        "has an image_id; give each image one annotation (in the images' order, or with image_id)")

    frames = []
    num_segments = 0
    for i, (image_id, image) in enumerate(records):
        if with_id:
            if image_id not in by_image:
                raise DataError(f"{json_path}: images[{i}] (id {image_id!r}, {image['file_name']}) has no "
                                "annotation; every annotated frame needs an annotations entry with its "
                                "segments_info")
            k, ann = by_image[image_id]
        else:
            k, ann = i, annotations[i]
        at = f"annotations[{k}]"
        segments = check_segments_info(json_get(ann, "segments_info", json_path, at, fix), json_path,
                                       f"{at}.segments_info", categories, ground_truth=True)
        num_segments += len(segments)
        if "file_name" in ann and (not isinstance(ann["file_name"], str) or not ann["file_name"]):
            raise json_field_error(json_path, f"{at}.file_name", "a PNG file name string", ann["file_name"], fix)
        frames.append(PanopticGTFrame(image_id, image, ann, k, segments))
    if num_segments == 0:
        raise DataError(f"{json_path}: no annotation lists any segment: there is nothing to score (a submission "
                        "would get 0 with n = 0, or the official script would divide by zero); use the split's "
                        "GT JSON")
    return categories, frames


def check_categories(value: Any, json_path: Path, fix: str) -> dict[int, dict]:
    """``{id: record}`` of the GT ``categories`` list: integer ids, unique, ``isthing`` 0/1; not empty."""
    cats = json_list(value, json_path, "categories", fix)
    if not cats:
        raise DataError(f"{json_path}: categories is empty; every segment's category_id must be one of them: "
                        "use the split's GT JSON")
    out: dict[int, dict] = {}
    for i, cat in enumerate(cats):
        at = f"categories[{i}]"
        cat = json_object(cat, json_path, at, fix)
        cid = json_int(json_get(cat, "id", json_path, at, fix), json_path, f"{at}.id", fix)
        if cid in out:
            raise DataError(f"{json_path}: {at}.id: category id {cid} is listed twice; each category once")
        # The official averages split things from stuff with ``isthing == 1``: a missing flag stops them.
        json_flag(json_get(cat, "isthing", json_path, at, fix), json_path, f"{at}.isthing", fix)
        out[cid] = cat
    return out

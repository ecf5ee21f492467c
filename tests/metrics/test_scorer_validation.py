"""Scores you can trust: every input that could make a VPS, DAVIS or YouTube-VOS number silently wrong is
refused before scoring with one DataError naming the file and the field (or, where the official code scores
it the same way, scored with a ``vidseg: warning:`` line)."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.bad_files import write_decompression_bomb
from tests.helpers.vps_submission import CITYSCAPES_CATEGORIES, random_video, write_dataset, write_submission
from vidseg.data.io import read_image, read_mask, write_mask
from vidseg.data.panoptic import read_panoptic_png, write_panoptic_png
from vidseg.data.vps_layout import CITYSCAPES_VPS
from vidseg.errors import CorruptFileError, DataError, DatasetLayoutError, MaskFormatError, SubmissionError
from vidseg.metrics.davis_eval import evaluate_folder
from vidseg.metrics.vps_eval import evaluate_submission, load_ground_truth


def raw_png(path: Path, array: np.ndarray, *, bit_depth: int, colour: int) -> Path:
    """A PNG with the samples of ``array`` as they are (16-bit: big-endian, the id in the low byte)."""
    height, width = array.shape[:2]
    dtype = ">u2" if bit_depth == 16 else np.uint8
    rows = np.ascontiguousarray(array.astype(dtype)).reshape(height, -1).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------------ VPS fixtures
@pytest.fixture(scope="module")
def city_source(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("city")
    rng = np.random.default_rng(1)
    videos = [random_video(rng, f"v{i}", num_frames=3, height=16, width=32) for i in range(2)]
    gt = write_dataset(tmp / "gt", CITYSCAPES_VPS, "val", videos, CITYSCAPES_CATEGORIES)
    write_submission(tmp / "sub", gt, videos)
    return tmp


@pytest.fixture
def city(city_source, tmp_path):
    """A writable copy: (gt root, submission dir)."""
    shutil.copytree(city_source / "gt", tmp_path / "gt")
    shutil.copytree(city_source / "sub", tmp_path / "sub")
    return tmp_path / "gt", tmp_path / "sub"


def _gt_path(city) -> Path:
    return CITYSCAPES_VPS.panoptic_gt_json(city[0], "val")


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _score(city):
    return evaluate_submission(load_ground_truth("cityscapes_vps", city[0], "val"), city[1], workers=1)


# ---------------------------------------------------------------------------------- VPS ground truth JSON
def _second_image_takes_first_id(doc):
    doc["images"][1]["id"] = doc["images"][0]["id"]


def _drop(key):
    def edit(doc):
        del doc[key]
    return edit


def _set(getter, value):
    def edit(doc):
        container, key = getter(doc)
        container[key] = value
    return edit


def _del(getter):
    def edit(doc):
        container, key = getter(doc)
        del container[key]
    return edit


def _seg0(doc):
    return doc["annotations"][3]["segments_info"][0]


GT_CASES = {
    "two images share one id": (_second_image_takes_first_id,
                                r"images\[1\]\.id: image id .* is also the id of images\[0\]"),
    "two images share one file": (_set(lambda d: (d["images"][1], "file_name"), None), None),  # replaced below
    "images empty": (lambda d: (d["images"].clear(), d["annotations"].clear()), r"images is empty"),
    "no segment at all": (lambda d: [a["segments_info"].clear() for a in d["annotations"]],
                          "no annotation lists any segment"),
    "images not a list": (_set(lambda d: (d, "images"), {"a": 1}), r"images: expected a list"),
    "annotations not a list": (_set(lambda d: (d, "annotations"), "x"), r"annotations: expected a list"),
    "categories missing": (_drop("categories"), r"top level\.categories: expected a 'categories' field"),
    "categories empty": (_set(lambda d: (d, "categories"), []), "categories is empty"),
    "category id twice": (lambda d: d["categories"].append(dict(d["categories"][0])),
                          r"categories\[19\]\.id: category id 0 is listed twice"),
    "isthing missing": (_del(lambda d: (d["categories"][2], "isthing")), r"categories\[2\]\.isthing"),
    "area a string": (_set(lambda d: (_seg0(d), "area"), "abc"),
                      r"annotations\[3\]\.segments_info\[0\]\.area: expected an integer >= 0, found 'abc'"),
    "area negative": (_set(lambda d: (_seg0(d), "area"), -4), r"segments_info\[0\]\.area: expected an integer >= 0"),
    "area fractional": (_set(lambda d: (_seg0(d), "area"), 2.5), r"segments_info\[0\]\.area"),
    "area missing": (_del(lambda d: (_seg0(d), "area")), r"segments_info\[0\]\.area: expected a 'area' field"),
    "category_id a string": (_set(lambda d: (_seg0(d), "category_id"), "13"),
                             r"segments_info\[0\]\.category_id: expected an integer, found '13'"),
    "category_id unknown": (_set(lambda d: (_seg0(d), "category_id"), 99), "unknown category_id 99"),
    "iscrowd missing": (_del(lambda d: (_seg0(d), "iscrowd")), r"segments_info\[0\]\.iscrowd"),
    "iscrowd 2": (_set(lambda d: (_seg0(d), "iscrowd"), 2), r"segments_info\[0\]\.iscrowd: expected 0 or 1"),
    "segment id a string": (_set(lambda d: (_seg0(d), "id"), "7"), r"segments_info\[0\]\.id: expected an integer"),
    "segment id 0": (_set(lambda d: (_seg0(d), "id"), 0), r"segments_info\[0\]\.id: expected an integer in \[1"),
    "segment id twice": (lambda d: d["annotations"][3]["segments_info"].append(dict(_seg0(d))),
                         r"segment id \d+ is listed twice in one frame"),
    "bbox of 3 numbers": (_set(lambda d: (_seg0(d), "bbox"), [1, 2, 3]), r"segments_info\[0\]\.bbox"),
    "segments_info missing": (_del(lambda d: (d["annotations"][2], "segments_info")),
                              r"annotations\[2\]\.segments_info: expected a 'segments_info' field"),
    "segments_info not a list": (_set(lambda d: (d["annotations"][2], "segments_info"), {}),
                                 r"annotations\[2\]\.segments_info: expected a list"),
    "file_name missing": (_del(lambda d: (d["images"][4], "file_name")), r"images\[4\]\.file_name"),
    "height a string": (_set(lambda d: (d["images"][0], "height"), "16"), r"images\[0\]\.height: expected an integer"),
    "image id null": (_set(lambda d: (d["images"][0], "id"), None), r"images\[0\]\.id: expected a non-empty string"),
    "annotation for the same image twice": (_set(lambda d: (d["annotations"][1], "image_id"), None), None),
    "annotation of an unknown image": (_set(lambda d: (d["annotations"][5], "image_id"), "nope"),
                                       r"annotations\[5\]\.image_id: 'nope' is not the id of any image"),
    "one annotation without image_id": (_del(lambda d: (d["annotations"][5], "image_id")),
                                        r"annotations\[5\] has no image_id"),
}


def _same_file(doc):
    doc["images"][1]["file_name"] = doc["images"][0]["file_name"]


def _same_image(doc):
    doc["annotations"][1]["image_id"] = doc["annotations"][0]["image_id"]


GT_CASES["two images share one file"] = (_same_file, r"images\[1\]\.file_name: .* is also the file of images\[0\]")
GT_CASES["annotation for the same image twice"] = (
    _same_image, r"annotations\[1\]\.image_id: image .* is also annotated by annotations\[0\]")


@pytest.mark.parametrize("case", sorted(GT_CASES))
def test_bad_ground_truth_json_is_refused_naming_the_field(city, case):
    edit, pattern = GT_CASES[case]
    _edit_json(_gt_path(city), edit)
    with pytest.raises(DataError, match=pattern) as err:
        load_ground_truth("cityscapes_vps", city[0], "val")
    assert str(_gt_path(city)) in str(err.value)


def test_nan_area_is_refused(city):
    path = _gt_path(city)
    text = path.read_text()
    doc = json.loads(text)
    area = doc["annotations"][0]["segments_info"][0]["area"]
    path.write_text(text.replace(f'"area": {area}', '"area": NaN', 1))
    with pytest.raises(DataError, match=r"\.area: expected an integer >= 0, found nan"):
        load_ground_truth("cityscapes_vps", city[0], "val")


def test_duplicate_json_key_is_refused(city):
    path = _gt_path(city)
    text = path.read_text()
    path.write_text(text.replace('"images":', '"images": [], "images":', 1))
    with pytest.raises(DataError, match="has the key 'images' twice"):
        load_ground_truth("cityscapes_vps", city[0], "val")


# --------------------------------------------------------------------------------------------- pred.json
def _pseg0(doc):
    return doc["annotations"][2]["segments_info"][0]


PRED_CASES = {
    "area a string": (_set(lambda d: (_pseg0(d), "area"), "abc"), r"annotations\[2\]\.segments_info\[0\]\.area"),
    "area NaN-like negative": (_set(lambda d: (_pseg0(d), "area"), -1), r"segments_info\[0\]\.area"),
    "category_id a string": (_set(lambda d: (_pseg0(d), "category_id"), "13"),
                             r"segments_info\[0\]\.category_id: expected an integer, found '13'"),
    "id fractional": (_set(lambda d: (_pseg0(d), "id"), 5.5), r"segments_info\[0\]\.id: expected an integer"),
    "id missing": (_del(lambda d: (_pseg0(d), "id")), r"segments_info\[0\]\.id: expected a 'id' field"),
    "id listed twice": (lambda d: d["annotations"][2]["segments_info"].append(dict(_pseg0(d))),
                        "listed twice in one frame"),
    "iscrowd a string": (_set(lambda d: (_pseg0(d), "iscrowd"), "no"), r"segments_info\[0\]\.iscrowd"),
    "entry not an object": (_set(lambda d: (d["annotations"], 1), [1, 2]), r"annotations\[1\]: expected an object"),
    "segments_info not a list": (_set(lambda d: (d["annotations"][1], "segments_info"), "x"),
                                 r"annotations\[1\] has no segments_info list"),
}


@pytest.mark.parametrize("case", sorted(PRED_CASES))
def test_bad_pred_json_is_refused_naming_the_field(city, case):
    edit, pattern = PRED_CASES[case]
    _edit_json(city[1] / "pred.json", edit)
    with pytest.raises(SubmissionError, match=pattern) as err:
        _score(city)
    assert str(city[1] / "pred.json") in str(err.value)


def test_pred_image_id_of_the_wrong_type_is_refused(city):
    gt = load_ground_truth("cityscapes_vps", city[0], "val")

    def edit(doc):
        for entry, image_id in zip(doc["annotations"], gt.image_ids, strict=True):
            entry["image_id"] = image_id
        doc["annotations"][4]["image_id"] = [gt.image_ids[4]]
    _edit_json(city[1] / "pred.json", edit)
    with pytest.raises(SubmissionError, match=r"annotations\[4\]\.image_id: expected a non-empty string"):
        evaluate_submission(gt, city[1], workers=1)


def test_pred_area_is_ignored_when_valid(city):
    # The official script replaces a prediction's area by its pixel count: any valid number scores the same.
    before = _score(city)
    _edit_json(city[1] / "pred.json", lambda d: [s.update(area=123456.5) for a in d["annotations"]
                                                for s in a["segments_info"]])
    after = _score(city)
    assert after.vpq == before.vpq and after.stq == before.stq


# ------------------------------------------------------------------------------------- VPS PNG formats
def _first_gt_png(city) -> Path:
    gt = load_ground_truth("cityscapes_vps", city[0], "val")
    return gt.videos[0].frames[0].png_path


def test_16_bit_gt_png_is_refused_not_read_as_void(city):
    png = _first_gt_png(city)
    ids = read_panoptic_png(png)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1)
    raw_png(png, rgb, bit_depth=16, colour=2)  # PIL would read the high bytes: all 0, void
    assert (np.asarray(Image.open(png)) == 0).all()
    with pytest.raises(MaskFormatError, match=rf"{png.name}: PNG is RGB with 16 bits per channel"):
        _score(city)


def test_16_bit_prediction_png_is_refused(city):
    pred = next((city[1] / "pan_pred").iterdir())
    ids = read_panoptic_png(pred)
    raw_png(pred, np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1), bit_depth=16, colour=2)
    with pytest.raises(MaskFormatError, match="16 bits per channel"):
        _score(city)


@pytest.mark.parametrize("mode", ["LA", "L", "P"])
def test_non_rgb_gt_png_is_refused(city, mode):
    png = _first_gt_png(city)
    Image.open(png).convert(mode).save(png)
    with pytest.raises(MaskFormatError, match=rf"{png.name}: PNG mode is '{mode}'"):
        _score(city)


def test_rgba_png_is_scored_from_its_rgb_channels_with_one_warning(city, capsys, monkeypatch):
    # eval_vpq.py reads RGBA through PIL and ignores alpha: vidseg scores the same ids and says so once.
    import vidseg.data.panoptic as panoptic

    monkeypatch.setattr(panoptic, "_RGBA_WARNED", [])
    before = _score(city)
    for png in list((city[1] / "pan_pred").iterdir())[:2]:
        rgba = np.asarray(Image.open(png).convert("RGBA")).copy()
        rgba[..., 3] = 7  # an alpha that carries nothing
        Image.fromarray(rgba, mode="RGBA").save(png)
    capsys.readouterr()
    after = _score(city)
    err = capsys.readouterr().err
    rgba_lines = [line for line in err.splitlines() if "is RGBA" in line]
    assert len(rgba_lines) == 1 and rgba_lines[0].startswith("vidseg: warning: ")
    assert after.vpq == before.vpq


def test_decompression_bomb_prediction_is_one_error(city):
    pred = next((city[1] / "pan_pred").iterdir())
    write_decompression_bomb(pred)
    with pytest.raises(MaskFormatError, match=rf"{pred.name}: refusing to decode this PNG"):
        _score(city)


def test_gt_png_size_must_match_the_json(city):
    _edit_json(_gt_path(city), lambda d: d["images"][0].update(width=33))
    with pytest.raises(DataError, match=r"GT PNG is 32x16 \(WxH\) but its image entry in the GT JSON says 33x16"):
        _score(city)


def test_gt_ids_missing_from_the_json_are_scored_as_official_with_a_warning(city, capsys):
    # The official rule: a GT id in the PNG but not in segments_info takes part in nothing. vidseg follows it
    # and says so on stderr.
    before = _score(city)
    assert "disagree with their PNG" not in capsys.readouterr().err
    png = _first_gt_png(city)
    ids = read_panoptic_png(png)
    ids[0, 0] = 4242
    write_panoptic_png(png, ids)
    after = _score(city)
    lines = [line for line in capsys.readouterr().err.splitlines() if "GT frame(s)" in line]
    assert len(lines) == 1 and lines[0].startswith("vidseg: warning: 1 GT frame(s)")
    assert "[4242] are in the PNG but not in its GT JSON" in lines[0]
    assert after.num_frames == before.num_frames


# ------------------------------------------------------------------------------------------ image readers
def test_decompression_bombs_end_in_one_error_naming_the_file(tmp_path):
    bomb = write_decompression_bomb(tmp_path / "bomb.png")
    with pytest.raises(MaskFormatError, match="bomb.png: refusing to decode this mask"):
        read_mask(bomb)
    with pytest.raises(CorruptFileError, match="bomb.png: refusing to decode this image"):
        read_image(bomb)
    with pytest.raises(MaskFormatError, match="bomb.png: refusing to decode this PNG"):
        read_panoptic_png(bomb)


@pytest.mark.parametrize("cut", [8, 20, 33, 50])
def test_truncated_pngs_end_in_one_error(tmp_path, cut):
    path = tmp_path / "m.png"
    write_mask(path, np.arange(64, dtype=np.uint8).reshape(8, 8) % 3)
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(MaskFormatError, match="m.png: cannot decode mask"):
        read_mask(path)
    with pytest.raises(MaskFormatError, match="m.png: cannot decode PNG"):
        read_panoptic_png(path)


# ------------------------------------------------------------------------------------- DAVIS results folder
def _davis(tmp_path, frames=5, objects=(1, 2)):
    """GT <tmp>/gt/s/<frame>.png with ``objects`` and a perfect result folder <tmp>/res/s."""
    gt = np.zeros((frames, 8, 10), np.uint8)
    for k, obj in enumerate(objects):
        gt[:, 1 + 3 * k : 3 + 3 * k, 2:6] = obj
    paths = []
    for t in range(frames):
        write_mask(tmp_path / "gt" / "s" / f"{t:05d}.png", gt[t])
        write_mask(tmp_path / "res" / "s" / f"{t:05d}.png", gt[t])
        paths.append(tmp_path / "gt" / "s" / f"{t:05d}.png")
    return {"s": paths}, tmp_path / "res"


def test_davis_no_sequence_is_refused(tmp_path):
    (tmp_path / "res").mkdir()
    with pytest.raises(DatasetLayoutError, match="no sequence to score"):
        evaluate_folder({}, tmp_path / "res", workers=1)


def test_davis_no_object_at_all_is_refused(tmp_path):
    gt, res = _davis(tmp_path, objects=())
    with pytest.raises(DatasetLayoutError, match="no object to score"):
        evaluate_folder(gt, res, workers=1)


def test_davis_sequence_without_objects_is_skipped_with_a_warning(tmp_path, capsys):
    gt, res = _davis(tmp_path / "a")
    empty, _ = _davis(tmp_path / "b", objects=())
    shutil.copytree(tmp_path / "b" / "res" / "s", res / "e")
    out = evaluate_folder({**gt, "e": empty["s"]}, res, workers=1)
    assert out.global_metrics["J-Mean"] == 1.0 and len(out.per_object) == 2
    assert "vidseg: warning: 1 sequence(s) have no object" in capsys.readouterr().err


def test_davis_extra_result_frames_are_not_scored_but_said(tmp_path, capsys):
    gt, res = _davis(tmp_path)
    write_mask(res / "s" / "00099.png", np.zeros((8, 10), np.uint8))
    out = evaluate_folder(gt, res, workers=1)
    assert out.global_metrics["J&F-Mean"] == 1.0
    err = capsys.readouterr().err
    assert "vidseg: warning: 1 PNG(s)" in err and "00099.png" in err


def test_davis_missing_result_frame_is_refused(tmp_path):
    gt, res = _davis(tmp_path)
    (res / "s" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match="00002.png: prediction missing"):
        evaluate_folder(gt, res, workers=1)


def test_davis_short_sequence_and_unknown_ids_are_data_errors(tmp_path):
    gt, res = _davis(tmp_path)
    with pytest.raises(DatasetLayoutError, match="has 2 annotated frames"):
        evaluate_folder({"s": gt["s"][:2]}, res, workers=1)
    write_mask(res / "s" / "00002.png", np.full((8, 10), 3, np.uint8))
    with pytest.raises(MaskFormatError, match="00002.png: object id 3 but sequence 's' has 2 objects"):
        evaluate_folder(gt, res, workers=1)


def test_davis_16_bit_masks_read_as_the_toolkit_reads_them(tmp_path):
    # np.array(Image.open(p)) of a 16-bit grayscale PNG gives the same ids: scored the same.
    gt, res = _davis(tmp_path)
    res16 = tmp_path / "res16" / "s"
    res16.mkdir(parents=True)
    for p in sorted((res / "s").iterdir()):
        pred = read_mask(p)
        if p.stem == "00002":
            pred[pred == 1] = 0  # one frame wrong, so the number means something
        raw_png(res16 / p.name, pred, bit_depth=16, colour=0)
        write_mask(p, pred)
    assert Image.open(res16 / "00002.png").mode == "I;16"
    eight, sixteen = evaluate_folder(gt, res, workers=1), evaluate_folder(gt, tmp_path / "res16", workers=1)
    assert eight.global_metrics == sixteen.global_metrics and eight.global_metrics["J-Mean"] < 1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_davis_colour_or_alpha_results_are_refused(tmp_path, mode):
    gt, res = _davis(tmp_path)
    path = res / "s" / "00001.png"
    Image.open(path).convert(mode).save(path)
    with pytest.raises(MaskFormatError, match="00001.png"):
        evaluate_folder(gt, res, workers=1)


def test_edge_values_the_official_code_accepts_are_accepted(city):
    def edit(doc):
        _seg0(doc)["area"] = 0                       # a listed segment may have no pixel
        doc["annotations"][0]["segments_info"][0]["iscrowd"] = False  # == 0 for the official "== 1" test
        doc["annotations"][1]["segments_info"][0]["area"] = 7.0       # json reads 7.0 as a float: an integer
        doc["categories"][0]["isthing"] = 0.0
        doc["annotations"][2]["segments_info"][0]["area"] = 0.0       # 0 is a valid area, in either spelling
    _edit_json(_gt_path(city), edit)
    gt = load_ground_truth("cityscapes_vps", city[0], "val")
    assert gt.videos[0].frames[1].segments_info[0]["area"] == 7
    assert isinstance(gt.videos[0].frames[1].segments_info[0]["area"], int)


def test_images_over_pils_warning_limit_are_refused_too(tmp_path):
    # 9500 x 9500 = 90.25 M pixels: above Image.MAX_IMAGE_PIXELS (89.5 M), below the 2x where PIL raises. PIL
    # only warns there; vidseg refuses before decoding (a real label PNG is never that large).
    header = struct.pack(">IIBBBBB", 9500, 9500, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    with pytest.raises(MaskFormatError, match="big.png: refusing to decode this mask"):
        read_mask(path)


@pytest.mark.parametrize("box", [[0, 0, 4, -1], [0, 0, -1.5, 2], [0, 0, 4, float("inf")], ["0", 0, 1, 1]])
def test_bad_boxes_are_refused(city, box):
    _edit_json(_gt_path(city), lambda d: _seg0(d).update(bbox=box))
    with pytest.raises(DataError, match=r"annotations\[3\]\.segments_info\[0\]\.bbox\[\d\]"):
        load_ground_truth("cityscapes_vps", city[0], "val")


def test_windows_longer_than_every_video_and_stray_predictions_are_said(city, capsys):
    # 3 frames per video: no 4-frame window (k = 15): VPQ 0 with n = 0 there (documented), and said.
    shutil.copy(next((city[1] / "pan_pred").iterdir()), city[1] / "pan_pred" / "not_an_id.png")
    res = _score(city)
    assert res.windows[15]["all"]["n"] == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("vidseg: warning: no class was counted for window(s) [15]") for line in err)
    assert any(line.startswith("vidseg: warning: 1 PNG(s)") and "not_an_id.png" in line for line in err)


def test_videos_must_be_contiguous_and_in_frame_order(city):
    path = _gt_path(city)
    original = path.read_text()
    _edit_json(path, lambda d: d["images"].insert(1, d["images"].pop(4)))  # a frame of video 2 inside video 1
    with pytest.raises(DataError, match=r"images\[2\] .* whose frames were interrupted by video '0002'"):
        load_ground_truth("cityscapes_vps", city[0], "val")
    path.write_text(original)
    _edit_json(path, lambda d: d["images"].insert(0, d["images"].pop(1)))  # frame 10 before frame 5
    with pytest.raises(DataError, match=r"images\[1\] .* is frame 5 of its video but comes after frame 10"):
        load_ground_truth("cityscapes_vps", city[0], "val")


def test_pred_json_entry_for_one_image_twice(city):
    gt = load_ground_truth("cityscapes_vps", city[0], "val")

    def edit(doc):
        for entry, image_id in zip(doc["annotations"], gt.image_ids, strict=True):
            entry["image_id"] = image_id
        doc["annotations"][3]["image_id"] = gt.image_ids[2]
    _edit_json(city[1] / "pred.json", edit)
    with pytest.raises(SubmissionError, match=r"annotations\[3\]\.image_id: image_id .* appears more than once"):
        evaluate_submission(gt, city[1], workers=1)

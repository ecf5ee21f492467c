"""VIPSeg facts and files (vidseg.data.vipseg_layout): categories, mask values, paths, the nested GT JSON."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from vidseg.data.vipseg_layout import (
    NUM_CLASSES,
    STUFF_IDS,
    THING_IDS,
    VIPSEG_720P_LAYOUT,
    VIPSEG_CATEGORIES,
    VIPSEG_ORIGINAL_LAYOUT,
    VIPSegFrame,
    VIPSegLayout,
    VIPSegVideo,
    frame_stem,
    panomask_category,
    panomask_segments,
    panomask_value,
    panoptic_video_json,
    read_panomask,
    read_panoptic_video_gt,
    read_split,
    vipseg_categories,
)
from vidseg.data.vps_layout import VIPSEG, layout_of_datamodule
from vidseg.errors import DataError, DatasetLayoutError, MaskFormatError


# ------------------------------------------------------------------------------------------ categories
def test_categories_are_the_official_table():
    assert len(VIPSEG_CATEGORIES) == NUM_CLASSES == 124
    assert [c.id for c in VIPSEG_CATEGORIES] == list(range(124))
    assert len(THING_IDS) == 58 and len(STUFF_IDS) == 66
    by_name = {c.name: c for c in VIPSEG_CATEGORIES}
    # Facts of panoVIPSeg_categories.json / the README ("person" has mask values 6100, 6101, ...).
    assert by_name["person"].id == 60 and by_name["person"].isthing
    assert by_name["wall"] == VIPSEG_CATEGORIES[0] and not by_name["wall"].isthing
    assert by_name["wall"].color == (120, 120, 120)
    assert by_name["door"].isthing and by_name["car"].isthing and not by_name["sky"].isthing
    records = vipseg_categories()
    assert records[2] == {"id": 2, "name": "door", "isthing": 1, "color": [6, 230, 230]}
    records[0]["name"] = "changed"  # fresh dicts: the table is not mutated through them
    assert vipseg_categories()[0]["name"] == "wall"


# ------------------------------------------------------------------------------------------ mask values
def test_panomask_values_decode_as_the_readme_says():
    values = np.array([0, 1, 3, 124, 300, 6100, 6101, 12499])
    assert panomask_category(values).tolist() == [-1, 0, 2, 123, 2, 60, 60, 123]
    assert panomask_value(60, 1) == 6101 and panomask_value(60, 0) == 6100 and panomask_value(0) == 1
    assert panomask_category(panomask_value(13)) == 13
    with pytest.raises(ValueError):
        panomask_value(124)
    with pytest.raises(ValueError):
        panomask_value(0, 3)  # 103 would read as class value 103
    assert panomask_segments(np.array([[0, 6101], [14, 6101]])) == [(14, 13), (6101, 60)]


@pytest.mark.parametrize("mode", ["I;16", "L"])
def test_read_panomask_single_channel(tmp_path, mode):
    values = np.array([[0, 14, 124], [6100, 6101, 300]]) if mode == "I;16" else np.array([[0, 14, 124]])
    path = tmp_path / "m.png"
    Image.fromarray(values.astype(np.uint16 if mode == "I;16" else np.uint8)).save(path)
    assert read_panomask(path).tolist() == values.tolist()


def test_read_panomask_refuses_rgb_and_unknown_values(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(rgb)
    with pytest.raises(MaskFormatError, match="panomasksRGB"):
        read_panomask(rgb)
    bad = tmp_path / "bad.png"
    Image.fromarray(np.array([[12500, 0]], np.uint16)).save(bad)
    with pytest.raises(MaskFormatError, match="12500"):
        read_panomask(bad)
    with pytest.raises(FileNotFoundError):
        read_panomask(tmp_path / "none.png")


# ----------------------------------------------------------------------------------------------- paths
def test_paths_of_both_layouts(tmp_path):
    r = tmp_path
    assert VIPSEG_720P_LAYOUT.image_path(r, "12_abc", "00000005") == r / "VIPSeg_720P/images/12_abc/00000005.jpg"
    assert VIPSEG_720P_LAYOUT.panomask_path(r, "12_abc", "00000005") == \
        r / "VIPSeg_720P/panomasks/12_abc/00000005.png"
    assert VIPSEG_ORIGINAL_LAYOUT.image_path(r, "12_abc", "00000005") == r / "imgs/12_abc/00000005.jpg"
    assert VIPSEG_ORIGINAL_LAYOUT.panomask_dir(r) == r / "panomasks"
    assert VIPSegLayout.panoptic_rgb_dir(r) == r / "VIPSeg_720P/panomasksRGB"
    assert VIPSegLayout.panoptic_gt_json(r, "val") == r / "VIPSeg_720P/panoptic_gt_VIPSeg_val.json"
    assert VIPSegLayout.split_file(r, "train") == r / "train.txt"
    assert VIPSEG.panoptic_gt_json(r, "val") == VIPSegLayout.panoptic_gt_json(r, "val")
    assert VIPSEG.panoptic_gt_dir(r, "val") == r / "VIPSeg_720P/panomasksRGB"
    assert layout_of_datamodule("vidseg.data.vipseg.VIPSegDataModule") is VIPSEG
    with pytest.raises(DatasetLayoutError):
        VIPSEG_720P_LAYOUT.image_path(r, "..", "x")
    with pytest.raises(DatasetLayoutError):
        VIPSegLayout.panoptic_gt_json(r, "../val")
    with pytest.raises(ValueError):
        VIPSegLayout("480p")


def test_split_list_and_frames(tmp_path):
    (tmp_path / "val.txt").write_text("127_-hIVCYO4C90\n\n1643_T9npC-YHzuE\n")
    assert read_split(tmp_path, "val") == ["127_-hIVCYO4C90", "1643_T9npC-YHzuE"]
    with pytest.raises(DataError, match="train.txt"):
        read_split(tmp_path, "train")
    (tmp_path / "test.txt").write_text("a\na\n")
    with pytest.raises(DataError, match="twice"):
        read_split(tmp_path, "test")
    folder = tmp_path / "panomasks" / "v1"
    folder.mkdir(parents=True)
    for name in ("00000010.png", "00000005.png", ".hidden.png", "notes.txt"):
        (folder / name).write_bytes(b"")
    assert VIPSEG_ORIGINAL_LAYOUT.frames(tmp_path, "v1") == ["00000005", "00000010"]
    with pytest.raises(DataError, match="not found"):
        VIPSEG_720P_LAYOUT.frames(tmp_path, "v1")


# --------------------------------------------------------------------------------------------- GT JSON
def _doc():
    seg = {"id": 7895160, "category_id": 0, "iscrowd": 0, "area": 6}
    thing = {"id": 123, "category_id": 60, "iscrowd": 0, "area": 2}
    videos = [VIPSegVideo("v1", (VIPSegFrame("00000005", "00000005.png", 2, 4, [seg, thing]),
                                 VIPSegFrame("00000010", "00000010.png", 2, 4, [seg]))),
              VIPSegVideo("v2", (VIPSegFrame("00000001", "00000001.png", None, None, [thing]),))]
    return panoptic_video_json(videos)


def _write(tmp_path, doc):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    return path


def test_gt_json_round_trip(tmp_path):
    gt = read_panoptic_video_gt(_write(tmp_path, _doc()))
    assert [v.video_id for v in gt.videos] == ["v1", "v2"] and gt.num_frames == 3
    f = gt.videos[0].frames[0]
    assert (f.image_id, f.file_name, f.height, f.width) == ("00000005", "00000005.png", 2, 4)
    assert [s["id"] for s in f.segments_info] == [7895160, 123]
    assert gt.videos[1].frames[0].height is None
    assert list(gt.categories) == list(range(124))
    assert frame_stem("a/b/00000005.jpg") == frame_stem("00000005.png") == "00000005"


def _break(doc, how):
    doc = copy.deepcopy(doc)
    if how == "missing annotations":
        doc["annotations"] = doc["annotations"][:1]
    elif how == "count":
        doc["annotations"][0]["annotations"].pop()
    elif how == "order":
        doc["annotations"][0]["annotations"].reverse()
    elif how == "category id":
        doc["categories"][5]["id"] = 130
    elif how == "duplicate video":
        doc["videos"].append(copy.deepcopy(doc["videos"][0]))
    elif how == "no segment":
        for a in doc["annotations"]:
            for f in a["annotations"]:
                f["segments_info"] = []
    elif how == "unknown category":
        doc["annotations"][1]["annotations"][0]["segments_info"][0]["category_id"] = 124
    elif how == "escaping file name":
        doc["videos"][0]["images"][0]["file_name"] = "../x.png"
    elif how == "duplicate frame":
        doc["videos"][0]["images"][1]["id"] = "00000005"
    return doc


@pytest.mark.parametrize("how, match", [
    ("missing annotations", "no entry in annotations"), ("count", "pair them by position"),
    ("order", "same order"), ("category id", "0..123"), ("duplicate video", "each video once"),
    ("no segment", "nothing to score"), ("unknown category", "unknown category_id 124"),
    ("escaping file name", "refusing"), ("duplicate frame", "each frame once")])
def test_gt_json_refusals_are_one_line(tmp_path, how, match):
    with pytest.raises(DataError, match=match) as err:
        read_panoptic_video_gt(_write(tmp_path, _break(_doc(), how)))
    assert "\n" not in str(err.value) and "gt.json" in str(err.value)


def test_gt_json_ignores_annotations_of_other_videos(tmp_path):
    doc = _doc()
    doc["annotations"].append({"video_id": "elsewhere", "annotations": []})
    assert len(read_panoptic_video_gt(_write(tmp_path, doc)).videos) == 2

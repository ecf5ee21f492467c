"""VIPSeg for VPSNet: the 720p conversion (the official scripts' rules), class order, datasets and datamodule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.constants import IGNORE_LABEL
from vidseg.data.panoptic import read_panoptic_png
from vidseg.data.vipseg import (
    BARE_THING_INSTANCE,
    VIPSEG_CLASSES,
    VIPSegDataModule,
    convert_vipseg,
    main,
    panomask_to_panoptic,
)
from vidseg.data.vipseg_layout import VIPSEG_CATEGORIES, read_panomask, read_panoptic_video_gt
from vidseg.errors import DataError, MaskFormatError

# Category ids (0-based, the JSON's); mask class values are id + 1.
WALL, FLOOR, SLIDE, CAR, PERSON = 0, 13, 6, 48, 60


def _colour_id(rgb) -> int:
    r, g, b = rgb
    return r + 256 * g + 256 * 256 * b


def _write_original(root: Path, videos: dict[str, list[np.ndarray | None]], lists: dict[str, list[str]]) -> None:
    """imgs/<video>/<t:05d>.jpg (random texture) and, where given, panomasks/<video>/<t:05d>.png (16-bit)."""
    rng = np.random.default_rng(0)
    for video, masks in videos.items():
        for t, mask in enumerate(masks):
            h, w = (30, 50) if mask is None else mask.shape
            (root / "imgs" / video).mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "imgs" / video / f"{t:05d}.jpg")
            if mask is not None:
                (root / "panomasks" / video).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint16)).save(root / "panomasks" / video / f"{t:05d}.png")
    for split, names in lists.items():
        (root / f"{split}.txt").write_text("".join(f"{v}\n" for v in names))


def _mask(*blocks: tuple[int, slice, slice]) -> np.ndarray:
    m = np.zeros((30, 50), np.uint16)
    for value, rows, cols in blocks:
        m[rows, cols] = value
    return m


@pytest.fixture()
def original(tmp_path: Path) -> Path:
    root = tmp_path / "vipseg"
    a0 = _mask((WALL + 1, slice(0, 10), slice(None)), (FLOOR + 1, slice(20, 30), slice(None)),
               ((PERSON + 1) * 100, slice(10, 20), slice(0, 10)),
               ((PERSON + 1) * 100 + 1, slice(10, 20), slice(20, 30)),
               (CAR + 1, slice(10, 20), slice(40, 50)))  # a bare thing value (no instance number)
    a1 = _mask((WALL + 1, slice(0, 12), slice(None)), ((PERSON + 1) * 100 + 1, slice(12, 20), slice(0, 12)),
               ((CAR + 1) * 100 + 5, slice(20, 30), slice(10, 30)))
    b0 = _mask(((CAR + 1) * 100, slice(0, 15), slice(0, 25)), (SLIDE + 1, slice(15, 30), slice(None)))
    _write_original(root, {"1_aaa": [a0, a1], "2_bbb": [b0], "3_ccc": [None, None]},
                    {"train": ["1_aaa"], "val": ["2_bbb"], "test": ["3_ccc"]})
    return root


# -------------------------------------------------------------------------------------------- conversion
def test_convert_writes_what_the_official_scripts_write(original: Path):
    logs: list[str] = []
    out = convert_vipseg(original, height=20, log=logs.append)
    # change2_720p.py: height 20, width int(20 * 50 / 30) = 33; masks resized nearest, values unchanged.
    src = Image.open(original / "panomasks" / "1_aaa" / "00000.png")
    mask = read_panomask(out / "panomasks" / "1_aaa" / "00000.png")
    assert mask.shape == (20, 33)
    assert np.array_equal(mask, np.array(src.resize((33, 20), Image.NEAREST)))
    assert Image.open(out / "images" / "1_aaa" / "00000.jpg").size == (33, 20)
    # The test video (no masks): images only, in no JSON.
    assert sorted(p.name for p in (out / "images" / "3_ccc").iterdir()) == ["00000.jpg", "00001.jpg"]
    assert not (out / "panomasks" / "3_ccc").exists() and not (out / "panomasksRGB" / "3_ccc").exists()
    assert not (out / "panoptic_gt_VIPSeg_test.json").exists()

    full = json.loads((out / "panoptic_gt_VIPSeg.json").read_text())
    assert [v["video_id"] for v in full["videos"]] == ["1_aaa", "2_bbb"]
    assert full["categories"] == [c.as_json() for c in VIPSEG_CATEGORIES]
    assert full["videos"][0]["images"][1] == {"id": "00001", "width": 33, "height": 20, "file_name": "00001.png"}
    for split, videos in (("train", ["1_aaa"]), ("val", ["2_bbb"])):
        doc = json.loads((out / f"panoptic_gt_VIPSeg_{split}.json").read_text())
        assert [v["video_id"] for v in doc["videos"]] == videos == [a["video_id"] for a in doc["annotations"]]
        read_panoptic_video_gt(out / f"panoptic_gt_VIPSeg_{split}.json")  # the scorer's checks accept it

    # create_panoptic_video_labels.py: per frame, segments in increasing mask value order, category = class
    # value - 1, iscrowd 0, area = pixels; one id per (video, value), the PNG painted with it.
    ann = {a["video_id"]: a["annotations"] for a in full["annotations"]}
    id_of: dict[tuple[str, int], int] = {}
    for video, frames in ann.items():
        for frame in frames:
            values = read_panomask(out / "panomasks" / video / frame["file_name"])
            ids = read_panoptic_png(out / "panomasksRGB" / video / frame["file_name"])
            present = [v for v in np.unique(values).tolist() if v]
            assert [s["category_id"] for s in frame["segments_info"]] == \
                [(v if v < 125 else v // 100) - 1 for v in present]
            for value, seg in zip(present, frame["segments_info"], strict=True):
                assert list(seg) == ["id", "category_id", "iscrowd", "area"] and seg["iscrowd"] == 0
                assert np.array_equal(ids == seg["id"], values == value) and seg["area"] == int((values == value).sum())
                assert id_of.setdefault((video, value), seg["id"]) == seg["id"]  # constant within the video
            assert np.array_equal(ids == 0, values == 0)
    assert len({i for (v, _), i in id_of.items() if v == "1_aaa"}) == len([k for k in id_of if k[0] == "1_aaa"])
    # IdGenerator colours: stuff = its colour; the first thing of a free colour takes it, later ones are jittered.
    colour = {c.id: c.color for c in VIPSEG_CATEGORIES}
    assert id_of[("1_aaa", WALL + 1)] == _colour_id(colour[WALL])
    assert id_of[("1_aaa", (PERSON + 1) * 100)] == _colour_id(colour[PERSON])
    jittered = id_of[("1_aaa", (PERSON + 1) * 100 + 1)]
    rgb = np.array([jittered % 256, jittered // 256 % 256, jittered // 65536])
    assert jittered != _colour_id(colour[PERSON]) and np.abs(rgb - colour[PERSON]).max() <= 30
    # car shares its colour with the stuff class Playground_slide: never the base colour, even the first one.
    assert id_of[("2_bbb", (CAR + 1) * 100)] != _colour_id(colour[CAR]) == id_of[("2_bbb", SLIDE + 1)]
    assert (out / "panoVIPSeg_categories.json").is_file()


def test_convert_resumes_and_writes_the_same_files(original: Path):
    out = convert_vipseg(original, height=20, log=lambda _: None)
    files = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".vidseg-outputs.json"}
    logs: list[str] = []
    convert_vipseg(original, height=20, log=logs.append)
    assert any("3 videos already converted" in line for line in logs)
    assert not any(line.startswith("[") for line in logs)  # nothing converted again
    (out / ".convert" / "1_aaa.json").unlink()
    (out / "panomasksRGB" / "1_aaa" / "00001.png").unlink()
    logs.clear()
    convert_vipseg(original, height=20, log=logs.append)
    assert any(line.startswith("[1/1] 1_aaa") for line in logs)
    assert {p: p.read_bytes() for p in files} == files  # same ids: colours are seeded per video
    with pytest.raises(DataError, match="other parameters"):
        convert_vipseg(original, height=24, log=lambda _: None)


def test_convert_refuses_bad_input_in_one_line(original: Path, tmp_path: Path, capsys):
    with pytest.raises(DataError, match="original VIPSeg layout"):
        convert_vipseg(tmp_path / "empty", log=lambda _: None)
    # A VIPSeg_720P/images that another tool wrote is kept unless --overwrite.
    (original / "VIPSeg_720P" / "images").mkdir(parents=True)
    (original / "VIPSeg_720P" / "images" / "theirs.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="--overwrite"):
        convert_vipseg(original, height=20, log=lambda _: None)
    assert (original / "VIPSeg_720P" / "images" / "theirs.jpg").is_file()
    convert_vipseg(original, height=20, overwrite=True, log=lambda _: None)
    assert not (original / "VIPSeg_720P" / "images" / "theirs.jpg").exists()

    bad = tmp_path / "bad"
    _write_original(bad, {"1_x": [_mask((13000, slice(0, 5), slice(0, 5)))]}, {"train": ["1_x"]})
    with pytest.raises(MaskFormatError, match="no VIPSeg class"):
        convert_vipseg(bad, height=20, log=lambda _: None)
    listed = tmp_path / "listed"
    _write_original(listed, {"1_x": [_mask((1, slice(0, 5), slice(0, 5)))]}, {"train": ["1_x", "9_missing"]})
    with pytest.raises(DataError, match="9_missing"):
        convert_vipseg(listed, height=20, log=lambda _: None)
    (listed / "train.txt").write_text("1_x\n")
    (listed / "panoVIPSeg_categories.json").write_text(json.dumps([{"id": 0, "name": "wall", "isthing": 0,
                                                                    "color": [1, 2, 3]}]))
    with pytest.raises(DataError, match="124 categories"):
        convert_vipseg(listed, height=20, log=lambda _: None)
    with pytest.raises(SystemExit) as stop:
        main(["convert", "--root", str(tmp_path / "empty")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidseg: error:") and "\n" not in err


# ---------------------------------------------------------------------------------------- classes, data
def test_classes_put_stuff_first_and_keep_vipseg_names_and_colours():
    assert len(VIPSEG_CLASSES) == 124 and [c["id"] for c in VIPSEG_CLASSES] == list(range(124))
    assert [c["isthing"] for c in VIPSEG_CLASSES] == [0] * 66 + [1] * 58
    by_id = {c.id: c for c in VIPSEG_CATEGORIES}
    for c in VIPSEG_CLASSES:
        vip = by_id[c["vipseg_id"]]
        assert (c["name"], bool(c["isthing"]), tuple(c["color"])) == (vip.name, vip.isthing, vip.color)
    cls = {c["vipseg_id"]: c["id"] for c in VIPSEG_CLASSES}
    values = np.array([[0, WALL + 1, (PERSON + 1) * 100 + 7, CAR + 1, (FLOOR + 1) * 100 + 3]])
    assert panomask_to_panoptic(values).tolist() == [[
        IGNORE_LABEL, cls[WALL], cls[PERSON] * 1000 + 7, cls[CAR] * 1000 + BARE_THING_INSTANCE, cls[FLOOR]]]


def test_datamodule_reads_the_720p_layout_and_refuses_the_original(original: Path):
    with pytest.raises(DataError, match="vidseg.data.vipseg convert"):
        VIPSegDataModule(original, split="val").setup("validate")
    convert_vipseg(original, height=20, log=lambda _: None)
    dm = VIPSegDataModule(original, split="val", crop_size=(20, 32), scale=(1.0, 1.0), hflip=False)
    dm.setup("fit")
    train = dm.train_dataset
    assert [f.file_name for f in train.frames] == ["1_aaa/00000", "1_aaa/00001"] and train.neighbours == [[1], [0]]
    item = train[0]
    assert item["images"].shape == (2, 3, 20, 32) and item["video"] == "1_aaa"
    cls = {c["vipseg_id"]: c["id"] for c in VIPSEG_CLASSES}
    tracks = sorted(set(item["instances"][0]["track_ids"].tolist()) | set(item["instances"][1]["track_ids"].tolist()))
    assert set(tracks) <= {cls[PERSON] * 1000, cls[PERSON] * 1000 + 1, cls[CAR] * 1000 + BARE_THING_INSTANCE,
                           cls[CAR] * 1000 + 5}
    assert all((inst["labels"] >= 66).all() for inst in item["instances"])  # things after the 66 stuff classes
    val = dm.val_dataset
    assert val.videos() == ["2_bbb"]
    frame = val[0]
    assert frame["panoptic_image_id"] == "2_bbb/00000" and frame["annotated"] and frame["is_first"]
    assert set(np.unique(frame["panoptic"]).tolist()) == {cls[CAR] * 1000, cls[SLIDE], IGNORE_LABEL}
    test = VIPSegDataModule(original, split="test")
    test.setup("validate")
    assert [test.val_dataset[i]["annotated"] for i in range(2)] == [False, False]

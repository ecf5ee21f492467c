"""The toy VPS generator: official layouts and encodings, JSON/PNG consistency, motion, determinism; COCO RLE."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.constants import PANOPTIC_LABEL_DIVISOR
from vidseg.data.cityscapes_vps import CITYSCAPES_VPS_CATEGORIES
from vidseg.data.panoptic import read_panoptic_png
from vidseg.data.toy_vps import generate_toy_vps, main
from vidseg.data.viper import VIPER_CATEGORIES
from vidseg.data.vps_common import rle_decode, rle_encode
from vidseg.data.vps_layout import CITYSCAPES_VPS, VIPER
from vidseg.errors import MaskFormatError

CITY_NAME = re.compile(r"^(\d{4})_(\d{4})_[a-z]+_\d{6}_\d{6}_(leftImg8bit|newImg8bit)\.png$")



def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _gray(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


# --------------------------------------------------------------------------------------------------- RLE


@pytest.mark.parametrize("compressed", [True, False])
def test_rle_round_trip(compressed: bool) -> None:
    rng = np.random.default_rng(0)
    masks = [np.zeros((5, 7), bool), np.ones((5, 7), bool), rng.random((31, 17)) < 0.5,
             np.pad(np.ones((40, 50), bool), 30)]
    masks[0][0, 0] = True  # first pixel set: counts start with a 0-length run of zeros
    for mask in masks:
        rle = rle_encode(mask, compressed=compressed)
        assert rle["size"] == list(mask.shape)
        assert isinstance(rle["counts"], str if compressed else list)
        np.testing.assert_array_equal(rle_decode(rle), mask.astype(np.uint8))


def test_rle_known_counts_and_string() -> None:
    # Column-major runs: column 0 = [0, 1], column 1 = [1, 1] -> runs 0:1, 1:3.
    mask = np.array([[0, 1], [1, 1]], bool)
    assert rle_encode(mask, compressed=False)["counts"] == [1, 3]
    # Long runs use several 5-bit groups and, from the 4th count on, deltas (pycocotools' format).
    counts = [0, 100, 5000, 100, 2]
    mask = np.repeat(np.arange(5) % 2, counts).astype(bool).reshape(1, -1)
    text = rle_encode(mask)["counts"]
    np.testing.assert_array_equal(rle_decode({"size": [1, sum(counts)], "counts": text}), mask.astype(np.uint8))
    assert all(48 <= ord(ch) < 48 + 64 for ch in text)  # 6-bit groups offset by 48, as pycocotools writes


def test_rle_errors_name_the_annotation() -> None:
    with pytest.raises(MaskFormatError, match="ann 7.*sum to 3"):
        rle_decode({"size": [2, 2], "counts": [1, 2]}, where="ann 7")
    with pytest.raises(MaskFormatError, match="polygon"):
        rle_decode([[0, 0, 1, 1, 2, 2]], where="ann 8")


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kw = dict(format="viper", videos=1, val_videos=1, height=32, width=64, frames=10, max_objects=3)
    a = _files(generate_toy_vps(tmp_path / "a", seed=4, **kw))
    b = _files(generate_toy_vps(tmp_path / "b", seed=4, **kw))
    c = _files(generate_toy_vps(tmp_path / "c", seed=5, **kw))
    assert a == b
    assert a.keys() == c.keys() and any(a[k] != c[k] for k in a)


def test_cli_resume_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--root", str(tmp_path / "t"), "--format", "cityscapes_vps", "--seed", "1", "--videos", "1",
            "--val-videos", "0", "--height", "32", "--width", "64"]
    root = main(args)
    assert "toy cityscapes_vps set" in capsys.readouterr().out
    before = _files(root)
    main(args)  # complete set: untouched
    assert _files(root) == before
    with pytest.raises(ValueError, match="other parameters"):
        main([*args[:-1], "96"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("real data")
    with pytest.raises(ValueError, match="not empty"):
        generate_toy_vps(tmp_path / "other", format="viper", seed=0)


def test_a_set_from_the_older_generator_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    """A version-1 set (things told apart by size only) must not be trained on silently as if it were the new one."""
    from vidseg.demo import main as demo_main

    root = tmp_path / "old"
    root.mkdir()
    (root / "toy_vps.json").write_text(json.dumps({"format": "cityscapes_vps", "seed": 0, "videos": 12}))
    with pytest.raises(SystemExit) as stop:
        demo_main(["--task", "vps", "--vps-data", str(root), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidseg: error: ") and "older toy generator (version 1" in err[0]
    assert sorted(p.name for p in root.iterdir()) == ["toy_vps.json"]  # nothing written into it


# --------------------------------------------------------------------------------------- Cityscapes-VPS


def test_cityscapes_layout_names_and_json_keys(toy_cityscapes_vps_root: Path) -> None:
    root = toy_cityscapes_vps_root
    for name in ["panoptic_im_train_city_vps.json", "panoptic_im_val_city_vps.json",
                 "instances_train_city_vps_rle.json", "instances_val_city_vps_rle.json",
                 "im_all_info_val_city_vps.json", "panoptic_gt_val_city_vps.json"]:
        assert (root / name).is_file(), name
    cats = _json(root / "panoptic_gt_val_city_vps.json")["categories"]
    assert [(c["id"], c["name"], c["isthing"]) for c in cats] == [
        (c["id"], c["name"], c["isthing"]) for c in CITYSCAPES_VPS_CATEGORIES]
    assert [c["id"] for c in cats if c["isthing"]] == list(range(11, 19)) and all(len(c["color"]) == 3 for c in cats)
    # Dense frames: 30 per clip, id = vid * 10000 + frame, the 20th is the leftImg8bit frame.
    all_info = _json(root / "im_all_info_val_city_vps.json")["images"]
    clips = defaultdict(list)
    for im in all_info:
        vid, frame, kind = CITY_NAME.match(im["file_name"]).groups()
        assert im["id"] == int(vid) * 10000 + int(frame)
        assert (kind == "leftImg8bit") == (int(frame) == 20)
        assert (root / "val" / "img_all" / im["file_name"]).is_file()
        clips[vid].append(int(frame))
    assert len(clips) == 2 and all(sorted(f) == list(range(1, 31)) for f in clips.values())
    # Annotated frames: every 5th, each with its image and label PNGs.
    for split in ("train", "val"):
        inst = _json(root / f"instances_{split}_city_vps_rle.json")
        assert set(inst) == {"images", "annotations", "categories"}
        frames = sorted(int(CITY_NAME.match(im["file_name"]).group(2)) for im in inst["images"])
        assert frames == sorted([5, 10, 15, 20, 25, 30] * 2)
        pan_im = _json(root / f"panoptic_im_{split}_city_vps.json")
        assert [im["id"] for im in pan_im["images"]] == [CITYSCAPES_VPS.image_id_of(im["file_name"])
                                                          for im in inst["images"]]
        for im in inst["images"]:
            gt = CITYSCAPES_VPS.gt_png_name(im["file_name"])
            assert gt.endswith("_gtFine_color.png" if "_0020_" in gt else "_final_mask.png")
            for sub in ("img/" + im["file_name"], "labelmap/" + gt, "panoptic_inst/" + gt):
                assert (root / split / sub).is_file(), sub
        ann = inst["annotations"][0]
        assert {"id", "inst_id", "image_id", "category_id", "iscrowd", "area", "bbox", "segmentation"} <= set(ann)
    gt = _json(root / "panoptic_gt_val_city_vps.json")
    assert set(gt) == {"images", "annotations", "categories"}
    assert set(gt["images"][0]) == {"id", "width", "height", "file_name"}
    assert set(gt["annotations"][0]) == {"image_id", "file_name", "segments_info"}
    assert set(gt["annotations"][0]["segments_info"][0]) == {"id", "category_id", "iscrowd", "area"}
    assert len(gt["images"]) == 12


def test_cityscapes_png_encodings(toy_cityscapes_vps_root: Path) -> None:
    root = toy_cityscapes_vps_root
    name = sorted((root / "train" / "labelmap").iterdir())[0].name
    with Image.open(root / "train" / "labelmap" / name) as im:
        assert im.mode == "L"  # uint8 trainId
        labels = np.array(im)
    with Image.open(root / "train" / "panoptic_inst" / name) as im:
        assert im.mode in ("I;16", "I") and np.array(im).dtype == np.uint16  # 16-bit grayscale
        pan = np.array(im).astype(np.int64)
    with Image.open(next((root / "val" / "panoptic_video").iterdir())) as im:
        assert im.mode == "RGB"
    assert set(np.unique(labels)) <= set(range(19)) | {255}
    # panoptic_inst agrees with the labelmap: stuff = class, thing = class * 1000 + inst (or bare class = crowd).
    cls = np.where(pan >= PANOPTIC_LABEL_DIVISOR, pan // PANOPTIC_LABEL_DIVISOR, pan)
    np.testing.assert_array_equal(cls, labels)
    assert (pan >= PANOPTIC_LABEL_DIVISOR).any() and (labels == 255).any()


def test_cityscapes_instances_json_matches_pngs(toy_cityscapes_vps_root: Path) -> None:
    root = toy_cityscapes_vps_root
    inst = _json(root / "instances_train_city_vps_rle.json")
    images = {im["id"]: im for im in inst["images"]}
    assert sorted(images) == list(range(1, len(images) + 1))
    by_image = defaultdict(list)
    for ann in inst["annotations"]:
        by_image[ann["image_id"]].append(ann)
    for image_id, im in images.items():
        pan = _gray(root / "train" / "panoptic_inst" / CITYSCAPES_VPS.gt_png_name(im["file_name"])).astype(np.int64)
        things = {int(v) for v in np.unique(pan) if v >= PANOPTIC_LABEL_DIVISOR}
        seen = set()
        for ann in by_image[image_id]:
            mask = rle_decode(ann["segmentation"]).astype(bool)
            value = ann["category_id"] if ann["iscrowd"] else ann["category_id"] * 1000 + ann["inst_id"]
            np.testing.assert_array_equal(mask, pan == value)
            assert ann["area"] == mask.sum()
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(mask)
            assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert isinstance(ann["segmentation"]["counts"], list if ann["iscrowd"] else str)
            seen.add(value)
        assert things <= seen  # every instance in the PNG is annotated


def _ground_truth_frames(gt_json: Path, gt_dir: Path, layout):
    """Yield (video, annotation, segment ids (H, W), segments by id) per GT frame, checking JSON vs PNG."""
    gt = _json(gt_json)
    images = {im["id"]: im for im in gt["images"]}
    for ann in gt["annotations"]:
        image = images[ann["image_id"]]
        ids = read_panoptic_png(gt_dir / ann["file_name"])
        segs = {s["id"]: s for s in ann["segments_info"]}
        uniq, counts = np.unique(ids, return_counts=True)
        assert set(uniq.tolist()) - {0} == set(segs)  # ids consistent between JSON and PNG
        for sid, n in zip(uniq.tolist(), counts.tolist(), strict=True):
            if sid:
                assert segs[sid]["area"] == n  # JSON areas = PNG pixel counts
        yield layout.video_of(image), ann, ids, segs


def test_cityscapes_panoptic_video_equals_panoptic_inst(toy_cityscapes_vps_root: Path) -> None:
    root = toy_cityscapes_vps_root
    video_map: dict[str, dict[int, int]] = defaultdict(dict)
    for video, ann, ids, segs in _ground_truth_frames(
            root / "panoptic_gt_val_city_vps.json", root / "val" / "panoptic_video", CITYSCAPES_VPS):
        pan = _gray(root / "val" / "panoptic_inst" / ann["file_name"]).astype(np.int64)
        # The RGB decoding is a relabelling of panoptic_inst: one segment id per value, constant in the video.
        for value in np.unique(pan).tolist():
            sids = np.unique(ids[pan == value])
            assert len(sids) == 1
            sid = int(sids[0])
            if value == 255:
                assert sid == 0
                continue
            assert video_map[video].setdefault(value, sid) == sid  # track ids stable within the video
            cls = value // 1000 if value >= 1000 else value
            assert segs[sid]["category_id"] == cls
            assert segs[sid]["iscrowd"] == int(value < 1000 and cls >= 11)
    for mapping in video_map.values():
        assert len(set(mapping.values())) == len(mapping)  # distinct segments per video
        assert sum(v >= 1000 for v in mapping) >= 2


def test_scene_has_motion_several_classes_crowd_and_void(make_toy_vps) -> None:
    root = make_toy_vps("cityscapes_vps", val_videos=3, seed=2)
    inst = _json(root / "instances_val_city_vps_rle.json")
    assert any(a["iscrowd"] for a in inst["annotations"])  # a crowd segment in some video
    names = sorted(p.name for p in (root / "val" / "panoptic_inst").iterdir())
    changed = []
    for a, b in zip(names, names[1:], strict=False):
        if a[:4] != b[:4]:
            continue
        pa, pb = _gray(root / "val" / "panoptic_inst" / a), _gray(root / "val" / "panoptic_inst" / b)
        changed.append((pa != pb).mean())  # frames t and t + 5
    assert min(changed) > 0.15, changed  # camera motion: copying the earlier map is wrong on >15% of pixels
    classes = {a["category_id"] for a in inst["annotations"] if not a["iscrowd"]}
    assert len(classes) >= 3


# ------------------------------------------------------------------------------------------------- VIPER


def test_viper_layout_and_encodings(toy_viper_root: Path) -> None:
    root = toy_viper_root
    for name in ["instances_train_05_viper_coco.json", "instances_val_day_01_viper_coco.json",
                 "viper_panoptic_val_day_video.json"]:
        assert (root / name).is_file(), name
    gt = _json(root / "viper_panoptic_val_day_video.json")
    assert [(c["id"], c["name"]) for c in gt["categories"]] == [(c["id"], c["name"]) for c in VIPER_CATEGORIES]
    assert [c["id"] for c in gt["categories"] if c["isthing"]] == list(range(13, 23))
    frames = defaultdict(list)
    for im in gt["images"]:
        assert re.match(r"^\d{3}_\d{5}\.jpg$", im["file_name"])
        assert (root / "val_day" / "img" / im["file_name"]).is_file()
        assert (root / "val_day" / "panoptic_video" / VIPER.gt_png_name(im["file_name"])).is_file()
        frames[VIPER.video_of(im)].append(VIPER.frame_index_of(im["file_name"]))
    assert all(sorted(f) == list(range(10)) for f in frames.values())  # every val frame annotated
    train = _json(root / "instances_train_05_viper_coco.json")
    train_frames = sorted(VIPER.frame_index_of(im["file_name"]) for im in train["images"])
    assert train_frames == [0, 0, 5, 5]  # every 5th frame
    for im in train["images"]:
        with Image.open(root / "train" / "img" / im["file_name"]) as f:
            assert f.format == "JPEG" and f.mode == "RGB"
        with Image.open(root / "train" / "labelmap" / VIPER.gt_png_name(im["file_name"])) as f:
            assert f.mode == "L" and set(np.unique(np.array(f))) <= set(range(23)) | {255}
    track = defaultdict(dict)
    for video, ann, ids, segs in _ground_truth_frames(
            root / "viper_panoptic_val_day_video.json", root / "val_day" / "panoptic_video", VIPER):
        labels = _gray(root / "val_day" / "labelmap" / ann["file_name"])
        for sid, seg in segs.items():
            assert (labels[ids == sid] == seg["category_id"]).all()
            track[video].setdefault(sid, seg["category_id"])
    assert all(sum(c >= 13 for c in t.values()) >= 2 for t in track.values())


# ---------------------------------------------------------------------- what the set is made to measure


def _scenes(n: int, *, fmt: str = "cityscapes_vps", frames: int = 30, max_objects: int = 6):
    from vidseg.data.toy_vps import _Scene

    rng = np.random.default_rng(11)
    return [_Scene(fmt, rng, frames, max_objects, index=i) for i in range(n)]


def test_thing_classes_are_told_apart_by_appearance() -> None:
    """A nearest-centroid classifier on each instance's mean colour names its class: one frame is enough."""
    features, classes = [], []
    for scene in _scenes(12):
        scene.degradation = {}
        image, _, pan, segments = scene.render(10, 128, 256, np.random.default_rng(0))
        for value, (cls, _) in segments.items():
            mask = pan == value
            if value >= PANOPTIC_LABEL_DIVISOR and mask.sum() >= 100:
                features.append(image[mask].mean(axis=0))
                classes.append(cls)
    features, classes = np.array(features), np.array(classes)
    assert len(set(classes.tolist())) == 4 and len(classes) >= 40
    centroids = {c: features[classes == c].mean(axis=0) for c in set(classes.tolist())}
    predicted = [min(centroids, key=lambda c: np.linalg.norm(f - centroids[c])) for f in features]
    assert (np.array(predicted) == classes).mean() == 1.0


def test_degraded_frames_change_the_image_not_the_labels() -> None:
    scenes = _scenes(8)
    degraded = [t for s in scenes for t in s.degradation]
    assert 0 not in degraded  # the first frame is always clean
    assert 0.15 < len(degraded) / (8 * 29) < 0.45
    kinds = {kind for s in scenes for kind, _ in s.degradation.values()}
    assert kinds == {"blur", "noise", "glare", "dark"}
    for scene in scenes[:3]:
        t = min(scene.degradation)
        image, label, pan, segments = scene.render(t, 64, 128, np.random.default_rng(0))
        kept = scene.degradation
        scene.degradation = {}
        clean, clean_label, clean_pan, clean_segments = scene.render(t, 64, 128, np.random.default_rng(0))
        scene.degradation = kept
        np.testing.assert_array_equal(label, clean_label)
        np.testing.assert_array_equal(pan, clean_pan)
        assert segments == clean_segments
        assert np.abs(image.astype(float) - clean).mean() > 8  # a visible degradation


def test_every_video_has_a_crossing_same_class_pair() -> None:
    for scene in _scenes(10):
        a, b = scene.things[:2]
        assert a.cls == b.cls and a.vx * b.vx < 0
        gap = [(a.x0 + a.vx * t) - (b.x0 + b.vx * t) for t in (0, 29)]
        assert gap[0] * gap[1] < 0  # they swap sides during the clip
        # ... at nearly the same depth, so the nearer one hides the other while they cross
        assert abs(a.y0 - b.y0) < 0.01

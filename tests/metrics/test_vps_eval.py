"""Submission scoring (vidseg.metrics.vps_eval): the official numbers, result files, every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.vps_submission import (
    CITYSCAPES_CATEGORIES,
    VIPER_CATEGORIES,
    layout_of,
    perfect_prediction,
    random_video,
    write_dataset,
    write_submission,
)
from vidseg.data.vps_layout import CITYSCAPES_VPS, VIPER
from vidseg.errors import DataError, MaskFormatError, SubmissionError
from vidseg.metrics.vps_eval import (
    evaluate_submission,
    format_vps_table,
    load_ground_truth,
    results_to_json,
    write_vps_results,
)

ORACLE = Path(__file__).resolve().parents[1] / "fixtures" / "vps_oracle"


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """2 videos x 3 frames of 16x32, Cityscapes-VPS layout; returns (gt root, submission dir, videos)."""
    tmp = tmp_path_factory.mktemp("city")
    rng = np.random.default_rng(0)
    videos = [random_video(rng, f"v{i}", num_frames=3, height=16, width=32) for i in range(2)]
    gt = write_dataset(tmp / "gt", CITYSCAPES_VPS, "val", videos, CITYSCAPES_CATEGORIES)
    write_submission(tmp / "sub", gt, videos)
    return tmp / "gt", tmp / "sub", videos


@pytest.fixture
def bad_sub(city, tmp_path):
    """A writable copy of the good submission."""
    dst = tmp_path / "sub"
    shutil.copytree(city[1], dst)
    return dst


def _gt(city):
    return load_ground_truth("cityscapes_vps", city[0], "val")


# -------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("case", sorted(json.loads((ORACLE / "expected.json").read_text())))
def test_equals_official_code(case):
    expected = json.loads((ORACLE / "expected.json").read_text())[case]
    gt = load_ground_truth(expected["protocol"], ORACLE / case / "gt", "val")
    res = evaluate_submission(gt, ORACLE / case / "submission", expected["protocol"], workers=1)
    for k, e in expected["windows"].items():
        mine = res.windows[int(k)]
        for key in ("all", "thing", "stuff"):
            assert mine[key]["n"] == e[key]["n"]
            for m in ("pq", "sq", "rq"):
                assert 100 * mine[key][m] == pytest.approx(100 * e[key][m], abs=1e-9), (k, key, m)
        assert {str(c) for c in mine["per_class"]} == set(e["per_class"])
        for c, r in e["per_class"].items():
            mr = mine["per_class"][int(c)]
            assert (mr["tp"], mr["fp"], mr["fn"]) == (r["tp"], r["fp"], r["fn"]), (k, c)
            assert mr["iou"] == pytest.approx(r["iou"], abs=1e-9)
    for key in ("all", "thing", "stuff"):
        assert 100 * res.vpq[key] == pytest.approx(expected["vpq_final_percent"][key], abs=1e-9)
    for m in ("STQ", "AQ", "SQ"):
        assert res.stq[m] == pytest.approx(expected["stq"][m], abs=1e-6)


def test_perfect_submission_scores_100(city, tmp_path):
    videos = [perfect_prediction(v) for v in city[2]]
    gt_json = json.loads(CITYSCAPES_VPS.panoptic_gt_json(city[0], "val").read_text())
    write_submission(tmp_path / "perfect", gt_json, videos, with_image_id=True)
    res = evaluate_submission(_gt(city), tmp_path / "perfect", workers=1)
    assert [res.windows[k]["all"]["pq"] for k in (0, 5, 10)] == [1.0, 1.0, 1.0]
    # 3 frames per video: no window of 4 frames (k = 15): 0.0 with n = 0, averaged in like the official.
    assert res.windows[15]["all"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert res.vpq == {"all": 0.75, "thing": 0.75, "stuff": 0.75}
    assert res.stq == {"STQ": 1.0, "AQ": 1.0, "SQ": 1.0}
    assert res.num_videos == 2 and res.num_frames == 6


def test_load_ground_truth_groups_videos(city):
    gt = _gt(city)
    assert [v.name for v in gt.videos] == ["0001", "0002"]
    assert [f.image_id for f in gt.videos[0].frames] == gt.image_ids[:3]
    assert gt.videos[0].frames[3 - 1].png_path.is_file()
    assert set(gt.categories) == set(range(19)) and gt.num_frames == 6


def test_workers_do_not_change_numbers(city):
    gt = _gt(city)
    one = evaluate_submission(gt, city[1], workers=1)
    two = evaluate_submission(gt, city[1], workers=2)
    assert results_to_json(one) == results_to_json(two)
    assert 0 < one.vpq["all"] < 1


def test_viper_layout_and_file_names(tmp_path):
    rng = np.random.default_rng(1)
    videos = [random_video(rng, "a", num_frames=5, height=40, width=48, categories=VIPER_CATEGORIES)]
    gt_json = write_dataset(tmp_path / "gt", VIPER, "val", videos, VIPER_CATEGORIES)
    write_submission(tmp_path / "sub", gt_json, videos)
    gt = load_ground_truth(layout_of("viper"), tmp_path / "gt", "val")
    res = evaluate_submission(gt, tmp_path / "sub", workers=1)
    assert res.protocol == "viper" and list(res.windows) == [1, 5, 10, 15]
    paths = write_vps_results(res, tmp_path / "out", "val")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "results-val.json", "vpq-1.txt", "vpq-10.txt", "vpq-15.txt", "vpq-5.txt", "vpq-final.txt"]
    text = paths["vpq-1"].read_text()
    assert text.count("\n") == 7 + len(VIPER_CATEGORIES) - 1 and "\n  11 |" not in text  # class 11 left out
    assert res.windows[10]["all"]["n"] == 0  # 5 frames: no window of 10


# ------------------------------------------------------------------------------------------- writers
def test_write_results_files(city, tmp_path):
    res = evaluate_submission(_gt(city), city[1], workers=1)
    paths = write_vps_results(res, tmp_path, "val")
    final = paths["final"].read_text()
    v = res.vpq
    assert final == "vpq_all:%.4f\nvpq_thing:%.4f\nvpq_stuff:%.4f\n" % (  # noqa: UP031 (the official format)
        100 * v["all"], 100 * v["thing"], 100 * v["stuff"])
    assert [p.name for p in sorted(tmp_path.glob("vpq-*.txt"))] == ["vpq-0.txt", "vpq-10.txt", "vpq-15.txt",
                                                                    "vpq-5.txt", "vpq-final.txt"]
    doc = json.loads(paths["json"].read_text())
    assert doc["stq"] == res.stq and doc["vpq"] == res.vpq and doc["split"] == "val"
    assert doc["windows"]["5"]["all"]["pq"] == res.windows[5]["all"]["pq"]  # full precision
    assert doc["windows"]["0"]["per_class"]["13"]["tp"] == res.windows[0]["per_class"][13]["tp"]
    text = paths["vpq-0"].read_text()
    assert text.splitlines()[3].startswith("All       |") and f"{100 * res.windows[0]['all']['pq']:5.1f}" in text
    table = format_vps_table(res)
    assert f"{100 * v['all']:6.2f}" in table and f"STQ {100 * res.stq['STQ']:.2f}" in table


def test_failed_write_leaves_earlier_results_intact(city, tmp_path):
    res = evaluate_submission(_gt(city), city[1], workers=1)
    paths = write_vps_results(res, tmp_path, "val")
    before = {p: p.read_text() for p in paths.values()}
    res.windows[15] = {"nframes": 4}  # broken results: fails while building the texts
    res.vpq = {"all": 0.0, "thing": 0.0, "stuff": 0.0}
    with pytest.raises(KeyError):
        write_vps_results(res, tmp_path, "val")
    assert {p: p.read_text() for p in paths.values()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())  # no temp files


def test_bad_submission_writes_nothing(city, bad_sub, tmp_path):
    (bad_sub / "pred.json").unlink()
    with pytest.raises(FileNotFoundError):
        write_vps_results(evaluate_submission(_gt(city), bad_sub, workers=1), tmp_path / "out", "val")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------- bad inputs
def _pred(sub):
    return json.loads((sub / "pred.json").read_text())


def _save_pred(sub, doc):
    (sub / "pred.json").write_text(json.dumps(doc))


def _first_png(city, sub):
    return sub / "pan_pred" / f"{_gt(city).image_ids[0]}.png"


def test_png_segment_missing_from_pred_json(city, bad_sub):
    doc = _pred(bad_sub)
    dropped = doc["annotations"][0]["segments_info"].pop(0)
    _save_pred(bad_sub, doc)
    with pytest.raises(SubmissionError, match=rf"{_gt(city).image_ids[0]}\.png.*\[{dropped['id']}\] are in the PNG"):
        evaluate_submission(_gt(city), bad_sub, workers=1)


def test_json_segment_missing_from_png(city, bad_sub):
    doc = _pred(bad_sub)
    doc["annotations"][1]["segments_info"].append({"id": 4242, "category_id": 13})
    _save_pred(bad_sub, doc)
    with pytest.raises(SubmissionError, match=r"lists segment ids \[4242\] that have no pixel"):
        evaluate_submission(_gt(city), bad_sub, workers=1)


def test_unknown_category(city, bad_sub):
    doc = _pred(bad_sub)
    doc["annotations"][2]["segments_info"][0]["category_id"] = 99
    _save_pred(bad_sub, doc)
    with pytest.raises(SubmissionError, match="unknown category_id 99"):
        evaluate_submission(_gt(city), bad_sub, workers=1)


def test_wrong_size(city, bad_sub):
    png = _first_png(city, bad_sub)
    Image.open(png).resize((16, 8), Image.NEAREST).save(png)
    with pytest.raises(SubmissionError, match=r"prediction is 16x8 \(WxH\) but the GT .* is 32x16"):
        evaluate_submission(_gt(city), bad_sub, workers=1)


def test_missing_prediction_png(city, bad_sub):
    _first_png(city, bad_sub).unlink()
    with pytest.raises(FileNotFoundError, match="prediction PNG not found: .*pan_pred"):
        evaluate_submission(_gt(city), bad_sub, workers=1)


@pytest.mark.parametrize("delta", [-1, 1])
def test_entry_count_mismatch(city, bad_sub, delta):
    doc = _pred(bad_sub)
    doc["annotations"] = doc["annotations"][:-1] if delta < 0 else doc["annotations"] + doc["annotations"][:1]
    _save_pred(bad_sub, doc)
    with pytest.raises(SubmissionError, match=rf"{6 + delta} annotations but the GT .* has 6 images"):
        evaluate_submission(_gt(city), bad_sub, workers=1)


def test_image_ids(city, bad_sub):
    gt = _gt(city)
    doc = _pred(bad_sub)
    for entry, image_id in zip(doc["annotations"], gt.image_ids, strict=True):
        entry["image_id"] = image_id
    doc["annotations"].reverse()  # matched by image_id: order no longer matters
    _save_pred(bad_sub, doc)
    a = evaluate_submission(gt, bad_sub, workers=1)
    b = evaluate_submission(gt, city[1], workers=1)
    assert a.vpq == b.vpq and a.stq == b.stq
    doc["annotations"][0]["image_id"] = "nope"
    _save_pred(bad_sub, doc)
    with pytest.raises(SubmissionError, match="image_id 'nope' is not a GT image"):
        evaluate_submission(gt, bad_sub, workers=1)
    del doc["annotations"][0]["image_id"]
    _save_pred(bad_sub, doc)
    with pytest.raises(SubmissionError, match="5 of 6 entries have an image_id"):
        evaluate_submission(gt, bad_sub, workers=1)


@pytest.mark.parametrize("mode", ["L", "P"])
def test_grayscale_or_palette_png(city, bad_sub, mode):
    png = _first_png(city, bad_sub)
    Image.open(png).convert(mode).save(png)
    with pytest.raises(MaskFormatError, match="expected a COCO-panoptic RGB PNG"):
        evaluate_submission(_gt(city), bad_sub, workers=1)


def test_truncated_png(city, bad_sub):
    png = _first_png(city, bad_sub)
    png.write_bytes(png.read_bytes()[:60])
    with pytest.raises(MaskFormatError, match="corrupt or truncated"):
        evaluate_submission(_gt(city), bad_sub, workers=1)


def test_errors_from_worker_processes_reach_the_caller(city, bad_sub):
    _first_png(city, bad_sub).unlink()
    with pytest.raises(FileNotFoundError, match="prediction PNG not found"):
        evaluate_submission(_gt(city), bad_sub, workers=2)


def test_missing_files(city, bad_sub, tmp_path):
    (bad_sub / "pred.json").unlink()
    with pytest.raises(FileNotFoundError, match="pred.json not found"):
        evaluate_submission(_gt(city), bad_sub, workers=1)
    with pytest.raises(FileNotFoundError, match="panoptic GT JSON not found"):
        load_ground_truth("cityscapes_vps", tmp_path / "nowhere", "val")
    gt_copy = tmp_path / "gt"
    shutil.copytree(city[0], gt_copy)
    next((gt_copy / "val" / "panoptic_video").iterdir()).unlink()
    with pytest.raises(FileNotFoundError, match="GT panoptic PNG not found"):
        load_ground_truth("cityscapes_vps", gt_copy, "val")
    (gt_copy / "panoptic_gt_val_city_vps.json").write_text("{\"images\": [")
    with pytest.raises(DataError, match="not valid JSON"):
        load_ground_truth("cityscapes_vps", gt_copy, "val")

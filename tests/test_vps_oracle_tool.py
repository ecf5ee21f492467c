"""tools/vps_oracle.py: oracle substitution puts back exactly the error it corrects, and nothing else."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.vps_submission import submission_from_ground_truth
from vidseg.data.vps_layout import CITYSCAPES_VPS

ROOT = Path(__file__).resolve().parents[1]


def _oracle_tool():
    spec = importlib.util.spec_from_file_location("vps_oracle", ROOT / "tools" / "vps_oracle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


THINGS = (11, 13, 14, 18)
CROWD_IDS: set[int] = set()  # the GT's crowd segment ids (filled by the test from the GT JSON)


def _wrong_class(_index, ids, segments):
    """Every thing instance takes the next thing class: detection and tracks perfect, classes all wrong (crowd
    regions keep theirs: the oracle corrects matched instances only)."""
    out = []
    for s in segments:
        if s["category_id"] in THINGS and s["id"] not in CROWD_IDS:
            s = dict(s, category_id=THINGS[(THINGS.index(s["category_id"]) + 1) % len(THINGS)])
        out.append(s)
    return ids, out


def _new_ids_every_frame(index, ids, segments):
    """Thing ids change in every frame: classes and masks perfect, association lost."""
    new_ids, out = ids.copy(), []
    for s in segments:
        if s["category_id"] >= 11:
            new = s["id"] + 1000 * (index + 1)
            new_ids[ids == s["id"]] = new
            s = dict(s, id=new)
        out.append(s)
    return new_ids, out


@pytest.mark.parametrize(("damage", "fixed_by"), [(_wrong_class, "class oracle"),
                                                  (_new_ids_every_frame, "association oracle")])
def test_each_oracle_restores_its_own_error(damage, fixed_by, toy_cityscapes_vps_root, tmp_path, capsys):
    gt = json.loads(CITYSCAPES_VPS.panoptic_gt_json(toy_cityscapes_vps_root, "val").read_text())
    CROWD_IDS.update(s["id"] for a in gt["annotations"] for s in a["segments_info"] if s["iscrowd"])
    assert CROWD_IDS  # the toy set has crowd regions: the damage must leave them alone
    submission = submission_from_ground_truth(toy_cityscapes_vps_root, CITYSCAPES_VPS, "val", tmp_path / "sub",
                                              transform=damage)
    before = {p: p.read_bytes() for p in submission.rglob("*") if p.is_file()}
    rows = _oracle_tool().main(["--data", str(toy_cityscapes_vps_root), "--predictions", str(submission)])
    assert rows["as submitted"]["thing"] < 0.9
    assert rows[fixed_by]["thing"] == pytest.approx(1.0)
    assert rows["class + association"]["thing"] == pytest.approx(1.0)
    other = "association oracle" if fixed_by == "class oracle" else "class oracle"
    assert rows[other]["thing"] == pytest.approx(rows["as submitted"]["thing"])  # it fixes nothing else
    stats = rows["stats"]
    assert stats["covered"] == stats["gt_things"] > 0  # every GT thing has its (damaged) prediction
    right = 0 if damage is _wrong_class else stats["gt_things"]
    assert stats["covered_right_class"] == right
    assert "| class oracle |" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in submission.rglob("*") if p.is_file()} == before  # untouched


def test_a_prediction_matches_only_above_iou_one_half():
    """The oracle's match is the VPQ rule: IoU > 0.5, strictly."""
    match = _oracle_tool()._match
    gt = np.zeros((1, 8), np.int64)
    gt[0, :4] = 7  # a GT thing of 4 pixels
    gt_segments = [{"id": 7, "category_id": 11, "iscrowd": 0}]
    half = np.zeros((1, 8), np.int64)
    half[0, :2] = 9  # 2 of its 4 pixels: IoU exactly 0.5
    assert match(gt, gt_segments, half, [{"id": 9, "category_id": 13}], {11, 13}) == {}
    more = np.zeros((1, 8), np.int64)
    more[0, :3] = 9  # IoU 0.75
    assert match(gt, gt_segments, more, [{"id": 9, "category_id": 13}], {11, 13}) == {9: gt_segments[0]}
    crowd = [{"id": 7, "category_id": 11, "iscrowd": 1}]  # crowd regions are never matched
    assert match(gt, crowd, more, [{"id": 9, "category_id": 13}], {11, 13}) == {}

"""The VPS demo's pieces that are not entry points: the keep-the-first-annotated-frame baseline and the table."""

from __future__ import annotations

from vidseg.data.vps_layout import CITYSCAPES_VPS
from vidseg.demo import vps_table, write_first_frame_baseline
from vidseg.metrics.vps_eval import evaluate_submission, load_ground_truth, results_to_json


def test_first_frame_baseline_is_a_valid_submission_and_the_table_has_every_column(toy_cityscapes_vps_root,
                                                                                   tmp_path):
    submission = write_first_frame_baseline(toy_cityscapes_vps_root, "val", tmp_path / "baseline")
    gt = load_ground_truth(CITYSCAPES_VPS, toy_cityscapes_vps_root, "val")
    results = evaluate_submission(gt, submission, workers=1)
    assert 0.0 < results.vpq["all"] < 1.0  # right on each clip's first annotated frame only
    table = vps_table([("baseline", results_to_json(results))])
    header, row = table.splitlines()
    assert header.split() == ["k=0", "k=5", "k=10", "k=15", "VPQ", "thing", "stuff", "STQ", "AQ"]
    assert row.startswith("baseline") and len(row.split()) == 10

"""STQ (vidseg.metrics.stq): hand-computed cases, deeplab2's conventions, merging of Metric states.

The comparison with deeplab2's own numpy STQuality on random submissions is in test_vps_eval.py (oracle
fixture written by tools/make_vps_oracle.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers.vps_submission import CITYSCAPES_CATEGORIES, perfect_prediction, random_video
from vidseg.metrics.stq import STQCounts, summarize_stq, video_stq
from vidseg.metrics.vps_metrics import SegmentationTrackingQuality

CATS = [{"id": 0, "isthing": 0}, {"id": 1, "isthing": 0}, {"id": 2, "isthing": 1}, {"id": 3, "isthing": 1}]


def seg(i, c, crowd=0):
    return {"id": i, "category_id": c, "iscrowd": crowd}


def stq(gt, gseg, pred, pseg):
    return summarize_stq(video_stq(gt, gseg, pred, pseg, CATS))


def test_split_track_hand_computed():
    gt = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    pred = np.array([[7, 7, 5, 5], [7, 7, 6, 6]])
    gseg, pseg = [seg(1, 0), seg(2, 2)], [seg(7, 0), seg(5, 2), seg(6, 2)]
    r = stq([gt], [gseg], [pred], [pseg])
    # One GT track of 4 px split in two predicted tracks of 2: AQ = 1/4 * (2*2/4 + 2*2/4) = 0.5; SQ = 1.
    assert r["AQ"] == 0.5 and r["SQ"] == 1.0 and r["STQ"] == pytest.approx(math.sqrt(0.5), abs=1e-15)
    # Two frames of one video: the same ratios over 8 px.
    r2 = stq([gt, gt], [gseg, gseg], [pred, pred], [pseg, pseg])
    assert r2["AQ"] == 0.5


def test_id_switch_lowers_aq_not_sq():
    gt = [np.array([[2, 2, 1, 1]])] * 2
    gseg = [[seg(1, 0), seg(2, 2)]] * 2
    same = [np.array([[5, 5, 7, 7]])] * 2
    switch = [np.array([[5, 5, 7, 7]]), np.array([[6, 6, 7, 7]])]
    a = stq(gt, gseg, same, [[seg(5, 2), seg(7, 0)]] * 2)
    b = stq(gt, gseg, switch, [[seg(5, 2), seg(7, 0)], [seg(6, 2), seg(7, 0)]])
    assert a["AQ"] == 1.0 and b["AQ"] == pytest.approx(0.5)  # 1/4 * (2*2/4 + 2*2/4)
    assert a["SQ"] == b["SQ"] == 1.0


def test_crowd_is_left_out_of_association():
    gt = np.array([[3, 3, 2, 2]])  # 3: crowd car, 2: a car
    pred = np.array([[5, 5, 5, 5]])
    r = stq([gt], [[seg(3, 2, crowd=1), seg(2, 2)]], [pred], [[seg(5, 2)]])
    # The prediction's pixels on crowd do not count: |p| = 2 = |g| = TPA -> AQ 1; the crowd is still class 2.
    assert r["AQ"] == 1.0 and r["SQ"] == 1.0
    # Without the crowd flag, 3 is a second track that the prediction covers with |p| = 4.
    r2 = stq([gt], [[seg(3, 2), seg(2, 2)]], [pred], [[seg(5, 2)]])
    assert r2["AQ"] == pytest.approx((2 * 2 / 4 / 2 + 2 * 2 / 4 / 2) / 2)


def test_ignore_and_predicted_void_follow_deeplab2():
    # GT void (id 0) and unlisted GT ids are ignored: not counted anywhere.
    r = stq([np.array([[0, 9, 1, 1]])], [[seg(1, 0)]], [np.array([[7, 7, 7, 7]])], [[seg(7, 0)]])
    assert r["SQ"] == 1.0
    # Predicted void on labelled GT: the ignore column enters the mean with IoU 0, as in deeplab2.
    r = stq([np.array([[1, 1, 1, 1]])], [[seg(1, 0)]], [np.array([[7, 7, 0, 0]])], [[seg(7, 0)]])
    assert r["SQ"] == pytest.approx((0.5 + 0.0) / 2)
    assert r["AQ"] == 0.0 and r["STQ"] == 0.0  # no GT track: AQ 0 (deeplab2 divides by max(0, eps))
    assert np.isnan(r["IoU_per_class"][1]) and r["IoU_per_class"][0] == 0.5


def test_empty_counts_are_zero_not_nan():
    r = summarize_stq(STQCounts.zeros(3))
    assert r["STQ"] == 0.0 and r["SQ"] == 0.0 and r["AQ"] == 0.0


def test_perfect_prediction_is_one():
    video = perfect_prediction(random_video(np.random.default_rng(3), "v", num_frames=4))
    r = summarize_stq(video_stq(video.gt_ids, video.gt_segments, video.pred_ids, video.pred_segments,
                                CITYSCAPES_CATEGORIES))
    assert r["STQ"] == 1.0 and r["AQ"] == 1.0 and r["SQ"] == 1.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_metric_merge_equals_one_metric_over_all_videos():
    rng = np.random.default_rng(5)
    videos = [random_video(rng, f"v{i}", num_frames=4) for i in range(4)]
    whole = SegmentationTrackingQuality(CITYSCAPES_CATEGORIES)
    parts = [SegmentationTrackingQuality(CITYSCAPES_CATEGORIES) for _ in range(2)]
    for i, v in enumerate(videos):
        args = ([torch.from_numpy(x) for x in v.gt_ids], v.gt_segments, v.pred_ids, v.pred_segments)
        whole.update(*args)
        parts[i % 2].update(*args)
    merged = SegmentationTrackingQuality(CITYSCAPES_CATEGORIES)
    for name in ("confusion", "aq_sum", "num_tracks", "num_sequences"):
        setattr(merged, name, getattr(parts[0], name) + getattr(parts[1], name))  # dist_reduce_fx="sum"
    assert whole.confusion.dtype == torch.int64 and whole.aq_sum.dtype == torch.float64
    assert int(whole.num_sequences) == 4
    a, b = whole.compute(), merged.compute()
    assert a.keys() == {"stq", "aq", "sq"}
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-12)
    assert 0 < a["stq"] < 1
    # The same as summing per-video counts directly.
    total = STQCounts.zeros(len(CITYSCAPES_CATEGORIES))
    for v in videos:
        total = total + video_stq(v.gt_ids, v.gt_segments, v.pred_ids, v.pred_segments, CITYSCAPES_CATEGORIES)
    assert summarize_stq(total)["STQ"] == pytest.approx(a["stq"], abs=1e-12)

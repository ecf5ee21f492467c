"""Every scoring threshold tested AT its boundary, with hand-computed numbers.

Each rule here is a strict or non-strict comparison in the official code; a test on both sides only would
not notice ``>`` becoming ``>=``. Every case below sits exactly on the threshold and one step either side:
- VIPER's small-object rule (official ``tools/dataset/viper.py``: a GT tube is ignored when its pixel area in
  the window is ``< 32**2``): areas 1023, 1024, 1025, also summed over a 5-frame window;
- tube IoU > 0.5 (exactly 0.5 is no match), with the void pixels taken out of the union;
- an unmatched prediction is no FP only when (void + same-class crowd) / area > 0.5 (exactly 0.5 is an FP);
- J/F Recall = mean(values > 0.5) (DAVIS toolkit ``db_statistics``), Decay bins;
- YouTube-VOS own scoring: each object's first frame and the video's last frame are not scored; an object first
  given in one of the last two frames is listed, not scored;
- STQ with GT ids that the JSON does not list (ignored pixels).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vidseg.data.youtube_vos_layout import evaluate_video, scored_objects
from vidseg.metrics.j_and_f import db_statistics, decay_bins, evaluate_sequence
from vidseg.metrics.stq import summarize_stq, video_stq
from vidseg.metrics.vpq import VIPER_PROTOCOL, VPSProtocol, video_pq_counts

# Stuff classes 0, 1; thing classes 2, 3 (ids as in the GT JSON).
CATS = [{"id": 0, "isthing": 0}, {"id": 1, "isthing": 0}, {"id": 2, "isthing": 1}, {"id": 3, "isthing": 1}]
ONE_FRAME = VPSProtocol("one frame", ((0, 1),), "png")


def seg(i, c, crowd=0, area=0):
    return {"id": i, "category_id": c, "iscrowd": crowd, "area": area}


# --------------------------------------------------------------------------- VIPER: tube under 32x32 ignored
def _thing_of_area(area: int, shape=(40, 64)) -> np.ndarray:
    """GT ids: stuff 1 everywhere, thing 2 on the first ``area`` pixels in raster order."""
    gt = np.ones(shape, dtype=np.int64)
    gt.ravel()[:area] = 2
    return gt


@pytest.mark.parametrize(("area", "small"), [(1023, True), (1024, False), (1025, False)])
def test_viper_small_gt_rule_at_32x32(area, small):
    gt = _thing_of_area(area)
    gseg = [seg(1, 0, area=int((gt == 1).sum())), seg(2, 2, area=area)]
    # Missed: the thing is predicted as the stuff around it. Small -> ignored (no FN); else one FN.
    missed = video_pq_counts([gt], [gseg], [np.full_like(gt, 7)], [[seg(7, 0)]], CATS, VIPER_PROTOCOL)
    assert missed.fn[0, 2] == (0 if small else 1)
    # Perfect: a small GT is skipped before matching, so its perfect prediction is an FP (official quirk).
    perfect = np.where(gt == 2, 9, 7)
    hit = video_pq_counts([gt], [gseg], [perfect], [[seg(7, 0), seg(9, 2)]], CATS, VIPER_PROTOCOL)
    assert (hit.tp[0, 2], hit.fp[0, 2], hit.fn[0, 2]) == ((0, 1, 0) if small else (1, 0, 0))
    assert hit.iou[0, 2] == (0.0 if small else 1.0)


@pytest.mark.parametrize(("areas", "small"), [((205, 205, 205, 204, 204), True), ((205, 205, 205, 205, 204), False)])
def test_viper_small_rule_sums_the_window(areas, small):
    """Window of 5 frames: 1023 px in total is small, 1024 is not (each frame alone is small)."""
    gts = [_thing_of_area(a) for a in areas]
    gsegs = [[seg(1, 0, area=int((g == 1).sum())), seg(2, 2, area=a)] for g, a in zip(gts, areas, strict=True)]
    preds = [np.full_like(g, 7) for g in gts]
    c = video_pq_counts(gts, gsegs, preds, [[seg(7, 0)]] * 5, CATS, VIPER_PROTOCOL)
    assert c.fn[0, 2] == 0  # 1-frame windows: every frame is small
    assert c.fn[1, 2] == (0 if small else 1)  # the 5-frame window


def test_viper_small_rule_uses_pixels_not_the_json_area():
    gt = _thing_of_area(1023)
    gseg = [seg(1, 0, area=int((gt == 1).sum())), seg(2, 2, area=5000)]  # the JSON says large
    c = video_pq_counts([gt], [gseg], [np.full_like(gt, 7)], [[seg(7, 0)]], CATS, VIPER_PROTOCOL)
    assert c.fn[0, 2] == 0


def test_viper_listed_gt_without_pixels_is_not_small_but_a_false_negative():
    gt = np.ones((40, 64), dtype=np.int64)
    gseg = [seg(1, 0, area=gt.size), seg(2, 2, area=10)]  # 2 listed, no pixel: area 0 is not "small"
    c = video_pq_counts([gt], [gseg], [np.full_like(gt, 7)], [[seg(7, 0)]], CATS, VIPER_PROTOCOL)
    assert c.fn[0, 2] == 1


# ------------------------------------------------------------------------------------ tube IoU exactly 0.5
def test_tube_iou_must_exceed_one_half():
    # GT 2: 3 px. Pred 5: 2 px on GT 2, 1 on void, 1 on stuff 1 -> union = 4 + 3 - 2 - 1 = 4, IoU 2/4 = 0.5.
    gt = np.array([[2, 2, 2, 0, 1]])
    gseg = [seg(2, 2, area=3), seg(1, 0, area=1)]
    at_half = video_pq_counts([gt], [gseg], [np.array([[5, 5, 0, 5, 5]])], [[seg(5, 2)]], CATS, ONE_FRAME)
    assert (at_half.tp[0, 2], at_half.fn[0, 2], at_half.fp[0, 2]) == (0, 1, 1)
    # One stuff pixel fewer: union = 3 + 3 - 2 - 1 = 3, IoU 2/3 > 0.5 -> TP (without the void term it would be
    # 2/4, no match: this also pins "- |pred & void|" in the union).
    above = video_pq_counts([gt], [gseg], [np.array([[5, 5, 0, 5, 0]])], [[seg(5, 2)]], CATS, ONE_FRAME)
    assert (above.tp[0, 2], above.fn[0, 2], above.fp[0, 2]) == (1, 0, 0)
    assert above.iou[0, 2] == pytest.approx(2 / 3, abs=1e-15)


def test_tube_iou_exactly_half_over_a_window():
    # 2 frames: GT tube 4 px, the prediction covers it in frame 0 only (2 px): 2 / 4 = 0.5 -> no match.
    gts = [np.array([[2, 2, 1, 1]])] * 2
    gsegs = [[seg(2, 2, area=2), seg(1, 0, area=2)]] * 2
    preds = [np.array([[5, 5, 7, 7]]), np.array([[0, 0, 7, 7]])]
    psegs = [[seg(5, 2), seg(7, 0)], [seg(7, 0)]]
    two = VPSProtocol("two", ((5, 2),), "png")
    c = video_pq_counts(gts, gsegs, preds, psegs, CATS, two)
    assert (c.tp[0, 2], c.fn[0, 2], c.fp[0, 2]) == (0, 1, 1)
    # Frame 1 predicts one of the two pixels: 3 / 4 -> TP with IoU 0.75.
    preds[1] = np.array([[5, 0, 7, 7]])
    psegs[1] = [seg(5, 2), seg(7, 0)]
    c = video_pq_counts(gts, gsegs, preds, psegs, CATS, two)
    assert (c.tp[0, 2], c.fn[0, 2], c.fp[0, 2]) == (1, 0, 0) and c.iou[0, 2] == 0.75


# --------------------------------------------------------------------- void + crowd FP rule at exactly 0.5
@pytest.mark.parametrize(("pred_row", "fp"), [
    ([5, 5, 5, 5, 0, 0], 1),  # 4 px: 1 on void + 1 on the crowd = 2/4, not more than half -> FP
    ([5, 5, 5, 0, 0, 0], 0),  # 3 px: 1 on void + 1 on the crowd = 2/3 > 0.5 -> ignored
])
def test_void_plus_crowd_must_exceed_one_half(pred_row, fp):
    # GT: void, crowd 4 (cat 2), stuff 1 x2, thing 3 (cat 3) x2; pred 5 is cat 2 (never matched: no cat-2 GT).
    gt = np.array([[0, 4, 1, 1, 3, 3]])
    gseg = [seg(4, 2, crowd=1, area=1), seg(1, 0, area=2), seg(3, 3, area=2)]
    c = video_pq_counts([gt], [gseg], [np.array([pred_row])], [[seg(5, 2)]], CATS, ONE_FRAME)
    assert c.fp[0, 2] == fp


def test_crowd_of_another_class_does_not_excuse_a_prediction():
    # Pred 5 (cat 3): 1 void + 1 px on a crowd of cat 2 over 3 px. Only void counts: 1/3 -> FP.
    gt = np.array([[0, 4, 1]])
    gseg = [seg(4, 2, crowd=1, area=1), seg(1, 0, area=1)]
    c = video_pq_counts([gt], [gseg], [np.array([[5, 5, 5]])], [[seg(5, 3)]], CATS, ONE_FRAME)
    assert c.fp[0, 3] == 1
    # The same prediction as cat 2: (1 + 1) / 3 > 0.5 -> not an FP.
    c = video_pq_counts([gt], [gseg], [np.array([[5, 5, 5]])], [[seg(5, 2)]], CATS, ONE_FRAME)
    assert c.fp[0, 2] == 0


# ------------------------------------------------------------------------------------- J&F Recall, Decay
def test_recall_counts_values_strictly_above_one_half():
    _, recall, _ = db_statistics(np.array([0.5, 0.5, 0.5000001, 0.4999999]))
    assert recall == 0.25  # only 0.5000001 > 0.5


def test_recall_of_a_frame_with_j_exactly_one_half():
    # Object 1: GT 2 px, prediction 1 of them -> J = 1/2 in the scored frames 1..3.
    gt = np.zeros((5, 4, 4), np.uint8)
    gt[:, 0, 0:2] = 1
    pred = gt.copy()
    pred[1:4, 0, 1] = 0
    res = evaluate_sequence(gt, pred, sequence="s")
    assert res["J"][0].tolist() == [0.5, 0.5, 0.5]
    assert res["stats"][0][1] == 0.0  # J-Recall: no frame above 0.5
    pred[2, 0, 1] = 1  # one frame perfect: Recall 1/3
    assert evaluate_sequence(gt, pred, sequence="s")["stats"][0][1] == pytest.approx(1 / 3, abs=1e-15)


@pytest.mark.parametrize(("n", "bins"), [
    (3, [0, 1, 1, 2, 2]),   # linspace 1, 1.5, 2, 2.5, 3: the 1e-10 rounds 1.5 and 2.5 up (numpy rounds 2.5 to 2)
    (4, [0, 1, 2, 2, 3]),   # 1, 1.75, 2.5, 3.25, 4
    (5, [0, 1, 2, 3, 4]),
    (6, [0, 1, 3, 4, 5]),   # 1, 2.25, 3.5, 4.75, 6
    (7, [0, 2, 3, 5, 6]),   # 1, 2.5, 4, 5.5, 7
])
def test_decay_bins_by_hand(n, bins):
    assert decay_bins(n).tolist() == bins


def test_decay_by_hand():
    # 3 frames: first bin [0, 1], last bin [2, 2] (inclusive ends): mean(1.0, 0.8) - 0.2 = 0.7.
    assert db_statistics(np.array([1.0, 0.8, 0.2]))[2] == pytest.approx(0.7, abs=1e-15)
    # 6 frames: first bin [0, 1], last [4, 5]: mean(1, 0.9) - mean(0.3, 0.1) = 0.75.
    assert db_statistics(np.array([1.0, 0.9, 0.6, 0.5, 0.3, 0.1]))[2] == pytest.approx(0.75, abs=1e-15)
    # NaN frames are left out of a bin's mean (nanmean), as in the toolkit.
    assert db_statistics(np.array([1.0, np.nan, 0.6, 0.5, 0.3, 0.1]))[2] == pytest.approx(0.8, abs=1e-15)


# ------------------------------------------------------------------- YouTube-VOS: objects that start later
def test_objects_first_given_in_the_last_two_frames_are_not_scored():
    # 6 frames: an object first given at frame 3 has frame 4 to score (frame 5 is the last); at 4 it has none.
    assert scored_objects({1: 0, 2: 3, 3: 4, 4: 5}, 6) == {1: 0, 2: 3}


def test_late_object_is_scored_after_its_first_frame_only():
    T, frames = 6, [f"{5 * t:05d}" for t in range(6)]
    gt = np.zeros((T, 2, 4), np.uint8)
    gt[:, 0, 0:2] = 1      # object 1 from frame 0
    gt[2:, 1, 0:2] = 2     # object 2 from frame 2
    gt[4:, 1, 2:4] = 3     # object 3 from frame 4 = T - 2: no frame left to score
    pred = gt.copy()
    pred[0] = pred[T - 1] = 0                 # object 1 missed at its first and at the last frame: not scored
    pred[1, 1, 0:2] = 2                       # object 2 predicted before its first frame: not scored
    pred[2, 1, 0:2] = 0                       # and missed at its first frame: not scored
    pred[3, 1, 1] = 0                         # frame 3: J(2) = 1/2
    rows = evaluate_video(gt, pred, {1: 0, 2: 2, 3: 4}, video="v", frame_ids=frames)
    assert [r["name"] for r in rows] == ["v_1", "v_2"]
    assert rows[0]["frames"] == frames[1:5] and rows[0]["J"] == [1.0, 1.0, 1.0, 1.0]
    assert rows[1]["first_frame"] == "00010" and rows[1]["frames"] == frames[3:5]
    assert rows[1]["J"] == [0.5, 1.0]
    assert rows[1]["stats"][0] == 0.75 and rows[1]["stats"][1] == 0.5  # J-Mean, J-Recall (0.5 is not > 0.5)


# ----------------------------------------------------------------------------- STQ: GT ids not in the JSON
def test_stq_ignores_gt_pixels_whose_id_the_json_does_not_list():
    # GT: thing 2 (cat 2) on 2 px, id 8 on 2 px is not listed (ignore). Pred 5 (cat 2) covers all 4 px.
    gt = np.array([[2, 2, 8, 8]])
    pred = np.array([[5, 5, 5, 5]])
    r = summarize_stq(video_stq([gt], [[seg(2, 2, area=2)]], [pred], [[seg(5, 2)]], CATS))
    # SQ: GT-ignore pixels are dropped from the confusion: class 2 IoU = 2 / 2 = 1.
    # AQ: |g| = 2, |p| = 4 (predicted thing pixels on GT ignore still count), TPA = 2:
    #     1/2 * 2 * 2 / (4 + 2 - 2) = 0.5.
    assert r["SQ"] == 1.0 and r["AQ"] == 0.5 and r["STQ"] == pytest.approx(math.sqrt(0.5), abs=1e-15)
    # Listed as a cat-3 thing, the same pixels become a GT track and a class: SQ = (2/4 + 0/2) / 2 = 0.25;
    # AQ: both GT tracks overlap pred 5 on 2 px: (1/2 * 4/4 + 1/2 * 4/4) / 2 tracks = 0.5.
    listed = summarize_stq(video_stq([gt], [[seg(2, 2, area=2), seg(8, 3, area=2)]], [pred], [[seg(5, 2)]], CATS))
    assert listed["SQ"] == 0.25 and listed["AQ"] == 0.5

"""VPQ (vidseg.metrics.vpq): hand-computed cases, the official rules' corner cases, torchmetrics, merging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.vps_submission import CITYSCAPES_CATEGORIES, VIPER_CATEGORIES, perfect_prediction, random_video
from vidseg.errors import DataError, SubmissionError
from vidseg.metrics.vpq import (
    CITYSCAPES_VPS_PROTOCOL,
    PROTOCOLS,
    VIPER_PROTOCOL,
    CategoryTable,
    VPSProtocol,
    pair_table,
    pq_average,
    summarize_vpq,
    video_pq_counts,
)
from vidseg.metrics.vps_metrics import VideoPanopticQuality

# Two stuff classes (0, 1) and two thing classes (2, 3).
CATS = [{"id": 0, "isthing": 0}, {"id": 1, "isthing": 0}, {"id": 2, "isthing": 1}, {"id": 3, "isthing": 1}]
ONE_WINDOW = VPSProtocol("test1", ((0, 1),), "png")


def seg(i, c, crowd=0, area=0):
    return {"id": i, "category_id": c, "iscrowd": crowd, "area": area}


def segs_of(ids, cats, crowd=()):
    u, n = np.unique(ids, return_counts=True)
    return [seg(int(i), cats[int(i)], int(int(i) in crowd), int(k)) for i, k in zip(u, n, strict=True) if i]


def counts(gt, gseg, pred, pseg, protocol=ONE_WINDOW, cats=CATS):
    return video_pq_counts(gt, gseg, pred, pseg, cats, protocol)


def test_pair_table_counts_every_pair():
    gt = np.array([[1, 1, 2], [0, 2, 2]])
    pred = np.array([[5, 6, 6], [5, 6, 6]])
    t = pair_table(gt, pred)
    assert list(zip(t.gt.tolist(), t.pred.tolist(), t.count.tolist(), strict=True)) == [
        (0, 5, 1), (1, 5, 1), (1, 6, 1), (2, 6, 3)]
    tt = pair_table(torch.from_numpy(gt), torch.from_numpy(pred))  # torch input
    assert tt.count.tolist() == t.count.tolist()
    with pytest.raises(ValueError, match="same shape"):
        pair_table(gt, pred[:, :2])


def test_perfect_prediction_is_100_for_every_window():
    video = perfect_prediction(random_video(np.random.default_rng(0), "v", num_frames=6))
    c = video_pq_counts(video.gt_ids, video.gt_segments, video.pred_ids, video.pred_segments,
                        CITYSCAPES_CATEGORIES, CITYSCAPES_VPS_PROTOCOL)
    s = summarize_vpq(c, CITYSCAPES_CATEGORIES, "cityscapes_vps")
    assert s["vpq"] == {"all": 1.0, "thing": 1.0, "stuff": 1.0}
    assert c.fp.sum() == 0 and c.fn.sum() == 0
    assert c.tp[0].sum() > 0 and c.tp[3].sum() > 0  # 6 windows of 1, 3 windows of 4 frames


def test_hand_computed_single_frame():
    # 4x4 frame: stuff 1 (cat 0) top half, thing 2 (cat 2) bottom-left, thing 3 (cat 2) bottom-right 2x2.
    gt = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    pred = np.array([[7, 7, 7, 7], [7, 7, 7, 8], [8, 8, 9, 9], [8, 8, 9, 0]])
    gseg = segs_of(gt, {1: 0, 2: 2, 3: 2})
    pseg = [seg(7, 0), seg(8, 2), seg(9, 3)]  # 9 has the wrong class
    c = counts([gt], [gseg], [pred], [pseg])
    # stuff: IoU(7, 1) = 7 / 8 -> TP. thing 2 vs 8: inter 4, union 5 + 4 - 4 = 5 -> 0.8 TP.
    # GT 3 (cat 2) vs 9 (cat 3): class differs -> GT 3 FN, 9 FP (cat 3); 9's void pixel is 1/3 < 0.5.
    assert c.tp[0].tolist() == [1, 0, 1, 0]
    assert c.fn[0].tolist() == [0, 0, 1, 0]
    assert c.fp[0].tolist() == [0, 0, 0, 1]
    np.testing.assert_allclose(c.iou[0], [7 / 8, 0, 0.8, 0])
    s = summarize_vpq(c, CATS, ONE_WINDOW)["windows"][0]
    # PQ: cat0 = 7/8, cat2 = 0.8 / (1 + 0.5) , cat3 = 0; cat1 never appears -> not counted.
    assert s["all"]["n"] == 3
    assert s["all"]["pq"] == pytest.approx((7 / 8 + 0.8 / 1.5 + 0) / 3, abs=1e-15)
    assert s["stuff"]["pq"] == pytest.approx(7 / 8)
    assert s["thing"]["n"] == 2
    assert s["per_class"][2] == {"pq": 0.8 / 1.5, "sq": 0.8, "rq": 1 / 1.5, "iou": 0.8, "tp": 1, "fp": 0,
                                 "fn": 1}


def test_void_is_removed_from_the_union_and_mostly_void_predictions_are_not_fp():
    gt = np.array([[2, 2, 0, 0], [2, 2, 0, 0]])
    pred = np.array([[5, 5, 5, 6], [5, 5, 6, 6]])
    gseg = [seg(2, 2, area=4)]
    c = counts([gt], [gseg], [pred], [[seg(5, 2), seg(6, 2)]])
    # 5: inter 4, union 5 + 4 - 4 - 1 (void) = 4 -> IoU 1.0. 6 lies entirely on void -> ignored, no FP.
    assert c.tp[0, 2] == 1 and c.iou[0, 2] == 1.0 and c.fp.sum() == 0 and c.fn.sum() == 0
    # Exactly half on void is still an FP (the rule is "> 0.5").
    gt2 = np.array([[2, 2, 3, 0]])
    pred2 = np.array([[5, 5, 6, 6]])
    c2 = counts([gt2], [[seg(2, 2, area=2), seg(3, 0, area=1)]], [pred2], [[seg(5, 2), seg(6, 1)]])
    assert c2.fp[0, 1] == 1 and c2.fn[0, 0] == 1


def test_crowd_is_not_matched_and_absorbs_same_class_predictions():
    # GT: crowd 4 (cat 2) on the left, void on the right. Pred 5 (cat 2) covers the crowd, pred 6 (cat 3)
    # covers the crowd too but with another class -> FP.
    gt = np.array([[4, 4, 4, 4], [4, 4, 4, 4]])
    pred = np.array([[5, 5, 5, 5], [6, 6, 6, 6]])
    gseg = [seg(4, 2, crowd=1, area=8)]
    c = counts([gt], [gseg], [pred], [[seg(5, 2), seg(6, 3)]])
    assert c.tp.sum() == 0 and c.fn.sum() == 0  # crowd is never an FN
    assert c.fp[0].tolist() == [0, 0, 0, 1]


def test_last_crowd_of_a_category_in_insertion_order_is_the_crowd_region():
    # Two crowd regions of cat 2 listed [7, 4]: the official dict keeps the last one (4).
    gt = np.array([[7, 7, 4, 4]])
    pred = np.array([[5, 5, 6, 6]])
    gseg = [seg(7, 2, crowd=1, area=2), seg(4, 2, crowd=1, area=2)]
    c = counts([gt], [gseg], [pred], [[seg(5, 2), seg(6, 2)]])
    assert c.fp[0, 2] == 1  # 5 lies on crowd 7, which is not "the" crowd region -> FP; 6 on crowd 4 -> ignored
    gseg_rev = [seg(4, 2, crowd=1, area=2), seg(7, 2, crowd=1, area=2)]
    pred_b = np.array([[5, 5, 6, 6]])
    c2 = counts([gt], [gseg_rev], [pred_b], [[seg(5, 2), seg(6, 2)]])
    assert c2.fp[0, 2] == 1  # now 7 is the crowd region: 5 ignored, 6 FP
    # With two frames, insertion order is frame order first: crowd 9 first listed in frame 2 comes last.
    gt_f1, gt_f2 = np.array([[7, 7, 0, 0]]), np.array([[7, 7, 9, 9]])
    pr_f1, pr_f2 = np.array([[5, 5, 0, 0]]), np.array([[5, 5, 0, 0]])
    two = VPSProtocol("two", ((5, 2),), "png")
    c3 = counts([gt_f1, gt_f2], [[seg(7, 2, 1, 2)], [seg(9, 2, 1, 2), seg(7, 2, 1, 2)]],
                [pr_f1, pr_f2], [[seg(5, 2)], [seg(5, 2)]], protocol=two)
    assert c3.fp[0, 2] == 1  # crowd of cat 2 = 9 (inserted in frame 2), 5 (all on 7) is an FP


def test_gt_ids_missing_from_json_are_skipped_and_never_fn():
    gt = np.array([[2, 2, 8, 8]])  # 8 is in the PNG but not in the JSON
    pred = np.array([[5, 5, 6, 6]])
    c = counts([gt], [[seg(2, 2, area=2)]], [pred], [[seg(5, 2), seg(6, 2)]])
    assert c.tp[0, 2] == 1 and c.fn.sum() == 0
    assert c.fp[0, 2] == 1  # 8 is not void: a prediction on it is an FP


def test_id_switch_breaks_tubes_for_k_above_0_only():
    gt = [np.array([[2, 2, 1, 1]])] * 2
    gseg = [[seg(1, 0, area=2), seg(2, 2, area=2)]] * 2
    pred = [np.array([[5, 5, 7, 7]]), np.array([[6, 6, 7, 7]])]  # the car is 5, then 6
    pseg = [[seg(5, 2), seg(7, 0)], [seg(6, 2), seg(7, 0)]]
    c = video_pq_counts(gt, gseg, pred, pseg, CATS, CITYSCAPES_VPS_PROTOCOL)
    assert c.tp[0, 2] == 2 and c.fp[0, 2] == 0  # k = 0: two perfect frames
    # k = 5: the GT tube (4 px) vs pred 5 (2 px): IoU 0.5, not > 0.5 -> FN and 2 FP.
    assert c.tp[1, 2] == 0 and c.fn[1, 2] == 1 and c.fp[1, 2] == 2
    assert c.tp[1, 0] == 1  # stuff tube intact
    s = summarize_vpq(c, CATS, CITYSCAPES_VPS_PROTOCOL)
    assert s["windows"][0]["all"]["pq"] == 1.0 and s["windows"][5]["thing"]["pq"] == 0.0
    assert s["windows"][10]["all"]["n"] == 0  # 2 frames: no window of 3 -> 0.0 with n = 0
    assert s["vpq"]["all"] == pytest.approx((1.0 + 0.5 + 0 + 0) / 4)


def test_tube_category_comes_from_the_first_listed_frame():
    gt = [np.array([[2, 2]]), np.array([[2, 2]])]
    pred = [np.array([[5, 5]]), np.array([[5, 5]])]
    gseg = [[seg(2, 2, area=2)], [seg(2, 3, area=2)]]  # GT 2 is cat 2, then cat 3
    pseg = [[seg(5, 2)], [seg(5, 3)]]
    two = VPSProtocol("two", ((0, 1), (5, 2)), "png")
    c = video_pq_counts(gt, gseg, pred, pseg, CATS, two)
    assert c.tp[0].tolist() == [0, 0, 1, 1]  # per frame each matches
    assert c.tp[1].tolist() == [0, 0, 1, 0]  # the tube is cat 2 (first frame), TP counted there
    # A GT listed only in the second frame takes that frame's category.
    gseg2 = [[], [seg(2, 3, area=2)]]
    c2 = video_pq_counts(gt, gseg2, pred, [[seg(5, 3)], [seg(5, 3)]], CATS, two)
    assert c2.tp[1].tolist() == [0, 0, 0, 1]


def test_cityscapes_gt_area_comes_from_the_json():
    gt = np.array([[2, 2, 2, 2]])
    pred = np.array([[5, 5, 5, 0]])
    # PNG area 4, JSON area 6 (official quirk: union = 3 + 6 - 3 = 6 -> IoU 0.5 -> no match).
    c_json = counts([gt], [[seg(2, 2, area=6)]], [pred], [[seg(5, 2)]], protocol=CITYSCAPES_VPS_PROTOCOL)
    assert c_json.tp[0, 2] == 0 and c_json.fn[0, 2] == 1
    c_png = counts([gt], [[seg(2, 2, area=6)]], [pred], [[seg(5, 2)]], protocol=VIPER_PROTOCOL)
    # VIPER: pixel area 4 (but 4 < 32*32: ignored). Use a protocol without the small rule:
    assert c_png.tp.sum() == 0 and c_png.fn.sum() == 0
    c_png = counts([gt], [[seg(2, 2, area=6)]], [pred], [[seg(5, 2)]])
    assert c_png.tp[0, 2] == 1 and c_png.iou[0, 2] == 0.75


def test_small_gt_ignored_only_under_viper_rules():
    H, W = 40, 64
    gt = np.ones((H, W), dtype=np.int64)  # stuff 1
    gt[5:25, 5:25] = 2  # 400 px thing < 32*32
    pred = np.full((H, W), 7, dtype=np.int64)
    pred[30:35, 40:50] = 9  # an FP thing on stuff
    gseg = segs_of(gt, {1: 0, 2: 2})
    pseg = [seg(7, 0), seg(9, 2)]
    city = counts([gt], [gseg], [pred], [pseg], protocol=CITYSCAPES_VPS_PROTOCOL)
    viper = counts([gt], [gseg], [pred], [pseg], protocol=VIPER_PROTOCOL)
    assert city.fn[0, 2] == 1 and viper.fn[0, 2] == 0  # the small GT is ignored under VIPER rules only
    assert viper.fp[0, 2] == 1  # predictions can still be FP
    # Over 5 frames the same object is 2000 px: no longer small.
    viper5 = video_pq_counts([gt] * 5, [gseg] * 5, [pred] * 5, [pseg] * 5, CATS, VIPER_PROTOCOL)
    assert viper5.fn[1, 2] == 1 and viper5.fn[0, 2] == 0


def test_viper_class_11_is_excluded_from_every_average():
    cats = CategoryTable.from_categories(VIPER_CATEGORIES)
    tp, fp, fn, iou = (np.zeros(len(cats), dtype=np.int64) for _ in range(4))
    iou = iou.astype(np.float64)
    tp[0], iou[0] = 1, 1.0  # class 0 perfect
    fp[11] = 3  # class 11 only false positives
    with_11, _ = pq_average(tp, fp, fn, iou, cats, None, ())
    without, per_class = pq_average(tp, fp, fn, iou, cats, None, VIPER_PROTOCOL.excluded_categories)
    assert with_11 == {"pq": 0.5, "sq": 0.5, "rq": 0.5, "n": 2}
    assert without == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert 11 not in per_class


def test_no_counted_class_gives_zero_with_n_zero():
    cats = CategoryTable.from_categories(CATS)
    z = np.zeros(4, dtype=np.int64)
    assert pq_average(z, z, z, z.astype(float), cats, True) == ({"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0},
                                                                 {c: {"pq": 0.0, "sq": 0.0, "rq": 0.0, "iou": 0.0,
                                                                      "tp": 0, "fp": 0, "fn": 0} for c in (2, 3)})


def test_protocols():
    assert PROTOCOLS["cityscapes_vps"].k_labels == (0, 5, 10, 15)
    assert [n for _, n in VIPER_PROTOCOL.windows] == [1, 5, 10, 15]
    assert VIPER_PROTOCOL.small_gt_threshold == 1024 and VIPER_PROTOCOL.excluded_categories == (11,)
    with pytest.raises(ValueError):
        VPSProtocol("bad", ((0, 1),), "pixels")


def test_bad_segment_lists_raise():
    gt = np.array([[2, 2]])
    pred = np.array([[5, 6]])
    with pytest.raises(SubmissionError, match=r"\[6\] are in the PNG but not"):
        counts([gt], [[seg(2, 2)]], [pred], [[seg(5, 2)]])
    with pytest.raises(SubmissionError, match=r"\[8\] that have no pixel"):
        counts([gt], [[seg(2, 2)]], [pred], [[seg(5, 2), seg(6, 2), seg(8, 2)]])
    with pytest.raises(SubmissionError, match="unknown category_id 42"):
        counts([gt], [[seg(2, 2)]], [pred], [[seg(5, 2), seg(6, 42)]])
    with pytest.raises(SubmissionError, match="more than once"):
        counts([gt], [[seg(2, 2)]], [pred], [[seg(5, 2), seg(6, 2), seg(6, 3)]])
    with pytest.raises(DataError, match="unknown category_id 9"):
        counts([gt], [[seg(2, 9)]], [pred], [[seg(5, 2), seg(6, 2)]])


# ---------------------------------------------------------------------------------- torchmetrics cross-check
def _torchmetrics_pq(video, cats):
    """torchmetrics PanopticQuality on (category, instance) pairs. Its conventions: pixels whose category
    is unknown are void; stuff instances are ignored (one segment per class). We map void/unlisted to an
    unknown category and give stuff instance 0, and use inputs without crowd regions."""
    from torchmetrics.detection import PanopticQuality

    things = {c["id"] for c in cats if c["isthing"]}
    stuffs = {c["id"] for c in cats if not c["isthing"]}
    metric = PanopticQuality(things=things, stuffs=stuffs, return_per_class=True, allow_unknown_preds_category=True)

    def encode(ids, segs):
        out = np.full(ids.shape + (2,), 255, dtype=np.int64)  # 255 = void (unknown category)
        out[..., 1] = 0
        for s in segs:
            m = ids == s["id"]
            out[m, 0] = s["category_id"]
            out[m, 1] = s["id"] if s["category_id"] in things else 0
        return torch.from_numpy(out)

    for g, gs, p, ps in zip(video.gt_ids, video.gt_segments, video.pred_ids, video.pred_segments, strict=True):
        metric.update(encode(p, ps)[None], encode(g, gs)[None])
    return metric


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vpq0_equals_torchmetrics_panoptic_quality(seed):
    rng = np.random.default_rng(seed)
    # torchmetrics merges the stuff segments of one class in a frame (keep one per class: no stuff errors)
    # and also removes predicted-void pixels from the GT area (the official code does not: no pred void).
    video = random_video(rng, "v", num_frames=3, crowd=False, class_error=0.3, false_positives=3,
                         stuff_class_error=0.0, fp_stuff_fraction=0.0, pred_void=False)
    c = video_pq_counts(video.gt_ids, video.gt_segments, video.pred_ids, video.pred_segments,
                        CITYSCAPES_CATEGORIES, CITYSCAPES_VPS_PROTOCOL)
    metric = _torchmetrics_pq(video, CITYSCAPES_CATEGORIES)
    tm_iou, tm_tp, tm_fp, tm_fn = (getattr(metric, n).numpy() for n in ("iou_sum", "true_positives",
                                                                         "false_positives", "false_negatives"))
    # torchmetrics orders classes things first, then stuff, each sorted.
    order = sorted(c_["id"] for c_ in CITYSCAPES_CATEGORIES if c_["isthing"]) + \
        sorted(c_["id"] for c_ in CITYSCAPES_CATEGORIES if not c_["isthing"])
    np.testing.assert_array_equal(c.tp[0][order], tm_tp)
    np.testing.assert_array_equal(c.fp[0][order], tm_fp)
    np.testing.assert_array_equal(c.fn[0][order], tm_fn)
    np.testing.assert_allclose(c.iou[0][order], tm_iou, rtol=1e-6)


# -------------------------------------------------------------------------------------------- the Metric
def _videos(n, seed=0):
    rng = np.random.default_rng(seed)
    return [random_video(rng, f"v{i}", num_frames=5) for i in range(n)]


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_metric_merge_equals_one_metric_over_all_videos():
    videos = _videos(4)
    whole = VideoPanopticQuality(CITYSCAPES_CATEGORIES)
    a, b = VideoPanopticQuality(CITYSCAPES_CATEGORIES), VideoPanopticQuality(CITYSCAPES_CATEGORIES)
    for i, v in enumerate(videos):
        args = ([torch.from_numpy(x) for x in v.gt_ids], v.gt_segments, v.pred_ids, v.pred_segments)
        whole.update(*args)
        (a if i % 2 else b).update(*args)
    # What DDP does with dist_reduce_fx="sum": add the states.
    merged = VideoPanopticQuality(CITYSCAPES_CATEGORIES)
    for name in ("tp", "fp", "fn", "iou"):
        setattr(merged, name, getattr(a, name) + getattr(b, name))
        assert merged._reductions[name] is not None
    assert whole.tp.dtype == torch.int64 and whole.iou.dtype == torch.float64
    out_whole, out_merged = whole.compute(), merged.compute()
    assert out_whole.keys() == out_merged.keys()
    for key in out_whole:
        assert out_merged[key] == pytest.approx(out_whole[key], abs=1e-12)
    assert 0 < out_whole["vpq"] < 1
    expected = summarize_vpq(sum((video_pq_counts(v.gt_ids, v.gt_segments, v.pred_ids, v.pred_segments,
                                                  CITYSCAPES_CATEGORIES) for v in videos[1:]),
                                 video_pq_counts(videos[0].gt_ids, videos[0].gt_segments, videos[0].pred_ids,
                                                 videos[0].pred_segments, CITYSCAPES_CATEGORIES)),
                             CITYSCAPES_CATEGORIES, "cityscapes_vps")
    assert out_whole["vpq"] == pytest.approx(expected["vpq"]["all"], abs=1e-12)
    assert out_whole["vpq_10_thing"] == pytest.approx(expected["windows"][10]["thing"]["pq"], abs=1e-12)
    whole.reset()
    assert whole.compute()["vpq"] == 0.0  # nothing counted: 0.0, not a division by zero

"""The detector's selection rules at their exact boundaries, with scripted class scores: score > 0.6 (not >=),
one class-agnostic NMS at IoU 0.5 (a box at IoU exactly 0.5 stays), at most ``detections_per_img``, detector
labels 1..num_things and each detection's own-class mask channel."""

from __future__ import annotations

import math

import torch
from torch import nn

from vidseg.models.vpsnet import build_detector

C = 8
SIZE = (64, 64)
NEG = -30.0
# proposal boxes (xyxy) and class logits [background, thing 1, thing 2]
P_AT_THRESHOLD = ([0.0, 40.0, 20.0, 60.0], [math.log(2.0), math.log(3.0), NEG])  # thing 1 at exactly 0.6
P_BEST = ([30.0, 0.0, 50.0, 20.0], [0.0, 5.0, NEG])        # thing 1, 0.993
P_NMS_054 = ([36.0, 0.0, 56.0, 20.0], [0.0, NEG, 4.0])     # thing 2, 0.982, IoU 14/26 = 0.54 with P_BEST
P_IOU_HALF = ([30.0, 0.0, 50.0, 10.0], [0.0, NEG, 3.0])    # thing 2, 0.953, IoU 200/400 = 0.5 with P_BEST
P_ABOVE = ([0.0, 0.0, 16.0, 16.0], [math.log(2.0), NEG, math.log(3.0) + 1e-3])  # thing 2, just above 0.6


class ScriptedPredictor(nn.Module):
    """Box predictor stand-in: fixed class logits per proposal, zero box regression (boxes = proposals)."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x):
        return self.logits.clone(), torch.zeros(len(self.logits), 3 * 4)


def detect(proposals, **kwargs):
    torch.manual_seed(0)
    det = build_detector(num_things=2, in_channels=C, box_fc_channels=16, mask_channels=8, **kwargs).eval()
    det.roi_heads.box_predictor = ScriptedPredictor([p[1] for p in proposals])
    g = torch.Generator().manual_seed(0)
    features = {f"p{k}": torch.randn(1, C, SIZE[0] // 2**k, SIZE[1] // 2**k, generator=g) for k in range(2, 7)}
    with torch.no_grad():
        own = det.roi_heads.mask_logits(features, [torch.tensor([p[0] for p in proposals])], [SIZE])
        out = det.roi_heads.detect(features, [torch.tensor([p[0] for p in proposals])], [SIZE])[0]
    return out, own


def test_scripted_scores_are_exact():
    probs = torch.softmax(torch.tensor([P_AT_THRESHOLD[1]]), -1)[0]
    assert probs[1] == torch.tensor(0.6)  # float32(0.6): the boundary itself


def test_defaults_are_the_official_thresholds():
    det = build_detector(num_things=2, in_channels=C, box_fc_channels=16, mask_channels=8)
    assert (det.roi_heads.score_thresh, det.roi_heads.nms_thresh, det.roi_heads.detections_per_img) == (0.6, 0.5, 100)


def test_score_exactly_at_the_threshold_is_dropped():
    out, _ = detect([P_AT_THRESHOLD, P_ABOVE])
    assert out["boxes"].tolist() == [P_ABOVE[0]] and out["labels"].tolist() == [2]
    # the threshold is the detector's option
    out, _ = detect([P_AT_THRESHOLD, P_ABOVE], score_thresh=0.5)
    assert out["labels"].tolist() == [2, 1]  # sorted by score: 0.6002 then 0.6


def test_class_agnostic_nms_at_iou_half_and_the_cap():
    proposals = [P_NMS_054, P_IOU_HALF, P_BEST]
    out, own = detect(proposals)
    # P_NMS_054 (IoU 0.54 > 0.5 with the better P_BEST, another class) is suppressed: NMS is class-agnostic;
    # P_IOU_HALF (IoU exactly 0.5) is not
    assert out["boxes"].tolist() == [P_BEST[0], P_IOU_HALF[0]]
    assert out["labels"].tolist() == [1, 2]
    expected = torch.softmax(torch.tensor([P_BEST[1], P_IOU_HALF[1]]), -1)[[0, 1], [1, 2]]
    torch.testing.assert_close(out["scores"], expected)
    # each detection's mask logits are its own class's channel
    torch.testing.assert_close(out["mask_logits"], torch.stack([own[2, 1], own[1, 2]]))
    assert out["roi_features"].shape == (2, C, 7, 7)
    # the NMS IoU is the detector's option; at 0.6 the 0.54 box stays
    out, _ = detect(proposals, nms_thresh=0.6)
    assert out["boxes"].tolist() == [P_BEST[0], P_NMS_054[0], P_IOU_HALF[0]]
    out, _ = detect(proposals, detections_per_img=1)
    assert out["boxes"].tolist() == [P_BEST[0]]


def test_nothing_above_the_threshold_gives_empty_detections():
    out, _ = detect([P_AT_THRESHOLD])
    assert len(out["boxes"]) == 0 and out["mask_logits"].shape == (0, 28, 28)

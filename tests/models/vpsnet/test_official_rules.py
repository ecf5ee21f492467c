"""VPSNet rules that follow the official code (mcahny/vps) by default, each with vidseg's former behaviour as an
option: ids without a track head, Fuse-module init, backbone norm_eval, RPN assignment and box-loss beta, the
track loss; and two official flaws vidseg does not have (ids shifted by an empty channel, ids wrapped at 255)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import FrozenBatchNorm2d

from vidseg.backbones.base import StatisticsFrozenBatchNorm2d, freeze_batch_norm_statistics
from vidseg.data.panoptic import id_to_rgb, rgb_to_id
from vidseg.models.vpsnet import TINY, FuseModule, TrackHead, assign_segment_ids, build_detector, build_vpsnet
from vidseg.models.vpsnet.detector import MaxIoUMatcher, fast_rcnn_loss
from vidseg.models.vpsnet.track_head import rank_track_ids

H, W = 64, 96
NUM_STUFF, NUM_THINGS = 3, 2  # classes 0..2 stuff, 3..4 things


# ------------------------------------------------------------------------------- ids without a track head


def _scripted_model(association: str | None = None):
    """A tiny image-variant model whose detector and semantic head are scripted: detections are given per
    call, the semantic head says "thing" everywhere (no instance becomes stuff), stuff areas are never voided."""
    kwargs = {} if association is None else {"associate_without_track_head": association}
    torch.manual_seed(0)
    model = build_vpsnet(variant="image", backbone={"name": "resnet18"}, num_stuff=NUM_STUFF, num_things=NUM_THINGS,
                         flow=None, stuff_area_limit=0, **TINY, **kwargs).eval()

    def semantic(features):
        b, _, h, w = features["p2"].shape
        logits = torch.zeros(b, NUM_STUFF + NUM_THINGS, h, w)
        logits[:, NUM_STUFF:] = 5.0
        return logits

    model.semantic_head.forward = semantic
    return model


def _detections(boxes, scores, labels):
    n = len(boxes)
    return [{"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
             "labels": torch.tensor(labels) - NUM_STUFF + 1, "mask_logits": torch.full((n, 28, 28), 10.0),
             "roi_features": torch.zeros(n, 32, 7, 7)}]


LEFT, RIGHT, MIDDLE = [4, 4, 30, 40], [60, 10, 90, 50], [34, 20, 56, 60]


def _run(model, frames):
    """frames: list of (boxes, scores, labels); returns per frame {box x1: segment id} of the things."""
    state, out = None, []
    image = torch.zeros(3, H, W, dtype=torch.uint8)
    for boxes, scores, labels in frames:
        detections = _detections(boxes, scores, labels)
        model.detector.detect = lambda *args, d=detections: d
        output, state = model.infer_frame(image, state)
        ids = {int(b[0]): s["id"] for b, s in zip(output.boxes, [s for s in output.segments_info if s["isthing"]],
                                                   strict=True)}
        assert len({s["id"] for s in output.segments_info}) == len(output.segments_info)  # unique in the frame
        out.append((output, ids))
    return state, out


def test_without_track_head_ids_follow_the_official_rank_by_default():
    """Official (tools/dataset/cityscapes_vps.py get_unified_pan_result without obj_ids): an instance's id is
    its panoptic channel (rank among the kept detections), one colour per (class, id): the k-th kept instance
    of a class continues the k-th of earlier frames, whatever its mask."""
    model = _scripted_model()
    assert model.associate_without_track_head == "rank"
    # frame 1: left (score .9, class 3), right (.8, class 3); frame 2: the same boxes, scores swapped
    state, out = _run(model, [([LEFT, RIGHT], [0.9, 0.8], [3, 3]), ([LEFT, RIGHT], [0.7, 0.95], [3, 3])])
    assert state.mask_tracks is None
    (first, ids1), (second, ids2) = out
    assert first.track_ids.tolist() == rank_track_ids(torch.tensor([3, 3]), num_stuff=NUM_STUFF,
                                                      num_things=NUM_THINGS).tolist() == [0, 2]
    assert ids2[RIGHT[0]] == ids1[LEFT[0]] and ids2[LEFT[0]] == ids1[RIGHT[0]]  # rank 0 keeps rank 0's id


def test_rank_ids_are_unique_per_class_and_rank():
    ids = rank_track_ids(torch.tensor([4, 3, 4, 3]), num_stuff=NUM_STUFF, num_things=NUM_THINGS)
    assert ids.tolist() == [1, 2, 5, 6]  # rank * 2 + (class - 3)


def test_mask_iou_association_is_an_option():
    model = _scripted_model("mask_iou")
    state, out = _run(model, [([LEFT, RIGHT], [0.9, 0.8], [3, 3]), ([LEFT, RIGHT], [0.7, 0.95], [3, 3])])
    assert state.mask_tracks is not None
    (_, ids1), (_, ids2) = out
    assert ids2 == ids1  # the masks did not move: each keeps its own id


def test_association_name_is_checked():
    with pytest.raises(ValueError, match="associate_without_track_head"):
        _scripted_model("iou")


# ------------------------------------------------------------------------------- official flaws vidseg avoids


def test_an_instance_channel_without_pixels_does_not_shift_later_ids():
    """Official get_unified_pan_result indexes obj_id by the position among the channels present in the
    argmax: once a channel has no pixel, every later instance takes its predecessor's track id."""
    category = torch.full((4, 6), 0)
    instance = torch.full((4, 6), -1)
    category[:, 3:], instance[:, 3:] = 3, 1  # channel 0 lost all its pixels, channel 1 holds the right half
    panoptic, segments = assign_segment_ids(category, instance, torch.tensor([5, 7]), torch.tensor([0.9, 0.8]),
                                            num_stuff=NUM_STUFF)
    thing = [s for s in segments if s["isthing"]]
    assert [s["track_id"] for s in thing] == [7]
    assert int(panoptic[0, 5]) == (7 + 1) * 1000 + 3


def test_track_ids_past_254_do_not_wrap():
    """Official pan_2ch is uint8: obj_id + 1 wraps at 256 (track 255 -> 0, read as stuff; 256 -> track 0)."""
    category = torch.full((2, 4), 3)
    instance = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])
    tracks = torch.tensor([0, 255, 256])
    panoptic, segments = assign_segment_ids(category, instance, tracks, torch.ones(3), num_stuff=NUM_STUFF)
    assert [s["track_id"] for s in segments] == [0, 255, 256]
    assert len({s["id"] for s in segments}) == 3
    ids = panoptic.numpy()
    np.testing.assert_array_equal(rgb_to_id(id_to_rgb(ids)), ids)  # the PNG keeps them apart too
    assert {int(i) // 1000 - 1 for i in np.unique(ids)} == {0, 255, 256}


# ------------------------------------------------------------------------------- Fuse-module init


def _xavier_bound(conv: nn.Conv2d) -> float:
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    return math.sqrt(6.0 / (fan_in + fan_out))


def test_fuse_module_convs_are_xavier_uniform_by_default():
    """Official BFPTcea.init_weights: xavier_init(distribution='uniform') on every Conv2d of the neck."""
    torch.manual_seed(0)
    convs = [m for m in FuseModule(16, flow_hidden=(8, 8, 4)).modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) > 10
    for conv in convs:
        assert float(conv.weight.detach().abs().max()) <= _xavier_bound(conv) + 1e-6
        assert not conv.bias.any()
    model = build_vpsnet(variant="fuse", backbone={"name": "resnet18"}, num_stuff=NUM_STUFF, num_things=NUM_THINGS,
                         flow=None, **TINY)
    embed = model.fuse.attention.embed_frames
    assert float(embed.weight.detach().abs().max()) <= _xavier_bound(embed) + 1e-6


def test_fuse_module_edvr_init_is_an_option():
    torch.manual_seed(0)
    embed = FuseModule(16, flow_hidden=(8, 8, 4), init="edvr").attention.embed_frames
    assert float(embed.weight.detach().abs().max()) > _xavier_bound(embed)  # Kaiming normal fan_out: wider
    with pytest.raises(ValueError, match="init"):
        FuseModule(16, init="kaiming")


# ------------------------------------------------------------------------------- backbone norm_eval


def test_statistics_frozen_batch_norm_trains_affine_only():
    """Official ResNet(norm_eval=True): BN layers stay in eval mode (statistics fixed), weights trained."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    reference = FrozenBatchNorm2d(4)
    reference.load_state_dict({k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"})
    wrapped = freeze_batch_norm_statistics(nn.Sequential(bn))
    layer = wrapped[0]
    assert isinstance(layer, StatisticsFrozenBatchNorm2d)
    layer.train()
    x = torch.randn(2, 4, 3, 3) * 3 + 1
    mean_before = layer.running_mean.clone()
    y = layer(x)
    torch.testing.assert_close(layer.running_mean, mean_before)
    torch.testing.assert_close(y, reference(x))
    y.sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None


def test_statistics_frozen_batch_norm_loads_former_states_and_stays_out_of_sync_batchnorm():
    # checkpoints of the former defaults (FrozenBatchNorm2d, or a trained BatchNorm2d) load strictly
    layer = freeze_batch_norm_statistics(nn.Sequential(nn.BatchNorm2d(4)))
    layer.load_state_dict(nn.Sequential(FrozenBatchNorm2d(4)).state_dict())
    layer.load_state_dict(nn.Sequential(nn.BatchNorm2d(4)).state_dict())
    # trainer=ddp converts every _BatchNorm to SyncBatchNorm, which would train the statistics again
    assert isinstance(nn.SyncBatchNorm.convert_sync_batchnorm(layer)[0], StatisticsFrozenBatchNorm2d)


# ------------------------------------------------------------------------------- detector assignment and loss


def test_rpn_uses_the_official_max_iou_assigner():
    """Official train_cfg.rpn.assigner: MaxIoUAssigner(pos 0.7, neg 0.3, min_pos_iou 0.3, gt_max_assign_all)."""
    iou = torch.tensor([[0.25, 0.10, 0.00],   # gt 0: best anchor 0 at 0.25 < 0.3
                        [0.00, 0.65, 0.00],   # gt 1: best anchor 1
                        [0.00, 0.50, 0.10]])  # gt 2: best anchor 1 too (the later gt takes it)
    assert MaxIoUMatcher(0.7, 0.3, 0.3)(iou.clone()).tolist() == [-1, 2, -1]
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou.clone()).tolist() == [0, 1, -1]  # torchvision
    at_boundary = torch.tensor([[0.30, 0.10], [0.0, 0.2999]])  # min_pos_iou is inclusive (mmdetection: >=)
    assert MaxIoUMatcher(0.7, 0.3, 0.3)(at_boundary).tolist() == [0, -1]
    matcher = build_detector(num_things=2).rpn.proposal_matcher
    assert isinstance(matcher, MaxIoUMatcher) and matcher.min_pos_iou == 0.3
    matcher = build_detector(num_things=2, rpn_min_pos_iou=None).rpn.proposal_matcher
    assert type(matcher) is Matcher and matcher.allow_low_quality_matches


def test_box_head_smooth_l1_beta_is_the_official_one():
    """Official bbox_head.loss_bbox: SmoothL1Loss(beta=1.0), averaged over all sampled RoIs; torchvision: 1/9."""
    logits = torch.zeros(4, 3)
    regression = torch.zeros(4, 12)
    labels = [torch.tensor([1, 2, 0, 0])]
    targets = [torch.full((4, 4), 0.5)]
    _, box_loss = fast_rcnn_loss(logits, regression, labels, targets)
    assert float(box_loss) == pytest.approx(2 * 4 * (0.5 * 0.5**2) / 4)  # 2 positives x 4 coords, / 4 RoIs
    _, ninth = fast_rcnn_loss(logits, regression, labels, targets, beta=1 / 9)
    torch.testing.assert_close(ninth, fastrcnn_loss(logits, regression, labels, targets)[1])
    assert build_detector(num_things=2).roi_heads.box_loss_beta == 1.0


# ------------------------------------------------------------------------------- track loss


def test_track_loss_is_the_official_one():
    """Official TrackHead.loss(reduce=True): per image, CE summed over the positive RoIs / their number; an
    image with exactly one positive RoI is skipped (torch.nonzero(...).squeeze() is 0-d); mean over images."""
    aff = torch.tensor([[0.0, 2.0], [1.0, 0.0], [5.0, -5.0], [3.0, 3.0]])
    two = torch.tensor([1, 0, -1, -1])
    one = torch.tensor([1, -1, -1, -1])
    summed = float(torch.nn.functional.cross_entropy(aff[:2], two[:2], reduction="sum"))
    head = TrackHead(4, roi_size=1, hidden=4)
    assert float(head.loss([aff, aff], [two, one])["loss_track"]) == pytest.approx(0.5 * (summed / 2 + 0) / 2)
    scored = TrackHead(4, roi_size=1, hidden=4, skip_single_positive=False)
    single = float(torch.nn.functional.cross_entropy(aff[:1], one[:1]))
    assert float(scored.loss([aff, aff], [two, one])["loss_track"]) == pytest.approx(
        0.5 * (summed / 2 + single) / 2)
    model = build_vpsnet(variant="track", backbone={"name": "resnet18"}, num_stuff=NUM_STUFF, num_things=NUM_THINGS,
                         flow=None, **TINY)
    assert model.track_head.loss_normalizer == "positives" and model.track_head.skip_single_positive

"""Association rules of VPSNet's tracking on hand-made affinities, boxes and masks."""

from __future__ import annotations

import math

import pytest
import torch

from vidseg.models.vpsnet import (
    MaskTrackMemory,
    TrackMemory,
    assign_tracks,
    associate_by_mask_iou,
    association_scores,
    match_targets,
    update_tracks,
)

BOX_A = [0.0, 0.0, 10.0, 10.0]
BOX_B = [20.0, 0.0, 30.0, 10.0]


def test_association_score_formula():
    affinity = torch.tensor([[0.0, 2.0, 1.0]])
    det_boxes = torch.tensor([BOX_A])
    track_boxes = torch.tensor([[0.0, 0.0, 10.0, 5.0], BOX_B])  # IoU 0.5 and 0
    scores = association_scores(affinity, torch.tensor([0.8]), det_boxes, torch.tensor([11]), track_boxes,
                                torch.tensor([11, 12]))
    logp = torch.log_softmax(affinity, dim=1)[0]
    expected = [logp[0] + math.log(0.8) + 0 + 10,  # "new": IoU 0, counts as same class (official dummies)
                logp[1] + math.log(0.8) + 2 * 0.5 + 10,
                logp[2] + math.log(0.8) + 0 + 0]
    torch.testing.assert_close(scores[0], torch.tensor(expected))


def test_same_class_bonus_decides():
    # the affinity prefers track 1 (other class), the class bonus sends the detection to track 0
    affinity = torch.tensor([[0.0, 1.0, 3.0]])
    boxes = torch.tensor([BOX_A])
    scores = association_scores(affinity, torch.tensor([0.9]), boxes, torch.tensor([13]),
                                torch.tensor([BOX_A, BOX_A]), torch.tensor([13, 14]))
    assert assign_tracks(scores).tolist() == [0]


def test_new_object_column_wins_without_match():
    affinity = torch.tensor([[0.0, -5.0]])
    scores = association_scores(affinity, torch.tensor([0.9]), torch.tensor([BOX_A]), torch.tensor([11]),
                                torch.tensor([BOX_B]), torch.tensor([11]))
    assert assign_tracks(scores).tolist() == [-1]


def test_conflict_goes_to_best_score_losers_open_new_tracks():
    # three detections all prefer track 1; detection 2 scores highest and keeps it
    scores = torch.tensor([[0.0, 5.0, 1.0],
                           [0.0, 4.0, 3.9],
                           [0.0, 6.0, 0.0]])
    assignment = assign_tracks(scores)
    assert assignment.tolist() == [-1, -1, 0]  # track index 0 = column 1; no fallback to second choices


def test_update_tracks_new_ids_and_feature_update():
    memory = TrackMemory.empty(2)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    boxes = torch.tensor([BOX_A, BOX_B])
    labels = torch.tensor([11, 12])
    memory, ids = update_tracks(memory, torch.tensor([-1, -1]), feats, boxes, labels)
    assert ids.tolist() == [0, 1] and memory.next_id == 2 and len(memory) == 2
    # frame 2: detection 0 continues track at index 1, detection 1 is new; labels of tracks stay
    new_feats = torch.tensor([[5.0, 5.0], [7.0, 7.0]])
    new_boxes = torch.tensor([[21.0, 0.0, 31.0, 10.0], BOX_A])
    updated, ids = update_tracks(memory, torch.tensor([1, -1]), new_feats, new_boxes, torch.tensor([13, 11]))
    assert ids.tolist() == [1, 2]
    torch.testing.assert_close(updated.features[1], new_feats[0])
    torch.testing.assert_close(updated.boxes[1], new_boxes[0])
    assert updated.labels.tolist() == [11, 12, 11]
    assert updated.last_seen.tolist() == [0, 1, 1]
    torch.testing.assert_close(memory.features[1], feats[1])  # the input memory is unchanged
    # max_tracks (an option) forgets the least recently seen
    capped, _ = update_tracks(memory, torch.tensor([1, -1]), new_feats, new_boxes, torch.tensor([13, 11]),
                              max_tracks=2)
    assert capped.ids.tolist() == [1, 2]


def test_match_targets():
    target_tracks = torch.tensor([13001, 11000, 12005, -1])
    reference_tracks = torch.tensor([11000, 13001])
    assert match_targets(target_tracks, reference_tracks).tolist() == [2, 1, 0, -1]
    assert match_targets(target_tracks, torch.zeros(0, dtype=torch.int64)).tolist() == [0, 0, 0, -1]


def test_mask_iou_association_greedy_same_class():
    size = (6, 8)
    first = torch.zeros(2, *size, dtype=torch.bool)
    first[0, :, :4] = True
    first[1, :, 4:] = True
    memory, ids = associate_by_mask_iou(first, torch.tensor([11, 11]), MaskTrackMemory.empty(size))
    assert ids.tolist() == [0, 1]
    # the two objects swap order and move a column; a third, of another class, overlaps object 0
    second = torch.zeros(3, *size, dtype=torch.bool)
    second[0, :, 5:] = True     # mostly the old object 1
    second[1, :, 1:4] = True    # mostly the old object 0
    second[2, :, 0:1] = True    # class 12 where object 0 was: never matched across classes
    memory2, ids2 = associate_by_mask_iou(second, torch.tensor([11, 11, 12]), memory)
    assert ids2.tolist() == [1, 0, 2] and memory2.next_id == 3
    assert memory2.track_map[0].tolist() == [2, 0, 0, 0, -1, 1, 1, 1]
    # below the IoU threshold: new track
    third = torch.zeros(1, *size, dtype=torch.bool)
    third[0, :2, 5:6] = True
    _, ids3 = associate_by_mask_iou(third, torch.tensor([11]), memory2)
    assert ids3.tolist() == [3]


def _rows(size, *row_spans):
    """(N, H, W) bool masks, mask k covering rows row_spans[k] = (first, last + 1) of every column 0."""
    masks = torch.zeros(len(row_spans), *size, dtype=torch.bool)
    for m, (r0, r1) in zip(masks, row_spans, strict=True):
        m[r0:r1, 0] = True
    return masks


def test_mask_iou_association_needs_more_than_the_threshold():
    # previous instance: rows 0..1 of column 0 (2 px); IoU 2/4 = 0.5 exactly is not enough (IoU > 0.5)
    size = (8, 2)
    memory, ids = associate_by_mask_iou(_rows(size, (0, 2)), torch.tensor([11]), MaskTrackMemory.empty(size))
    assert ids.tolist() == [0]
    _, at_half = associate_by_mask_iou(_rows(size, (0, 4)), torch.tensor([11]), memory)
    assert at_half.tolist() == [1]
    _, above = associate_by_mask_iou(_rows(size, (0, 3)), torch.tensor([11]), memory)  # IoU 2/3
    assert above.tolist() == [0]
    # the threshold is a parameter: at 0.7, IoU 2/3 starts a new track; at 0.4, IoU 0.5 continues
    _, strict = associate_by_mask_iou(_rows(size, (0, 3)), torch.tensor([11]), memory, iou_threshold=0.7)
    assert strict.tolist() == [1]
    _, loose = associate_by_mask_iou(_rows(size, (0, 4)), torch.tensor([11]), memory, iou_threshold=0.4)
    assert loose.tolist() == [0]


def test_mask_iou_new_ids_continue_from_next_id_not_from_the_track_count():
    # the image variant's memory holds only the previous frame: ids of tracks that left the frame are gone
    # from it but never handed out again
    size = (8, 2)
    memory = MaskTrackMemory.empty(size)
    memory, ids = associate_by_mask_iou(_rows(size, (0, 2), (4, 6)), torch.tensor([11, 12]), memory)
    assert ids.tolist() == [0, 1] and memory.next_id == 2 and memory.ids.tolist() == [0, 1]
    memory, ids = associate_by_mask_iou(_rows(size, (4, 6)), torch.tensor([12]), memory)  # track 0 leaves
    assert ids.tolist() == [1] and memory.next_id == 2 and memory.ids.tolist() == [1]
    memory, ids = associate_by_mask_iou(_rows(size, (0, 2), (4, 6)), torch.tensor([11, 12]), memory)
    assert ids.tolist() == [2, 1] and memory.next_id == 3  # the returning object is new: id 2, not 0 or 1
    assert memory.track_map[:, 0].tolist() == [2, 2, -1, -1, 1, 1, -1, -1]
    assert memory.labels.tolist() == [11, 12]
    # no instance at all: an empty memory that still remembers the next id
    memory, ids = associate_by_mask_iou(_rows(size), torch.zeros(0, dtype=torch.int64), memory)
    assert ids.tolist() == [] and len(memory) == 0 and memory.next_id == 3
    _, ids = associate_by_mask_iou(_rows(size, (0, 2)), torch.tensor([11]), memory)
    assert ids.tolist() == [3]


def test_association_log_softmax_is_over_each_detections_tracks():
    # two detections: each row is normalised over its own columns (new + tracks), not across detections
    affinity = torch.tensor([[0.0, 3.0], [0.0, -1.0]])
    boxes = torch.tensor([BOX_B, BOX_B])
    scores = association_scores(affinity, torch.tensor([1.0, 1.0]), boxes, torch.tensor([11, 11]),
                                torch.tensor([BOX_A]), torch.tensor([11]))
    torch.testing.assert_close(scores, torch.log_softmax(affinity, dim=1) + 10.0)
    assert assign_tracks(scores).tolist() == [0, -1]


def test_max_tracks_forgets_the_least_recently_seen_and_never_reuses_their_ids():
    feats = torch.eye(3)
    boxes = torch.tensor([BOX_A, BOX_B, [40.0, 0.0, 50.0, 10.0]])
    labels = torch.tensor([11, 12, 13])
    # frame 0: three new tracks 0, 1, 2; at most 2 are kept: all seen now, the first ones win the tie
    memory, ids = update_tracks(TrackMemory.empty(3), torch.tensor([-1, -1, -1]), feats, boxes, labels,
                                max_tracks=2)
    assert ids.tolist() == [0, 1, 2]
    assert memory.ids.tolist() == [0, 1] and memory.last_seen.tolist() == [0, 0] and memory.next_id == 3
    assert memory.labels.tolist() == [11, 12] and memory.frame == 1
    torch.testing.assert_close(memory.features, feats[:2])
    # frame 1: detection 0 continues track index 1 (id 1), detection 1 is new: id 3 (2 was forgotten, not free)
    memory, ids = update_tracks(memory, torch.tensor([1, -1]), feats[:2] * 2, boxes[:2], labels[:2], max_tracks=2)
    assert ids.tolist() == [1, 3]
    assert memory.ids.tolist() == [1, 3] and memory.last_seen.tolist() == [1, 1] and memory.next_id == 4
    torch.testing.assert_close(memory.features, feats[:2] * 2)
    # frame 2: track id 3 (index 1) seen again, one more new track; id 1 (seen at frame 1) is the oldest
    memory, ids = update_tracks(memory, torch.tensor([1, -1]), feats[:2], boxes[:2], labels[:2], max_tracks=2)
    assert ids.tolist() == [3, 4]
    assert memory.ids.tolist() == [3, 4] and memory.last_seen.tolist() == [2, 2] and memory.next_id == 5
    assert memory.labels.tolist() == [12, 12] and memory.frame == 3  # a track keeps its first class
    # frame 3: nothing detected: the memory keeps its tracks and ages
    memory, ids = update_tracks(memory, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 3), torch.zeros(0, 4),
                                torch.zeros(0, dtype=torch.int64), max_tracks=2)
    assert ids.tolist() == [] and memory.ids.tolist() == [3, 4] and memory.next_id == 5 and memory.frame == 4
    # a matched old track is kept over a newer unmatched one: recency is the frame last seen, not creation
    memory, ids = update_tracks(memory, torch.tensor([0, -1]), feats[:2], boxes[:2], labels[:2], max_tracks=2)
    assert ids.tolist() == [3, 5] and memory.ids.tolist() == [3, 5] and memory.last_seen.tolist() == [4, 4]


def test_max_tracks_none_keeps_every_track():
    memory = TrackMemory.empty(2)
    for _ in range(3):
        memory, _ = update_tracks(memory, torch.tensor([-1, -1]), torch.eye(2), torch.tensor([BOX_A, BOX_B]),
                                  torch.tensor([11, 12]))
    assert memory.ids.tolist() == [0, 1, 2, 3, 4, 5] and memory.last_seen.tolist() == [0, 0, 1, 1, 2, 2]


def test_track_loss_normalizers():
    from vidseg.models.vpsnet import TrackHead

    # one image, 4 sampled RoIs, 2 scored (targets 1 and 0), 2 negatives (-1)
    aff = torch.tensor([[0.0, 2.0], [1.0, 0.0], [5.0, -5.0], [3.0, 3.0]])
    tgt = torch.tensor([1, 0, -1, -1])
    summed = float(torch.nn.functional.cross_entropy(aff[:2], tgt[:2], reduction="sum"))
    sampled = TrackHead(4, roi_size=1, hidden=4, loss_normalizer="sampled").loss([aff], [tgt])["loss_track"]
    positives = TrackHead(4, roi_size=1, hidden=4, loss_normalizer="positives").loss([aff], [tgt])["loss_track"]
    assert float(sampled) == pytest.approx(0.5 * summed / 4)
    assert float(positives) == pytest.approx(0.5 * summed / 2)


def test_mask_iou_association_never_crosses_classes():
    size = (8, 2)
    memory, _ = associate_by_mask_iou(_rows(size, (0, 4)), torch.tensor([11]), MaskTrackMemory.empty(size))
    _, ids = associate_by_mask_iou(_rows(size, (0, 4)), torch.tensor([12]), memory)  # IoU 1, another class
    assert ids.tolist() == [1]
    _, ids = associate_by_mask_iou(_rows(size, (0, 4)), torch.tensor([11]), memory)
    assert ids.tolist() == [0]

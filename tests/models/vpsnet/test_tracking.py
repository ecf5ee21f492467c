"""Association rules of VPSNet's tracking on hand-made affinities, boxes and masks."""

from __future__ import annotations

import math

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

"""VPSNet post-processing rules on hand-made masks and maps."""

from __future__ import annotations

import pytest
import torch

from vidseg.models.vpsnet import (
    assign_segment_ids,
    merge_panoptic,
    panoptic_postprocess,
    remove_overlapping_masks,
    stuff_segment_id,
    thing_segment_id,
)


def _masks(*regions, size=(10, 10)):
    masks = torch.zeros(len(regions), *size, dtype=torch.bool)
    for m, (y0, y1, x0, x1) in zip(masks, regions, strict=True):
        m[y0:y1, x0:x1] = True
    return masks


def test_overlap_removal_30_percent():
    base = _masks((0, 1, 0, 10))   # score .9: row 0 (10 px)
    over = _masks((0, 2, 6, 10))   # score .8: 8 px, 4 on row 0 (50 % covered) -> dropped
    three = _masks((0, 1, 7, 10))  # score .7: 3 px on row 0 ...
    three[0, 1, :7] = True         # ... + 7 free px: 30 % covered, not more than 30 % -> kept
    masks = torch.cat([base, over, three])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert remove_overlapping_masks(masks, scores, torch.tensor([11, 11, 11])).tolist() == [0, 2]
    # per class (official): a mask of another class never removes it; the class-agnostic option does
    assert remove_overlapping_masks(masks, scores, torch.tensor([11, 12, 11])).tolist() == [0, 1, 2]
    assert remove_overlapping_masks(masks, scores, torch.tensor([11, 12, 11]), per_class=False).tolist() == [0, 2]


def test_overlap_removal_order_and_empty():
    masks = _masks((0, 5, 0, 5), (0, 5, 0, 5), (0, 0, 0, 0))
    keep = remove_overlapping_masks(masks, torch.tensor([0.5, 0.9, 0.95]), torch.tensor([11, 11, 11]))
    assert keep.tolist() == [1]  # the higher-scored duplicate wins; the empty mask is dropped


def test_instance_mostly_stuff_becomes_stuff():
    num_stuff = 3
    panoptic = torch.zeros(4, 10, dtype=torch.int64)  # all stuff class 0
    panoptic[:, 0:4] = num_stuff + 0  # instance 0: 16 px
    panoptic[:, 6:10] = num_stuff + 1  # instance 1: 16 px
    semantic = torch.zeros(4, 10, dtype=torch.int64)
    semantic[:, 0:4] = 4       # instance 0 agrees with its class
    semantic[:2, 6:10] = 2     # instance 1: 8 px stuff class 2 (50 %) ...
    semantic[2:, 6:10] = 3     # ... and 8 px class 3 (a thing)
    labels = torch.tensor([4, 5])
    category, instance = merge_panoptic(panoptic, semantic, labels, num_stuff=num_stuff, stuff_area_limit=0)
    assert (category[:, 6:10] == 2).all() and (instance[:, 6:10] == -1).all()  # >= 50 %: relabelled
    assert (category[:, 0:4] == 4).all() and (instance[:, 0:4] == 0).all()
    # 49 % is not enough
    semantic[1, 6] = 3  # class 2: 7 px (44 %); the majority is now thing class 3: stays an instance
    category, instance = merge_panoptic(panoptic, semantic, labels, num_stuff=num_stuff, stuff_area_limit=0)
    assert (category[:, 6:10] == 5).all() and (instance[:, 6:10] == 1).all()


def test_small_stuff_becomes_void():
    panoptic = torch.zeros(10, 10, dtype=torch.int64)
    panoptic[:, :3] = 1  # class 1: 30 px; class 0: 70 px
    category, _ = merge_panoptic(panoptic, panoptic.clone(), torch.zeros(0, dtype=torch.int64), num_stuff=2,
                                 stuff_area_limit=31)
    assert (category[:, :3] == 255).all() and (category[:, 3:] == 0).all()
    category, _ = merge_panoptic(panoptic, panoptic.clone(), torch.zeros(0, dtype=torch.int64), num_stuff=2,
                                 stuff_area_limit=30)
    assert (category[:, :3] == 1).all()


def test_segment_ids_deterministic_per_track_and_class():
    assert stuff_segment_id(0) == 1 and stuff_segment_id(10) == 11
    assert thing_segment_id(0, 11) == 1011 and thing_segment_id(41, 13) == 42013
    with pytest.raises(ValueError, match="too large"):
        thing_segment_id(20000, 11)
    num_stuff = 2
    panoptic = torch.zeros(4, 6, dtype=torch.int64)
    panoptic[:2, :3] = num_stuff + 0
    panoptic[2:, 3:] = num_stuff + 1
    panoptic[0, 5] = 255  # void stays void
    category = torch.where(panoptic >= num_stuff, torch.tensor([2, 3])[(panoptic - num_stuff).clamp(0, 1)], panoptic)
    instance = torch.where(panoptic >= num_stuff, panoptic - num_stuff, torch.full_like(panoptic, -1))
    category[0, 5], instance[0, 5] = 255, -1
    ids, segments = assign_segment_ids(category, instance, torch.tensor([7, 3]), torch.tensor([0.9, 0.8]),
                                       num_stuff=num_stuff)
    assert ids[0, 0] == thing_segment_id(7, 2) and ids[3, 5] == thing_segment_id(3, 3)
    assert ids[3, 0] == stuff_segment_id(0) and ids[0, 5] == 0
    assert segments == [
        {"id": 1, "category_id": 0, "isthing": False, "track_id": None, "score": None, "area": 11},
        {"id": 8002, "category_id": 2, "isthing": True, "track_id": 7, "score": pytest.approx(0.9), "area": 6},
        {"id": 4003, "category_id": 3, "isthing": True, "track_id": 3, "score": pytest.approx(0.8), "area": 6},
    ]
    # same track and class in another frame: same id
    ids2, _ = panoptic_postprocess(torch.full((4, 6), num_stuff), torch.full((4, 6), 2), torch.tensor([2]),
                                   torch.tensor([0.7]), torch.tensor([7]), num_stuff=num_stuff)
    assert (ids2 == thing_segment_id(7, 2)).all()


def test_segment_id_ranges_at_their_ends():
    # stuff ids 1..999 (class 998 is the last: 999 would collide with nothing but 1000 is a thing id)
    assert stuff_segment_id(998) == 999
    for bad in (-1, 999):
        with pytest.raises(ValueError, match="stuff class"):
            stuff_segment_id(bad)
    # thing ids up to 256**3 - 1 (the largest COCO-panoptic RGB id), class 0..999
    assert thing_segment_id(0, 0) == 1000 and thing_segment_id(0, 999) == 1999
    assert thing_segment_id(16776, 215) == 256**3 - 1
    with pytest.raises(ValueError, match="too large"):
        thing_segment_id(16776, 216)
    for track, cls in ((-1, 11), (0, -1), (0, 1000)):
        with pytest.raises(ValueError, match="track_id >= 0"):
            thing_segment_id(track, cls)


def test_merge_panoptic_first_instance_channel_and_void_semantic():
    num_stuff = 2
    panoptic = torch.tensor([[0, 1, 2, 3]])  # stuff 0, stuff 1, instance 0 (channel num_stuff), instance 1
    semantic = torch.tensor([[0, 1, 255, 3]])  # void under instance 0: it is no stuff majority
    category, instance = merge_panoptic(panoptic, semantic, torch.tensor([2, 3]), num_stuff=num_stuff,
                                        stuff_area_limit=0)
    assert category.tolist() == [[0, 1, 2, 3]] and instance.tolist() == [[-1, -1, 0, 1]]
    # the relabelled instance takes the stuff class its semantic majority says
    category, instance = merge_panoptic(panoptic, torch.tensor([[0, 1, 1, 3]]), torch.tensor([2, 3]),
                                        num_stuff=num_stuff, stuff_area_limit=0)
    assert category.tolist() == [[0, 1, 1, 3]] and instance.tolist() == [[-1, -1, -1, 1]]

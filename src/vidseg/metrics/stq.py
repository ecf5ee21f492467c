"""Segmentation and Tracking Quality (STQ, Weber et al. 2021), vectorised, equal to deeplab2's numpy STQuality.

The reference is google-research/deeplab2 ``evaluation/numpy/segmentation_and_tracking_quality.py``
(Apache-2.0); this module re-implements it over the per-frame pair tables that VPQ uses
(:mod:`vidseg.metrics.vpq`), so a frame's pixels are read once for both metrics.

``STQ = sqrt(AQ * SQ)``:

- SQ: class IoU from one confusion matrix over all frames of all videos (rows = GT class, columns =
  predicted class, one extra index for ignore). GT-ignore pixels are dropped (the ignore *row*), but a
  prediction of ignore on a labelled pixel still counts, so when a prediction has void pixels on labelled
  GT the ignore index gets a non-zero union and enters the mean with IoU 0, exactly as in deeplab2. Classes
  with zero union are left out of the mean.
- AQ: per video (one sequence), over GT thing pixels that have an instance (crowd = instance 0 excluded):
  ``AQ_seq = sum_g 1/|g| sum_p TPA(p, g)^2 / (|p| + |g| - TPA(p, g))`` with tracks keyed by
  ``(class, instance)``; predicted track pixels are predicted-thing pixels outside GT crowd (they may lie on
  GT stuff or ignore). ``AQ = sum_seq AQ_seq / number of GT tracks``.

How a COCO-panoptic video becomes deeplab2's ``semantic << bits | instance`` labels (the vidseg convention):

- only annotated frames are scored; one sequence per video;
- semantic class = the segment's ``category_id`` in that frame's segment list; PNG id 0, or any pixel
  whose id that frame's list does not have, is ignore (255);
- thing instance = the segment's PNG id (constant within a video in VPS ground truth and predictions);
  crowd thing segments (``iscrowd: 1``) and all stuff segments get instance 0. The same holds for
  predictions (a predicted ``iscrowd: 1`` thing is one track with instance 0). This is crowd rule
  ``"iscrowd"`` (:data:`STQ_CROWD_RULES`).

Crowd rule ``"first_segment"``: VIPSeg's official ``eval_stq_vspw.py``. It numbers each video's segments
0, 1, 2 ... in order of first appearance in the JSON segment lists (GT and prediction separately, stuff
included) and uses that number as the instance, ignoring ``iscrowd``. deeplab2's STQ then takes GT thing
pixels of instance 0 as crowd, so the crowd of a video is its *first listed GT segment* if that is a
thing (at the pixels where that frame lists it as a thing): in a video whose first listed segment is a
thing (e.g. a first frame without stuff, or a segment list that starts with a thing), that thing is no
GT track and the predictions on it are not counted in AQ. GT ``iscrowd`` flags play no part, and each
predicted segment is its own track whatever its ``iscrowd``. Used by default for VIPSeg, so that numbers
equal the published ones; ``"iscrowd"`` is the corrected VIPSeg mode (VIPSeg GT has no crowd segment,
so there every thing is a track).

Differences from deeplab2, none of which changes a result on real data: counts are int64 and the AQ sums
float64 (deeplab2 counts in float32, exact only up to 2^24 pixels per track, and evaluates AQ in float32
under NumPy 2); with no class to average SQ is 0.0 (deeplab2: NaN); AQ with no GT track is 0.0 (as there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidseg.metrics.vpq import CategoryTable, VideoTables, build_video_tables, pair_table

STQ_CROWD_RULES = ("iscrowd", "first_segment")


@dataclass
class STQCounts:
    """Exactly mergeable STQ statistics (addition).

    Attributes:
        confusion: ``(C + 1, C + 1) int64``, rows = GT class index, columns = predicted, index C = ignore.
        aq_sum: float64 sum over sequences of ``AQ_seq`` numerators.
        num_tracks: int64 number of GT tracks over all sequences.
        num_sequences: int64.
    """

    confusion: np.ndarray
    aq_sum: float
    num_tracks: int
    num_sequences: int

    @classmethod
    def zeros(cls, num_classes: int) -> STQCounts:
        return cls(np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64), 0.0, 0, 0)

    def __add__(self, other: STQCounts) -> STQCounts:
        return STQCounts(self.confusion + other.confusion, self.aq_sum + other.aq_sum,
                         self.num_tracks + other.num_tracks, self.num_sequences + other.num_sequences)


def _sum_by_key(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``keys`` and the sum of ``counts`` per key (int64)."""
    uniq, inv = np.unique(keys, return_inverse=True)
    sums = np.zeros(len(uniq), dtype=np.int64)
    np.add.at(sums, inv.ravel(), counts)
    return uniq, sums


def first_listed_gt(tables: VideoTables) -> int:
    """Compact index of the video's first listed GT segment (first entry of the first non-empty GT segment
    list), or -1 if no frame lists one: the segment VIPSeg's official STQ numbers 0."""
    frames = np.flatnonzero(tables.gt_listed.any(axis=1))
    if not frames.size:
        return -1
    t = frames[0]
    return int(np.flatnonzero(tables.gt_listed[t] & (tables.gt_order[t] == 0))[0])


def video_stq_counts(tables: VideoTables, isthing: np.ndarray, crowd_rule: str = "iscrowd") -> STQCounts:
    """STQ statistics of one video (one sequence).

    Args:
        tables: :func:`vidseg.metrics.vpq.build_video_tables` of the video.
        isthing: ``(C,) bool`` per dense category index.
        crowd_rule: ``"iscrowd"`` (crowd = GT/predicted ``iscrowd: 1`` things) or ``"first_segment"``
            (VIPSeg's official script: crowd = the first listed GT segment where it is a thing; ``iscrowd``
            ignored), see the module docstring.
    """
    if crowd_rule not in STQ_CROWD_RULES:
        raise ValueError(f"crowd_rule must be one of {STQ_CROWD_RULES}, got {crowd_rule!r}")
    first_gi = first_listed_gt(tables) if crowd_rule == "first_segment" else -1
    C = len(isthing)
    thing_of = np.concatenate([np.asarray(isthing, dtype=bool), [False]])  # index C = ignore
    Ng, Np = len(tables.gt_ids), len(tables.pred_ids)
    confusion = np.zeros((C + 1) * (C + 1), dtype=np.int64)
    g_keys, g_counts, p_keys, p_counts, i_keys, i_counts = [], [], [], [], [], []
    for t in range(tables.num_frames):
        gi, pi, n = tables.pair_gi[t], tables.pair_pi[t], tables.pair_count[t]
        g_cls = np.where(tables.gt_listed[t, gi], tables.gt_cat[t, gi], C)
        p_cls = np.where(tables.pred_listed[t, pi], tables.pred_cat[t, pi], C)
        np.add.at(confusion, g_cls * (C + 1) + p_cls, n)
        g_thing = thing_of[g_cls]
        if crowd_rule == "iscrowd":
            g_crowd = g_thing & tables.gt_crowd[t, gi]  # thing pixels with instance 0
            p_inst = np.where(tables.pred_crowd[t, pi], 0, pi + 1)
        else:
            g_crowd = g_thing & (gi == first_gi)  # the segment numbered 0, where it is a thing
            p_inst = pi + 1
        g_track = g_thing & ~g_crowd
        p_track = thing_of[p_cls] & ~g_crowd
        # Track keys (class, instance); instance = compact id + 1, or 0 for a crowd prediction.
        g_key = g_cls * (Ng + 1) + gi + 1
        p_key = p_cls * (Np + 1) + p_inst
        g_keys.append(g_key[g_track])
        g_counts.append(n[g_track])
        p_keys.append(p_key[p_track])
        p_counts.append(n[p_track])
        both = g_track & p_track
        i_keys.append(np.stack([g_key[both], p_key[both]], axis=1))
        i_counts.append(n[both])
    g_uniq, g_size = _sum_by_key(np.concatenate(g_keys or [np.zeros(0, np.int64)]),
                                 np.concatenate(g_counts or [np.zeros(0, np.int64)]))
    p_uniq, p_size = _sum_by_key(np.concatenate(p_keys or [np.zeros(0, np.int64)]),
                                 np.concatenate(p_counts or [np.zeros(0, np.int64)]))
    aq_sum = 0.0
    if g_uniq.size:
        pairs = np.concatenate(i_keys)
        pair_key = pairs[:, 0] * (int(p_uniq.max(initial=0)) + 1) + pairs[:, 1]
        _, first, inv = np.unique(pair_key, return_index=True, return_inverse=True)
        tpa = np.zeros(len(first), dtype=np.int64)
        np.add.at(tpa, inv.ravel(), np.concatenate(i_counts))
        gs = g_size[np.searchsorted(g_uniq, pairs[first, 0])]
        ps = p_size[np.searchsorted(p_uniq, pairs[first, 1])]
        # sum_g 1/|g| sum_p tpa * tpa / (tpa + fpa + fna), with fpa = |p| - tpa, fna = |g| - tpa.
        aq_sum = float(np.sum(tpa.astype(np.float64) * (tpa / (ps + gs - tpa)) / gs))
    return STQCounts(confusion.reshape(C + 1, C + 1), aq_sum, int(g_uniq.size), 1)


def video_stq(
    gt_ids: Sequence[Any],
    gt_segments: Sequence[Sequence[Mapping[str, Any]]],
    pred_ids: Sequence[Any],
    pred_segments: Sequence[Sequence[Mapping[str, Any]]],
    categories: CategoryTable | Mapping | Sequence,
    crowd_rule: str = "iscrowd",
) -> STQCounts:
    """STQ statistics of one video from ``T`` frames of ``(H, W)`` id maps and their segment lists."""
    cats = CategoryTable.from_categories(categories)
    pairs = [pair_table(g, p) for g, p in zip(gt_ids, pred_ids, strict=True)]
    return video_stq_counts(build_video_tables(pairs, gt_segments, pred_segments, cats), cats.isthing, crowd_rule)


def summarize_stq(counts: STQCounts) -> dict[str, Any]:
    """``{"STQ", "AQ", "SQ", "IoU_per_class"}`` (fractions) from accumulated counts, as deeplab2's ``result``.

    ``IoU_per_class`` has one entry per dense category index (not the ignore index); classes with zero union
    are NaN there and left out of SQ.
    """
    conf = counts.confusion.astype(np.float64).copy()
    conf[-1, :] = 0.0  # ground-truth ignore pixels are not counted
    inter = conf.diagonal()
    unions = conf.sum(axis=0) + conf.sum(axis=1) - inter
    num = np.count_nonzero(unions)
    ious = inter / np.maximum(unions, 1e-15)
    sq = float(np.sum(ious) / num) if num else 0.0
    aq = float(counts.aq_sum / max(counts.num_tracks, 1e-15))
    per_class = np.where(unions[:-1] > 0, ious[:-1], np.nan)
    return {"STQ": math.sqrt(aq * sq), "AQ": aq, "SQ": sq, "IoU_per_class": per_class.tolist()}

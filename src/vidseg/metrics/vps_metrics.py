"""torchmetrics wrappers of VPQ and STQ for validation loops: exact across DDP ranks.

Each ``update`` takes one whole video (videos are never split across ranks: one streaming session per clip),
and the states are integer counts and float64 sums reduced by summation, so the gathered metric equals one
metric over all videos. The numbers are those of :mod:`vidseg.metrics.vpq` / :mod:`vidseg.metrics.stq`;
this module is the only one of them that needs torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchmetrics import Metric

from vidseg.metrics.stq import STQ_CROWD_RULES, STQCounts, summarize_stq, video_stq
from vidseg.metrics.vpq import CategoryTable, PQCounts, VPSProtocol, get_protocol, summarize_vpq, video_pq_counts


class VideoPanopticQuality(Metric):
    """VPQ accumulated over whole videos, for validation loops (exact across DDP processes).

    ``update`` takes ONE video: per-frame ``(H, W)`` integer id maps (numpy or torch, 0 = void) and their
    ``segments_info`` lists, for the ground truth and the prediction. States are per-window-size, per-class
    ``tp/fp/fn`` (int64) and IoU sums (float64), reduced by summation, so merging processes (or two metric
    objects) equals one metric over all their videos. ``compute`` returns :func:`summarize_vpq`'s numbers as
    floats: ``{"vpq", "vpq_thing", "vpq_stuff", "vpq_<k>", "vpq_<k>_thing", "vpq_<k>_stuff"}`` (fractions);
    with no counted category, 0.0.

    Args:
        categories: ``{id: {"isthing", ...}}`` or the GT JSON's ``categories`` list.
        protocol: "cityscapes_vps", "viper" or a :class:`VPSProtocol`.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, categories: Mapping | Sequence, protocol: str | VPSProtocol = "cityscapes_vps",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.categories = CategoryTable.from_categories(categories)
        self.protocol = get_protocol(protocol)
        shape = (len(self.protocol.windows), len(self.categories))
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(shape, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("iou", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, gt_ids: Sequence[Any], gt_segments: Sequence[Sequence[Mapping[str, Any]]],
               pred_ids: Sequence[Any], pred_segments: Sequence[Sequence[Mapping[str, Any]]]) -> None:
        counts = video_pq_counts(gt_ids, gt_segments, pred_ids, pred_segments, self.categories, self.protocol)
        self.add_counts(counts)

    def add_counts(self, counts: PQCounts) -> None:
        """Accumulate counts computed elsewhere (e.g. by a worker process)."""
        for name in ("tp", "fp", "fn", "iou"):
            state = getattr(self, name)
            state += torch.from_numpy(getattr(counts, name)).to(device=state.device, dtype=state.dtype)

    def counts(self) -> PQCounts:
        return PQCounts(*(getattr(self, n).detach().cpu().numpy().copy() for n in ("tp", "fp", "fn", "iou")))

    def compute(self) -> dict[str, float]:
        summary = summarize_vpq(self.counts(), self.categories, self.protocol)
        out = {"vpq": summary["vpq"]["all"], "vpq_thing": summary["vpq"]["thing"],
               "vpq_stuff": summary["vpq"]["stuff"]}
        for k, entry in summary["windows"].items():
            out[f"vpq_{k}"] = entry["all"]["pq"]
            out[f"vpq_{k}_thing"] = entry["thing"]["pq"]
            out[f"vpq_{k}_stuff"] = entry["stuff"]["pq"]
        return {key: float(v) for key, v in out.items()}


class SegmentationTrackingQuality(Metric):
    """STQ accumulated over whole videos (one ``update`` = one video = one sequence), exact across DDP.

    States: the confusion matrix (int64), the sum of per-sequence AQ numerators (float64), the number of GT
    tracks and of sequences (int64), all reduced by summation. ``compute`` returns ``{"stq", "aq", "sq"}``
    (fractions).

    Args:
        categories: ``{id: {"isthing", ...}}`` or the GT JSON's ``categories`` list.
        crowd_rule: ``"iscrowd"`` or VIPSeg's official ``"first_segment"`` (:mod:`vidseg.metrics.stq`); a
            protocol's rule is ``get_protocol(name).stq_crowd``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, categories: Mapping | Sequence, crowd_rule: str = "iscrowd", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if crowd_rule not in STQ_CROWD_RULES:
            raise ValueError(f"crowd_rule must be one of {STQ_CROWD_RULES}, got {crowd_rule!r}")
        self.crowd_rule = crowd_rule
        self.categories = CategoryTable.from_categories(categories)
        c1 = len(self.categories) + 1
        self.add_state("confusion", default=torch.zeros((c1, c1), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("aq_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_tracks", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("num_sequences", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, gt_ids: Sequence[Any], gt_segments: Sequence[Sequence[Mapping[str, Any]]],
               pred_ids: Sequence[Any], pred_segments: Sequence[Sequence[Mapping[str, Any]]]) -> None:
        self.add_counts(video_stq(gt_ids, gt_segments, pred_ids, pred_segments, self.categories, self.crowd_rule))

    def add_counts(self, counts: STQCounts) -> None:
        self.confusion += torch.from_numpy(counts.confusion).to(self.confusion.device)
        self.aq_sum += counts.aq_sum
        self.num_tracks += counts.num_tracks
        self.num_sequences += counts.num_sequences

    def counts(self) -> STQCounts:
        return STQCounts(self.confusion.detach().cpu().numpy().copy(), float(self.aq_sum),
                         int(self.num_tracks), int(self.num_sequences))

    def compute(self) -> dict[str, float]:
        res = summarize_stq(self.counts())
        return {"stq": res["STQ"], "aq": res["AQ"], "sq": res["SQ"]}

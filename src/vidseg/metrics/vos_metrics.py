"""DAVIS J&F as a torchmetrics ``Metric`` for validation inside training (imports torch).

The numbers come from the numpy core :mod:`vidseg.metrics.j_and_f`; this module only adds the state that
Lightning gathers across DDP ranks. Scoring a results folder (``vidseg.metrics.davis_eval``) never imports it.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vidseg.metrics.j_and_f import STAT_NAMES, evaluate_sequence, summarize


class JAndF(Metric):
    """DAVIS J&F as a torchmetrics ``Metric``, one ``update`` per video sequence.

    State: ``stats``, per-object rows ``(6,)`` float64 (J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay),
    concatenated across processes (``dist_reduce_fx="cat"``), so the global numbers under DDP are the means
    over all objects of all sequences of all ranks, the same as one process scoring everything.

    Names and per-frame values can't be all-gathered (strings), so they stay on the local rank:
    ``object_names`` (``"<seq>_<obj>"``, one per local row) and ``sequence_results`` (the
    :func:`evaluate_sequence` dicts), for per-sequence tables (``DavisResults.from_sequences``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, bound_th: float = 0.008, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bound_th = bound_th
        self.add_state("stats", default=[], dist_reduce_fx="cat")
        self.object_names: list[str] = []
        self.sequence_results: list[dict[str, Any]] = []

    def update(
        self,
        pred_labels: Any,
        gt_labels: Any,
        sequence: str | None = None,
        num_objects: int | None = None,
    ) -> None:
        """Score one whole sequence.

        Args:
            pred_labels: ``(T, H, W)`` int predicted label maps (tensor or array).
            gt_labels: ``(T, H, W)`` int GT label maps; object count = max id of frame 0 unless given.
            sequence: name for per-object rows; default ``"seq<k>"`` (k counts this rank's updates).
        """
        if sequence is None:
            sequence = f"seq{len(self.sequence_results)}"
        result = evaluate_sequence(
            gt_labels, pred_labels, num_objects, sequence=sequence, bound_th=self.bound_th
        )
        self.stats.append(torch.as_tensor(result["stats"], dtype=torch.float64, device=self.device))
        self.object_names.extend(result["object_names"])
        self.sequence_results.append(result)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """``update`` and return the numbers of this sequence alone.

        Overridden because the generic forward resets and restores the tensor states around a batch
        update, which would drop the local names kept outside the states.
        """
        before = len(self.stats)
        self.update(*args, **kwargs)
        return summarize(torch.cat(self.stats[before:]).cpu().numpy())

    def compute(self) -> dict[str, float]:
        """``{"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"}`` as floats."""
        stats = self.stats
        if isinstance(stats, list):
            stats = dim_zero_cat(stats) if stats else torch.zeros(0, len(STAT_NAMES), dtype=torch.float64)
        return summarize(stats.cpu().numpy())

    def reset(self) -> None:
        super().reset()
        self.object_names = []
        self.sequence_results = []

    def per_object(self) -> list[dict[str, Any]]:
        """This rank's per-object rows: ``{"name": "<seq>_<obj>", "J-Mean": ..., ...}`` in update order."""
        rows = [r for res in self.sequence_results for r in res["stats"]]
        return [
            {"name": n, **{k: float(v) for k, v in zip(STAT_NAMES, row, strict=True)}}
            for n, row in zip(self.object_names, rows, strict=True)
        ]

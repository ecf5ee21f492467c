"""DAVIS region (J) and boundary (F) measures, vectorised, equal to the official toolkit.

The reference is davisvideochallenge/davis2017-evaluation (``davis2017/metrics.py``, ``utils.py``,
``evaluation.py``); see ``shared/reference/davis.md`` for the protocol. Every per-frame value here is the
same float64 the toolkit computes (same integer counts, same division order), and the statistics use the
same ``np.nanmean`` calls. One deliberate difference: :func:`db_statistics` computes the Decay bin indices
in int64, where the toolkit casts them to ``uint8`` and so gets NaN or wrong Decay past 256 frames.

Masks are boolean ``(..., H, W)`` arrays; label maps are integer ``(T, H, W)`` arrays (0 = background,
1..N = objects, 255 = void in the ground truth). Inputs may be numpy arrays or torch tensors (moved to CPU);
results are numpy float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vidseg.constants import IGNORE_LABEL as VOID_LABEL  # DAVIS calls it void

STAT_NAMES = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
GLOBAL_NAMES = ("J&F-Mean",) + STAT_NAMES

# Masks are processed in chunks of about this many pixels, so a long 1080p sequence does not allocate
# gigabytes of boundary maps at once.
_CHUNK_PIXELS = 1 << 23


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_masks(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    pred = _to_numpy(pred).astype(bool, copy=False)
    gt = _to_numpy(gt).astype(bool, copy=False)
    if pred.shape != gt.shape or pred.ndim < 2:
        raise ValueError(
            f"pred and gt must be (..., H, W) masks of one shape, got {pred.shape} and {gt.shape}"
        )
    return pred, gt


def jaccard(pred: Any, gt: Any) -> np.ndarray:
    """Region similarity J (intersection over union) per mask.

    Args:
        pred, gt: ``(..., H, W)`` masks (anything non-zero is foreground).
    Returns:
        ``(...)`` float64; 1 where the union is empty (both masks empty), as in the toolkit.
    """
    pred, gt = _as_masks(pred, gt)
    inter = np.count_nonzero(pred & gt, axis=(-2, -1))
    union = np.count_nonzero(pred | gt, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    return np.where(union == 0, 1.0, j)


def seg2bmap(masks: Any) -> np.ndarray:
    """One-pixel-wide boundary map of binary masks, the toolkit's ``_seg2bmap`` (same-size case).

    A pixel is a boundary pixel when it differs from its east, south or south-east neighbour. The last row
    compares with the east neighbour only, the last column with the south neighbour only, and the
    bottom-right corner is never a boundary: this is what the toolkit's zero-padded shifts and overwrites
    produce, and F depends on it.

    Args:
        masks: ``(..., H, W)`` masks.
    Returns:
        ``(..., H, W)`` bool.
    """
    seg = _to_numpy(masks).astype(bool, copy=False)
    b = np.zeros(seg.shape, dtype=bool)
    core = seg[..., :-1, :-1]
    b[..., :-1, :-1] = (core ^ seg[..., :-1, 1:]) | (core ^ seg[..., 1:, :-1]) | (core ^ seg[..., 1:, 1:])
    b[..., -1, :-1] = seg[..., -1, :-1] ^ seg[..., -1, 1:]
    b[..., :-1, -1] = seg[..., :-1, -1] ^ seg[..., 1:, -1]
    return b


def boundary_radius(height: int, width: int, bound_th: float = 0.008) -> int:
    """Tolerance radius in pixels: ``ceil(bound_th * sqrt(H^2 + W^2))``, or ``bound_th`` itself if >= 1.

    8 at 480x854. The product is evaluated in the toolkit's order so the ceil lands on the same side.
    """
    if bound_th >= 1:
        if bound_th != int(bound_th):
            # skimage's disk() of a fractional radius is a half-pixel-shifted grid; nobody uses it.
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be an integer, got {bound_th}")
        return int(bound_th)
    return int(math.ceil(bound_th * math.sqrt(float(height) ** 2 + float(width) ** 2)))


def disk_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``dy = -r..r`` of the disk ``dx^2 + dy^2 <= r^2`` and their half-widths ``floor(sqrt(r^2-dy^2))``.

    This is ``skimage.morphology.disk(r)`` (the structuring element the toolkit dilates with) written as
    one horizontal run per row.
    """
    dy = np.arange(-radius, radius + 1)
    half = np.array([math.isqrt(radius * radius - int(d) * int(d)) for d in dy])
    return dy, half


def _count_matched(
    keys: np.ndarray, other: np.ndarray, shape: tuple[int, int, int], radius: int
) -> np.ndarray:
    """For each image, how many boundary pixels ``keys`` lie within ``radius`` of a pixel of ``other``.

    Equals ``sum(bmap & cv2.dilate(other_map, disk(radius)))`` with cv2's default border (outside the
    image is never a boundary pixel). Boundaries are sparse, so instead of dilating whole images this
    looks, for each boundary pixel, at the disk's row runs in the sorted flat indices of ``other``: one
    vectorised ``searchsorted`` per disk row, ``O(K r log K)`` for ``K`` boundary pixels, no image-sized
    temporaries.

    Args:
        keys, other: sorted flat indices (``np.flatnonzero``) of two ``(N, H, W)`` boundary maps.
        shape: ``(N, H, W)``.
    Returns:
        ``(N,)`` int64 counts.
    """
    n, h, w = shape
    if keys.size == 0 or other.size == 0:
        return np.zeros(n, dtype=np.int64)
    ys = (keys // w) % h
    xs = keys % w
    found = np.zeros(keys.size, dtype=bool)
    last = other.size - 1
    dys, halves = disk_offsets(radius)
    for dy, half in zip(dys, halves, strict=True):  # 2r+1 vectorised steps, one per disk row
        centre = keys + dy * w
        lo = centre - np.minimum(half, xs)  # the run [x - half, x + half] clipped to the row
        hi = centre + np.minimum(half, w - 1 - xs)
        first = np.searchsorted(other, lo)  # first `other` pixel at or after the run's start
        inside = (first <= last) & (other[np.minimum(first, last)] <= hi)
        found |= inside & (ys + dy >= 0) & (ys + dy < h)
    return np.bincount(keys[found] // (h * w), minlength=n).astype(np.int64)


def _f_from_counts(n_fg, n_gt, fg_match, gt_match) -> np.ndarray:
    """The toolkit's precision/recall/F with its empty-boundary rules, vectorised (float64)."""
    n_fg = n_fg.astype(np.float64)
    n_gt = n_gt.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = fg_match / n_fg
        recall = gt_match / n_gt
    fg_empty, gt_empty = n_fg == 0, n_gt == 0
    # Empty rules: no predicted boundary -> P=1, R=0; no GT boundary -> P=0, R=1; neither -> P=R=1.
    precision = np.where(fg_empty, 1.0, np.where(gt_empty, 0.0, precision))
    recall = np.where(gt_empty, 1.0, np.where(fg_empty, 0.0, recall))
    denom = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        f = 2 * precision * recall / denom  # same operation order as the toolkit
    return np.where(denom == 0, 0.0, f)


def boundary_f(pred: Any, gt: Any, bound_th: float = 0.008) -> np.ndarray:
    """Boundary F-measure per mask, exactly the toolkit's ``db_eval_boundary`` / ``f_measure``.

    Boundaries by :func:`seg2bmap`; a predicted boundary pixel is matched when a GT boundary pixel lies in
    the disk of radius :func:`boundary_radius` around it (and vice versa); precision = matched predicted /
    all predicted, recall = matched GT / all GT, F = 2PR/(P+R), 0 when P+R = 0. A mask can be non-empty yet
    have no boundary (it fills the whole image): the empty rules look at boundary pixels, as the toolkit does.

    Args:
        pred, gt: ``(..., H, W)`` masks.
        bound_th: tolerance as a fraction of the image diagonal (< 1) or a radius in pixels (>= 1).
    Returns:
        ``(...)`` float64.
    """
    pred, gt = _as_masks(pred, gt)
    lead, (h, w) = pred.shape[:-2], pred.shape[-2:]
    radius = boundary_radius(h, w, bound_th)
    pred = pred.reshape(-1, h, w)
    gt = gt.reshape(-1, h, w)
    n = pred.shape[0]
    out = np.empty(n, dtype=np.float64)
    step = max(1, _CHUNK_PIXELS // max(1, h * w))
    for start in range(0, n, step):
        sl = slice(start, start + step)
        shape = pred[sl].shape
        fg_keys, gt_keys = np.flatnonzero(seg2bmap(pred[sl])), np.flatnonzero(seg2bmap(gt[sl]))
        fg_match = _count_matched(fg_keys, gt_keys, shape, radius)
        gt_match = _count_matched(gt_keys, fg_keys, shape, radius)
        n_fg = np.bincount(fg_keys // (h * w), minlength=shape[0])
        n_gt = np.bincount(gt_keys // (h * w), minlength=shape[0])
        out[sl] = _f_from_counts(n_fg, n_gt, fg_match, gt_match)
    return out.reshape(lead)


def decay_bins(n: int) -> np.ndarray:
    """Start indices of the 4 Decay bins (5 edges) over ``n`` frames; bin i is ``[ids[i], ids[i+1]]``.

    The toolkit computes the same numbers but casts them to uint8, so past 256 frames the indices wrap
    (e.g. 299 -> 43) and the last bin is empty (NaN Decay) or the wrong frames. We keep int64.
    """
    return (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)


def db_statistics(values: Any) -> tuple[float, float, float]:
    """Mean, Recall and Decay of one object's per-frame J or F, as the toolkit's ``db_statistics``.

    Args:
        values: ``(T,)`` per-frame values (NaN entries are ignored by the means).
    Returns:
        ``(mean, recall, decay)``: nanmean; fraction of frames > 0.5; mean of the first quarter minus mean of
        the last quarter (bins from ``decay_bins``, inclusive ends, so neighbouring bins share a frame).
        Correct past 256 frames, where the official code's uint8 indices give NaN or wrong values.
    """
    values = _to_numpy(values).astype(np.float64, copy=False)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"db_statistics needs a non-empty (T,) array, got shape {values.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN slices -> NaN, as upstream
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        ids = decay_bins(values.size)
        decay = np.nanmean(values[ids[0] : ids[1] + 1]) - np.nanmean(values[ids[3] : ids[4] + 1])
    return float(mean), float(recall), float(decay)


def _label_pair(gt_labels, pred_labels, sequence: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Both label stacks as numpy (T, H, W) of one shape, and the sequence name for error messages."""
    gt = _to_numpy(gt_labels)
    pred = _to_numpy(pred_labels)
    name = "sequence" if sequence is None else sequence
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"{name}: gt and pred must be (T, H, W) of one shape, got {gt.shape} and {pred.shape}")
    return gt, pred, name


def evaluate_frames(
    gt_labels: Any,
    pred_labels: Any,
    num_objects: int,
    *,
    sequence: str | None = None,
    frame_ids: Sequence[str] | None = None,
    bound_th: float = 0.008,
) -> dict[str, Any]:
    """Score *all* given frames of one sequence (no first/last frame exclusion, see ``evaluate_sequence``).

    Args:
        gt_labels: ``(T, H, W)`` int GT label maps; 255 (void) is treated as background, like the toolkit.
        pred_labels: ``(T, H, W)`` int predicted label maps.
        num_objects: objects 1..N are scored; objects absent from the prediction score as empty masks
            (the toolkit's zero padding).
        sequence: name used in object names ``"<seq>_<obj>"`` and error messages.
        frame_ids: names of the frames (default "0", "1", ...), kept in the result.
    Returns:
        dict with ``sequence``, ``num_objects``, ``frame_ids`` (list of T), ``object_names`` (list of N),
        ``J`` and ``F`` ``(N, T)`` float64, ``stats`` ``(N, 6)`` float64 in ``STAT_NAMES`` order.
    Raises:
        ValueError: shapes differ, or the prediction holds an id above ``num_objects`` (the toolkit exits).
    """
    gt, pred, name = _label_pair(gt_labels, pred_labels, sequence)
    n_frames = gt.shape[0]
    if n_frames == 0:
        raise ValueError(f"{name}: no frames to evaluate")
    max_pred = int(pred.max())
    if max_pred > num_objects:
        frame = int(np.argmax(pred.reshape(n_frames, -1).max(axis=1) > num_objects))
        where = frame_ids[frame] if frame_ids is not None else frame
        raise ValueError(
            f"sequence {name!r}: the prediction contains object id {max_pred} (frame {where}) but the ground "
            f"truth has only {num_objects} objects (max id in the first-frame annotation); predicted ids"
            " must be those of the first-frame annotation"
        )
    gt = np.where(gt == VOID_LABEL, 0, gt)  # void is not used in the semi-supervised task
    j = np.empty((num_objects, n_frames), dtype=np.float64)
    f = np.empty((num_objects, n_frames), dtype=np.float64)
    stats = np.empty((num_objects, len(STAT_NAMES)), dtype=np.float64)
    for k, obj in enumerate(range(1, num_objects + 1)):  # loop over objects; frames are vectorised
        gt_obj, pred_obj = gt == obj, pred == obj
        j[k] = jaccard(pred_obj, gt_obj)
        f[k] = boundary_f(pred_obj, gt_obj, bound_th)
        stats[k] = db_statistics(j[k]) + db_statistics(f[k])
    return {
        "sequence": name,
        "num_objects": num_objects,
        "frame_ids": list(frame_ids) if frame_ids is not None else [str(i) for i in range(n_frames)],
        "object_names": [f"{name}_{obj}" for obj in range(1, num_objects + 1)],
        "J": j,
        "F": f,
        "stats": stats,
    }


def num_objects_of(first_gt: Any) -> int:
    """Object count of a sequence: the max id of the first-frame GT, void (255) excluded."""
    first = _to_numpy(first_gt)
    first = np.where(first == VOID_LABEL, 0, first)
    return int(first.max(initial=0))


def evaluate_sequence(
    gt_labels: Any,
    pred_labels: Any,
    num_objects: int | None = None,
    *,
    sequence: str | None = None,
    frame_ids: Sequence[str] | None = None,
    bound_th: float = 0.008,
) -> dict[str, Any]:
    """Score one sequence by the DAVIS semi-supervised protocol: frames 1..T-2 (first and last excluded).

    Args:
        gt_labels: ``(T, H, W)`` int GT label maps of all frames (255 = void -> background).
        pred_labels: ``(T, H, W)`` int predictions of all frames (frames 0 and T-1 are not read).
        num_objects: default: max id of the first-frame GT.
        frame_ids: names of all T frames (default "0".."T-1").
    Returns:
        :func:`evaluate_frames`'s dict for frames 1..T-2: ``J``/``F`` are ``(N, T-2)``.
    Raises:
        ValueError: fewer than 3 frames, shape mismatch, or a predicted id above ``num_objects`` in an
            evaluated frame (ids in frames 0 and T-1 are ignored, as upstream, which never reads them).
    """
    gt, pred, name = _label_pair(gt_labels, pred_labels, sequence)
    if gt.shape[0] < 3:
        raise ValueError(
            f"{name}: DAVIS evaluates frames 1..T-2, so a sequence needs >= 3 frames, got {gt.shape[0]}"
        )
    if num_objects is None:
        num_objects = num_objects_of(gt[0])
    ids = list(frame_ids) if frame_ids is not None else [str(i) for i in range(gt.shape[0])]
    return evaluate_frames(
        gt[1:-1], pred[1:-1], num_objects, sequence=name, frame_ids=ids[1:-1], bound_th=bound_th
    )


def summarize(stats: Any) -> dict[str, float]:
    """Global DAVIS numbers from per-object rows: plain means over all objects of all sequences.

    Args:
        stats: ``(M, 6)`` float rows in ``STAT_NAMES`` order.
    Returns:
        ``{"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"}`` floats; NaN when
        there are no objects.
    """
    rows = _to_numpy(stats).astype(np.float64, copy=False).reshape(-1, len(STAT_NAMES))
    if rows.shape[0] == 0:
        return {k: float("nan") for k in GLOBAL_NAMES}
    # np.mean over each column, as evaluation_method.py does over its lists (same pairwise summation).
    means = {k: float(np.mean(rows[:, i])) for i, k in enumerate(STAT_NAMES)}
    return {"J&F-Mean": (means["J-Mean"] + means["F-Mean"]) / 2.0, **means}


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

"""DAVIS region (J) and boundary (F) measures, vectorised, equal to the official toolkit.

The reference is davisvideochallenge/davis2017-evaluation (``davis2017/metrics.py``, ``utils.py``,
``evaluation.py``); see ``shared/reference/davis.md`` for the protocol. Every per-frame value here is the
same float64 the toolkit computes (same integer counts, same division order), and the statistics use the
same ``np.nanmean`` calls. One deliberate difference: :func:`db_statistics` computes the Decay bin indices
in int64, where the toolkit casts them to ``uint8`` and so gets NaN or wrong Decay past 256 frames.

A sequence is scored without one mask per object: J comes from one joint histogram of (GT id, predicted
id) per frame, F from the boundary pixels of all objects found in one pass over each label map
(:func:`boundary_keys`) and matched sparsely (no dilated images). The cost grows with the frames and the
boundary length, hardly with the number of objects.

Masks are boolean ``(..., H, W)`` arrays; label maps are integer ``(T, H, W)`` arrays (0 = background,
1..N = objects, 255 = void in the ground truth). Inputs may be numpy arrays or torch tensors (moved to CPU);
results are numpy float64.

This module is numpy only: scoring a results folder must not pay seconds for importing torch. The
torchmetrics wrapper :class:`JAndF` lives in :mod:`vidseg.metrics.vos_metrics`, re-exported here lazily,
so ``from vidseg.metrics.j_and_f import JAndF`` still works (and imports torch only then).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from vidseg.constants import IGNORE_LABEL as VOID_LABEL  # DAVIS calls it void

STAT_NAMES = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
GLOBAL_NAMES = ("J&F-Mean",) + STAT_NAMES

# Label maps are scanned for boundaries in chunks of about this many pixels (5 frames at 480p): a long
# 1080p sequence never allocates gigabytes of temporaries, and a chunk's temporaries stay in cache
# (measured 1.7x faster than 8M-pixel chunks).
_CHUNK_PIXELS = 1 << 21


def _to_numpy(x: Any) -> np.ndarray:
    # A tensor can only exist if torch was imported by someone else, so looking it up costs no import.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def __getattr__(name: str) -> Any:
    if name == "JAndF":  # the torchmetrics wrapper, imported on first use (it imports torch)
        from vidseg.metrics.vos_metrics import JAndF

        return JAndF
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _count_matched(keys: np.ndarray, other: np.ndarray, n_images: int, h: int, w: int, radius: int) -> np.ndarray:
    """For each image, how many boundary pixels ``keys`` lie within ``radius`` of a pixel of ``other``.

    Equals ``sum(bmap & cv2.dilate(other_map, disk(radius)))`` with cv2's default border (outside the
    image is never a boundary pixel). Boundaries are sparse, so instead of dilating whole images this
    looks, for each boundary pixel, at the disk's row runs in the sorted flat indices of ``other``: one
    vectorised ``searchsorted`` per disk row, ``O(K r log K)`` for ``K`` boundary pixels, no image-sized
    temporaries. Rows are visited nearest first and a pixel leaves the search once matched: with a decent
    prediction most pixels match in the first rows, so the later rows only see the few left.

    Args:
        keys, other: sorted flat indices (``np.flatnonzero``) of two ``(n_images, h, w)`` boundary maps.
    Returns:
        ``(n_images,)`` int64 counts.
    """
    if keys.size == 0 or other.size == 0:
        return np.zeros(n_images, dtype=np.int64)
    image_size, gap = h * w, radius * w

    def spaced(k: np.ndarray) -> np.ndarray:
        # ``radius`` empty rows before every image: a run above or below the image lands in them and finds
        # nothing, so no run needs a bounds check.
        return k + (k // image_size + 1) * gap

    centre = spaced(keys)
    targets = np.append(spaced(other), np.iinfo(np.int64).max)  # a sentinel: every search lands on an element
    row_start = centre - keys % w
    row_end = row_start + (w - 1)
    found = np.zeros(keys.size, dtype=bool)
    todo = np.arange(keys.size)
    dys, halves = disk_offsets(radius)
    for i in np.argsort(np.abs(dys), kind="stable"):  # dy = 0, -1, 1, -2, 2, ...
        shift, half = int(dys[i]) * w, int(halves[i])
        lo = np.maximum(centre - half, row_start) + shift  # the run [x - half, x + half] clipped to the row
        hi = np.minimum(centre + half, row_end) + shift
        hit = targets[np.searchsorted(targets, lo)] <= hi  # the first target at or after lo is inside the run
        if hit.any():
            found[todo[hit]] = True
            miss = ~hit
            todo, centre, row_start, row_end = todo[miss], centre[miss], row_start[miss], row_end[miss]
            if todo.size == 0:
                break
    return np.bincount(keys[found] // image_size, minlength=n_images).astype(np.int64)


def _object_labels(labels: np.ndarray, num_objects: int, max_value: int | None = None) -> np.ndarray:
    """``labels`` with every id outside 1..num_objects set to 0, in the smallest dtype that holds them.

    ``max_value``: ``labels.max()`` if the caller has it (each pass over a sequence costs milliseconds).
    """
    dtype = np.uint8 if num_objects < 256 else np.int64
    if labels.size == 0:
        return labels.astype(dtype, copy=False)
    non_negative = np.issubdtype(labels.dtype, np.unsignedinteger) or labels.min() >= 0
    if non_negative and (labels.max() if max_value is None else max_value) <= num_objects:
        return labels.astype(dtype, copy=False)
    return np.where((labels >= 1) & (labels <= num_objects), labels, 0).astype(dtype)


def boundary_keys(labels: Any, num_objects: int) -> np.ndarray:
    """Boundary pixels of objects 1..N in a stack of label maps, as sorted flat keys, with no mask per object.

    The boundary of object ``o`` in frame ``t`` is ``seg2bmap(labels[t] == o)``: a pixel is on it exactly
    when one of the neighbours seg2bmap compares it with (E, S, SE, as its edge rules allow) has another
    label and ``o`` is the pixel's label or that neighbour's. So one pass over each flat label map finds the
    pixels whose label differs from the next pixel, the one below or the one below-right (a superset: at
    a row's or frame's end the flat neighbour is not the image neighbour), and the few found are refined
    with the edge rules and give their own label and their differing neighbours' labels. The cost is one
    comparison pass per frame whatever the number of objects, where per-object masks cost N passes.

    Args:
        labels: ``(T, H, W)`` integer label maps; ids outside 1..num_objects count as background.
        num_objects: N.
    Returns:
        ``(K,)`` int64, sorted, unique: ``((o - 1) * T + t) * H * W + y * W + x`` for each boundary pixel
        ``(y, x)`` of object ``o`` in frame ``t``, i.e. ``np.flatnonzero`` of the object-major
        ``(N * T, H, W)`` stack of :func:`seg2bmap` maps.
    """
    lab = _to_numpy(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be (T, H, W), got shape {lab.shape}")
    return _boundary_keys(_object_labels(lab, num_objects), num_objects)


def _boundary_keys(lab: np.ndarray, num_objects: int) -> np.ndarray:
    """:func:`boundary_keys` of ``(T, H, W)`` labels already in 0..num_objects (:func:`_object_labels`)."""
    n_frames, h, w = lab.shape
    volume = n_frames * h * w
    step = max(1, _CHUNK_PIXELS // max(1, h * w))  # frames per chunk: bounded temporaries
    lab = np.ascontiguousarray(lab)
    # Two chunk-sized buffers, reused: fresh temporaries for every chunk made this 13% slower at 480p.
    chunk = min(step, n_frames) * h * w
    differs_buf, south_buf = np.empty(chunk, dtype=bool), np.empty(chunk, dtype=bool)
    parts = []
    for start in range(0, n_frames, step):
        flat = lab[start : start + step].reshape(-1)
        n_s = max(0, flat.size - w)
        differs = differs_buf[: max(0, flat.size - 1)]
        np.not_equal(flat[:-1], flat[1:], out=differs)  # E(i)
        south = south_buf[:n_s]
        np.not_equal(flat[:n_s], flat[w:], out=south)  # S(i)
        # i differs from its SE neighbour only if it differs from S or S differs from SE (= E(i + w)), and
        # conversely: so E | S | SE = E(i) | S(i) | E(i + w), one comparison pass fewer.
        south[: max(0, n_s - 1)] |= differs[w : w + max(0, n_s - 1)]
        differs[:n_s] |= south
        idx = np.flatnonzero(differs)  # the chunk's last pixel is a bottom-right corner: never boundary
        if idx.size == 0:
            continue
        label = flat[idx]
        east, south = idx % w < w - 1, (idx // w) % h < h - 1
        # An invalid neighbour is replaced by the pixel itself, so it never differs.
        neighbours = [flat[np.where(east, idx + 1, idx)], flat[np.where(south, idx + w, idx)],
                      flat[np.where(east & south, idx + w + 1, idx)]]
        diff = [nb != label for nb in neighbours]
        on_edge = diff[0] | diff[1] | diff[2]
        objs = np.concatenate([label[on_edge], *(nb[d] for nb, d in zip(neighbours, diff, strict=True))])
        pix = np.concatenate([idx[on_edge], *(idx[d] for d in diff)])
        keep = objs != 0
        parts.append((objs[keep].astype(np.int64) - 1) * volume + (start * h * w + pix[keep]))
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return _sorted_unique(np.concatenate(parts))  # a pixel can border one object on two sides


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of a 1-D int64 array by sort + neighbour compare (8x faster than numpy 2's hash path here)."""
    values = np.sort(values)
    if values.size < 2:
        return values
    first = np.empty(values.size, dtype=bool)
    first[0] = True
    np.not_equal(values[1:], values[:-1], out=first[1:])
    return values[first]


def _f_scores(fg_keys: np.ndarray, gt_keys: np.ndarray, n_images: int, h: int, w: int, radius: int) -> np.ndarray:
    """``(n_images,)`` boundary F from the sorted boundary keys of predictions and GT (see boundary_keys)."""
    fg_match = _count_matched(fg_keys, gt_keys, n_images, h, w, radius)
    gt_match = _count_matched(gt_keys, fg_keys, n_images, h, w, radius)
    n_fg = np.bincount(fg_keys // (h * w), minlength=n_images)
    n_gt = np.bincount(gt_keys // (h * w), minlength=n_images)
    return _f_from_counts(n_fg, n_gt, fg_match, gt_match)


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
    pred = pred.reshape(-1, h, w).view(np.uint8)  # masks as label maps of one object
    gt = gt.reshape(-1, h, w).view(np.uint8)
    out = _f_scores(_boundary_keys(pred, 1), _boundary_keys(gt, 1), pred.shape[0], h, w, radius)
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


def _single_object_counts(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersection and union of object 1 per frame, ``(T, 1)`` int64 each, for label maps in 0..1."""
    n_frames = gt.shape[0]
    inter = np.empty((n_frames, 1), dtype=np.int64)
    union = np.empty((n_frames, 1), dtype=np.int64)
    both = np.empty(gt.shape[1:], dtype=gt.dtype)
    for t in range(n_frames):
        np.bitwise_and(gt[t], pred[t], out=both)
        inter[t, 0] = np.count_nonzero(both)
        union[t, 0] = np.count_nonzero(gt[t]) + np.count_nonzero(pred[t]) - inter[t, 0]
    return inter, union


def _pair_counts(gt: np.ndarray, pred: np.ndarray, num_objects: int) -> np.ndarray:
    """Joint histogram of (GT id, predicted id) per frame: ``(T, N + 1, N + 1)`` int64.

    Args:
        gt, pred: ``(T, H, W)`` label maps with ids in 0..N (:func:`_object_labels`).
    """
    k = num_objects + 1
    n_frames = gt.shape[0]
    out = np.empty((n_frames, k * k), dtype=np.int64)
    if k * k <= 256:
        # The pair id fits in a byte: PIL's C histogram of a uint8 image is ~3x faster than np.bincount,
        # which first casts the frame to int64.
        for t in range(n_frames):
            pair = gt[t] * np.uint8(k) + pred[t]
            out[t] = Image.fromarray(np.ascontiguousarray(pair)).histogram()[: k * k]
    else:
        for t in range(n_frames):
            out[t] = np.bincount((gt[t].astype(np.int64) * k + pred[t]).ravel(), minlength=k * k)
    return out.reshape(n_frames, k, k)


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
    j, f = frame_scores(gt, pred, num_objects, bound_th=bound_th, max_pred=max_pred)
    ids = list(frame_ids) if frame_ids is not None else [str(i) for i in range(n_frames)]
    return sequence_result(name, ids, j, f)


def frame_scores(gt: np.ndarray, pred: np.ndarray, num_objects: int, *, bound_th: float = 0.008,
                 max_pred: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """J and F of objects 1..N in each frame: the per-frame part of :func:`evaluate_frames`, unchecked.

    Frames are scored independently, so a long sequence can be scored in pieces (as ``davis_eval`` does, a
    few dozen frames at a time) with the same numbers.

    Args:
        gt: ``(T, H, W)`` integer GT label maps (255 = void -> background; ids above N -> background).
        pred: ``(T, H, W)`` integer predictions, ids in 0..N (the caller checks: a larger id is an error).
        max_pred: ``pred.max()`` if the caller has it.
    Returns:
        ``(J, F)``, each ``(N, T)`` float64.
    """
    n_frames, h, w = gt.shape
    max_gt = int(gt.max()) if gt.size else 0
    if max_gt >= VOID_LABEL:
        gt, max_gt = np.where(gt == VOID_LABEL, 0, gt), None  # void is not used in the semi-supervised task
    # GT ids above num_objects are not scored: background for every scored object, as with per-object masks.
    gt, pred = _object_labels(gt, num_objects, max_gt), _object_labels(pred, num_objects, max_pred)
    if num_objects == 1:  # every DAVIS 2016 sequence: three counts per frame are 3x faster than the histogram
        inter, union = _single_object_counts(gt, pred)
    else:
        counts = _pair_counts(gt, pred, num_objects)  # (T, N + 1, N + 1)
        objs = np.arange(1, num_objects + 1)
        inter = counts[:, objs, objs]
        union = counts.sum(axis=2)[:, 1:] + counts.sum(axis=1)[:, 1:] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        j = np.where(union == 0, 1.0, inter / union).T  # the toolkit's int / int, 1 for an empty union
    j = np.ascontiguousarray(j, dtype=np.float64)
    radius = boundary_radius(h, w, bound_th)
    f = _f_scores(_boundary_keys(pred, num_objects), _boundary_keys(gt, num_objects), num_objects * n_frames, h, w,
                  radius).reshape(num_objects, n_frames)
    return j, f


def sequence_result(name: str, frame_ids: Sequence[str], j: np.ndarray, f: np.ndarray) -> dict[str, Any]:
    """:func:`evaluate_frames`'s dict from per-frame ``J`` and ``F`` (``(N, T)`` each): adds the statistics."""
    num_objects = j.shape[0]
    stats = np.empty((num_objects, len(STAT_NAMES)), dtype=np.float64)
    for k in range(num_objects):
        stats[k] = db_statistics(j[k]) + db_statistics(f[k])
    return {
        "sequence": name,
        "num_objects": num_objects,
        "frame_ids": list(frame_ids),
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

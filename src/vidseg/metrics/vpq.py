"""Video Panoptic Quality (VPQ), vectorised, with the counting rules of the official VPS evaluation.

The references are mcahny/vps ``tools/eval_vpq.py`` (Cityscapes-VPS), ``tools/dataset/viper.py``
(``_pq_compute_single_core`` / ``_vpq_compute_single_core``, VIPER), see ``shared/reference/vpsnet.md``, and
VIPSeg-Dataset ``ClipPanoFCN/eval_vpq_vspw.py`` (VIPSeg: the Cityscapes-VPS rules with other windows). This
module re-implements their rules (it shares no code with them) so that the per-class TP/FP/FN counts are the
same integers and the IoU sums the same float64 values up to summation order.

How it works. A frame is reduced once to a *pair table*: for every ``(gt id, pred id)`` that co-occurs,
its pixel count (:func:`pair_table`, one pass over the pixels). The ids of a video are compacted to
``0..Ng-1`` / ``0..Np-1`` and the per-frame segment lists to ``(T, Ng)`` / ``(T, Np)`` attribute arrays
(:func:`build_video_tables`). A window of ``nframes`` consecutive frames is then scored from the sum of its
frames' pair tables, a few hundred rows, with array operations only (:func:`window_counts`).

The rules, per window of ``nframes`` consecutive (annotated) frames of one video:

- a *tube* is all pixels of one segment id in the window; its category and ``iscrowd`` are those of the
  first frame in the window whose segment list has the id;
- predicted tube area = its pixel count in the PNGs; GT tube area = the sum of the JSON ``area`` fields of
  the frames listing it (Cityscapes-VPS, ``gt_area_from="json"``, an official quirk kept on purpose) or its
  pixel count (VIPER, ``"png"``);
- a GT tube and a predicted tube match if their categories are equal, the GT is not crowd and
  ``IoU > 0.5`` with ``union = |pred| + |gt| - |pred & gt| - |pred & void|``: TP, IoU added to the GT category;
- GT ids present in the PNG but not listed in the JSON take part in nothing (neither matched, nor FN, nor
  void);
- unmatched non-crowd GT tube: FN; under VIPER rules a GT tube with ``0 < pixel area < 32*32`` is ignored
  (neither matched nor FN), while predictions overlapping it can still be FP, as in the official code
  (a GT tube listed but with no pixel at all in the window is not "small" there, so it is an FN);
- unmatched predicted tube: FP unless ``(|pred & void| + |pred & crowd|) / |pred| > 0.5``, where "crowd" is
  the crowd GT tube of the prediction's category. When a window has several crowd tubes of one category the
  official code keeps the *last* one in insertion order (a dict overwritten in a loop over the window's
  segments, frame by frame, in segment-list order); this is replicated, not fixed.
- JSON GT areas can disagree with the pixels (an id listed in some frames of a window and painted in
  others), which can push an IoU above 1: the official code stops on an assertion there, vidseg counts the
  pair like any other (IoU > 0.5 -> TP). Segment ids listed twice in one frame are an error here.

Per-class sums over all windows of all videos give ``PQ_c = IoU_c / (TP_c + FP_c/2 + FN_c/2)``,
``SQ_c = IoU_c / TP_c`` and ``RQ_c = TP_c / (TP_c + FP_c/2 + FN_c/2)``; averages run over categories with
``TP + FP + FN > 0`` (minus ``excluded_categories``), split into things/stuff by ``isthing``; the final VPQ is
the mean over the windows. Where the official code divides by zero (no category counted), the average is
0.0 with ``n = 0``. Windows never cross videos (the official Cityscapes-VPS/VIPER scripts split frames with
``np.array_split`` and can; VIPSeg's scores each video's windows apart, as vidseg does).

Ids are COCO-panoptic segment ids ``0 <= id < 2^24`` (0 = void); categories are ``{id: {"isthing", ...}}``
as in the GT JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidseg.constants import PANOPTIC_VOID_ID
from vidseg.errors import DataError, SubmissionError

ID_BITS = 24  # COCO-panoptic ids are RGB colours: id < 2^24
MAX_SEGMENT_ID = (1 << ID_BITS) - 1


# --------------------------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class VPSProtocol:
    """The counting rules of one benchmark.

    Attributes:
        name: "cityscapes_vps" or "viper".
        windows: ``(k label, nframes)`` per VPQ window size, e.g. ``((0, 1), (5, 2), (10, 3), (15, 4))``:
            Cityscapes-VPS annotates every 5th frame, so 2 consecutive annotated frames span k = 5 frames.
        gt_area_from: ``"json"`` (sum of the GT JSON ``area`` fields) or ``"png"`` (pixel count).
        small_gt_threshold: GT tubes with ``0 < pixel area < threshold`` are ignored (0 = never).
        excluded_categories: category ids left out of every average (their counts are still reported).
        stq_crowd: the STQ crowd rule (:data:`vidseg.metrics.stq.STQ_CROWD_RULES`): ``"iscrowd"`` (deeplab2's
            convention) or ``"first_segment"`` (VIPSeg's official eval_stq_vspw.py).
    """

    name: str
    windows: tuple[tuple[int, int], ...]
    gt_area_from: str = "json"
    small_gt_threshold: int = 0
    excluded_categories: tuple[int, ...] = ()
    stq_crowd: str = "iscrowd"

    def __post_init__(self) -> None:
        if self.gt_area_from not in ("json", "png"):
            raise ValueError(f"gt_area_from must be 'json' or 'png', got {self.gt_area_from!r}")
        if self.stq_crowd not in ("iscrowd", "first_segment"):
            raise ValueError(f"stq_crowd must be 'iscrowd' or 'first_segment', got {self.stq_crowd!r}")
        if not self.windows or any(n < 1 for _, n in self.windows):
            raise ValueError(f"windows must be non-empty (k label, nframes >= 1) pairs, got {self.windows}")

    @property
    def k_labels(self) -> tuple[int, ...]:
        return tuple(k for k, _ in self.windows)


CITYSCAPES_VPS_PROTOCOL = VPSProtocol("cityscapes_vps", ((0, 1), (5, 2), (10, 3), (15, 4)), "json", 0, ())
VIPER_PROTOCOL = VPSProtocol("viper", ((1, 1), (5, 5), (10, 10), (15, 15)), "png", 32 * 32, (11,))
# VIPSeg's eval_vpq_vspw.py: windows of 1, 2, 4, 6 and 8 annotated frames, labelled k = (nframes - 1) * 5 as
# its vpq-<k>.txt files are; JSON GT areas; no small-object or class exclusion. Its STQ (eval_stq_vspw.py) takes
# each video's first listed GT segment as crowd when it is a thing (vidseg.metrics.stq, "first_segment").
VIPSEG_PROTOCOL = VPSProtocol("vipseg", ((0, 1), (5, 2), (15, 4), (25, 6), (35, 8)), "json", 0, (),
                              "first_segment")
PROTOCOLS = {p.name: p for p in (CITYSCAPES_VPS_PROTOCOL, VIPER_PROTOCOL, VIPSEG_PROTOCOL)}


def get_protocol(protocol: str | VPSProtocol) -> VPSProtocol:
    if isinstance(protocol, VPSProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown VPS protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


# ------------------------------------------------------------------------------------------- categories
@dataclass(frozen=True)
class CategoryTable:
    """Categories in GT JSON order, with their dense index ``0..C-1`` used by every count array.

    Attributes:
        ids: ``(C,)`` category ids.
        isthing: ``(C,) bool``.
        index: category id -> dense index.
    """

    ids: tuple[int, ...]
    isthing: np.ndarray
    index: Mapping[int, int]

    @classmethod
    def from_categories(cls, categories: Mapping[int, Mapping[str, Any]] | Sequence[Mapping[str, Any]]):
        """From ``{id: {"isthing": 0|1, ...}}`` or the GT JSON's ``categories`` list."""
        if isinstance(categories, CategoryTable):
            return categories
        if not isinstance(categories, Mapping):
            categories = {int(c["id"]): c for c in categories}
        ids = tuple(int(c) for c in categories)
        isthing = np.array([int(categories[c].get("isthing", 0)) == 1 for c in categories], dtype=bool)
        return cls(ids, isthing, {c: i for i, c in enumerate(ids)})

    def __len__(self) -> int:
        return len(self.ids)


# ----------------------------------------------------------------------------------------- pair tables
@dataclass(frozen=True)
class FramePairs:
    """Pixel counts of the ``(gt id, pred id)`` pairs of one frame, sorted by ``(gt, pred)``.

    Attributes:
        gt, pred, count: ``(P,) int64``.
    """

    gt: np.ndarray
    pred: np.ndarray
    count: np.ndarray


def _as_id_map(ids: Any, what: str) -> np.ndarray:
    if hasattr(ids, "detach"):  # a torch tensor (torch is not imported here: scoring never needs it)
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{what} must be an (H, W) integer id map, got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_SEGMENT_ID):
        raise ValueError(f"{what}: segment ids must be in [0, 2^24), got [{ids.min()}, {ids.max()}]")
    return ids


def pair_table(gt_ids: Any, pred_ids: Any) -> FramePairs:
    """Count the pixels of every ``(gt id, pred id)`` pair of one frame.

    Args:
        gt_ids, pred_ids: ``(H, W)`` integer segment ids in ``[0, 2^24)`` (numpy or torch), same shape.
    Returns:
        :class:`FramePairs`, sorted by ``(gt, pred)``.

    One pass over the pixels: the pair is encoded as one int64 ``gt << 24 | pred``; neighbouring pixels in
    raster order mostly share their pair, so runs are collapsed first and only the (far fewer) run values are
    sorted. Exact for any image.
    """
    gt = _as_id_map(gt_ids, "gt_ids")
    pred = _as_id_map(pred_ids, "pred_ids")
    if gt.shape != pred.shape:
        raise ValueError(f"gt_ids {gt.shape} and pred_ids {pred.shape} must have the same shape")
    key = (gt << ID_BITS) | pred
    key = key.ravel()
    if key.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return FramePairs(empty, empty, empty)
    starts = np.flatnonzero(key[1:] != key[:-1]) + 1
    starts = np.concatenate([[0], starts])
    lengths = np.diff(np.concatenate([starts, [key.size]]))
    values, inverse = np.unique(key[starts], return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=lengths, minlength=len(values))
    return FramePairs(values >> ID_BITS, values & MAX_SEGMENT_ID, np.rint(counts).astype(np.int64))


# ---------------------------------------------------------------------------------------- video tables
@dataclass
class VideoTables:
    """One video's pair tables and segment lists over compact ids (``T`` frames).

    ``gi``/``pi`` index ``gt_ids``/``pred_ids``. Per-frame attribute arrays are ``(T, Ng)`` / ``(T, Np)``;
    an id not listed in a frame's segment list has ``listed = False``, category -1 and area 0 there.

    Attributes:
        gt_ids: ``(Ng,) int64`` every GT id seen in the PNGs or the JSON of the video (incl. 0 if present).
        pred_ids: ``(Np,) int64`` the same for predictions.
        pair_gi, pair_pi, pair_count: per frame ``(P_t,) int64`` arrays.
        gt_listed, gt_crowd: ``(T, Ng) bool``; gt_cat: ``(T, Ng) int64`` dense category index or -1.
        gt_order: ``(T, Ng) int64`` position in the frame's segment list (insertion order for crowd).
        gt_json_area, gt_png_area: ``(T, Ng) int64``.
        pred_listed, pred_crowd: ``(T, Np) bool``; pred_cat: ``(T, Np) int64``; pred_png_area ``(T, Np)``.
        void_gi: compact index of GT id 0, or -1 if no GT void pixel in the video.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    pair_gi: list[np.ndarray]
    pair_pi: list[np.ndarray]
    pair_count: list[np.ndarray]
    gt_listed: np.ndarray
    gt_crowd: np.ndarray
    gt_cat: np.ndarray
    gt_order: np.ndarray
    gt_json_area: np.ndarray
    gt_png_area: np.ndarray
    pred_listed: np.ndarray
    pred_crowd: np.ndarray
    pred_cat: np.ndarray
    pred_png_area: np.ndarray
    void_gi: int

    @property
    def num_frames(self) -> int:
        return len(self.pair_gi)


def _frame_name(names: Sequence[str] | None, t: int, default: str) -> str:
    return names[t] if names is not None else f"{default} of frame {t}"


def _segment_arrays(
    segments: Sequence[Mapping[str, Any]], cats: CategoryTable, where: str, error: type[Exception], who: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, dense category, iscrowd, area)`` of one frame's segment list, validated."""
    n = len(segments)
    ids = np.empty(n, dtype=np.int64)
    cat = np.empty(n, dtype=np.int64)
    crowd = np.zeros(n, dtype=bool)
    area = np.zeros(n, dtype=np.int64)
    for j, seg in enumerate(segments):
        try:
            sid, cid = int(seg["id"]), int(seg["category_id"])
        except (KeyError, TypeError, ValueError) as err:
            raise error(f"{where}: segment {j} of {who} lacks an integer 'id' or 'category_id' ({seg!r}); "
                        "every segments_info entry needs both") from err
        if not 0 < sid <= MAX_SEGMENT_ID:
            raise error(f"{where}: {who} lists segment id {sid}; ids must be in [1, 2^24) (0 is void): "
                        "remove the entry or renumber the segment in the PNG and the JSON")
        if cid not in cats.index:
            raise error(f"{where}: {who} segment {sid} has unknown category_id {cid}; expected one of the GT "
                        f"categories {list(cats.ids)}: map your class ids to the dataset's")
        ids[j], cat[j] = sid, cats.index[cid]
        crowd[j] = int(seg.get("iscrowd", 0)) == 1
        area[j] = int(seg.get("area", 0))
    if len(np.unique(ids)) != n:
        dup = sorted({int(i) for i in ids if np.count_nonzero(ids == i) > 1})
        raise error(f"{where}: {who} lists segment ids {dup} more than once; list each segment once")
    return ids, cat, crowd, area


def build_video_tables(
    frame_pairs: Sequence[FramePairs],
    gt_segments: Sequence[Sequence[Mapping[str, Any]]],
    pred_segments: Sequence[Sequence[Mapping[str, Any]]],
    categories: CategoryTable | Mapping | Sequence,
    *,
    gt_names: Sequence[str] | None = None,
    pred_names: Sequence[str] | None = None,
) -> VideoTables:
    """Compact one video's pair tables and segment lists (see :class:`VideoTables`).

    Args:
        frame_pairs: per frame :func:`pair_table` output.
        gt_segments, pred_segments: per frame ``segments_info`` lists ``[{"id", "category_id", "iscrowd",
            "area"}]`` (``iscrowd``/``area`` optional for predictions).
        categories: the GT categories.
        gt_names, pred_names: per frame file names for error messages.
    Raises:
        DataError: bad GT segment list (unknown category, duplicate or out-of-range id).
        SubmissionError: a predicted id in the PNG but not in its segment list or the reverse, an unknown
            category, a duplicate id; the message names the frame.
    """
    cats = CategoryTable.from_categories(categories)
    T = len(frame_pairs)
    if not (len(gt_segments) == len(pred_segments) == T):
        raise ValueError(f"got {T} pair tables, {len(gt_segments)} GT and {len(pred_segments)} predicted "
                         "segment lists: one of each per frame")
    gt_arrays, pred_arrays = [], []
    for t in range(T):
        gt_arrays.append(_segment_arrays(gt_segments[t], cats, _frame_name(gt_names, t, "GT"), DataError,
                                         "the GT JSON"))
        pname = _frame_name(pred_names, t, "prediction")
        pa = _segment_arrays(pred_segments[t], cats, pname, SubmissionError, "pred.json")
        # The official sanity checks: the PNG and the segment list must describe the same segments.
        in_png = np.unique(frame_pairs[t].pred)
        in_png = in_png[in_png != PANOPTIC_VOID_ID]
        missing_json = np.setdiff1d(in_png, pa[0])
        if missing_json.size:
            raise SubmissionError(
                f"{pname}: segment ids {missing_json[:10].tolist()} are in the PNG but not in this frame's "
                "pred.json segments_info; list every non-zero PNG id (with its category_id) or paint it 0 (void)")
        missing_png = np.setdiff1d(pa[0], in_png)
        if missing_png.size:
            raise SubmissionError(
                f"{pname}: pred.json lists segment ids {missing_png[:10].tolist()} that have no pixel in the "
                "PNG; remove them from segments_info or check the id colours (id = R + 256 G + 256^2 B)")
        pred_arrays.append(pa)

    gt_ids = np.unique(np.concatenate([np.zeros(0, np.int64)] + [p.gt for p in frame_pairs]
                                      + [a[0] for a in gt_arrays]))
    pred_ids = np.unique(np.concatenate([np.zeros(0, np.int64)] + [p.pred for p in frame_pairs]
                                        + [a[0] for a in pred_arrays]))
    Ng, Np = len(gt_ids), len(pred_ids)

    def frame_attrs(arrays, ids_all, n):
        listed = np.zeros((T, n), dtype=bool)
        cat = np.full((T, n), -1, dtype=np.int64)
        crowd = np.zeros((T, n), dtype=bool)
        order = np.zeros((T, n), dtype=np.int64)
        area = np.zeros((T, n), dtype=np.int64)
        for t, (ids, c, cr, ar) in enumerate(arrays):
            idx = np.searchsorted(ids_all, ids)
            listed[t, idx], cat[t, idx], crowd[t, idx], area[t, idx] = True, c, cr, ar
            order[t, idx] = np.arange(len(ids))
        return listed, cat, crowd, order, area

    gt_listed, gt_cat, gt_crowd, gt_order, gt_json_area = frame_attrs(gt_arrays, gt_ids, Ng)
    pred_listed, pred_cat, pred_crowd, _, _ = frame_attrs(pred_arrays, pred_ids, Np)
    pair_gi = [np.searchsorted(gt_ids, p.gt) for p in frame_pairs]
    pair_pi = [np.searchsorted(pred_ids, p.pred) for p in frame_pairs]
    pair_count = [p.count for p in frame_pairs]
    gt_png_area = np.zeros((T, Ng), dtype=np.int64)
    pred_png_area = np.zeros((T, Np), dtype=np.int64)
    for t in range(T):
        np.add.at(gt_png_area[t], pair_gi[t], pair_count[t])
        np.add.at(pred_png_area[t], pair_pi[t], pair_count[t])
    void = np.searchsorted(gt_ids, PANOPTIC_VOID_ID)
    void_gi = int(void) if Ng and void < Ng and gt_ids[void] == PANOPTIC_VOID_ID else -1
    return VideoTables(gt_ids, pred_ids, pair_gi, pair_pi, pair_count, gt_listed, gt_crowd, gt_cat, gt_order,
                       gt_json_area, gt_png_area, pred_listed, pred_crowd, pred_cat, pred_png_area, void_gi)


# ------------------------------------------------------------------------------------------- counting
@dataclass
class PQCounts:
    """Per-window-size, per-class PQ statistics; merging is addition (integers, float64 IoU sums).

    Attributes:
        tp, fp, fn: ``(K, C) int64``.
        iou: ``(K, C) float64`` sum of the IoUs of the true positives.
    """

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray

    @classmethod
    def zeros(cls, num_windows: int, num_classes: int) -> PQCounts:
        z = np.zeros((num_windows, num_classes), dtype=np.int64)
        return cls(z.copy(), z.copy(), z.copy(), np.zeros((num_windows, num_classes), dtype=np.float64))

    def __add__(self, other: PQCounts) -> PQCounts:
        return PQCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou + other.iou)


def _first_listed(listed: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each id, ``any(listed)`` and, from the first frame listing it, the values of ``arrays``."""
    first = np.argmax(listed, axis=0)
    cols = np.arange(listed.shape[1])
    return (listed.any(axis=0), first, *(a[first, cols] for a in arrays))


def window_counts(
    tables: VideoTables, start: int, stop: int, protocol: VPSProtocol, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Score the window of frames ``start..stop-1`` of a video.

    Returns:
        ``tp, fp, fn`` ``(C,) int64`` and ``iou`` ``(C,) float64`` of this window.
    """
    Ng, Np = len(tables.gt_ids), len(tables.pred_ids)
    C = num_classes
    # Sum the pair tables of the window's frames: key = gi * Np + pi.
    keys = np.concatenate([tables.pair_gi[t] * Np + tables.pair_pi[t] for t in range(start, stop)])
    counts = np.concatenate([tables.pair_count[t] for t in range(start, stop)])
    keys, inv = np.unique(keys, return_inverse=True)
    inter = np.zeros(len(keys), dtype=np.int64)
    np.add.at(inter, inv.ravel(), counts)
    gi, pi = keys // max(Np, 1), keys % max(Np, 1)

    sl = slice(start, stop)
    g_listed, g_first, g_cat, g_crowd = _first_listed(tables.gt_listed[sl], tables.gt_cat[sl],
                                                      tables.gt_crowd[sl])
    g_order = g_first * (tables.gt_order.max(initial=0) + 1) + tables.gt_order[sl][g_first, np.arange(Ng)]
    g_png = tables.gt_png_area[sl].sum(axis=0)
    g_area = tables.gt_json_area[sl].sum(axis=0) if protocol.gt_area_from == "json" else g_png
    g_small = (g_png > 0) & (g_png < protocol.small_gt_threshold)
    p_listed, _, p_cat = _first_listed(tables.pred_listed[sl], tables.pred_cat[sl])
    p_area = tables.pred_png_area[sl].sum(axis=0)

    void_p = np.zeros(Np, dtype=np.int64)
    if tables.void_gi >= 0:
        on_void = gi == tables.void_gi
        void_p[pi[on_void]] = inter[on_void]  # one row per (void, pred) after the unique above

    # Matching: every candidate pair is tested, as the official loop does.
    cand = g_listed[gi] & p_listed[pi] & ~g_crowd[gi] & ~g_small[gi] & (g_cat[gi] == p_cat[pi])
    union = p_area[pi] + g_area[gi] - inter - void_p[pi]
    # IoU > 0.5 <=> 2 * inter > union for integers (the official float test gives the same answer).
    tp = cand & (2 * inter > union)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter[tp] / union[tp]
    tp_cat = g_cat[gi[tp]]
    tp_c = np.bincount(tp_cat, minlength=C).astype(np.int64)
    iou_c = np.bincount(tp_cat, weights=iou, minlength=C) if tp_cat.size else np.zeros(C)
    g_matched = np.zeros(Ng, dtype=bool)
    g_matched[gi[tp]] = True
    p_matched = np.zeros(Np, dtype=bool)
    p_matched[pi[tp]] = True

    fn_mask = g_listed & ~g_matched & ~g_crowd & ~g_small
    fn_c = np.bincount(g_cat[fn_mask], minlength=C).astype(np.int64)

    # The crowd tube of each category: the last one in insertion order (official dict overwrite).
    crowd_of_cat = np.full(C, -1, dtype=np.int64)
    crowd_idx = np.flatnonzero(g_listed & g_crowd)
    if crowd_idx.size:
        crowd_idx = crowd_idx[np.argsort(g_order[crowd_idx], kind="stable")][::-1]
        cat_u, first = np.unique(g_cat[crowd_idx], return_index=True)  # first of reversed = last
        crowd_of_cat[cat_u] = crowd_idx[first]
    on_crowd = (gi == crowd_of_cat[np.maximum(p_cat[pi], 0)]) & (p_cat[pi] >= 0)
    crowd_p = np.zeros(Np, dtype=np.int64)
    np.add.at(crowd_p, pi[on_crowd], inter[on_crowd])
    ignored = 2 * (void_p + crowd_p) > p_area  # (void + crowd) / area > 0.5
    fp_mask = p_listed & ~p_matched & ~ignored
    fp_c = np.bincount(p_cat[fp_mask], minlength=C).astype(np.int64)
    return tp_c, fp_c, fn_c, iou_c


def video_counts(tables: VideoTables, protocol: VPSProtocol, num_classes: int) -> PQCounts:
    """Sum :func:`window_counts` over every window of every size of ``protocol`` in one video."""
    out = PQCounts.zeros(len(protocol.windows), num_classes)
    for w, (_, nframes) in enumerate(protocol.windows):
        for start in range(0, tables.num_frames - nframes + 1):
            tp, fp, fn, iou = window_counts(tables, start, start + nframes, protocol, num_classes)
            out.tp[w] += tp
            out.fp[w] += fp
            out.fn[w] += fn
            out.iou[w] += iou
    return out


def video_pq_counts(
    gt_ids: Sequence[Any],
    gt_segments: Sequence[Sequence[Mapping[str, Any]]],
    pred_ids: Sequence[Any],
    pred_segments: Sequence[Sequence[Mapping[str, Any]]],
    categories: CategoryTable | Mapping | Sequence,
    protocol: str | VPSProtocol = CITYSCAPES_VPS_PROTOCOL,
) -> PQCounts:
    """VPQ counts of one video from id maps: ``T`` frames of ``(H, W)`` ids and their segment lists."""
    cats = CategoryTable.from_categories(categories)
    pairs = [pair_table(g, p) for g, p in zip(gt_ids, pred_ids, strict=True)]
    tables = build_video_tables(pairs, gt_segments, pred_segments, cats)
    return video_counts(tables, get_protocol(protocol), len(cats))


# -------------------------------------------------------------------------------------------- summary
def pq_average(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, iou: np.ndarray, cats: CategoryTable,
    isthing: bool | None, excluded: Sequence[int] = (),
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """Average PQ/SQ/RQ of one window size over the categories with ``TP + FP + FN > 0``.

    Args:
        tp, fp, fn: ``(C,)`` integers; iou: ``(C,)`` float64.
        isthing: None = all categories, True = things only, False = stuff only.
        excluded: category ids left out (VIPER: 11).
    Returns:
        ``({"pq", "sq", "rq", "n"}, {category id: {"pq", "sq", "rq", "iou", "tp", "fp", "fn"}})``, fractions.
        With ``n == 0`` the averages are 0.0 (the official code divides by zero).
    """
    pq = sq = rq = 0.0
    n = 0
    per_class: dict[int, dict[str, float]] = {}
    for c, cid in enumerate(cats.ids):
        if isthing is not None and bool(cats.isthing[c]) != isthing:
            continue
        if cid in excluded:
            continue
        t, f_p, f_n, s = int(tp[c]), int(fp[c]), int(fn[c]), float(iou[c])
        if t + f_p + f_n == 0:
            per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "iou": 0.0, "tp": 0, "fp": 0, "fn": 0}
            continue
        n += 1
        denom = t + 0.5 * f_p + 0.5 * f_n
        pq_c, sq_c, rq_c = s / denom, (s / t if t else 0.0), t / denom
        per_class[cid] = {"pq": pq_c, "sq": sq_c, "rq": rq_c, "iou": s, "tp": t, "fp": f_p, "fn": f_n}
        pq, sq, rq = pq + pq_c, sq + sq_c, rq + rq_c
    if n == 0:
        return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def summarize_vpq(counts: PQCounts, categories: CategoryTable | Mapping | Sequence,
                  protocol: str | VPSProtocol) -> dict[str, Any]:
    """VPQ numbers from accumulated counts (fractions in [0, 1]).

    Returns:
        ``{"windows": {k label: {"nframes", "all", "thing", "stuff": {"pq","sq","rq","n"},
        "per_class": {category id: {...}}}}, "vpq": {"all", "thing", "stuff"}}`` where ``vpq`` is the mean
        over window sizes (the official ``vpq-final.txt`` numbers divided by 100).
    """
    cats = CategoryTable.from_categories(categories)
    protocol = get_protocol(protocol)
    windows: dict[int, dict[str, Any]] = {}
    for w, (k, nframes) in enumerate(protocol.windows):
        entry: dict[str, Any] = {"nframes": nframes}
        for name, isthing in (("all", None), ("thing", True), ("stuff", False)):
            avg, per_class = pq_average(counts.tp[w], counts.fp[w], counts.fn[w], counts.iou[w], cats, isthing,
                                        protocol.excluded_categories)
            entry[name] = avg
            if isthing is None:
                entry["per_class"] = per_class
        windows[k] = entry
    # The official final numbers are the mean of 100 * PQ over window sizes; the same, as fractions.
    vpq = {name: sum(windows[k][name]["pq"] for k in windows) / len(windows) for name in ("all", "thing", "stuff")}
    return {"windows": windows, "vpq": vpq}

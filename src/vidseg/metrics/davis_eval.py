"""Score a DAVIS results folder and write the official result tables.

A results folder is ``<results_dir>/<sequence>/<frame>.png``: one indexed (palette or grayscale) PNG per
frame, pixel value = object id, ids as in the first-frame annotation. Scoring follows the DAVIS 2017
semi-supervised protocol (``shared/reference/davis.md``) with the numbers of ``vidseg.metrics.j_and_f``,
which equal the official toolkit's. The tables are the toolkit's ``global_results-<split>.csv`` and
``per-sequence_results-<split>.csv`` (same columns, ``"%.3f"``), plus ``results-<split>.json`` at full
precision. Unlike the toolkit's script, existing tables are always recomputed and overwritten, never read.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidseg.data.io import MaskFormatError, read_mask, write_json_atomic, write_text_atomic
from vidseg.metrics.j_and_f import GLOBAL_NAMES, STAT_NAMES, evaluate_frames, num_objects_of, summarize

PER_SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


@dataclass
class DavisResults:
    """DAVIS numbers of one evaluation.

    Attributes:
        global_metrics: ``{"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"}``,
            means over all objects of all sequences.
        per_object: ``(name, J-Mean, F-Mean)`` per object, ``name = "<seq>_<obj>"``, in sequence order: the
            rows of the official per-sequence table.
        object_stats: ``name -> {"J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"}``.
        per_frame: ``name -> {"sequence", "object", "frames": [frame ids], "J": [...], "F": [...]}``.
    """

    global_metrics: dict[str, float]
    per_object: list[tuple[str, float, float]] = field(default_factory=list)
    object_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    per_frame: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_sequences(cls, sequence_results: Iterable[Mapping[str, Any]]) -> DavisResults:
        """Collect ``evaluate_sequence`` / ``evaluate_frames`` dicts, e.g. ``JAndF.sequence_results``."""
        per_object, object_stats, per_frame, rows = [], {}, {}, []
        for res in sequence_results:
            for k, name in enumerate(res["object_names"]):
                stats = {s: float(v) for s, v in zip(STAT_NAMES, res["stats"][k], strict=True)}
                per_object.append((name, stats["J-Mean"], stats["F-Mean"]))
                object_stats[name] = stats
                per_frame[name] = {
                    "sequence": res["sequence"],
                    "object": k + 1,
                    "frames": list(res["frame_ids"]),
                    "J": [float(v) for v in res["J"][k]],
                    "F": [float(v) for v in res["F"][k]],
                }
                rows.append(res["stats"][k])
        stats = np.asarray(rows, dtype=np.float64).reshape(-1, len(STAT_NAMES))
        return cls(summarize(stats), per_object, object_stats, per_frame)


def _read_results_frame(
    path: Path, gt_path: Path, gt_shape: tuple[int, int], *, binary_255: bool
) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: prediction missing for annotated frame {gt_path.name}; the results folder needs one "
            f"indexed PNG per frame, named like the annotations (<results>/<sequence>/{gt_path.stem}.png)"
        )
    pred = read_mask(path, binary_255=binary_255)  # raises MaskFormatError naming the file for RGB masks
    if pred.shape != gt_shape:
        raise MaskFormatError(
            f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} (WxH) but the annotation {gt_path} is "
            f"{gt_shape[1]}x{gt_shape[0]}; write masks at the annotation resolution (480p for DAVIS 480p)"
        )
    return pred


def evaluate_folder(
    gt_mask_paths: Mapping[str, Sequence[str | os.PathLike]],
    results_dir: str | os.PathLike,
    *,
    binary_255: bool = False,
    progress: bool = False,
    bound_th: float = 0.008,
) -> DavisResults:
    """Score ``<results_dir>/<seq>/<frame>.png`` against ground-truth annotations.

    Args:
        gt_mask_paths: ``sequence -> GT annotation paths of all its frames, in frame order``. Frame ids are
            the file stems; frames 1..T-2 are scored (so results for the first and last frame are optional,
            as with the toolkit), objects are 1..max id of the first annotation.
        results_dir: the results folder.
        binary_255: DAVIS 2016 style 0/255 masks: every non-zero pixel, in GT and results, is object 1.
        progress: show a progress bar over sequences.
    Returns:
        :class:`DavisResults` in the mapping's sequence order.
    Raises:
        FileNotFoundError: results folder, a sequence folder or a frame PNG is missing (message names it).
        MaskFormatError: an RGB or unreadable PNG, or a size different from the annotation.
        ValueError: a sequence with fewer than 3 frames, or a prediction with an object id the first-frame
            annotation does not have (names the PNG).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(
            f"results folder not found: {results_dir}; expected <results_dir>/<sequence>/<frame>.png, "
            "e.g. written by `python -m vidseg.predict`"
        )
    items: Iterable = gt_mask_paths.items()
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(gt_mask_paths), desc="J&F", unit="seq")
    sequence_results = []
    for seq, paths in items:
        paths = [Path(p) for p in paths]
        seq_dir = results_dir / seq
        if not seq_dir.is_dir():
            raise FileNotFoundError(
                f"results for sequence {seq!r} not found: {seq_dir} is missing; write one PNG per frame there"
                f" (e.g. {seq_dir / (paths[0].stem if paths else '00000')}.png) or leave {seq!r} out of the "
                "sequences to evaluate"
            )
        if len(paths) < 3:
            raise ValueError(
                f"sequence {seq!r} has {len(paths)} annotated frames; DAVIS scores frames 1..T-2"
            )
        first = read_mask(paths[0], binary_255=binary_255)
        num_objects = num_objects_of(first)
        gts, preds = [], []
        for gt_path in paths[1:-1]:  # the toolkit reads neither the first nor the last frame's result
            gt = read_mask(gt_path, binary_255=binary_255)
            if gt.shape != first.shape:
                raise MaskFormatError(
                    f"{gt_path}: annotation size {gt.shape} differs from {paths[0]} {first.shape}"
                )
            pred_path = seq_dir / f"{gt_path.stem}.png"
            pred = _read_results_frame(pred_path, gt_path, first.shape, binary_255=binary_255)
            if int(pred.max()) > num_objects:
                raise ValueError(
                    f"{pred_path}: object id {int(pred.max())} but sequence {seq!r} has {num_objects} objects"
                    f" (max id of its first annotation {paths[0]}); predicted ids must be those of the first "
                    "frame (the official toolkit stops here too)"
                )
            gts.append(gt)
            preds.append(pred)
        sequence_results.append(
            evaluate_frames(
                np.stack(gts),
                np.stack(preds),
                num_objects,
                sequence=seq,
                frame_ids=[p.stem for p in paths[1:-1]],
                bound_th=bound_th,
            )
        )
    return DavisResults.from_sequences(sequence_results)


def _fmt(value: float) -> str:
    # pandas' to_csv(float_format="%.3f") as the toolkit calls it; NaN becomes an empty field there.
    return "" if math.isnan(value) else f"{value:.3f}"  # same digits as "%.3f"


def _csv(rows: Iterable[Sequence[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value  # NaN is not JSON


def write_results(results: DavisResults, out_dir: str | os.PathLike, split: str) -> dict[str, Path]:
    """Write ``global_results-<split>.csv``, ``per-sequence_results-<split>.csv``, ``results-<split>.json``.

    The CSVs have the toolkit's columns and ``"%.3f"`` format; the JSON keeps full precision and the
    per-frame J/F of every object. Files are written atomically and always overwritten (the toolkit's script
    re-reads existing CSVs instead of recomputing them, which silently reports stale numbers).

    Returns:
        ``{"global": path, "per_sequence": path, "json": path}``.
    """
    out_dir = Path(out_dir)
    paths = {
        "global": out_dir / f"global_results-{split}.csv",
        "per_sequence": out_dir / f"per-sequence_results-{split}.csv",
        "json": out_dir / f"results-{split}.json",
    }
    g = results.global_metrics
    write_text_atomic(paths["global"], _csv([GLOBAL_NAMES, [_fmt(g[k]) for k in GLOBAL_NAMES]]))
    write_text_atomic(
        paths["per_sequence"],
        _csv([PER_SEQUENCE_COLUMNS, *([name, _fmt(j), _fmt(f)] for name, j, f in results.per_object)]),
    )
    per_object = []
    for name, _, _ in results.per_object:
        frame = results.per_frame.get(name, {})
        per_object.append(
            {
                "name": name,
                **{k: _json_float(v) for k, v in results.object_stats[name].items()},
                **{k: frame[k] for k in ("sequence", "object", "frames") if k in frame},
                **{k: [_json_float(v) for v in frame[k]] for k in ("J", "F") if k in frame},
            }
        )
    write_json_atomic(
        paths["json"],
        {"split": split, "global": {k: _json_float(g[k]) for k in GLOBAL_NAMES}, "per_object": per_object},
    )
    return paths


def format_table(results: DavisResults, split: str | None = None) -> str:
    """Human-readable summary: a ``J&F-Mean: <value>`` line, the global table and the per-object table."""
    g = results.global_metrics
    title = f" for {split}" if split else ""

    def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
        rows = [list(r) for r in rows]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
        return [
            " ".join(str(c).rjust(wd) for c, wd in zip(r, widths, strict=True)) for r in [list(header), *rows]
        ]

    lines = [
        f"J&F-Mean: {_fmt(g['J&F-Mean']) or 'nan'}  (J-Mean {_fmt(g['J-Mean']) or 'nan'}, "
        f"F-Mean {_fmt(g['F-Mean']) or 'nan'}; {len(results.per_object)} objects)",
        f"--------------------------- Global results{title} ---------------------------",
        *table(GLOBAL_NAMES, [[_fmt(g[k]) or "nan" for k in GLOBAL_NAMES]]),
        "",
        f"---------- Per sequence results{title} ----------",
        *table(
            PER_SEQUENCE_COLUMNS, ([n, _fmt(j) or "nan", _fmt(f) or "nan"] for n, j, f in results.per_object)
        ),
    ]
    return "\n".join(lines) + "\n"

"""Score a DAVIS results folder and write the official result tables.

A results folder is ``<results_dir>/<sequence>/<frame>.png``: one indexed (palette or grayscale) PNG per
frame, pixel value = object id, ids as in the first-frame annotation. Scoring follows the DAVIS 2017
semi-supervised protocol (``shared/reference/davis.md``) with the numbers of ``vidseg.metrics.j_and_f``,
which equal the official toolkit's. The tables are the toolkit's ``global_results-<split>.csv`` and
``per-sequence_results-<split>.csv`` (same columns, ``"%.3f"``), plus ``results-<split>.json`` at full
precision and the figure ``results-<split>-jf.png`` (:mod:`vidseg.metrics.jf_plots`). Unlike the toolkit's
script, existing tables are always recomputed and overwritten, never read.

Speed: sequences, cut into pieces of at most 40 frames at 480p, are scored in parallel worker processes (one
per usable core by default), costliest first, each reading its own PNGs (plain 8-bit mask PNGs are inflated
directly, with zlib-ng when installed), and nothing here imports torch (the figure is drawn with Pillow).
``python -m bench.jf_speed`` times a whole ``vidseg.evaluate`` process against vos-benchmark and, with
``--official``, the official toolkit.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import multiprocessing
import os
import sys
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidseg.data.io import (
    MaskFormatError,
    png_header,
    read_mask,
    read_png_header,
    warn_user,
    write_json_atomic,
    write_text_atomic,
)
from vidseg.data.names import checked_join
from vidseg.errors import DatasetLayoutError

try:  # zlib-ng inflates mask PNGs 4x faster than zlib (0.2 vs 0.8 ms at 854x480), with the same bytes out
    from zlib_ng import zlib_ng as _inflate
except ImportError:  # pragma: no cover - zlib-ng is a dependency; plain zlib gives the same labels
    _inflate = zlib
from vidseg.metrics.j_and_f import (
    GLOBAL_NAMES,
    STAT_NAMES,
    frame_scores,
    num_objects_of,
    sequence_result,
    summarize,
)
from vidseg.metrics.jf_plots import plot_results

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


_png_header = png_header  # the one PNG header parser (vidseg.data.io), also used by the panoptic reader


def _read_plain_png_into(path: Path, out: np.ndarray) -> bool:
    """Decode ``path`` into ``out`` (``(H, W) uint8``) if it is a plain label PNG; False (``out`` untouched) if not.

    Masks written by PIL (DAVIS annotations, vidseg's and most methods' results) are 8-bit palette or
    grayscale PNGs without row filters: their pixels are the inflated image data minus one filter byte per
    row. Reading them here skips PIL's three copies (decode buffer, ``tobytes``, array) and inflates with
    zlib-ng when installed: 0.3 instead of 1.0 ms per 854x480 mask, which was half of the scoring time.
    Anything else (another bit depth or colour type, interlacing, filtered rows, a size other than ``out``'s,
    an unreadable or corrupt file) returns False: the caller then reads it with ``read_mask``, whose checks
    and error messages apply.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return False
    header = _png_header(data)
    if header is None:
        return False
    width, height, depth, colour, interlace = header
    if depth != 8 or colour not in (0, 3) or interlace != 0 or out.shape != (height, width):
        return False  # 0 = grayscale ("L"), 3 = palette ("P"): one byte per pixel, the label
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            chunks.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    try:
        raw = _inflate.decompress(b"".join(chunks))  # its Adler-32 check catches corrupt data
    except (_inflate.error, zlib.error):
        return False
    if len(raw) != height * (width + 1):
        return False
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, width + 1)
    if rows[:, 0].any():  # some row is filtered: leave the unfiltering to PIL
        return False
    out[...] = rows[:, 1:]
    return True


def _read_frame(path: Path, slot: np.ndarray, *, binary_255: bool) -> np.ndarray:
    """Read a mask into ``slot`` and return it; a mask of another size is returned as read (caller raises).

    Same labels as ``read_mask`` (tested); raises its errors (missing, RGB, corrupt) naming the file.
    """
    if _read_plain_png_into(path, slot):
        if binary_255:
            np.minimum(slot, 1, out=slot)  # read_mask's labels > 0, in place
        return slot
    labels = read_mask(path, binary_255=binary_255)
    if labels.shape != slot.shape:
        return labels
    slot[...] = labels
    return slot


@dataclass(frozen=True)
class _PieceJob:
    """What a worker needs to read and score some consecutive scored frames of one sequence (small, picklable)."""

    name: str
    first_gt: Path  # the sequence's first annotation: its object count and size
    gt_paths: tuple[Path, ...]  # the annotations of the frames to score
    seq_dir: Path
    binary_255: bool
    bound_th: float


# Long sequences are cut into pieces of at most this many pixels (40 frames at 480p, 8 at 1080p), scored as
# separate jobs: frames are scored independently, so the numbers do not change, the pool stays busy to the
# end however long the sequences are, and a worker's two frame buffers stay bounded. Much smaller pieces
# lose the batching of the boundary search (5-frame pieces were 15% slower overall).
_PIECE_PIXELS = 1 << 24
_buffers = threading.local()


def _frame_buffers(frames: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """This thread's ``(frames, H, W) uint8`` GT and prediction buffers, reused from piece to piece."""
    held = getattr(_buffers, "arrays", None)
    if held is None or held[0].shape[1:] != shape or held[0].shape[0] < frames:
        held = _buffers.arrays = (np.empty((frames, *shape), np.uint8), np.empty((frames, *shape), np.uint8))
    return held[0][:frames], held[1][:frames]


def _pieces(paths: Sequence[Path], frame_pixels: int) -> list[tuple[Path, ...]]:
    """The scored frames ``paths[1:-1]`` cut into near-equal runs of at most ``_PIECE_PIXELS`` pixels."""
    scored = tuple(paths[1:-1])  # the toolkit reads neither the first nor the last frame's result
    count = -(-len(scored) // max(1, _PIECE_PIXELS // max(1, frame_pixels)))
    bounds = [round(k * len(scored) / count) for k in range(count + 1)]
    return [scored[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _score_piece(job: _PieceJob) -> tuple[np.ndarray, np.ndarray]:
    """Read and score one piece: ``(J, F)``, each ``(N, len(job.gt_paths))`` float64."""
    first = read_mask(job.first_gt, binary_255=job.binary_255)
    num_objects = num_objects_of(first)
    gts, preds = _frame_buffers(len(job.gt_paths), first.shape)
    max_pred = 0
    for t, gt_path in enumerate(job.gt_paths):
        gt = _read_frame(gt_path, gts[t], binary_255=job.binary_255)
        if gt.shape != first.shape:
            raise MaskFormatError(f"{gt_path}: annotation size {gt.shape} differs from {job.first_gt} {first.shape}")
        pred_path = job.seq_dir / f"{gt_path.stem}.png"
        if not pred_path.is_file():
            raise FileNotFoundError(
                f"{pred_path}: prediction missing for annotated frame {gt_path.name}; the results folder needs "
                f"one indexed PNG per frame, named like the annotations (<results>/<sequence>/{gt_path.stem}.png)"
            )
        pred = _read_frame(pred_path, preds[t], binary_255=job.binary_255)  # RGB -> MaskFormatError
        if pred.shape != first.shape:
            raise MaskFormatError(
                f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} (WxH) but the annotation {gt_path} "
                f"is {first.shape[1]}x{first.shape[0]}; write masks at the annotation resolution (480p for DAVIS "
                "480p)"
            )
        frame_max = int(pred.max())
        if frame_max > num_objects:
            raise MaskFormatError(
                f"{pred_path}: object id {frame_max} but sequence {job.name!r} has {num_objects} objects"
                f" (max id of its first annotation {job.first_gt}); predicted ids must be those of the first "
                "frame (the official toolkit stops here too)"
            )
        max_pred = max(max_pred, frame_max)
    return frame_scores(gts, preds, num_objects, bound_th=job.bound_th, max_pred=max_pred)


def default_workers() -> int:
    """Processes for scoring: the cores this process may run on (``sched_getaffinity``), else ``cpu_count``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts a worker in milliseconds with numpy and PIL already imported; spawn or forkserver would
    # re-import the entry point (Hydra) in every worker. fork is unsafe only when another thread may hold a
    # lock, so it is used only while this process runs a single Python thread.
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def evaluate_folder(
    gt_mask_paths: Mapping[str, Sequence[str | os.PathLike]],
    results_dir: str | os.PathLike,
    *,
    binary_255: bool = False,
    progress: bool = False,
    bound_th: float = 0.008,
    workers: int | None = None,
) -> DavisResults:
    """Score ``<results_dir>/<seq>/<frame>.png`` against ground-truth annotations.

    Sequences, cut into pieces of a few dozen frames, are scored in parallel worker processes, each reading
    its own PNGs; the results are merged in the mapping's order, so they are identical to a serial run
    whatever the number of workers.

    Args:
        gt_mask_paths: ``sequence -> GT annotation paths of all its frames, in frame order``. Frame ids are
            the file stems; frames 1..T-2 are scored (so results for the first and last frame are optional,
            as with the toolkit), objects are 1..max id of the first annotation.
        results_dir: the results folder.
        binary_255: DAVIS 2016 style 0/255 masks: every non-zero pixel, in GT and results, is object 1.
        progress: show a progress bar over the scored frames.
        workers: processes scoring at once; None = :func:`default_workers` (at most one per piece), 0 or
            1 = in this process.
    Returns:
        :class:`DavisResults` in the mapping's sequence order.
    Raises:
        FileNotFoundError: results folder, a sequence folder or a frame PNG is missing (message names it).
        MaskFormatError: an RGB, RGBA or unreadable PNG, a size different from the annotation, or a prediction
            with an object id the first-frame annotation does not have (names the PNG).
        DatasetLayoutError: no sequence, no object in any sequence, or a sequence with fewer than 3 frames.
            With several bad sequences, the first in the mapping's
            order is reported, as in a serial run.
    Warns (``vidseg: warning:`` on stderr, scored as the toolkit scores them): result PNGs without an
    annotation of the same name (not read), sequences whose first annotation has no object (add nothing).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(
            f"results folder not found: {results_dir}; expected <results_dir>/<sequence>/<frame>.png, "
            "e.g. written by `python -m vidseg.predict`"
        )
    if not gt_mask_paths:
        raise DatasetLayoutError(f"no sequence to score against {results_dir}: the ground truth lists no "
                                 "sequence (an empty ImageSets file?); a score of nothing would be NaN")
    sequences: list[tuple[str, list[Path], int]] = []  # (name, scored frames, number of pieces)
    jobs: list[_PieceJob] = []
    extra_results: list[str] = []
    for seq, seq_paths in gt_mask_paths.items():  # folder-level checks first: fail before any scoring
        paths = tuple(Path(p) for p in seq_paths)
        seq_dir = checked_join(results_dir, seq, source=results_dir, what="sequence name")
        if not seq_dir.is_dir():
            raise FileNotFoundError(
                f"results for sequence {seq!r} not found: {seq_dir} is missing; write one PNG per frame there"
                f" (e.g. {seq_dir / (paths[0].stem if paths else '00000')}.png) or leave {seq!r} out of the "
                "sequences to evaluate"
            )
        if len(paths) < 3:
            raise DatasetLayoutError(
                f"sequence {seq!r} has {len(paths)} annotated frames ({paths[0].parent if paths else 'none'}); "
                "DAVIS scores frames 1..T-2, so a sequence needs at least 3: fix the annotations or leave the "
                "sequence out"
            )
        _note_extra_results(seq_dir, paths, extra_results)
        pieces = _pieces(paths, _frame_pixels(paths[0]))
        sequences.append((seq, list(paths[1:-1]), len(pieces)))
        jobs += [_PieceJob(seq, paths[0], piece, seq_dir, binary_255, bound_th) for piece in pieces]
    workers = default_workers() if workers is None else workers
    workers = max(1, min(workers, len(jobs)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(job.gt_paths) for job in jobs), desc="J&F", unit="frame")
    try:
        if workers == 1:
            scores = []
            for job in jobs:
                scores.append(_score_piece(job))
                if bar is not None:
                    bar.update(len(job.gt_paths))
            _buffers.__dict__.pop("arrays", None)  # this process goes on: do not keep the frames
        else:
            scores = _score_in_pool(jobs, workers, bar)
    finally:
        if bar is not None:
            bar.close()
    results, first_piece, no_objects = [], 0, []
    for seq, scored, count in sequences:  # each sequence's pieces are consecutive jobs
        own = scores[first_piece : first_piece + count]
        first_piece += count
        j = np.concatenate([piece_j for piece_j, _ in own], axis=1)
        f = np.concatenate([piece_f for _, piece_f in own], axis=1)
        if j.shape[0] == 0:
            no_objects.append(seq)
        results.append(sequence_result(seq, [p.stem for p in scored], j, f))
    if len(no_objects) == len(sequences):
        raise DatasetLayoutError(
            f"no object to score: the first annotation of every sequence ({', '.join(no_objects[:5])}"
            f"{' ...' if len(no_objects) > 5 else ''}) is all background; J&F would be NaN. Objects are the ids "
            "1..max of a sequence's first annotation: check the annotation folder"
        )
    if no_objects:
        warn_user(f"{len(no_objects)} sequence(s) have no object in their first annotation and add nothing to "
                  f"the means, as in the DAVIS toolkit: {', '.join(no_objects[:5])}")
    if extra_results:
        warn_user(f"{len(extra_results)} PNG(s) in {results_dir} have no annotation of the same name and are not "
                  f"scored (the DAVIS toolkit ignores them too); first: {extra_results[0]}. Check that the results "
                  "are named like the annotations")
    return DavisResults.from_sequences(results)


def _note_extra_results(seq_dir: Path, gt_paths: Sequence[Path], out: list[str]) -> None:
    """Add to ``out`` the result PNGs of ``seq_dir`` with no annotation of the same name (one listdir)."""
    names = {p.stem for p in gt_paths}
    with contextlib.suppress(OSError):
        out += sorted(str(p) for p in seq_dir.iterdir()
                      if p.suffix == ".png" and not p.name.startswith(".") and p.stem not in names)


def _frame_pixels(path: Path) -> int:
    """Pixels of the PNG ``path`` from its header (0 if unreadable: the worker then reports the file)."""
    header = read_png_header(path)
    return 0 if header is None else header[0] * header[1]


def _piece_bytes(job: _PieceJob) -> int:
    """Total size of the piece's annotation files (0 for a file that cannot be read: the worker reports it)."""
    total = 0
    for path in job.gt_paths:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def _costliest_first(jobs: Sequence[_PieceJob]) -> list[int]:
    """Job indices, costliest first, so the pool does not end waiting on a costly piece started last. The cost
    is mostly the boundary search, which grows with the boundary length, as the annotations' PNG sizes do."""
    return sorted(range(len(jobs)), key=lambda i: -_piece_bytes(jobs[i]))


def _score_in_pool(jobs: list[_PieceJob], workers: int, bar) -> list[tuple[np.ndarray, np.ndarray]]:
    """``_score_piece`` of every job in a process pool; results (and the first error) in job order."""
    order = _costliest_first(jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        futures = {i: pool.submit(_score_piece, jobs[i]) for i in order}
        if bar is not None:
            sizes = {futures[i]: len(jobs[i].gt_paths) for i in order}
            for done in as_completed(futures.values()):
                bar.update(sizes[done])
        try:
            return [futures[i].result() for i in range(len(jobs))]
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise


def _fmt(value: float) -> str:
    # pandas' to_csv(float_format="%.3f") as the toolkit calls it; NaN becomes an empty field there.
    return "" if math.isnan(value) else f"{value:.3f}"  # same digits as "%.3f"


def _csv(rows: Iterable[Sequence[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value  # NaN is not JSON


def write_results(
    results: DavisResults, out_dir: str | os.PathLike, split: str, *, plots: bool = True
) -> dict[str, Path]:
    """Write ``global_results-<split>.csv``, ``per-sequence_results-<split>.csv``, ``results-<split>.json``
    and, with ``plots``, the figure ``results-<split>-jf.png``.

    The CSVs have the toolkit's columns and ``"%.3f"`` format; the JSON keeps full precision and the
    per-frame J/F of every object. The figure (:func:`vidseg.metrics.jf_plots.plot_results`) shows J&F per
    sequence, sorted, and J per frame of the 3 worst sequences. Files are written atomically and always
    overwritten (the toolkit's script re-reads existing CSVs instead of recomputing them, which silently
    reports stale numbers).

    Returns:
        ``{"global": path, "per_sequence": path, "json": path}``, plus ``"plot": path`` when the figure
        was written (plots on and at least one object).
    """
    out_dir = Path(out_dir)
    paths = {key: checked_join(out_dir, name, source="data.split", what="split") for key, name in (
        ("global", f"global_results-{split}.csv"), ("per_sequence", f"per-sequence_results-{split}.csv"),
        ("json", f"results-{split}.json"), ("plot", f"results-{split}-jf.png"))}
    plot_path = paths.pop("plot")
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
    if plots:
        written = plot_results(results, plot_path)
        if written is not None:  # None: no objects, nothing to draw
            paths["plot"] = written
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

"""The figure of a DAVIS evaluation: J&F per sequence, and J per frame of the worst sequences (PNG).

Drawn with Pillow, which scoring has imported already: a charting library would add about 0.4 s (import and
layout) to every ``vidseg.evaluate`` run, as much as scoring 300 frames on two cores. The figure is plain on
purpose: two panels, axes with ticks and a grid, bars, lines and a legend.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vidseg.data.io import atomic_path

if TYPE_CHECKING:
    from vidseg.metrics.davis_eval import DavisResults

# Above this many sequences the bar labels would overlap: the bars are drawn unlabelled.
MAX_LABELLED_SEQUENCES = 80
MAX_WIDTH = 2400  # pixels; bars get thinner past this

WORST_COLOUR = (214, 39, 40)
BAR_COLOUR = (31, 119, 180)
LINE_COLOURS = ((214, 39, 40), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75))
GRID = (225, 225, 225)
INK = (0, 0, 0)


def sequence_scores(results: DavisResults) -> list[tuple[str, float, float, float]]:
    """``(sequence, J&F, J, F)`` per sequence, each the mean over its objects; sorted by J&F, worst first.

    A sequence's J&F is ``(mean J-Mean + mean F-Mean) / 2`` over its objects, the per-sequence analogue of
    the global J&F-Mean (which averages over all objects of all sequences). Ties keep the results' order.
    """
    by_seq: dict[str, list[tuple[float, float]]] = {}
    for name, j, f in results.per_object:
        seq = results.per_frame.get(name, {}).get("sequence", name.rsplit("_", 1)[0])
        by_seq.setdefault(seq, []).append((j, f))
    rows = []
    for seq, values in by_seq.items():
        j, f = (float(np.mean(v)) for v in zip(*values, strict=True))
        rows.append((seq, (j + f) / 2.0, j, f))
    return sorted(rows, key=lambda r: r[1])


def sequence_frame_j(results: DavisResults, sequence: str) -> tuple[list[str], np.ndarray]:
    """Frame ids and ``(T,) float64`` J per frame of ``sequence``, the mean over the objects scored there.

    An object that appears later (YouTube-VOS) has NaN J before its first scored frame and is left out of the
    mean there; a frame where no object is scored yet is NaN.
    """
    frames: list[str] = []
    rows = []
    for name, _, _ in results.per_object:
        entry = results.per_frame.get(name)
        if entry is not None and entry["sequence"] == sequence:
            frames = list(entry["frames"])
            rows.append(entry["J"])
    if not rows:
        return frames, np.zeros(0)
    values = np.asarray(rows, dtype=np.float64)
    scored = ~np.isnan(values)
    counts = scored.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 where no object is scored: NaN
        return frames, np.where(scored, values, 0.0).sum(axis=0) / counts


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _vertical_text(canvas: Image.Image, text: str, font, right: int, top: int) -> None:
    """``text`` rotated 90 degrees (reading upwards), its right edge at x = ``right``, its top at ``top``."""
    probe = ImageDraw.Draw(canvas)
    left, t0, r0, b0 = probe.textbbox((0, 0), text, font=font)
    label = Image.new("L", (r0 - left + 2, b0 - t0 + 2), 0)
    ImageDraw.Draw(label).text((-left + 1, -t0 + 1), text, font=font, fill=255)
    label = label.rotate(90, expand=True)
    canvas.paste(INK, (right - label.width, top), label)


def _y_axis(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], font, lo: float, hi: float) -> callable:
    """Frame, grid and tick labels at 0, 0.2, ..., 1 in ``box``; returns value -> y pixel."""
    x0, y0, x1, y1 = box

    def to_y(v: float) -> float:
        return y1 - (v - lo) / (hi - lo) * (y1 - y0)

    for tick in np.linspace(0, 1, 6):
        y = to_y(tick)
        draw.line([(x0, y), (x1, y)], fill=GRID)
        label = f"{tick:.1f}"
        w, h = _text_size(draw, label, font)
        draw.text((x0 - 6 - w, y - h / 2 - 2), label, fill=INK, font=font)
    draw.rectangle(box, outline=INK)
    return to_y


def _dashed(draw: ImageDraw.ImageDraw, x0: float, x1: float, y: float, dash: int = 8) -> None:
    for x in range(int(x0), int(x1), 2 * dash):
        draw.line([(x, y), (min(x + dash, x1), y)], fill=INK, width=1)


def _nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About ``count`` round numbers (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [float(v) for v in np.arange(math.ceil(lo / step) * step, hi + step / 2, step)]


def plot_results(
    results: DavisResults, path: str | os.PathLike, *, title: str | None = None, worst: int = 3
) -> Path | None:
    """Write the evaluation figure to ``path`` (PNG, atomically); None (nothing written) without objects.

    Top: a bar per sequence, its J&F (:func:`sequence_scores`), sorted, the ``worst`` lowest in red, with a
    dashed line at the global J&F-Mean (over all objects). Bottom: J per frame of the ``worst`` lowest
    sequences (:func:`sequence_frame_j`) against the frame number. About 1000 x 800 px; wider with many
    sequences (at most ``MAX_WIDTH``).
    """
    scores = sequence_scores(results)
    if not scores:
        return None
    path = Path(path)
    n, n_worst = len(scores), min(worst, len(scores))
    font, small, big = _font(14), _font(12), _font(17)
    labelled = n <= MAX_LABELLED_SEQUENCES
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_height = max((_text_size(probe, s[0], small)[0] for s in scores), default=0) + 10 if labelled else 24
    left, right = 70, 30
    width = int(min(MAX_WIDTH, max(1000, left + right + 24 * n)))
    top_box = (left, 44, width - right, 364)
    bottom_y0 = top_box[3] + label_height + 60
    bottom_box = (left, bottom_y0, width - right, bottom_y0 + 260)
    canvas = Image.new("RGB", (width, bottom_box[3] + 50), "white")
    draw = ImageDraw.Draw(canvas)

    # Top panel: J&F per sequence.
    heading = title or f"J&F per sequence ({n} sequences, sorted, the {n_worst} worst in red)"
    draw.text((left, 12), heading, fill=INK, font=big)
    to_y = _y_axis(draw, top_box, font, 0.0, 1.05)
    x0, _, x1, _ = top_box
    slot = (x1 - x0) / n
    for i, (seq, jf, _, _) in enumerate(scores):
        bx0, bx1 = x0 + i * slot + 0.1 * slot, x0 + (i + 1) * slot - 0.1 * slot
        draw.rectangle([bx0, to_y(max(jf, 0.0)), max(bx0, bx1 - 1), to_y(0.0) - 1],
                       fill=WORST_COLOUR if i < n_worst else BAR_COLOUR)
        if labelled:
            _vertical_text(canvas, seq, small, int(x0 + (i + 0.5) * slot + 7), top_box[3] + 6)
    if not labelled:
        draw.text((x0, top_box[3] + 6), f"{n} sequences, worst on the left", fill=INK, font=small)
    overall = results.global_metrics["J&F-Mean"]
    if math.isfinite(overall):
        _dashed(draw, x0, x1, to_y(overall))
        note = f"J&F-Mean over all objects: {overall:.3f}"
        w, h = _text_size(draw, note, small)
        draw.rectangle([x0 + 8, top_box[1] + 8, x0 + 20 + w, top_box[1] + 16 + h], fill="white", outline=GRID)
        draw.text((x0 + 14, top_box[1] + 9), note, fill=INK, font=small)

    # Bottom panel: J per frame of the worst sequences.
    draw.text((left, bottom_box[1] - 28), f"J per frame (mean over objects), the {n_worst} worst sequences",
              fill=INK, font=big)
    to_y = _y_axis(draw, bottom_box, font, -0.02, 1.02)
    curves = []
    for seq, jf, _, _ in scores[:n_worst]:
        frames, j = sequence_frame_j(results, seq)
        try:
            steps = np.array([int(f) for f in frames], dtype=np.float64)  # DAVIS frame ids are numbers
        except ValueError:
            steps = np.arange(1, len(frames) + 1, dtype=np.float64)
        curves.append((seq, jf, steps, j))
    lo = min(float(c[2].min()) for c in curves if c[2].size) if any(c[2].size for c in curves) else 0.0
    hi = max(float(c[2].max()) for c in curves if c[2].size) if any(c[2].size for c in curves) else 1.0
    hi = hi if hi > lo else lo + 1.0
    bx0, by0, bx1, by1 = bottom_box

    def to_x(v: float) -> float:
        return bx0 + 10 + (v - lo) / (hi - lo) * (bx1 - bx0 - 20)

    for tick in _nice_ticks(lo, hi):
        label = f"{tick:g}"
        w, _ = _text_size(draw, label, font)
        draw.line([(to_x(tick), by1), (to_x(tick), by1 + 4)], fill=INK)
        draw.text((to_x(tick) - w / 2, by1 + 6), label, fill=INK, font=font)
    draw.text(((bx0 + bx1) / 2 - 20, by1 + 26), "frame", fill=INK, font=font)
    for k, (_, _, steps, j) in enumerate(curves):
        colour = LINE_COLOURS[k % len(LINE_COLOURS)]
        points = [(to_x(s), to_y(v)) for s, v in zip(steps, j, strict=True) if not math.isnan(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        if len(points) < 60:
            for x, y in points:
                draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
    # Legend, lower left (the worst curves are mostly low; the box is small).
    entries = [f"{seq} (J&F {jf:.3f})" for seq, jf, _, _ in curves]
    text_w = max(_text_size(draw, e, small)[0] for e in entries)
    line_h = 18
    lx0, ly1 = bx0 + 8, by1 - 8
    ly0 = ly1 - 8 - line_h * len(entries)
    draw.rectangle([lx0, ly0, lx0 + 44 + text_w, ly1], fill="white", outline=GRID)
    for k, entry in enumerate(entries):
        y = ly0 + 6 + k * line_h
        colour = LINE_COLOURS[k % len(LINE_COLOURS)]
        draw.line([(lx0 + 8, y + 8), (lx0 + 30, y + 8)], fill=colour, width=3)
        draw.text((lx0 + 36, y), entry, fill=INK, font=small)

    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG", compress_level=1)  # half the time of the default 6, 30% larger
    return path

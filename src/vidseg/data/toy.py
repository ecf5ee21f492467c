"""A procedurally generated toy dataset in DAVIS 2017 (or YouTube-VOS) layout, for CPU demos and tests.

Each sequence shows 1..K textured objects (ellipses, star-shaped polygons, wobbly blobs with stripe,
checker, blob or noise textures) that move along smooth random paths, rotate, change scale, occlude
each other (fixed z-order; masks hold the visible part only) and may leave and re-enter the frame, over a
textured background that pans (camera motion) and carries static clutter and, sometimes, an unlabelled
moving distractor. Objects move several pixels per frame, so copying the first-frame mask scores poorly:
a model has to use appearance and motion.

Layout written under ``root`` (the DAVIS 2017 layout, see data/README.md)::

    JPEGImages/480p/<seq>/00000.jpg ...   RGB frames (H, W)
    Annotations/480p/<seq>/00000.png ...  indexed PNGs, DAVIS palette, ids 1..n, 0 = background
    ImageSets/2017/{train,val}.txt        sequence names
    toy_davis.json                        the generator parameters (checked when resuming)

Everything is a function of the seed: the same parameters give byte-identical files. Sequence names
contain the seed (``toy-s<seed>-<split>-<idx>``), so a set generated with another seed is unseen data.
Files are written atomically; re-running on a complete set does nothing and a partial set is completed.

CLI: ``python -m vidseg.data.toy --root data/toy_davis [--num-train N --num-val N --frames T --height H
--width W --max-objects K --seed S --videos]``.

``--format youtube_vos`` writes the YouTube-VOS layout instead (:func:`generate_toy_youtube_vos`): train/ and
valid/ with JPEGImages, Annotations and meta.json, objects that appear after the first frame, valid annotated
only where each object first appears, and its full ground truth in ``valid_full_annotations/``. Its videos
are named ``ytoy-s<seed>-<split>-<idx>`` and drawn from streams of their own.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from vidseg.data.io import write_image, write_json_atomic, write_mask, write_text_atomic

GENERATOR_VERSION = 1
META_FILE = "toy_davis.json"
RESOLUTION = "480p"  # folder name only: the toy frames are small, the layout is DAVIS's
YEAR = "2017"
SPLITS = ("train", "val")

DEFAULT_NUM_TRAIN = 40
DEFAULT_NUM_VAL = 6
DEFAULT_FRAMES = 24
DEFAULT_HEIGHT = 128
DEFAULT_WIDTH = 224  # about DAVIS's 854x480 aspect ratio
DEFAULT_MAX_OBJECTS = 3
DEFAULT_SEED = 0

# Every object must cover at least this fraction of the first frame (visible part), so the first-frame
# mask is a usable reference (about 430 px at 128x224, i.e. > 25 px at stride 4).
MIN_FIRST_FRAME_FRACTION = 0.015
JPEG_QUALITY = 90

# YouTube-VOS format: objects 2.. appear after the first frame with this probability; frames are named like
# YouTube-VOS's (every 5th frame of the 30 fps source: 00000, 00005, ...).
YOUTUBE_VOS_META_FILE = "toy_youtube_vos.json"
YOUTUBE_VOS_SPLITS = ("train", "valid")
YOUTUBE_VOS_FRAME_STEP = 5
LATE_OBJECT_PROBABILITY = 0.6
FORMATS = ("davis", "youtube_vos")


def sequence_name(seed: int, split: str, index: int) -> str:
    """Name of toy sequence ``index`` of ``split``; contains the seed so other seeds give unseen names."""
    return f"toy-s{seed}-{split}-{index:03d}"


# ----------------------------------------------------------------------------------------------------------
# Appearance
# ----------------------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _distinct_hues(rng: np.random.Generator, n: int, min_sep: float = 0.14) -> list[float]:
    """``n`` hues at least ``min_sep`` apart on the colour circle (best effort), so objects differ."""
    hues: list[float] = []
    for _ in range(200):
        if len(hues) == n:
            break
        h = float(rng.random())
        if all(min(abs(h - o), 1 - abs(h - o)) >= min_sep for o in hues):
            hues.append(h)
    while len(hues) < n:
        hues.append(float(rng.random()))
    return hues


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise normalised to zero mean / unit std, ``(h, w) float32``."""
    n = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-6)


def _texture(
    rng: np.random.Generator, h: int, w: int, hue: float, *, kind: str | None = None, contrast: float = 1.0
) -> np.ndarray:
    """A random texture around ``hue``: stripes, checkers, blobs or coloured noise. ``(h, w, 3) float32``."""
    kind = kind or str(rng.choice(["stripes", "checkers", "blobs", "noise"]))
    c1 = _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    # The second colour is a shade or a nearby/complementary hue: textures differ in pattern, not just hue.
    c2 = _hsv(hue + rng.choice([0.0, 0.08, 0.5]), rng.uniform(0.2, 0.9), rng.uniform(0.15, 0.75))
    c2 = c1 + (c2 - c1) * contrast
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    if kind == "stripes":
        period = rng.uniform(5, 14)
        m = np.clip((np.sin(2 * math.pi * u / period + rng.uniform(0, 6.3)) * 2.5 + 1) / 2, 0, 1)
    elif kind == "checkers":
        period = rng.uniform(5, 13)
        m = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == "blobs":
        n = _smooth_noise(rng, h, w, rng.uniform(2.0, 4.5))
        m = np.clip(n * 2.0 + 0.5, 0, 1)
    else:  # coloured noise around c1
        m = np.clip(0.5 + 0.35 * _smooth_noise(rng, h, w, rng.uniform(0.7, 1.8)), 0, 1)
    tex = c1[None, None] * (1 - m[..., None]) + c2[None, None] * m[..., None]
    # A soft shading gradient, as if lit from one side.
    a = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(a) + yy * math.sin(a)) / max(h, w)
    tex *= (1.0 + rng.uniform(0.1, 0.35) * (ramp - ramp.mean()))[..., None]
    return np.clip(tex, 0, 255).astype(np.float32)


def _shape_alpha(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """A random shape (ellipse, star-shaped polygon or blob) centred in a ``size``^2 canvas.

    Returns ``(size, size) float32`` coverage in [0, 1], antialiased by 4x supersampling.
    """
    ss = 4
    big = size * ss
    c = (big - 1) / 2
    r = radius * ss
    kind = rng.choice(["ellipse", "polygon", "blob"])
    if kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n)) if n > 4 else np.linspace(0, 2 * math.pi, n, False)
        angles = angles + rng.uniform(0, 2 * math.pi)
        radii = r * rng.uniform(0.55, 1.0, n)
        canvas = Image.new("L", (big, big), 0)
        pts = [(c + rr * math.cos(a), c + rr * math.sin(a)) for rr, a in zip(radii, angles, strict=True)]
        ImageDraw.Draw(canvas).polygon(pts, fill=255)
        hi = np.asarray(canvas, dtype=np.float32) / 255.0
    else:
        yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
        dx, dy = xx - c, yy - c
        if kind == "ellipse":
            a, b = r * rng.uniform(0.6, 1.0), r * rng.uniform(0.35, 0.9)
            t = rng.uniform(0, math.pi)
            u = dx * math.cos(t) + dy * math.sin(t)
            v = -dx * math.sin(t) + dy * math.cos(t)
            hi = ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.float32)
        else:  # blob: radius modulated by a few harmonics
            phi = np.arctan2(dy, dx)
            rad = np.ones_like(phi)
            for k in range(2, 6):
                rad += rng.uniform(0, 0.35 / k * 2) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
            rad *= r / rad.max()
            hi = (np.hypot(dx, dy) <= rad).astype(np.float32)
    return hi.reshape(size, ss, size, ss).mean(axis=(1, 3))


# ----------------------------------------------------------------------------------------------------------
# Motion
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Sprite:
    """A textured shape with a per-frame pose. ``label`` 0 = unlabelled distractor."""

    label: int
    alpha: np.ndarray  # (S, S) float32 coverage
    texture: np.ndarray  # (S, S, 3) float32
    cx: np.ndarray  # (T,) screen centre x (px)
    cy: np.ndarray  # (T,) screen centre y (px)
    angle: np.ndarray  # (T,) rotation (rad)
    scale: np.ndarray  # (T,) scale factor
    start: int = 0  # first frame it is drawn in (objects that appear later, YouTube-VOS format)


def _wave(rng: np.random.Generator, t: np.ndarray, speed: float, frames: int) -> np.ndarray:
    """Smooth 1-D path starting at 0 whose peak speed is about ``speed`` px/frame."""
    omega = 2 * math.pi / (frames * rng.uniform(0.6, 2.0))
    amp = speed / omega
    phase = rng.uniform(0, 2 * math.pi)
    drift = rng.uniform(-0.3, 0.3) * speed
    return amp * (np.sin(omega * t + phase) - math.sin(phase)) + drift * t


def _exit_path(
    rng: np.random.Generator, t: np.ndarray, start: float, extent: float, size: float, frames: int
) -> np.ndarray:
    """A smooth out-and-back excursion that takes an object of half-size ``size`` off screen and back."""
    direction = 1.0 if rng.random() < 0.5 else -1.0
    edge_dist = (extent - start) if direction > 0 else start
    depth = edge_dist + size * rng.uniform(1.2, 2.0)
    duration = frames * rng.uniform(0.45, 0.75)  # leaves and comes back within the clip
    t0 = rng.uniform(0, max(frames - duration, 1))
    s = np.clip((t - t0) / duration, 0, 1)
    return direction * depth * np.sin(math.pi * s) ** 2


def _pose(rng: np.random.Generator, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and scale paths ``(T,)``: steady spin plus wobble; breathing scale plus slow zoom."""
    t = np.arange(frames, dtype=np.float64)
    angle = rng.uniform(0, 2 * math.pi) + math.radians(rng.uniform(-4, 4)) * t
    angle += math.radians(rng.uniform(0, 10)) * np.sin(2 * math.pi * t / (frames * rng.uniform(0.5, 1.5)))
    period = frames * rng.uniform(0.6, 2)
    scale = 1 + rng.uniform(0, 0.2) * np.sin(2 * math.pi * t / period + rng.uniform(0, 6.3))
    scale *= np.exp(rng.uniform(-0.012, 0.012) * t)
    return angle, scale


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------


def _draw_sprite(image: np.ndarray, labels: np.ndarray, sprite: _Sprite, t: int) -> None:
    """Composite ``sprite`` at frame ``t`` over ``image (H, W, 3) float32`` and ``labels (H, W) uint8``."""
    h, w = labels.shape
    if t < sprite.start:
        return  # not in the scene yet
    size = sprite.alpha.shape[0]
    cx, cy, a, s = sprite.cx[t], sprite.cy[t], sprite.angle[t], sprite.scale[t]
    half = s * size / 2 * math.sqrt(2) + 1
    x0, x1 = max(int(math.floor(cx - half)), 0), min(int(math.ceil(cx + half)), w)
    y0, y1 = max(int(math.floor(cy - half)), 0), min(int(math.ceil(cy + half)), h)
    if x0 >= x1 or y0 >= y1:
        return  # fully off screen
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    # Inverse pose: screen -> sprite canvas coordinates.
    ca, sa = math.cos(a) / s, math.sin(a) / s
    u = ca * dx + sa * dy + (size - 1) / 2
    v = -sa * dx + ca * dy + (size - 1) / 2
    cov = ndimage.map_coordinates(sprite.alpha, [v, u], order=1, mode="constant", cval=0.0)
    if not (cov > 0).any():
        return
    tex = np.stack(
        [ndimage.map_coordinates(sprite.texture[..., c], [v, u], order=1, mode="nearest") for c in range(3)],
        -1,
    )
    region = image[y0:y1, x0:x1]
    region += (tex - region) * cov[..., None]
    labels[y0:y1, x0:x1][cov >= 0.5] = sprite.label


def _render(background: np.ndarray, pan_x: np.ndarray, pan_y: np.ndarray, sprites: list[_Sprite], t: int,
            height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t``: the panned background crop, then sprites bottom to top. Returns float image, labels."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    coords = [yy + pan_y[t], xx + pan_x[t]]
    image = np.stack(
        [ndimage.map_coordinates(background[..., c], coords, order=1, mode="nearest") for c in range(3)], -1
    )
    labels = np.zeros((height, width), np.uint8)
    for sprite in sprites:
        _draw_sprite(image, labels, sprite, t)
    return image, labels


def _make_background(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """A large textured canvas ``(h, w, 3) float32``: smooth colour field + pattern + static clutter."""
    hue = rng.random()
    field = _smooth_noise(rng, h, w, 12 * scale)
    c1 = _hsv(hue, rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.8))
    c2 = _hsv(hue + 0.3, rng.uniform(0.1, 0.6), 0.6)
    m = np.clip(field * 0.4 + 0.5, 0, 1)[..., None]
    bg = c1 * (1 - m) + c2 * m
    pattern = _texture(rng, h, w, rng.random(), contrast=rng.uniform(0.15, 0.5))
    bg = bg * 0.6 + pattern * 0.4
    # Static clutter: shapes glued to the background (they move only with the camera).
    for _ in range(int(rng.integers(3, 9))):
        r = rng.uniform(6, 22) * scale
        size = int(2 * r * 1.1) + 4
        alpha = _shape_alpha(rng, size, r)
        tex = _texture(rng, size, size, rng.random(), contrast=rng.uniform(0.3, 0.9))
        y, x = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
        region = bg[y:y + size, x:x + size]
        region += (tex - region) * alpha[..., None] * rng.uniform(0.5, 1.0)
    return bg.astype(np.float32)


def _make_sequence(rng: np.random.Generator, frames: int, height: int, width: int, max_objects: int, *,
                   min_objects: int = 1, late_rng: np.random.Generator | None = None):
    """Sample and render one sequence. Returns ``(images (T,H,W,3) uint8, labels (T,H,W) uint8)``.

    The first frame is guaranteed to show every object with at least MIN_FIRST_FRAME_FRACTION of the frame;
    scenes that fail the check are re-sampled (deterministic: the same rng stream).

    With ``late_rng`` (YouTube-VOS format), objects 2.. each start at a later frame with probability
    LATE_OBJECT_PROBABILITY (drawn from ``late_rng``, so the DAVIS format's stream is untouched): they are not
    in the scene before it, and the size check applies at that frame instead.
    """
    unit = min(height, width) / 128.0  # sizes and speeds scale with the frame
    t = np.arange(frames, dtype=np.float64)
    n_obj = int(rng.integers(min_objects, max_objects + 1))
    min_pixels = MIN_FIRST_FRAME_FRACTION * height * width

    # Camera: a pan of up to ~3 px/frame; the background canvas is as large as the pan needs.
    pan_x = _wave(rng, t, rng.uniform(0.0, 3.0) * unit, frames)
    pan_y = _wave(rng, t, rng.uniform(0.0, 1.2) * unit, frames)
    margin = 4
    pan_x -= pan_x.min() - margin
    pan_y -= pan_y.min() - margin
    bg = _make_background(rng, int(math.ceil(pan_y.max())) + height + margin,
                          int(math.ceil(pan_x.max())) + width + margin, unit)

    for _attempt in range(100):
        hues = _distinct_hues(rng, n_obj + 1)
        sprites = []
        labels_order = list(range(1, n_obj + 1))
        if rng.random() < 0.5:
            labels_order.append(0)  # an unlabelled moving distractor
        exiting = int(rng.integers(1, n_obj + 1)) if rng.random() < 0.4 else -1
        for label in labels_order:
            radius = rng.uniform(0.13, 0.24) * min(height, width)
            if label == 0:
                radius *= 0.7
            size = int(math.ceil(2 * radius * 1.35)) + 4  # room for the scale changes
            alpha = _shape_alpha(rng, size, radius)
            texture = _texture(rng, size, size, hues[label] if label else rng.random())
            x0 = rng.uniform(0.1, 0.9) * width
            y0 = rng.uniform(0.15, 0.85) * height
            speed = rng.uniform(3.0, 7.0) * unit
            heading = rng.uniform(0, 2 * math.pi)
            cx = x0 + _wave(rng, t, speed * abs(math.cos(heading)) + 0.5, frames)
            cy = y0 + _wave(rng, t, speed * abs(math.sin(heading)) * 0.7 + 0.3, frames)
            if label == exiting:
                cx = cx + _exit_path(rng, t, x0, width, radius, frames)
            # Camera motion moves everything on screen.
            cx = cx - (pan_x - pan_x[0])
            cy = cy - (pan_y - pan_y[0])
            angle, scale = _pose(rng, frames)
            sprites.append(_Sprite(label, alpha, texture, cx, cy, angle, scale))
        order = rng.permutation(len(sprites))  # random z-order, bottom first
        sprites = [sprites[i] for i in order]

        if late_rng is None:
            _, first = _render(bg, pan_x, pan_y, sprites, 0, height, width)
            counts = np.bincount(first.ravel(), minlength=n_obj + 1)
            if (counts[1:n_obj + 1] >= min_pixels).all():
                break
        elif _place_late_objects(late_rng, sprites, bg, pan_x, pan_y, frames, height, width, min_pixels):
            break
    else:  # pragma: no cover - 100 failed draws would mean broken parameters
        raise RuntimeError(f"could not place {n_obj} visible objects in a {height}x{width} frame")

    images = np.empty((frames, height, width, 3), np.uint8)
    labels = np.empty((frames, height, width), np.uint8)
    gain = 1 + 0.06 * np.sin(2 * math.pi * t / (frames * rng.uniform(0.7, 2)) + rng.uniform(0, 6.3))
    for i in range(frames):
        img, lab = _render(bg, pan_x, pan_y, sprites, i, height, width)
        img = img * gain[i] + rng.normal(0, 2.5, img.shape)  # lighting flicker + sensor noise
        images[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        labels[i] = lab
    return images, labels


def _place_late_objects(late_rng: np.random.Generator, sprites: list[_Sprite], bg: np.ndarray, pan_x: np.ndarray,
                        pan_y: np.ndarray, frames: int, height: int, width: int, min_pixels: float) -> bool:
    """Give objects 2.. a later start frame (some of them) and check each object at its start frame."""
    last_start = max(1, frames - 3)  # a late object still has frames to be scored after its first one
    for sprite in sprites:
        late = sprite.label >= 2 and frames >= 4 and late_rng.random() < LATE_OBJECT_PROBABILITY
        sprite.start = int(late_rng.integers(1, last_start + 1)) if late else 0
    for start in sorted({s.start for s in sprites if s.label > 0}):
        _, labels = _render(bg, pan_x, pan_y, sprites, start, height, width)
        counts = np.bincount(labels.ravel(), minlength=256)
        if any(counts[s.label] < min_pixels for s in sprites if s.label > 0 and s.start == start):
            return False
    return True


# ----------------------------------------------------------------------------------------------------------
# Dataset writer
# ----------------------------------------------------------------------------------------------------------


def _sequence_complete(root: Path, name: str, frames: int) -> bool:
    img_dir = root / "JPEGImages" / RESOLUTION / name
    ann_dir = root / "Annotations" / RESOLUTION / name
    return all(
        (img_dir / f"{i:05d}.jpg").is_file() and (ann_dir / f"{i:05d}.png").is_file() for i in range(frames)
    )


def _write_sequence(root: Path, name: str, images: np.ndarray, labels: np.ndarray) -> None:
    for i, (image, lab) in enumerate(zip(images, labels, strict=True)):
        write_image(root / "JPEGImages" / RESOLUTION / name / f"{i:05d}.jpg", image, quality=JPEG_QUALITY)
        write_mask(root / "Annotations" / RESOLUTION / name / f"{i:05d}.png", lab)


def render_toy_sequence(
    *, seed: int, split: str, index: int, frames: int, height: int, width: int, max_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one toy sequence in memory, without writing files.

    Returns:
        images: (T, H, W, 3) uint8 RGB; labels: (T, H, W) uint8 ids (0 = background, 1..n objects).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    # One independent stream per sequence: a sequence can be (re)generated alone when resuming.
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))
    return _make_sequence(rng, frames, height, width, max_objects)


def generate_toy_davis(
    root: str | os.PathLike,
    *,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    frames: int = DEFAULT_FRAMES,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    max_objects: int = DEFAULT_MAX_OBJECTS,
    seed: int = DEFAULT_SEED,
    videos: bool = False,
    fps: float = 10.0,
) -> Path:
    """Generate (or complete) a toy DAVIS 2017-format dataset under ``root`` and return ``root``.

    Args:
        videos: also write ``root/videos/<seq>.mp4`` for the val sequences (inputs for predict demos).

    Raises:
        ValueError: bad parameters, or ``root`` holds a toy set made with other parameters or a dataset
            that this generator did not write (it never overwrites those).
    """
    root = Path(root)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if min(num_train, num_val) < 0 or frames < 2 or max_objects < 1 or max_objects > 254:
        raise ValueError("need num_train, num_val >= 0, frames >= 2 and 1 <= max_objects <= 254")
    if height < 32 or width < 32:
        raise ValueError(f"frames must be at least 32x32, got {height}x{width}")
    params = {
        "generator": "vidseg.data.toy", "version": GENERATOR_VERSION, "num_train": num_train,
        "num_val": num_val, "frames": frames, "height": height, "width": width,
        "max_objects": max_objects, "seed": seed,
    }
    meta_path = root / META_FILE
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
        if diff:
            raise ValueError(
                f"{root} holds a toy dataset generated with other parameters ({diff} as (old, new)); "
                "choose another --root or delete it"
            )
    elif (root / "ImageSets").exists() or (root / "JPEGImages").exists():
        raise ValueError(f"{root} holds a dataset not written by vidseg.data.toy; refusing to touch it")
    else:
        write_json_atomic(meta_path, params)

    counts = {"train": num_train, "val": num_val}
    for split in SPLITS:
        names = [sequence_name(seed, split, i) for i in range(counts[split])]
        for i, name in enumerate(names):
            if _sequence_complete(root, name, frames):
                continue  # resume: sequences are deterministic, finished ones are kept as they are
            images, labels = render_toy_sequence(
                seed=seed, split=split, index=i, frames=frames, height=height, width=width,
                max_objects=max_objects,
            )
            _write_sequence(root, name, images, labels)
        # The split file is written last, so a listed sequence is always complete.
        split_file = root / "ImageSets" / YEAR / f"{split}.txt"
        text = "".join(f"{n}\n" for n in names)
        if not split_file.is_file() or split_file.read_text() != text:
            write_text_atomic(split_file, text)
        if videos and split == "val":
            _write_videos(root, names, frames, fps)
    return root


# ----------------------------------------------------------------------------------------------------------
# YouTube-VOS format
# ----------------------------------------------------------------------------------------------------------


def youtube_vos_video_name(seed: int, split: str, index: int) -> str:
    """Name of toy YouTube-VOS-format video ``index`` of ``split`` (train / valid); contains the seed."""
    return f"ytoy-s{seed}-{split}-{index:03d}"


def youtube_vos_frame_name(index: int) -> str:
    """Name of frame ``index`` in the YouTube-VOS format: every 5th source frame, 5 digits ("00005")."""
    return f"{index * YOUTUBE_VOS_FRAME_STEP:05d}"


def render_toy_youtube_vos_video(
    *, seed: int, split: str, index: int, frames: int, height: int, width: int, max_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one toy video of the YouTube-VOS format in memory: 2..``max_objects`` objects, of which
    objects 2.. may appear after the first frame (absent from the frames before).

    Returns:
        images: (T, H, W, 3) uint8 RGB; labels: (T, H, W) uint8 ids (0 = background, 1..n objects).
    """
    if split not in YOUTUBE_VOS_SPLITS:
        raise ValueError(f"split must be one of {YOUTUBE_VOS_SPLITS}, got {split!r}")
    # Streams of their own (100 + split): these videos are never copies of the DAVIS-format ones.
    key = [seed, 100 + YOUTUBE_VOS_SPLITS.index(split), index]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    late_rng = np.random.default_rng(np.random.SeedSequence([*key, 1]))
    return _make_sequence(rng, frames, height, width, max(2, max_objects), min_objects=min(2, max_objects),
                          late_rng=late_rng)


def _youtube_vos_objects(labels: np.ndarray) -> dict[int, list[int]]:
    """Object id -> indices of the frames it is visible in, for ``labels (T, H, W)``."""
    out: dict[int, list[int]] = {}
    for t, lab in enumerate(labels):
        for obj in np.unique(lab):
            if 0 < int(obj) < 255:
                out.setdefault(int(obj), []).append(t)
    return dict(sorted(out.items()))


def _youtube_vos_meta(split: str, labels: np.ndarray) -> dict:
    """The meta.json entry of a video: train lists the frames an object is visible in, valid the frames to
    segment it in (its first frame on)."""
    listed = {obj: frames if split == "train" else list(range(frames[0], len(labels)))
              for obj, frames in _youtube_vos_objects(labels).items()}
    return {"objects": {str(obj): {"category": "toy", "frames": [youtube_vos_frame_name(t) for t in frames]}
                        for obj, frames in listed.items()}}


def _youtube_vos_last_file(root: Path, split: str, name: str, frames: int) -> Path:
    """The file :func:`_write_youtube_vos_video` writes last: it exists only for a complete video."""
    folder = root / split / "Annotations" if split == "train" else root / "valid_full_annotations"
    return folder / name / f"{youtube_vos_frame_name(frames - 1)}.png"


def _write_youtube_vos_video(root: Path, split: str, name: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one video. valid: annotations only where objects first appear, each holding the objects that
    start there (as the real valid set); full ground truth in ``valid_full_annotations/``. train: every
    frame annotated."""
    first = {obj: frames[0] for obj, frames in _youtube_vos_objects(labels).items()}
    split_dir = root / split
    for t, (image, lab) in enumerate(zip(images, labels, strict=True)):
        frame = youtube_vos_frame_name(t)
        write_image(split_dir / "JPEGImages" / name / f"{frame}.jpg", image, quality=JPEG_QUALITY)
        if split == "train":
            write_mask(split_dir / "Annotations" / name / f"{frame}.png", lab)
            continue
        starting = [obj for obj, f in first.items() if f == t]
        if starting:
            write_mask(split_dir / "Annotations" / name / f"{frame}.png", np.where(np.isin(lab, starting), lab, 0))
        write_mask(root / "valid_full_annotations" / name / f"{frame}.png", lab)


def generate_toy_youtube_vos(
    root: str | os.PathLike,
    *,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_valid: int = DEFAULT_NUM_VAL,
    frames: int = DEFAULT_FRAMES,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    max_objects: int = DEFAULT_MAX_OBJECTS,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Generate (or complete) a toy set in the YouTube-VOS layout under ``root`` and return ``root``.

    Layout (see :mod:`vidseg.data.youtube_vos_layout`)::

        train/{JPEGImages,Annotations}/<video>/<frame>   every frame annotated; train/meta.json
        valid/JPEGImages/<video>/<frame>.jpg            the frames to segment; valid/meta.json
        valid/Annotations/<video>/<frame>.png           only where objects first appear (sparse, as the real set)
        valid_full_annotations/<video>/<frame>.png      every frame: vidseg's own scores on valid read it
        toy_youtube_vos.json                            the generator parameters

    Videos have 2..``max_objects`` objects; objects 2.. appear after the first frame with probability
    LATE_OBJECT_PROBABILITY. Deterministic in the parameters, atomic, resumable like :func:`generate_toy_davis`
    (meta.json is written last, so a listed video is complete).
    """
    root = Path(root)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if min(num_train, num_valid) < 0 or frames < 2 or max_objects < 2 or max_objects > 254:
        raise ValueError("need num_train, num_valid >= 0, frames >= 2 and 2 <= max_objects <= 254")
    if height < 32 or width < 32:
        raise ValueError(f"frames must be at least 32x32, got {height}x{width}")
    params = {
        "generator": "vidseg.data.toy", "format": "youtube_vos", "version": GENERATOR_VERSION,
        "num_train": num_train, "num_valid": num_valid, "frames": frames, "height": height, "width": width,
        "max_objects": max_objects, "seed": seed,
    }
    meta_path = root / YOUTUBE_VOS_META_FILE
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
        if diff:
            raise ValueError(
                f"{root} holds a toy dataset generated with other parameters ({diff} as (old, new)); "
                "choose another --root or delete it"
            )
    elif root.is_dir() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty and was not written by vidseg.data.toy; refusing to touch it")
    else:
        write_json_atomic(meta_path, params)

    counts = {"train": num_train, "valid": num_valid}
    for split in YOUTUBE_VOS_SPLITS:
        videos = {}
        for i in range(counts[split]):
            name = youtube_vos_video_name(seed, split, i)
            # Rendered even when complete: meta.json is made from the labels (toy videos render in ms).
            images, labels = render_toy_youtube_vos_video(seed=seed, split=split, index=i, frames=frames,
                                                          height=height, width=width, max_objects=max_objects)
            if not _youtube_vos_last_file(root, split, name, frames).is_file():
                _write_youtube_vos_video(root, split, name, images, labels)
            videos[name] = _youtube_vos_meta(split, labels)
        text = json.dumps({"videos": videos}, indent=2) + "\n"
        split_meta = root / split / "meta.json"
        if not split_meta.is_file() or split_meta.read_text() != text:
            write_text_atomic(split_meta, text)
    return root


def _write_videos(root: Path, names: list[str], frames: int, fps: float) -> None:
    from vidseg.data.io import read_image
    from vidseg.data.video import write_video

    for name in names:
        out = root / "videos" / f"{name}.mp4"
        if out.is_file():
            continue
        img_dir = root / "JPEGImages" / RESOLUTION / name
        write_video(out, (read_image(img_dir / f"{i:05d}.jpg") for i in range(frames)), fps)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m vidseg.data.toy",
        description="Generate a toy dataset in the DAVIS 2017 layout or (--format youtube_vos) the YouTube-VOS one.",
    )
    parser.add_argument("--root", required=True, help="output folder, e.g. data/toy_davis")
    parser.add_argument("--format", choices=FORMATS, default="davis",
                        help="davis (default) or youtube_vos (train/ and valid/ with meta.json, objects that "
                             "appear later, sparse valid annotations)")
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL, help="val (DAVIS) / valid (YouTube-VOS) videos")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    parser.add_argument("--max-objects", type=int, default=DEFAULT_MAX_OBJECTS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--videos", action="store_true", help="also write videos/<seq>.mp4 for val sequences")
    args = parser.parse_args(argv)
    if args.format == "youtube_vos":
        if args.videos:
            parser.error("--videos is for the DAVIS format only")
        root = generate_toy_youtube_vos(
            args.root, num_train=args.num_train, num_valid=args.num_val, frames=args.frames, height=args.height,
            width=args.width, max_objects=args.max_objects, seed=args.seed,
        )
        meta = json.loads((root / "valid" / "meta.json").read_text())["videos"]
        late = sum(1 for v in meta.values() for o in v["objects"].values() if o["frames"][0] != "00000")
        print(f"toy YouTube-VOS set ready at {root} ({args.num_train} train + {args.num_val} valid videos, "
              f"{late} valid object(s) appearing after the first frame); use it with data=youtube_vos "
              f"data.root={root}")
        return root
    root = generate_toy_davis(
        args.root, num_train=args.num_train, num_val=args.num_val, frames=args.frames, height=args.height,
        width=args.width, max_objects=args.max_objects, seed=args.seed, videos=args.videos,
    )
    print(f"toy DAVIS set ready at {root} ({args.num_train} train + {args.num_val} val sequences); "
          f"use it with data.root={root}")
    return root


if __name__ == "__main__":
    main()

"""A procedurally generated toy Cityscapes-VPS, VIPER-VPS or VIPSeg set, in the exact published layout, for CPU
demos and tests.

Each video is a driving scene seen by a moving camera: sky, a skyline of buildings and trees, poles, a
road in perspective with sidewalks and terrain, all textured in world coordinates, while the camera pans
sideways and zooms in slowly (driving forward), so copying an earlier frame's panoptic map scores low. The ego-
vehicle hood at the bottom is void; the even-numbered videos of a split have a crowd region (a thing class
without instances, ``iscrowd=1``), the odd-numbered ones a void blob.

The set is made to tell a good VPSNet from a bad one (version 2 of the generator; ``GENERATOR_VERSION``):

* **Things are recognisable from one frame.** Four thing classes (Cityscapes-VPS: person, car, truck,
  bicycle; VIPER: person, car, truck, motorcycle; VIPSeg: person, car, truck, bicycle), each with its own
  silhouette, colour family and texture:
  a red upright ellipse with a dark lower half (person), a blue rounded box with a pale window band (car),
  a yellow box with vertical stripes (truck), a cyan diamond with a dark hub (bicycle). Hue, saturation,
  brightness, size (+-10%) and the pattern vary within a class; the camera's slow zoom and each thing's
  growth change its apparent size by at most 1.6x within a clip. Seen whole, a thing is 20-50 px tall at the
  demo's 128x256; occluded or leaving the view, less.
* **Video pays.** About 30% of the frames after the first are degraded: a strong blur, heavy noise, a glare
  patch over part of the frame, or a dark low-contrast frame. Only the image is degraded; the labels show
  the true scene, as an annotator who saw the neighbouring frames would draw it. A single-frame model has to
  guess there; the previous frame carries the evidence (what VPSNet's Fuse module warps and attends to).
* **Identities must be kept.** Every video has a pair of same-class instances (people, cars or bicycles) at
  nearly the same depth that move in opposite directions and cross mid-clip, the nearer one hiding the other
  for a few frames; other things move across and occlude each other (far to near), and enter or leave the
  view as they and the camera move. Telling the two apart after the crossing takes appearance (Track's
  embeddings), not only overlap with the previous frame.

Files written under ``root`` (encodings as the official preparation scripts write them; vpsnet.md)::

    cityscapes_vps: panoptic_im_{train,val}_city_vps.json, instances_{train,val}_city_vps_rle.json,
        im_all_info_val_city_vps.json, panoptic_gt_val_city_vps.json,
        train/{img,labelmap,panoptic_inst}, val/{img,img_all,labelmap,panoptic_inst,panoptic_video}
        file names <vid:4d>_<frame:4d>_<city>_<seq:6d>_<frame:6d>_{leftImg8bit|newImg8bit}.png; 30 frames per
        clip, frames 5, 10, ..., 30 annotated (the 20th is the "leftImg8bit"/"_gtFine_color.png" one)
    viper: instances_train_05_viper_coco.json, instances_val_day_01_viper_coco.json,
        viper_panoptic_val_day_video.json, train/{img,labelmap} (every 5th frame), val_day/{img,panoptic_video}
        (every frame); file names <vid:3d>_<frame:5d>.jpg
    vipseg: the official original layout: imgs/<video>/<frame>.jpg, panomasks/<video>/<frame>.png (16-bit
        grayscale: 0 void, stuff = category id + 1, thing = (category id + 1) * 100 + instance; the crowd
        region is a bare thing value, which VIPSeg's converter makes an ordinary segment), train.txt, val.txt,
        panoVIPSeg_categories.json; every frame annotated; video ids <n>_toy<n:04d>, frames <t:08d>. Then
        the 720p layout (VIPSeg_720P/, :func:`vidseg.data.vipseg.convert_vipseg`) at the toy's own height, so
        nothing is resized. Stuff roles are VIPSeg's road, path (sidewalk), building, pole, tree, grass and sky.
    toy_vps.json  the generator parameters (a set is complete when it exists)

Encodings: images 8-bit RGB (PNG for Cityscapes-VPS, JPEG for VIPER); ``labelmap`` 8-bit grayscale class
ids, 255 void; ``panoptic_inst`` **16-bit grayscale** (the official script saves a uint32 array through
PIL mode "I", which PNG stores as 16 bits; values <= 18999 fit): stuff class, thing class * 1000 + instance,
crowd = the bare thing class, 255 void; ``panoptic_video`` COCO-panoptic RGB with segment ids from category
colours (stuff: the category colour; things: the category colour, jittered for each further instance, as
panopticapi's IdGenerator does), constant within a video. Instances JSON: COCO RLE masks (compressed
string counts; crowd annotations use list counts), ``bbox`` [x, y, w, h], ``inst_id``, image ids 1..N in
file order (the real id scheme is undocumented; vidseg finds reference frames by video and frame number).

Everything is a function of the parameters: the same parameters give byte-identical files.

CLI: ``python -m vidseg.data.toy_vps --root data/toy_cityscapes_vps --format cityscapes_vps --seed 0
[--videos N --val-videos N --height H --width W --frames T (viper, vipseg) --max-objects K]``.
"""

from __future__ import annotations

import argparse
import colorsys
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from vidseg.constants import IGNORE_LABEL, PANOPTIC_LABEL_DIVISOR
from vidseg.data.cityscapes_vps import CITYSCAPES_VPS_CATEGORIES
from vidseg.data.io import atomic_path, write_image, write_json_atomic
from vidseg.data.panoptic import write_panoptic_png
from vidseg.data.viper import VIPER_CATEGORIES
from vidseg.data.vipseg import PanopticColours, convert_vipseg
from vidseg.data.vipseg_layout import (
    PANOMASK_THING_DIVISOR,
    VIPSEG_ORIGINAL_LAYOUT,
    VIPSegLayout,
    vipseg_categories,
)
from vidseg.data.vps_common import rle_encode
from vidseg.data.vps_layout import CITYSCAPES_VPS, VIPER
from vidseg.errors import DataError

META_FILE = "toy_vps.json"
# Version 2: class-specific things, degraded frames, crossing pairs (version 1 sets had classes told apart by size).
GENERATOR_VERSION = 2
FORMATS = ("cityscapes_vps", "viper", "vipseg")
CITYSCAPES_FRAMES = 30  # every Cityscapes-VPS clip has 30 frames, every 5th annotated
ANNOTATION_STRIDE = 5
_CITIES = ("frankfurt", "lindau", "munster")

# Scene roles -> class ids of each format. No fence: thin stuff only adds noise to a toy VPQ.
_STUFF = {
    "cityscapes_vps": dict(road=0, sidewalk=1, building=2, pole=5, vegetation=8, terrain=9, sky=10),
    "viper": dict(sky=0, road=1, sidewalk=2, terrain=3, vegetation=5, building=6, pole=7),
    "vipseg": dict(road=18, sidewalk=19, building=21, pole=12, vegetation=66, terrain=15, sky=28),  # VIPSeg ids
}
# Thing roles -> class ids. Each role has its own silhouette, colour family and texture (see _ROLES).
_THING_CLASS = {
    "cityscapes_vps": dict(person=11, car=13, truck=14, cycle=18),
    "viper": dict(person=17, car=19, truck=22, cycle=18),
    "vipseg": dict(person=60, car=48, truck=50, cycle=51),
}


@dataclass(frozen=True)
class _Role:
    shape: str  # "ellipse" | "rounded" (superellipse, power 4) | "box" (power 10) | "diamond"
    half: tuple[float, float]  # world half-size (w, h) at scale 1
    hue: tuple[float, float]  # HSV hue range of the body colour
    pattern: str  # "two-tone" | "window" | "stripes" | "hub"
    speed: tuple[float, float]  # lateral speed range (world units per frame)


_ROLES = {
    "person": _Role("ellipse", (0.03, 0.075), (0.97, 1.01), "two-tone", (0.004, 0.008)),
    "car": _Role("rounded", (0.09, 0.044), (0.60, 0.65), "window", (0.002, 0.005)),
    "truck": _Role("box", (0.095, 0.072), (0.11, 0.15), "stripes", (0.0, 0.002)),
    "cycle": _Role("diamond", (0.045, 0.04), (0.48, 0.52), "hub", (0.003, 0.006)),
}
_CROWD_ROLE = "person"
_CATEGORIES = {"cityscapes_vps": CITYSCAPES_VPS_CATEGORIES, "viper": VIPER_CATEGORIES,
               "vipseg": tuple(vipseg_categories())}
DEGRADATIONS = ("blur", "noise", "glare", "dark")
DEGRADED_FRACTION = 0.3  # of the frames after the first


@dataclass(frozen=True)
class ToyVPSParams:
    format: str
    seed: int
    videos: int = 2
    val_videos: int = 2
    height: int = 256
    width: int = 512
    frames: int = CITYSCAPES_FRAMES
    max_objects: int = 6
    generator: int = GENERATOR_VERSION


# ----------------------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Thing:
    role: str
    cls: int
    inst: int
    x0: float  # world position of the bottom centre at t = 0
    y0: float
    vx: float  # world units per frame
    sx: float  # world half-size
    sy: float
    grow: float  # relative size change per frame
    colour: np.ndarray  # (3,) float body colour
    detail: float  # pattern frequency / position, varies within the class


class _Scene:
    """One video's random layout; :meth:`render` draws frame t as (image, labelmap, panoptic_inst, segments)."""

    def __init__(self, fmt: str, rng: np.random.Generator, frames: int, max_objects: int, index: int = 0) -> None:
        """``index``: the video's position in its split; even videos get a crowd region, odd ones a void blob,
        so every split with two videos has both."""
        self.fmt, self.stuff = fmt, _STUFF[fmt]
        self.colours = {c["id"]: np.array(c["color"], dtype=np.float32) for c in _CATEGORIES[fmt]}
        self.thing_ids = {c["id"] for c in _CATEGORIES[fmt] if c["isthing"]}
        # Camera: pans sideways and zooms in slowly (driving forward) with a slight bob.
        self.pan = rng.choice([-1, 1]) * rng.uniform(0.006, 0.012)
        self.zoom = rng.uniform(0.008, 0.015)
        self.bob = rng.uniform(0.002, 0.006)
        self.cx0 = rng.uniform(-1, 1)
        self.horizon = rng.uniform(-0.07, -0.03)
        self.horizon_wave = (rng.uniform(0.003, 0.01), rng.uniform(4, 9), rng.uniform(0, 2 * np.pi))
        self.road_centre = self.cx0 + self.pan * frames / 2 + rng.uniform(-0.05, 0.05)
        self.block_w = rng.uniform(0.06, 0.12)
        self.block_h = rng.uniform(0.03, 0.16, size=64)
        self.block_tree = rng.random(64) < 0.35
        self.pole_spacing, self.pole_offset = rng.uniform(0.2, 0.35), rng.uniform(0, 1)
        self.waves = [(rng.uniform(8, 40), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)) for _ in range(4)]
        self.void_blob = (
            (self.cx0 + rng.uniform(-0.3, 0.3), self.horizon + rng.uniform(0.01, 0.03), rng.uniform(0.02, 0.04))
            if index % 2 == 1 else None)
        self.crowd = (
            (self.road_centre + rng.choice([-1, 1]) * rng.uniform(0.12, 0.25), self.horizon + rng.uniform(0.03, 0.06),
             rng.uniform(0.04, 0.07), rng.uniform(0.02, 0.035))
            if index % 2 == 0 else None)
        self.things = self._make_things(rng, frames, max_objects)
        # Degraded frames (never the first): the image only, the labels show the true scene.
        kinds = rng.choice(len(DEGRADATIONS), size=frames)
        hit = rng.random(frames) < DEGRADED_FRACTION
        hit[0] = False
        self.degradation = {t: (DEGRADATIONS[kinds[t]], rng.integers(2**32)) for t in range(frames) if hit[t]}

    def _new_thing(self, rng: np.random.Generator, role: str, counters: dict[int, int], *, t_cross: float,
                   x_cross: float, y0: float, direction: int) -> _Thing:
        r = _ROLES[role]
        cls = _THING_CLASS[self.fmt][role]
        inst = counters.get(cls, 0)  # per class and video, from 0 like Cityscapes-VPS
        counters[cls] = inst + 1
        vx = direction * rng.uniform(*r.speed)
        hue = rng.uniform(*r.hue) % 1.0
        colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 0.95), rng.uniform(0.6, 0.95)),
                          dtype=np.float32) * 255
        scale = rng.uniform(0.9, 1.1)
        return _Thing(role, cls, inst, x_cross - vx * t_cross, y0, vx, r.half[0] * scale, r.half[1] * scale,
                      rng.uniform(0.0, 0.004), colour, rng.uniform(0, 1))

    def _make_things(self, rng: np.random.Generator, frames: int, max_objects: int) -> list[_Thing]:
        """A crossing pair of one class (identities to keep), then random things; one may pass behind another."""
        n = int(rng.integers(max(2, max_objects // 2), max_objects + 1))
        counters: dict[int, int] = {}
        roles = list(_ROLES)
        cam = lambda t: self.cx0 + self.pan * t  # noqa: E731 - camera centre x at frame t
        # The pair: same class, about the same depth, opposite directions, crossing mid-clip.
        role = str(rng.choice(["person", "car", "cycle"]))
        t_cross = rng.uniform(0.35, 0.65) * frames
        x_cross, y_pair = cam(t_cross) + rng.uniform(-0.15, 0.15), self.horizon + rng.uniform(0.06, 0.12)
        things = [self._new_thing(rng, role, counters, t_cross=t_cross, x_cross=x_cross,
                                  y0=y_pair + dy, direction=d) for d, dy in ((1, 0.0), (-1, 0.006))]
        # The others: first every other class once (in random order), so a video shows several classes.
        others = [str(r) for r in rng.permutation(roles) if r != role]
        others += [roles[int(i)] for i in rng.integers(len(roles), size=max(0, n - 2 - len(others)))]
        for role in others[:n - 2]:
            t_mid = rng.uniform(0.2, 0.8) * frames
            x_mid = cam(t_mid) + rng.uniform(-0.3, 0.3)
            things.append(self._new_thing(rng, role, counters, t_cross=t_mid, x_cross=x_mid,
                                          y0=self.horizon + rng.uniform(0.04, 0.15),
                                          direction=int(rng.choice([-1, 1]))))
        return things

    def camera(self, t: int) -> tuple[float, float, float]:
        """(centre x, centre y, zoom) of the camera at frame t (world units)."""
        return self.cx0 + self.pan * t, self.bob * np.sin(0.9 * t), 1.0 + self.zoom * t

    def _draw_thing(self, th: _Thing, t: int, wx: np.ndarray, wy: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Paint thing ``th`` at frame t into ``image`` (H, W, 3) float; return its (H, W) bool mask."""
        g = 1.0 + th.grow * t
        sx, sy = th.sx * g, th.sy * g
        dx, dy = (wx - (th.x0 + th.vx * t)) / sx, (wy - (th.y0 - sy)) / sy  # object units, centre 0, [-1, 1]
        shape = _ROLES[th.role].shape
        if shape == "ellipse":
            inside = dx**2 + dy**2 < 1
        elif shape == "rounded":
            inside = dx**4 + dy**4 < 1
        elif shape == "box":
            inside = dx**10 + dy**10 < 1
        else:
            inside = np.abs(dx) + np.abs(dy) < 1
        if not inside.any():
            return inside
        pattern = _ROLES[th.role].pattern
        shade = np.ones_like(dx)
        if pattern == "two-tone":  # light top (shirt), dark bottom (trousers)
            shade = np.where(dy > 0.1 * th.detail, 0.45, 1.0)
        elif pattern == "window":  # a pale window band in the upper part
            shade = np.where((dy < -0.2) & (dy > -0.75) & (np.abs(dx) < 0.75), 1.6, 1.0)
        elif pattern == "stripes":  # vertical stripes
            shade = 0.7 + 0.3 * np.sign(np.sin(dx * (3 + 2 * th.detail) * np.pi))
        elif pattern == "hub":  # dark centre
            shade = np.where(np.abs(dx) + np.abs(dy) < 0.35 + 0.2 * th.detail, 0.35, 1.0)
        image[inside] = np.clip(th.colour * shade[inside][:, None], 0, 255)
        return inside

    def render(self, t: int, height: int, width: int, noise_rng: np.random.Generator):
        """Frame t: image (H, W, 3) uint8, labelmap (H, W) uint8, panoptic_inst (H, W) uint16, segments.

        ``segments`` maps each panoptic_inst value present to (class, iscrowd).
        """
        cx, cy, z = self.camera(t)
        xn = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
        yn = ((np.arange(height, dtype=np.float32) + 0.5) / height - 0.5) * (height / width)
        wx = cx + xn[None, :] / z + np.zeros((height, 1), np.float32)  # (H, W) world coordinates
        wy = cy + yn[:, None] / z + np.zeros((1, width), np.float32)
        amp, freq, phase = self.horizon_wave
        horizon = self.horizon + amp * np.sin(wx * freq + phase)
        s = self.stuff
        label = np.full((height, width), s["sky"], dtype=np.int32)
        # Skyline: buildings and trees in blocks of random height above the horizon.
        block = np.floor(wx / self.block_w).astype(np.int64) % len(self.block_h)
        tall = wy > horizon - self.block_h[block]
        label[tall] = np.where(self.block_tree[block], s["vegetation"], s["building"])[tall]
        # Ground in perspective: road, sidewalks, terrain.
        depth = wy - horizon
        ground = depth > 0
        lateral = np.abs(wx - self.road_centre)
        label[ground] = s["terrain"]
        label[ground & (lateral < 3.2 * depth)] = s["sidewalk"]
        label[ground & (lateral < 2.5 * depth)] = s["road"]
        pole = (((wx - self.pole_offset) % self.pole_spacing) < 0.012) & (wy > horizon - 0.12) & (depth < 0.015)
        label[pole] = s["pole"]
        pan = label.copy()
        # Texture in world coordinates (moves with the scene).
        tex = sum(np.sin(f * wx + p1) * np.sin(f * 0.7 * wy + p2) for f, p1, p2 in self.waves) / len(self.waves)
        image = np.empty((height, width, 3), dtype=np.float32)
        lut = np.zeros((max(self.colours) + 1, 3), np.float32)
        for i, c in self.colours.items():
            lut[i] = c
        image[:] = lut[label] * (0.8 + 0.25 * tex[..., None])
        windows = (label == s["building"]) & (np.sin(wx * 260) > 0.5) & (np.sin(wy * 300) > 0.4)
        image[windows] *= 0.55
        stripes = (label == s["road"]) & (lateral < 0.004 + 0.02 * depth) & (np.sin(wy * 120) > 0)
        image[stripes] = 230
        segments: dict[int, tuple[int, int]] = {}
        if self.crowd is not None:
            ccx, ccy, rx, ry = self.crowd
            crowd = ((wx - ccx) / rx) ** 2 + ((wy - (ccy - ry)) / ry) ** 2 < 1
            cls = _THING_CLASS[self.fmt][_CROWD_ROLE]
            label[crowd], pan[crowd] = cls, cls  # crowd: the bare thing class in panoptic_inst
            image[crowd] = self.colours[cls] * (0.6 + 0.4 * (np.sin(wx * 400) > 0))[crowd][:, None]
        # Things, far to near (painter's order by their ground contact), so nearer ones occlude.
        for th in sorted(self.things, key=lambda th: th.y0):
            inside = self._draw_thing(th, t, wx, wy, image)
            label[inside], pan[inside] = th.cls, th.cls * PANOPTIC_LABEL_DIVISOR + th.inst
        if self.void_blob is not None:
            vx_, vy_, r = self.void_blob
            blob = ((wx - vx_) ** 2 + (wy - vy_) ** 2) < r**2
            label[blob], pan[blob] = IGNORE_LABEL, IGNORE_LABEL
            image[blob] = (90, 60, 30)
        # Ego-vehicle hood: fixed in the image, void.
        yy = (np.arange(height)[:, None] + 0.5) / height
        hood = yy > 0.9 - 0.05 * np.cos(np.pi * (xn[None, :] * 2))
        label[hood], pan[hood] = IGNORE_LABEL, IGNORE_LABEL
        image[hood] = (40, 40, 45)
        image += noise_rng.normal(0, 3, size=image.shape).astype(np.float32)
        if t in self.degradation:
            image = _degrade(image, *self.degradation[t])
        for v in np.unique(pan).tolist():
            if v == IGNORE_LABEL:
                continue
            cls = v // PANOPTIC_LABEL_DIVISOR if v >= PANOPTIC_LABEL_DIVISOR else v
            crowd = int(v < PANOPTIC_LABEL_DIVISOR and cls in self.thing_ids)
            segments[v] = (cls, crowd)
        return (np.clip(image, 0, 255).astype(np.uint8), label.astype(np.uint8), pan.astype(np.uint16), segments)


def _degrade(image: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """One degraded frame (H, W, 3) float: strong blur, heavy noise, a glare patch over part of it, or dark and
    low-contrast. Sizes scale with the frame, so a set at any resolution is as hard."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    if kind == "blur":
        pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
        return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=w / 80)), dtype=np.float32)
    if kind == "noise":
        return image + rng.normal(0, 50, size=image.shape).astype(np.float32)
    if kind == "glare":  # an over-exposed blob covering a third to a half of the frame width
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.25, 0.4) * h, rng.uniform(0.17, 0.25) * w
        yy, xx = np.mgrid[0:h, 0:w]
        alpha = np.clip(1.5 * (1 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2), 0, 0.9)[..., None]
        return image * (1 - alpha) + 250 * alpha
    return image * 0.3 + 20 + rng.normal(0, 8, size=image.shape).astype(np.float32)  # dark


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------


def _write_gray(path: Path, array: np.ndarray) -> None:
    """uint8 -> 8-bit grayscale PNG, uint16 -> 16-bit grayscale PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]


def _instance_annotations(pan: np.ndarray, segments: dict, image_id: int, start_id: int) -> list[dict]:
    anns = []
    for value, (cls, crowd) in sorted(segments.items()):
        if value < PANOPTIC_LABEL_DIVISOR and not crowd:
            continue  # stuff
        mask = pan == value
        anns.append({
            "id": start_id + len(anns), "inst_id": -1 if crowd else value % PANOPTIC_LABEL_DIVISOR,
            "image_id": image_id, "category_id": int(cls), "iscrowd": crowd, "area": int(mask.sum()),
            "bbox": _bbox(mask), "segmentation": rle_encode(mask, compressed=not crowd),
            "width": int(mask.shape[1]), "height": int(mask.shape[0]),
        })
    return anns


def _things_categories(fmt: str) -> list[dict]:
    return [dict(c) for c in _CATEGORIES[fmt] if c["isthing"]]


def _cityscapes_name(vid: int, frame: int, city: str, seq: int, base: int) -> str:
    kind = "leftImg8bit" if frame == 20 else "newImg8bit"
    return f"{vid:04d}_{frame:04d}_{city}_{seq:06d}_{base + frame:06d}_{kind}.png"


def _write_split(p: ToyVPSParams, root: Path, split: str, first_vid: int, num_videos: int,
                 rng: np.random.Generator) -> None:
    """Render and write the videos of one split (``train`` or ``val``) with its JSON files."""
    fmt = p.format
    layout = CITYSCAPES_VPS if fmt == "cityscapes_vps" else VIPER
    cats = [dict(c) for c in _CATEGORIES[fmt]]
    dense = split == "val"  # evaluation needs every frame; training only the annotated ones
    frames = CITYSCAPES_FRAMES if fmt == "cityscapes_vps" else p.frames
    ids = PanopticColours(cats, rng)
    inst_images, inst_anns, pan_images, all_images, gt_images, gt_anns = [], [], [], [], [], []
    for vid in range(first_vid, first_vid + num_videos):
        scene = _Scene(fmt, rng, frames, p.max_objects, index=vid - first_vid)
        noise_rng = np.random.default_rng(rng.integers(2**63))
        city, seq, base = _CITIES[vid % len(_CITIES)], int(rng.integers(1000)), int(rng.integers(100, 5000))
        colours: dict[int, int] = {}  # panoptic_inst value -> segment id, per video (ids constant in a video)
        for t in range(frames):
            if fmt == "cityscapes_vps":
                frame = t + 1
                annotated = frame % ANNOTATION_STRIDE == 0
                name = _cityscapes_name(vid, frame, city, seq, base)
            else:
                frame = t
                annotated = dense or frame % ANNOTATION_STRIDE == 0
                name = f"{vid:03d}_{frame:05d}.jpg"
            if not (annotated or dense):
                continue
            image, label, pan, segments = scene.render(t, p.height, p.width, noise_rng)
            record = {"width": p.width, "height": p.height, "file_name": name}
            split_dir = root / layout.split_name(split)
            if fmt == "cityscapes_vps" and dense:
                write_image(split_dir / "img_all" / name, image)
                all_images.append({"id": vid * 10000 + frame, **record})
            if not annotated:
                continue
            write_image(layout.image_dir(root, split) / name, image, quality=92)
            gt_name = layout.gt_png_name(name)
            _write_gray(layout.labelmap_dir(root, split) / gt_name, label)
            if fmt == "cityscapes_vps":
                _write_gray(layout.panoptic_inst_dir(root, split) / gt_name, pan)
            image_id = len(inst_images) + 1
            inst_images.append({"id": image_id, **record})
            inst_anns += _instance_annotations(pan, segments, image_id, len(inst_anns) + 1)
            pan_images.append({"id": layout.image_id_of(name), **record})
            if dense:
                seg_ids = np.zeros(pan.shape, dtype=np.int64)
                info = []
                for value, (cls, crowd) in sorted(segments.items()):
                    if value not in colours:
                        colours[value] = ids.get(cls)
                    mask = pan == value
                    seg_ids[mask] = colours[value]
                    info.append({"id": colours[value], "category_id": int(cls), "iscrowd": crowd,
                                 "area": int(mask.sum())})
                write_panoptic_png(layout.panoptic_gt_dir(root, split) / gt_name, seg_ids)
                gt_images.append({"id": layout.image_id_of(name), **record})
                gt_anns.append({"image_id": layout.image_id_of(name), "file_name": gt_name, "segments_info": info})
    instances = {"images": inst_images, "annotations": inst_anns, "categories": _things_categories(fmt)}
    gt = {"images": gt_images, "annotations": gt_anns, "categories": cats}
    if fmt == "cityscapes_vps":
        write_json_atomic(root / f"instances_{split}_city_vps_rle.json", instances)
        write_json_atomic(root / f"panoptic_im_{split}_city_vps.json", {"images": pan_images, "categories": cats})
        if dense:
            write_json_atomic(layout.frames_json(root, split), {"images": all_images, "categories": cats})
            write_json_atomic(layout.panoptic_gt_json(root, split), gt)
    else:
        write_json_atomic(layout.instances_json(root, split), instances)
        if dense:
            write_json_atomic(layout.panoptic_gt_json(root, split), gt)


def _vipseg_values(pan: np.ndarray) -> np.ndarray:
    """The scene's panoptic_inst map (VIPSeg category ids) -> VIPSeg mask values (0 void, id + 1, (id + 1) * 100
    + instance; a crowd region's bare thing id becomes its bare class value)."""
    pan = pan.astype(np.int64)
    cls, inst = np.divmod(pan, PANOPTIC_LABEL_DIVISOR)
    values = np.where(pan >= PANOPTIC_LABEL_DIVISOR, (cls + 1) * PANOMASK_THING_DIVISOR + inst, pan + 1)
    return np.where(pan == IGNORE_LABEL, 0, values).astype(np.uint16)


def _write_vipseg_split(p: ToyVPSParams, root: Path, split: str, first_vid: int, num_videos: int,
                        rng: np.random.Generator) -> None:
    """Render the videos of one split in VIPSeg's original layout (every frame annotated) and its list."""
    videos = []
    for vid in range(first_vid, first_vid + num_videos):
        video = f"{vid}_toy{vid:04d}"
        scene = _Scene("vipseg", rng, p.frames, p.max_objects, index=vid - first_vid)
        noise_rng = np.random.default_rng(rng.integers(2**63))
        for t in range(p.frames):
            image, _, pan, _ = scene.render(t, p.height, p.width, noise_rng)
            write_image(VIPSEG_ORIGINAL_LAYOUT.image_path(root, video, f"{t:08d}"), image, quality=92)
            _write_gray(VIPSEG_ORIGINAL_LAYOUT.panomask_path(root, video, f"{t:08d}"), _vipseg_values(pan))
        videos.append(video)
    with atomic_path(VIPSegLayout.split_file(root, split)) as tmp:
        tmp.write_text("".join(f"{v}\n" for v in videos))


def generate_toy_vps(
    root: str | Path,
    *,
    format: str,
    seed: int,
    videos: int = 2,
    val_videos: int = 2,
    height: int = 256,
    width: int = 512,
    frames: int = CITYSCAPES_FRAMES,
    max_objects: int = 6,
) -> Path:
    """Write a toy set in ``format`` ("cityscapes_vps", "viper" or "vipseg") under ``root`` and return ``root``.

    Args:
        videos / val_videos: clips in the training / evaluation split (training needs >= 1).
        height, width: frame size (at least 32x64).
        frames: raw frames per VIPER video (multiple of 5) or VIPSeg video (>= 2); Cityscapes-VPS clips always
            have 30.
        max_objects: thing instances per video (2..max_objects).
    A complete set with the same parameters is left untouched; a folder with anything else is refused.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "cityscapes_vps":
        frames = CITYSCAPES_FRAMES
    if seed < 0 or videos < 1 or val_videos < 0 or max_objects < 2:
        raise ValueError("need seed >= 0, videos >= 1, val_videos >= 0 and max_objects >= 2")
    if height < 32 or width < 64 or (format == "vipseg" and frames < 2) or (
            format != "vipseg" and (frames < 2 * ANNOTATION_STRIDE or frames % ANNOTATION_STRIDE)):
        raise ValueError(f"need height >= 32, width >= 64 and frames a multiple of {ANNOTATION_STRIDE} >= "
                         f"{2 * ANNOTATION_STRIDE}, got {height}x{width}, {frames} frames")
    params = ToyVPSParams(format, int(seed), int(videos), int(val_videos), int(height), int(width), int(frames),
                          int(max_objects))
    root = Path(root)
    meta = root / META_FILE
    if meta.is_file():
        old = json.loads(meta.read_text())
        if old == asdict(params):
            return root
        if old.get("generator", 1) != GENERATOR_VERSION:
            raise DataError(f"{root} holds a toy set made by an older toy generator (version "
                             f"{old.get('generator', 1)}, {meta}); delete that folder or use another one")
        raise DataError(f"{root} holds a toy set made with other parameters ({meta}); use another folder")
    if root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise DataError(f"{root} is not empty and holds no {META_FILE}; refusing to write a toy set into it")
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, FORMATS.index(format)]))
    if format == "vipseg":
        _write_vipseg_split(params, root, "train", 1, params.videos, rng)
        _write_vipseg_split(params, root, "val", 1 + params.videos, params.val_videos, rng)
        write_json_atomic(root / "panoVIPSeg_categories.json", vipseg_categories())  # shipped with the release
        convert_vipseg(root, height=params.height, log=lambda _: None)  # the toy's own size: nothing resized
    else:
        _write_split(params, root, "train", 1, params.videos, rng)
        if params.val_videos:
            _write_split(params, root, "val", 1 + params.videos, params.val_videos, rng)
    write_json_atomic(meta, asdict(params))  # last: its presence marks a complete set
    return root


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write a toy Cityscapes-VPS, VIPER-VPS or VIPSeg set (official "
                                                 "layout).")
    parser.add_argument("--root", required=True, help="output folder (created)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=int, default=2, help="training clips")
    parser.add_argument("--val-videos", type=int, default=2, help="evaluation clips")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--frames", type=int, default=CITYSCAPES_FRAMES, help="frames per VIPER or VIPSeg video")
    parser.add_argument("--max-objects", type=int, default=6)
    args = parser.parse_args(argv)
    root = generate_toy_vps(args.root, format=args.format, seed=args.seed, videos=args.videos,
                            val_videos=args.val_videos, height=args.height, width=args.width, frames=args.frames,
                            max_objects=args.max_objects)
    print(f"toy {args.format} set in {root}")
    return root


if __name__ == "__main__":
    main()

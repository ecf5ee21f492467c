"""A procedurally generated toy Cityscapes-VPS or VIPER-VPS set, in the exact published layout, for CPU
demos and tests.

Each video is a driving scene seen by a moving camera: sky, a skyline of buildings and trees, poles, a
road in perspective with sidewalks and terrain, all textured in world coordinates, while the camera pans
sideways and zooms in (driving forward), so copying an earlier frame's panoptic map scores low. Thing
instances of several classes (people crossing, vehicles on the road...) move, grow as they approach,
occlude and cross each other, each with its own colour and stripe pattern and a track id that stays
constant within the video. The ego-vehicle hood at the bottom is void; some videos have a void blob and a
crowd region (a thing class without instances, ``iscrowd=1``).

Files written under ``root`` (encodings as the official preparation scripts write them; vpsnet.md)::

    cityscapes_vps: panoptic_im_{train,val}_city_vps.json, instances_{train,val}_city_vps_rle.json,
        im_all_info_val_city_vps.json, panoptic_gt_val_city_vps.json,
        train/{img,labelmap,panoptic_inst}, val/{img,img_all,labelmap,panoptic_inst,panoptic_video}
        file names <vid:4d>_<frame:4d>_<city>_<seq:6d>_<frame:6d>_{leftImg8bit|newImg8bit}.png; 30 frames per
        clip, frames 5, 10, ..., 30 annotated (the 20th is the "leftImg8bit"/"_gtFine_color.png" one)
    viper: instances_train_05_viper_coco.json, instances_val_day_01_viper_coco.json,
        viper_panoptic_val_day_video.json, train/{img,labelmap} (every 5th frame), val_day/{img,panoptic_video}
        (every frame); file names <vid:3d>_<frame:5d>.jpg
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
[--videos N --val-videos N --height H --width W --frames T (viper) --max-objects K]``.
"""

from __future__ import annotations

import argparse
import colorsys
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vidseg.constants import IGNORE_LABEL, PANOPTIC_LABEL_DIVISOR
from vidseg.data.cityscapes_vps import CITYSCAPES_VPS_CATEGORIES
from vidseg.data.io import atomic_path, write_image, write_json_atomic
from vidseg.data.panoptic import write_panoptic_png
from vidseg.data.viper import VIPER_CATEGORIES
from vidseg.data.vps_common import rle_encode
from vidseg.data.vps_layout import CITYSCAPES_VPS, VIPER

META_FILE = "toy_vps.json"
FORMATS = ("cityscapes_vps", "viper")
CITYSCAPES_FRAMES = 30  # every Cityscapes-VPS clip has 30 frames, every 5th annotated
ANNOTATION_STRIDE = 5
_CITIES = ("frankfurt", "lindau", "munster")

# Scene roles -> class ids of each format.
_STUFF = {
    "cityscapes_vps": dict(road=0, sidewalk=1, building=2, fence=4, pole=5, vegetation=8, terrain=9, sky=10),
    "viper": dict(sky=0, road=1, sidewalk=2, terrain=3, vegetation=5, building=6, pole=7, fence=8),
}
# Thing classes with their shape ("round" = ellipse, "box" = superellipse) and world half-size (w, h).
_THINGS = {
    "cityscapes_vps": [(11, "round", (0.018, 0.05)), (12, "round", (0.02, 0.055)), (13, "box", (0.07, 0.04)),
                       (14, "box", (0.09, 0.06)), (15, "box", (0.11, 0.07)), (17, "round", (0.03, 0.035)),
                       (18, "round", (0.028, 0.03))],
    "viper": [(17, "round", (0.018, 0.05)), (18, "round", (0.03, 0.035)), (19, "box", (0.07, 0.04)),
              (20, "box", (0.08, 0.05)), (21, "box", (0.11, 0.07)), (22, "box", (0.09, 0.06))],
}
_CROWD_CLASS = {"cityscapes_vps": 11, "viper": 17}
_CATEGORIES = {"cityscapes_vps": CITYSCAPES_VPS_CATEGORIES, "viper": VIPER_CATEGORIES}


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


# ----------------------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Thing:
    cls: int
    inst: int
    shape: str
    x0: float  # world position of the bottom centre at t = 0
    y0: float
    vx: float  # world units per frame
    vy: float
    sx: float  # world half-size
    sy: float
    grow: float  # relative size change per frame
    colour: np.ndarray  # (3,) float
    stripe: float  # stripe frequency in object units


class _Scene:
    """One video's random layout; :meth:`render` draws frame t as (image, labelmap, panoptic_inst)."""

    def __init__(self, fmt: str, rng: np.random.Generator, frames: int, max_objects: int) -> None:
        self.fmt, self.stuff = fmt, _STUFF[fmt]
        self.colours = {c["id"]: np.array(c["color"], dtype=np.float32) for c in _CATEGORIES[fmt]}
        self.thing_ids = {c["id"] for c in _CATEGORIES[fmt] if c["isthing"]}
        # Camera: pans sideways and zooms in (driving forward) with a slight bob.
        self.pan = rng.choice([-1, 1]) * rng.uniform(0.006, 0.012)
        self.zoom = rng.uniform(0.02, 0.035)
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
            if rng.random() < 0.5 else None)
        self.crowd = (
            (self.road_centre + rng.choice([-1, 1]) * rng.uniform(0.12, 0.25), self.horizon + rng.uniform(0.03, 0.06),
             rng.uniform(0.04, 0.07), rng.uniform(0.02, 0.035))
            if rng.random() < 0.5 else None)
        self.things = self._make_things(rng, frames, max_objects)

    def _make_things(self, rng: np.random.Generator, frames: int, max_objects: int) -> list[_Thing]:
        kinds = _THINGS[self.fmt]
        n = int(rng.integers(max(2, max_objects // 2), max_objects + 1))
        counters: dict[int, int] = {}
        things = []
        for k in range(n):
            # The first two are a vehicle and a person so every video has several classes.
            cls, shape, (sx, sy) = kinds[2] if k == 0 else kinds[0] if k == 1 else kinds[int(rng.integers(len(kinds)))]
            inst = counters.get(cls, 0)  # per class and video, from 0 like Cityscapes-VPS
            counters[cls] = inst + 1
            t_mid = rng.uniform(0.2, 0.8) * frames
            cam_x = self.cx0 + self.pan * t_mid
            y0 = self.horizon + rng.uniform(0.03, 0.12)
            # People cross (fast lateral motion); vehicles drive along (slower lateral, approach).
            vx = (rng.choice([-1, 1]) * rng.uniform(0.003, 0.008)) if shape == "round" else rng.uniform(-0.003, 0.003)
            vy = rng.uniform(0.0, 0.0015)
            x0 = cam_x + rng.uniform(-0.25, 0.25) - vx * t_mid
            hue = (k * 0.61803 + rng.uniform(0, 0.2)) % 1.0
            colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.95)),
                              dtype=np.float32) * 255
            scale = rng.uniform(0.8, 1.3)
            things.append(_Thing(cls, inst, shape, x0, y0, vx, vy, sx * scale, sy * scale, rng.uniform(0.0, 0.02),
                                 colour, rng.uniform(2, 5)))
        return things

    def camera(self, t: int) -> tuple[float, float, float]:
        """(centre x, centre y, zoom) of the camera at frame t (world units)."""
        return self.cx0 + self.pan * t, self.bob * np.sin(0.9 * t), 1.0 + self.zoom * t

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
        fence = ground & (depth < 0.012) & (lateral >= 3.2 * depth) & (lateral < 4.0 * depth + 0.05)
        label[fence] = s["fence"]
        pole = (((wx - self.pole_offset) % self.pole_spacing) < 0.006) & (wy > horizon - 0.12) & (depth < 0.015)
        label[pole] = s["pole"]
        pan = label.copy()
        # Texture in world coordinates (moves with the scene).
        tex = sum(np.sin(f * wx + p1) * np.sin(f * 0.7 * wy + p2) for f, p1, p2 in self.waves) / len(self.waves)
        image = np.empty((height, width, 3), dtype=np.float32)
        lut = np.stack([self.colours[i] for i in range(len(self.colours))])
        image[:] = lut[label] * (0.8 + 0.25 * tex[..., None])
        windows = (label == s["building"]) & (np.sin(wx * 260) > 0.5) & (np.sin(wy * 300) > 0.4)
        image[windows] *= 0.55
        stripes = (label == s["road"]) & (lateral < 0.004 + 0.02 * depth) & (np.sin(wy * 120) > 0)
        image[stripes] = 230
        segments: dict[int, tuple[int, int]] = {}
        if self.crowd is not None:
            ccx, ccy, rx, ry = self.crowd
            crowd = ((wx - ccx) / rx) ** 2 + ((wy - (ccy - ry)) / ry) ** 2 < 1
            cls = _CROWD_CLASS[self.fmt]
            label[crowd], pan[crowd] = cls, cls  # crowd: the bare thing class in panoptic_inst
            image[crowd] = self.colours[cls] * (0.6 + 0.4 * (np.sin(wx * 400) > 0))[crowd][:, None]
        # Things, far to near (painter's order by their ground contact), so nearer ones occlude.
        order = sorted(self.things, key=lambda th: th.y0 + th.vy * t)
        for th in order:
            g = 1.0 + th.grow * t
            bx, by = th.x0 + th.vx * t, th.y0 + th.vy * t
            sx, sy = th.sx * g, th.sy * g
            dx, dy = (wx - bx) / sx, (wy - (by - sy)) / sy
            inside = (dx**2 + dy**2 < 1) if th.shape == "round" else (dx**4 + dy**4 < 1)
            if not inside.any():
                continue
            value = th.cls * PANOPTIC_LABEL_DIVISOR + th.inst
            label[inside], pan[inside] = th.cls, value
            shade = 0.75 + 0.25 * np.sign(np.sin(dx * th.stripe * np.pi))
            image[inside] = th.colour * shade[inside][:, None] * (1.0 - 0.3 * (dy[inside] > 0.6))[:, None]
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
        for v in np.unique(pan).tolist():
            if v == IGNORE_LABEL:
                continue
            cls = v // PANOPTIC_LABEL_DIVISOR if v >= PANOPTIC_LABEL_DIVISOR else v
            crowd = int(v < PANOPTIC_LABEL_DIVISOR and cls in self.thing_ids)
            segments[v] = (cls, crowd)
        return (np.clip(image, 0, 255).astype(np.uint8), label.astype(np.uint8), pan.astype(np.uint16), segments)


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------


class _IdGenerator:
    """COCO-panoptic segment colours like panopticapi's IdGenerator (one per split, seeded)."""

    def __init__(self, categories, rng: np.random.Generator) -> None:
        self.categories = {c["id"]: c for c in categories}
        self.rng = rng
        self.taken = {(0, 0, 0)} | {tuple(c["color"]) for c in categories if not c["isthing"]}

    def get(self, cls: int) -> int:
        base = tuple(self.categories[cls]["color"])
        if self.categories[cls]["isthing"] and base in self.taken:
            while True:
                c = tuple(int(v) for v in np.clip(np.array(base) + self.rng.integers(-30, 31, size=3), 0, 255))
                if c not in self.taken:
                    break
            base = c
        self.taken.add(base)
        r, g, b = base
        return r + 256 * g + 256 * 256 * b


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
    ids = _IdGenerator(cats, rng)
    inst_images, inst_anns, pan_images, all_images, gt_images, gt_anns = [], [], [], [], [], []
    for vid in range(first_vid, first_vid + num_videos):
        scene = _Scene(fmt, rng, frames, p.max_objects)
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
    """Write a toy set in ``format`` ("cityscapes_vps" or "viper") under ``root`` and return ``root``.

    Args:
        videos / val_videos: clips in the training / evaluation split (training needs >= 1).
        height, width: frame size (at least 32x64).
        frames: raw frames per VIPER video (multiple of 5); Cityscapes-VPS clips always have 30.
        max_objects: thing instances per video (2..max_objects).
    A complete set with the same parameters is left untouched; a folder with anything else is refused.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "cityscapes_vps":
        frames = CITYSCAPES_FRAMES
    if seed < 0 or videos < 1 or val_videos < 0 or max_objects < 2:
        raise ValueError("need seed >= 0, videos >= 1, val_videos >= 0 and max_objects >= 2")
    if height < 32 or width < 64 or frames < 2 * ANNOTATION_STRIDE or frames % ANNOTATION_STRIDE:
        raise ValueError(f"need height >= 32, width >= 64 and frames a multiple of {ANNOTATION_STRIDE} >= "
                         f"{2 * ANNOTATION_STRIDE}, got {height}x{width}, {frames} frames")
    params = ToyVPSParams(format, int(seed), int(videos), int(val_videos), int(height), int(width), int(frames),
                          int(max_objects))
    root = Path(root)
    meta = root / META_FILE
    if meta.is_file():
        if json.loads(meta.read_text()) == asdict(params):
            return root
        raise ValueError(f"{root} holds a toy set made with other parameters ({meta}); use another folder")
    if root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise ValueError(f"{root} is not empty and holds no {META_FILE}; refusing to write a toy set into it")
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, FORMATS.index(format)]))
    _write_split(params, root, "train", 1, params.videos, rng)
    if params.val_videos:
        _write_split(params, root, "val", 1 + params.videos, params.val_videos, rng)
    write_json_atomic(meta, asdict(params))  # last: its presence marks a complete set
    return root


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write a toy Cityscapes-VPS or VIPER-VPS set (official layout).")
    parser.add_argument("--root", required=True, help="output folder (created)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=int, default=2, help="training clips")
    parser.add_argument("--val-videos", type=int, default=2, help="evaluation clips")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--frames", type=int, default=CITYSCAPES_FRAMES, help="frames per VIPER video")
    parser.add_argument("--max-objects", type=int, default=6)
    args = parser.parse_args(argv)
    root = generate_toy_vps(args.root, format=args.format, seed=args.seed, videos=args.videos,
                            val_videos=args.val_videos, height=args.height, width=args.width, frames=args.frames,
                            max_objects=args.max_objects)
    print(f"toy {args.format} set in {root}")
    return root


if __name__ == "__main__":
    main()

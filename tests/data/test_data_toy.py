"""Toy DAVIS generator: layout, determinism, resume, first-frame objects, difficulty."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.data.io import DAVIS_PALETTE, read_mask
from vidseg.data.toy import (
    MIN_FIRST_FRAME_FRACTION,
    generate_toy_davis,
    main,
    render_toy_sequence,
    sequence_name,
)

TINY = dict(num_train=1, num_val=1, frames=3, height=40, width=64, max_objects=2)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_determinism(tmp_path: Path) -> None:
    a = generate_toy_davis(tmp_path / "a", seed=3, **TINY)
    b = generate_toy_davis(tmp_path / "b", seed=3, **TINY)
    files = _files(a)
    assert files == _files(b)  # same seed -> byte-identical dataset
    names = {"train": sequence_name(3, "train", 0), "val": sequence_name(3, "val", 0)}
    for split, name in names.items():
        assert "s3" in name
        assert (a / "ImageSets" / "2017" / f"{split}.txt").read_text() == f"{name}\n"
        for i in range(TINY["frames"]):
            assert f"JPEGImages/480p/{name}/{i:05d}.jpg" in files
            mask_path = a / "Annotations" / "480p" / name / f"{i:05d}.png"
            with Image.open(mask_path) as img:
                assert img.mode == "P" and img.getpalette()[:30] == DAVIS_PALETTE[:30]
            with Image.open(a / "JPEGImages" / "480p" / name / f"{i:05d}.jpg") as img:
                assert img.size == (TINY["width"], TINY["height"]) and img.mode == "RGB"
            assert read_mask(mask_path).max() <= TINY["max_objects"]
    assert json.loads((a / "toy_davis.json").read_text())["seed"] == 3


def test_other_seed_gives_other_names_and_pixels(tmp_path: Path) -> None:
    a = render_toy_sequence(seed=0, split="val", index=0, frames=2, height=40, width=64, max_objects=2)
    b = render_toy_sequence(seed=1, split="val", index=0, frames=2, height=40, width=64, max_objects=2)
    assert not np.array_equal(a[0], b[0])
    assert sequence_name(0, "val", 0) != sequence_name(1, "val", 0)


def test_resume_completes_and_rerun_is_noop(tmp_path: Path) -> None:
    root = generate_toy_davis(tmp_path / "t", seed=0, **TINY)
    reference = _files(root)
    seq = sequence_name(0, "train", 0)
    (root / "JPEGImages" / "480p" / seq / "00001.jpg").unlink()
    (root / "ImageSets" / "2017" / "val.txt").unlink()
    generate_toy_davis(root, seed=0, **TINY)
    assert _files(root) == reference
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    generate_toy_davis(root, seed=0, **TINY)  # complete: nothing is rewritten
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes
    assert not [p for p in root.rglob(".*") if p.is_file()]  # no temporaries left behind


def test_refuses_other_parameters_or_foreign_data(tmp_path: Path) -> None:
    root = generate_toy_davis(tmp_path / "t", seed=0, **TINY)
    with pytest.raises(ValueError, match="other parameters"):
        generate_toy_davis(root, seed=1, **TINY)
    foreign = tmp_path / "davis"
    (foreign / "ImageSets" / "2017").mkdir(parents=True)
    with pytest.raises(ValueError, match="not written by"):
        generate_toy_davis(foreign, seed=0, **TINY)


def test_first_frame_has_every_object(toy_davis_root: Path) -> None:
    for split in ("train", "val"):
        for seq in (toy_davis_root / "ImageSets" / "2017" / f"{split}.txt").read_text().split():
            masks = sorted((toy_davis_root / "Annotations" / "480p" / seq).glob("*.png"))
            first = read_mask(masks[0])
            n = int(first.max())
            assert n >= 1
            counts = np.bincount(first.ravel(), minlength=n + 1)
            assert (counts[1:] >= MIN_FIRST_FRAME_FRACTION * first.size).all(), (seq, counts)
            later_max = max(int(read_mask(m).max()) for m in masks)
            assert later_max <= n  # no object appears after the first frame


def test_copying_the_first_mask_scores_poorly() -> None:
    """Objects move: the first-frame mask copied to every frame must have a low mean IoU."""
    ious = []
    for index in range(4):
        _, labels = render_toy_sequence(seed=0, split="val", index=index, frames=16, height=64, width=112,
                                        max_objects=3)
        for k in range(1, int(labels[0].max()) + 1):
            first = labels[0] == k
            for t in range(1, len(labels) - 1):  # DAVIS evaluates frames 1..T-2
                gt = labels[t] == k
                union = (gt | first).sum()
                ious.append(1.0 if union == 0 else (gt & first).sum() / union)
    assert np.mean(ious) < 0.45, np.mean(ious)


def test_objects_move_several_pixels_per_frame() -> None:
    steps = []
    for index in range(2):
        _, labels = render_toy_sequence(seed=0, split="train", index=index, frames=10, height=128, width=224,
                                        max_objects=3)
        for k in range(1, int(labels[0].max()) + 1):
            centres = [np.argwhere(f == k).mean(axis=0) for f in labels if (f == k).sum() > 50]
            steps.append(np.median(np.linalg.norm(np.diff(np.array(centres), axis=0), axis=1)))
    assert np.median(steps) > 2.0, steps  # pixels per frame at 128x224


def test_objects_disappear_and_come_back() -> None:
    """Leaving the frame or full occlusion, then re-entering: trackers must handle absent objects."""
    comebacks = 0
    for index in range(4):
        _, labels = render_toy_sequence(seed=0, split="train", index=index, frames=16, height=64, width=112,
                                        max_objects=3)
        for k in range(1, int(labels[0].max()) + 1):
            visible = (labels == k).any(axis=(1, 2))
            gone = int(np.argmin(visible))
            comebacks += bool(not visible.all() and visible[gone:].any())
    assert comebacks >= 1


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = main(["--root", os.fspath(tmp_path / "cli"), "--num-train", "1", "--num-val", "1", "--frames", "2",
                 "--height", "32", "--width", "48", "--max-objects", "1", "--seed", "5", "--videos"])
    assert "data.root=" in capsys.readouterr().out
    assert (root / "ImageSets" / "2017" / "train.txt").read_text().strip() == sequence_name(5, "train", 0)
    assert (root / "videos" / f"{sequence_name(5, 'val', 0)}.mp4").stat().st_size > 0


@pytest.mark.parametrize("params", [
    dict(seed=-1), dict(num_train=-1), dict(num_val=-1), dict(frames=1), dict(max_objects=0),
    dict(max_objects=255), dict(height=31), dict(width=31),
])
def test_parameter_ranges_are_refused_one_past_their_ends(tmp_path: Path, params: dict) -> None:
    with pytest.raises(ValueError, match="must be|need"):
        generate_toy_davis(tmp_path / "toy", **{**TINY, **params})
    assert not (tmp_path / "toy").exists() or not any((tmp_path / "toy").iterdir())


def test_parameter_ranges_accept_their_ends(tmp_path: Path) -> None:
    root = generate_toy_davis(tmp_path / "toy", num_train=0, num_val=1, frames=2, height=32, width=32,
                              max_objects=1, seed=0)
    seq = (root / "ImageSets" / "2017" / "val.txt").read_text().split()
    assert len(seq) == 1
    masks = sorted((root / "Annotations" / "480p" / seq[0]).glob("*.png"))
    assert len(masks) == 2 and read_mask(masks[0]).shape == (32, 32)
    assert set(np.unique(read_mask(masks[0])).tolist()) == {0, 1}

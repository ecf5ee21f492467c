"""Shared mask/image I/O (vidseg.data.io)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.data.io import (
    DAVIS_PALETTE,
    MaskFormatError,
    atomic_path,
    read_image,
    read_mask,
    rgb_to_index_mask,
    write_image,
    write_json_atomic,
    write_mask,
)


def test_palette_starts_like_davis() -> None:
    assert DAVIS_PALETTE[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
    assert len(DAVIS_PALETTE) == 768


def test_mask_round_trip_and_rgb_rejection(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [3, 255, 0]], np.uint8)
    write_mask(tmp_path / "m.png", labels)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), labels)
    colours = np.asarray(DAVIS_PALETTE, np.uint8).reshape(-1, 3)[labels]
    Image.fromarray(colours).save(tmp_path / "rgb.png")
    with pytest.raises(MaskFormatError, match="rgb.png.*RGB"):
        read_mask(tmp_path / "rgb.png")
    np.testing.assert_array_equal(rgb_to_index_mask(colours), labels)
    with pytest.raises(FileNotFoundError):
        read_mask(tmp_path / "missing.png")


def test_binary_255_masks(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8), mode="L").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png", binary_255=True), [[0, 1], [1, 0]])


def test_image_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    image = np.zeros((8, 10, 3), np.uint8)
    image[2:5, 3:7] = (200, 30, 60)
    write_image(tmp_path / "i.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "i.png"), image)
    write_image(tmp_path / "i.jpg", image)
    assert np.abs(read_image(tmp_path / "i.jpg").astype(int) - image).mean() < 10
    (tmp_path / "bad.jpg").write_bytes((tmp_path / "i.jpg").read_bytes()[:200])
    with pytest.raises(OSError, match="bad.jpg.*corrupt"):
        read_image(tmp_path / "bad.jpg")


def test_atomic_writes(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.json"
    write_json_atomic(target, {"a": 1})
    assert target.read_text().startswith("{")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert '"a": 1' in target.read_text() and sorted(p.name for p in target.parent.iterdir()) == ["x.json"]

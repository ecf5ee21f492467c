"""COCO-panoptic PNG/JSON I/O: exact id round trip and clear errors for the wrong encodings."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vidseg.data.panoptic import id_to_rgb, read_json, read_panoptic_png, rgb_to_id, write_panoptic_png
from vidseg.errors import DataError, MaskFormatError


def test_id_rgb_round_trip_covers_all_three_channels(tmp_path):
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 11_000_123, 256**3 - 1]], dtype=np.int64)
    assert (rgb_to_id(id_to_rgb(ids)) == ids).all()
    assert id_to_rgb(np.array([[26 + 256 * 3 + 65536 * 7]]))[0, 0].tolist() == [26, 3, 7]  # R + 256 G + 256^2 B
    write_panoptic_png(tmp_path / "p.png", ids)
    assert (read_panoptic_png(tmp_path / "p.png") == ids).all()
    with pytest.raises(ValueError, match="16777216"):
        id_to_rgb(np.array([[256**3]]))


@pytest.mark.parametrize("mode", ["L", "P", "LA"])
def test_non_rgb_png_is_refused_with_the_fix(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).convert(mode).save(path)
    with pytest.raises(MaskFormatError, match=rf"{mode}\.png.*mode is '{mode}'.*COCO-panoptic RGB"):
        read_panoptic_png(path)


def test_rgba_png_is_read_from_its_rgb_channels(tmp_path, monkeypatch, capsys):
    import vidseg.data.panoptic as panoptic

    monkeypatch.setattr(panoptic, "_RGBA_WARNED", [])
    ids = np.arange(16).reshape(4, 4) * 1001
    rgba = np.concatenate([id_to_rgb(ids), np.full((4, 4, 1), 3, np.uint8)], axis=-1)  # alpha carries nothing
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "a.png"), ids)
    assert "vidseg: warning:" in capsys.readouterr().err


def test_truncated_and_missing_png(tmp_path):
    write_panoptic_png(tmp_path / "ok.png", np.arange(64 * 64).reshape(64, 64) * 1000)
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MaskFormatError, match=r"cut\.png.*corrupt or truncated"):
        read_panoptic_png(tmp_path / "cut.png")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_panoptic_png(tmp_path / "nope.png")


def test_read_json_names_corrupt_files(tmp_path):
    (tmp_path / "a.json").write_text('{"annotations": [')
    with pytest.raises(DataError, match=r"a\.json: pred\.json is not valid JSON"):
        read_json(tmp_path / "a.json", what="pred.json")
    with pytest.raises(FileNotFoundError, match="ground truth not found"):
        read_json(tmp_path / "b.json", what="ground truth")

"""YouTube-VOS own scoring (vidseg.data.youtube_vos_layout.evaluate_folder): hand-computed numbers for objects
that start later, and the inputs that are refused or said before a number is printed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.data.io import write_mask
from vidseg.data.youtube_vos_layout import evaluate_folder, load_video, read_meta
from vidseg.errors import DataError, DatasetLayoutError

T, H, W = 6, 4, 6


def _dataset(root: Path, objects: dict[int, int]) -> tuple[list, Path, Path, np.ndarray]:
    """One video "v" of T frames; object ``id`` occupies row ``id - 1`` from frame ``objects[id]`` on.

    Returns ([video], gt dir, results dir holding a perfect copy, gt array).
    """
    frames = [f"{5 * t:05d}" for t in range(T)]
    gt = np.zeros((T, H, W), np.uint8)
    for obj, first in objects.items():
        gt[first:, obj - 1, :] = obj
    for t, name in enumerate(frames):
        (root / "train" / "JPEGImages" / "v").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H)).save(root / "train" / "JPEGImages" / "v" / f"{name}.jpg")
        write_mask(root / "gt" / "v" / f"{name}.png", gt[t])
        write_mask(root / "res" / "v" / f"{name}.png", gt[t])
    meta = {"videos": {"v": {"objects": {str(o): {"category": "x", "frames": frames[f:]}
                                         for o, f in objects.items()}}}}
    (root / "train" / "meta.json").write_text(json.dumps(meta))
    return [load_video(root, "train", "v")], root / "gt", root / "res", gt


def test_late_object_scores_by_hand(tmp_path):
    videos, gt_dir, res, gt = _dataset(tmp_path, {1: 0, 2: 2, 3: 4})
    # Object 2 (row 1, first frame 2): wrong before its first frame, missed AT its first frame and in the last
    # frame (none of these scored), half found in frame 3 (J = 3/6 = 0.5), perfect in frame 4.
    edits = {1: lambda m: m.__setitem__((1, slice(None)), 2), 2: lambda m: m.__setitem__((1, slice(None)), 0),
             3: lambda m: m.__setitem__((1, slice(0, 3)), 0), 5: lambda m: m.__setitem__((1, slice(None)), 0)}
    for t, edit in edits.items():
        mask = gt[t].copy()
        edit(mask)
        write_mask(res / "v" / f"{5 * t:05d}.png", mask)
    out, skipped = evaluate_folder(videos, res, gt_dir)
    assert skipped == ["v_3"]  # first given at frame 4 = T - 2: no frame left to score
    assert [name for name, _, _ in out.per_object] == ["v_1", "v_2"]
    # Object 1 is scored on frames 1..4: frame 1 has row 1 painted 2, not 1: J(1) stays 1.
    assert out.per_frame["v_1"]["J"] == [1.0, 1.0, 1.0, 1.0]
    j2 = out.per_frame["v_2"]["J"]
    assert np.isnan(j2[0]) and np.isnan(j2[1]) and j2[2:] == [0.5, 1.0]
    assert out.object_stats["v_2"]["J-Mean"] == 0.75
    assert out.object_stats["v_2"]["J-Recall"] == 0.5  # 0.5 is not > 0.5
    assert out.global_metrics["J-Mean"] == pytest.approx((1.0 + 0.75) / 2, abs=1e-15)


def test_no_scorable_object_is_refused(tmp_path):
    videos, gt_dir, res, _ = _dataset(tmp_path, {1: 4, 2: 5})
    with pytest.raises(DatasetLayoutError, match=r"no object can be scored.*v_1, v_2"):
        evaluate_folder(videos, res, gt_dir)


def test_no_video_is_refused(tmp_path):
    (tmp_path / "res").mkdir()
    with pytest.raises(DatasetLayoutError, match="no video to score"):
        evaluate_folder([], tmp_path / "res", tmp_path)


def test_extra_result_frames_are_said(tmp_path, capsys):
    videos, gt_dir, res, gt = _dataset(tmp_path, {1: 0})
    write_mask(res / "v" / "00007.png", gt[0])  # not a frame of the video
    out, _ = evaluate_folder(videos, res, gt_dir)
    assert out.global_metrics["J&F-Mean"] == 1.0
    err = capsys.readouterr().err
    assert "vidseg: warning: 1 PNG(s)" in err and "00007.png" in err


def test_missing_result_frame_is_refused(tmp_path):
    videos, gt_dir, res, _ = _dataset(tmp_path, {1: 0})
    (res / "v" / "00010.png").unlink()
    with pytest.raises(FileNotFoundError, match="00010.png: prediction missing"):
        evaluate_folder(videos, res, gt_dir)


def test_meta_json_duplicates_are_refused(tmp_path):
    (tmp_path / "train").mkdir()
    meta = tmp_path / "train" / "meta.json"
    obj = '{"category": "x", "frames": ["00000"]}'
    meta.write_text('{"videos": {"v": {"objects": {"1": OBJ}}, "v": {"objects": {"2": OBJ}}}}'.replace("OBJ", obj))
    with pytest.raises(DataError, match="key 'v' twice in one object"):
        read_meta(tmp_path, "train")
    meta.write_text('{"videos": {"v": {"objects": {"1": OBJ, "01": OBJ}}}}'.replace("OBJ", obj))
    with pytest.raises(DatasetLayoutError, match="lists object 1 twice"):
        read_meta(tmp_path, "train")

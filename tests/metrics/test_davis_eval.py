"""Results-folder evaluation and the result tables, including equality with the official toolkit."""

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.data.io import MaskFormatError, read_mask, write_mask
from vidseg.metrics import (
    JAndF,
    boundary_f,
    evaluate_folder,
    evaluate_sequence,
    format_table,
    jaccard,
    write_results,
)
from vidseg.metrics.davis_eval import DavisResults, _read_frame, _read_plain_png_into, default_workers

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "jf_oracle"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
TOL = 1e-12


def fixture_gt_paths():
    return {s: sorted((FIXTURE / "Annotations" / s).glob("*.png")) for s in EXPECTED["sequences"]}


# --- equality with the official toolkit (see tools/make_jf_oracle.py) -------------------------------------
@pytest.fixture(scope="module")
def fixture_results():
    return evaluate_folder(fixture_gt_paths(), FIXTURE / "results")


def test_per_frame_and_per_object_equal_the_oracle(fixture_results):
    assert [name for name, _, _ in fixture_results.per_object] == list(EXPECTED["per_object"])
    for name, exp in EXPECTED["per_object"].items():
        got = fixture_results.per_frame[name]
        assert got["frames"] == exp["frames"]
        np.testing.assert_allclose(got["J"], exp["J"], rtol=0, atol=TOL)
        np.testing.assert_allclose(got["F"], exp["F"], rtol=0, atol=TOL)
        for stat, value in fixture_results.object_stats[name].items():
            assert value == pytest.approx(exp[stat], abs=TOL), (name, stat)


def test_global_equals_the_oracle(fixture_results):
    for key, value in EXPECTED["global"].items():
        assert fixture_results.global_metrics[key] == pytest.approx(value, abs=TOL), key


def test_csv_files_equal_the_official_script_output(fixture_results, tmp_path):
    write_results(fixture_results, tmp_path, EXPECTED["split"])
    for name, text in EXPECTED["csv"].items():
        assert (tmp_path / name).read_text() == text


def test_wide_radius_equals_the_oracle():
    # the fixture's 40x60 frames have radius 1; a 5-pixel disk checks the disk's shape on the same masks
    radius = EXPECTED["wide_radius"]
    for name, exp in EXPECTED["per_object"].items():
        seq, obj = exp["sequence"], int(name.rsplit("_", 1)[1])
        gt = np.stack([read_mask(FIXTURE / "Annotations" / seq / f"{f}.png") for f in exp["frames"]])
        pred = np.stack([read_mask(FIXTURE / "results" / seq / f"{f}.png") for f in exp["frames"]])
        got = boundary_f(pred == obj, np.where(gt == 255, 0, gt) == obj, bound_th=radius)
        np.testing.assert_allclose(got, exp[f"F_radius{radius}"], rtol=0, atol=TOL)


def test_davis_480p_radius_equals_the_oracle():
    for case in EXPECTED["large"]:
        pred = read_mask(FIXTURE / case["pred"]) > 0
        gt = read_mask(FIXTURE / case["gt"]) > 0
        assert pred.shape == (480, 854)
        assert jaccard(pred, gt) == pytest.approx(case["J"], abs=TOL)
        assert boundary_f(pred, gt) == pytest.approx(case["F"], abs=TOL)


def test_metric_over_the_fixture_equals_the_oracle():
    metric = JAndF()
    for seq, paths in fixture_gt_paths().items():
        gt = np.stack([read_mask(p) for p in paths])
        pred = np.zeros_like(gt)  # frames without a result file are never scored
        for t, p in enumerate(paths):
            if (FIXTURE / "results" / seq / p.name).exists():
                pred[t] = read_mask(FIXTURE / "results" / seq / p.name)
        metric.update(pred, gt, sequence=seq)
    out = metric.compute()
    for key, value in EXPECTED["global"].items():
        assert out[key] == pytest.approx(value, abs=TOL), key
    assert metric.object_names == list(EXPECTED["per_object"])
    assert DavisResults.from_sequences(metric.sequence_results).global_metrics == out


# --- parallel scoring ---------------------------------------------------------------------------------------
def test_parallel_scoring_equals_serial():
    serial = evaluate_folder(fixture_gt_paths(), FIXTURE / "results", workers=1)
    parallel = evaluate_folder(fixture_gt_paths(), FIXTURE / "results", workers=3)
    assert parallel.per_object == serial.per_object  # same order, bit-equal values
    assert parallel.object_stats == serial.object_stats
    assert parallel.per_frame == serial.per_frame
    assert parallel.global_metrics == serial.global_metrics
    for key, value in EXPECTED["global"].items():
        assert parallel.global_metrics[key] == pytest.approx(value, abs=TOL), key


def test_parallel_scoring_keeps_the_mapping_order():
    # sequences are submitted longest first; results must still follow the mapping
    gt = fixture_gt_paths()
    reordered = dict(reversed(list(gt.items())))
    out = evaluate_folder(reordered, FIXTURE / "results", workers=2)
    order = list(dict.fromkeys(out.per_frame[n]["sequence"] for n, _, _ in out.per_object))
    assert order == list(reordered)
    assert sorted(out.per_object) == sorted(evaluate_folder(gt, FIXTURE / "results", workers=1).per_object)


def test_parallel_scoring_reports_the_first_bad_sequence_in_order(tmp_path):
    gt = {}
    for name, length in (("a", 3), ("b", 6), ("c", 6)):  # "b" and "c" are longer: scored first
        paths = []
        for t in range(length):
            lab = np.zeros((12, 16), np.uint8)
            lab[2:6, 2 + t : 7 + t] = 1
            write_mask(tmp_path / "gt" / name / f"{t:05d}.png", lab)
            write_mask(tmp_path / "res" / name / f"{t:05d}.png", lab)
            paths.append(tmp_path / "gt" / name / f"{t:05d}.png")
        gt[name] = paths
    Image.fromarray(np.zeros((12, 16, 3), np.uint8), mode="RGB").save(tmp_path / "res" / "b" / "00002.png")
    (tmp_path / "res" / "c" / "00003.png").unlink()
    with pytest.raises(MaskFormatError, match=r"res/b/00002\.png.*RGB"):  # the worker's own error, unchanged
        evaluate_folder(gt, tmp_path / "res", workers=2)
    with pytest.raises(FileNotFoundError, match=r"res/c/00003\.png: prediction missing"):
        evaluate_folder({"a": gt["a"], "c": gt["c"], "b": gt["b"]}, tmp_path / "res", workers=2)


def _moving_squares(root, name, frames, size=(12, 16), objects=2, shift=0):
    """GT and results of one sequence (results: GT moved ``shift * (t % 3)`` px right); returns its GT paths."""
    h, w = size
    paths = []
    for t in range(frames):
        lab = np.zeros((h, w), np.uint8)
        for obj in range(1, objects + 1):
            y = 1 + 4 * (obj - 1) % (h - 4)
            lab[y : y + 3, (t + 3 * obj) % (w - 4) : (t + 3 * obj) % (w - 4) + 4] = obj
        write_mask(root / "gt" / name / f"{t:05d}.png", lab)
        write_mask(root / "res" / name / f"{t:05d}.png", np.roll(lab, shift * (t % 3), axis=1))
        paths.append(root / "gt" / name / f"{t:05d}.png")
    return paths


@pytest.mark.parametrize("workers", [1, 2])
def test_sequences_cut_into_pieces_score_as_whole_sequences(tmp_path, monkeypatch, workers):
    import vidseg.metrics.davis_eval as davis_eval

    gt = {"long": _moving_squares(tmp_path, "long", 12, shift=1), "short": _moving_squares(tmp_path, "short", 4)}
    whole = evaluate_folder(gt, tmp_path / "res", workers=1)
    monkeypatch.setattr(davis_eval, "_PIECE_PIXELS", 3 * 12 * 16)  # 10 scored frames -> 4 pieces of 2-3
    cut = evaluate_folder(gt, tmp_path / "res", workers=workers)
    assert len(set(whole.per_frame["long_1"]["J"])) > 1  # frames differ: pieces out of order would show
    assert cut.per_frame == whole.per_frame and cut.per_object == whole.per_object
    assert cut.object_stats == whole.object_stats and cut.global_metrics == whole.global_metrics
    expected = evaluate_sequence(np.stack([read_mask(p) for p in gt["long"]]),
                                 np.stack([read_mask(tmp_path / "res" / "long" / p.name) for p in gt["long"]]))
    np.testing.assert_array_equal(cut.per_frame["long_1"]["F"], expected["F"][0])
    assert cut.per_frame["long_1"]["frames"] == [p.stem for p in gt["long"][1:-1]]


@pytest.mark.parametrize("frames", [3, 4, 10, 11, 41, 42, 83])
def test_pieces_are_near_equal_runs_of_the_scored_frames(monkeypatch, frames):
    import vidseg.metrics.davis_eval as davis_eval

    paths = [Path(f"{t:05d}.png") for t in range(frames)]
    pieces = davis_eval._pieces(paths, frame_pixels=854 * 480)  # at most 40 frames of 480p per piece
    assert [p for piece in pieces for p in piece] == paths[1:-1]
    sizes = [len(piece) for piece in pieces]
    assert max(sizes) <= 40 and max(sizes) - min(sizes) <= 1
    assert len(pieces) == -(-(frames - 2) // 40)
    assert davis_eval._pieces(paths, frame_pixels=0) == [tuple(paths[1:-1])]  # unreadable header: one piece


def test_pieces_are_submitted_costliest_first_and_sized_from_the_png_header(tmp_path):
    import vidseg.metrics.davis_eval as davis_eval

    gt = {"plain": _moving_squares(tmp_path, "plain", 5, objects=1),
          "busy": _moving_squares(tmp_path, "busy", 5, size=(40, 60), objects=4)}
    jobs = [davis_eval._PieceJob(name, paths[0], tuple(paths[1:-1]), tmp_path / "res" / name, False, 0.008)
            for name, paths in gt.items()]
    assert davis_eval._costliest_first(jobs) == [1, 0]  # larger annotation files: more boundary to match
    assert davis_eval._frame_pixels(gt["busy"][0]) == 40 * 60
    (tmp_path / "not.png").write_bytes(b"GIF89a" + bytes(40))
    assert davis_eval._frame_pixels(tmp_path / "not.png") == 0 and davis_eval._frame_pixels(tmp_path / "no") == 0


def test_the_first_bad_piece_of_a_sequence_is_reported(tmp_path, monkeypatch):
    import vidseg.metrics.davis_eval as davis_eval

    gt = {"seq": _moving_squares(tmp_path, "seq", 12)}
    Image.fromarray(np.zeros((12, 16, 3), np.uint8), mode="RGB").save(tmp_path / "res" / "seq" / "00009.png")
    (tmp_path / "res" / "seq" / "00005.png").unlink()
    monkeypatch.setattr(davis_eval, "_PIECE_PIXELS", 3 * 12 * 16)
    for workers in (1, 2):
        with pytest.raises(FileNotFoundError, match=r"res/seq/00005\.png: prediction missing"):
            evaluate_folder(gt, tmp_path / "res", workers=workers)


def test_serial_scoring_of_sequences_of_two_sizes_keeps_no_buffers(tmp_path):
    import vidseg.metrics.davis_eval as davis_eval

    gt = {"small": _moving_squares(tmp_path, "small", 5, size=(12, 16), shift=1),
          "large": _moving_squares(tmp_path, "large", 6, size=(20, 30), objects=3, shift=2),
          "again": _moving_squares(tmp_path, "again", 4, size=(12, 16))}
    out = evaluate_folder(gt, tmp_path / "res", workers=1)
    for name, paths in gt.items():  # each equals the sequence scored on its own, whatever was read before
        expected = evaluate_sequence(np.stack([read_mask(p) for p in paths]),
                                     np.stack([read_mask(tmp_path / "res" / name / p.name) for p in paths]))
        for k in range(expected["num_objects"]):
            np.testing.assert_array_equal(out.per_frame[f"{name}_{k + 1}"]["J"], expected["J"][k])
            np.testing.assert_array_equal(out.per_frame[f"{name}_{k + 1}"]["F"], expected["F"][k])
    assert getattr(davis_eval._buffers, "arrays", None) is None  # the frames are not kept after scoring


def test_default_workers_is_the_usable_cores():
    n = default_workers()
    assert 1 <= n <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert n == len(os.sched_getaffinity(0))


def test_scoring_a_folder_imports_no_torch():
    # importing torch, Lightning and torchmetrics costs seconds; scoring and plotting need numpy and PIL only
    code = (
        "import sys; from vidseg.metrics import evaluate_folder, write_results, format_table, plot_results; "
        "import vidseg.metrics.davis_eval, vidseg.tasks.vos_entry; "
        "bad = [m for m in ('torch', 'torchmetrics', 'pytorch_lightning', 'torchvision', 'matplotlib') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- errors that name the file ------------------------------------------------------------------------------
@pytest.fixture
def tiny(tmp_path):
    """One 4-frame, 2-object sequence 'cat' with a perfect results folder; returns (gt_paths, results_dir)."""
    paths = []
    for t in range(4):
        lab = np.zeros((12, 16), np.uint8)
        lab[2:6, 2 + t : 7 + t] = 1
        lab[8:11, 9:14] = 2
        write_mask(tmp_path / "gt" / "cat" / f"{t:05d}.png", lab)
        write_mask(tmp_path / "res" / "cat" / f"{t:05d}.png", lab)
        paths.append(tmp_path / "gt" / "cat" / f"{t:05d}.png")
    return {"cat": paths}, tmp_path / "res"


def test_tiny_perfect_folder(tiny):
    gt, res = tiny
    out = evaluate_folder(gt, res)
    assert out.global_metrics["J&F-Mean"] == 1.0
    assert [n for n, _, _ in out.per_object] == ["cat_1", "cat_2"]


def test_missing_results_folder(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="results folder not found: .*nowhere"):
        evaluate_folder(tiny[0], tmp_path / "nowhere")


def test_missing_sequence_folder(tiny):
    gt, res = tiny
    shutil.rmtree(res / "cat")
    with pytest.raises(FileNotFoundError, match=r"sequence 'cat'.*res/cat is missing"):
        evaluate_folder(gt, res)


def test_missing_frame(tiny):
    gt, res = tiny
    (res / "cat" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"res/cat/00002\.png: prediction missing"):
        evaluate_folder(gt, res)
    # the first and last frames are not scored, so their results are optional
    (res / "cat" / "00002.png").write_bytes((res / "cat" / "00001.png").read_bytes())
    (res / "cat" / "00000.png").unlink()
    (res / "cat" / "00003.png").unlink()
    evaluate_folder(gt, res)


def test_rgb_mask_is_rejected(tiny):
    gt, res = tiny
    rgb = np.zeros((12, 16, 3), np.uint8)
    Image.fromarray(rgb, mode="RGB").save(res / "cat" / "00001.png")
    with pytest.raises(MaskFormatError, match=r"res/cat/00001\.png.*RGB"):
        evaluate_folder(gt, res)


def test_grayscale_mask_is_accepted(tiny):
    gt, res = tiny
    lab = read_mask(res / "cat" / "00001.png")
    Image.fromarray(lab, mode="L").save(res / "cat" / "00001.png")
    assert evaluate_folder(gt, res).global_metrics["J&F-Mean"] == 1.0


def test_size_mismatch(tiny):
    gt, res = tiny
    write_mask(res / "cat" / "00002.png", np.zeros((24, 32), np.uint8))
    with pytest.raises(MaskFormatError, match=r"res/cat/00002\.png: prediction is 32x24.*is 16x12"):
        evaluate_folder(gt, res)


def test_extra_object(tiny):
    gt, res = tiny
    lab = read_mask(res / "cat" / "00001.png")
    lab[0, 0] = 3
    write_mask(res / "cat" / "00001.png", lab)
    with pytest.raises(ValueError, match=r"res/cat/00001\.png: object id 3 but sequence 'cat' has 2 objects"):
        evaluate_folder(gt, res)


def test_fewer_objects_are_zero_padded(tiny):
    gt, res = tiny
    for p in (res / "cat").glob("*.png"):
        lab = read_mask(p)
        lab[lab == 2] = 0
        write_mask(p, lab)
    out = evaluate_folder(gt, res)
    assert out.object_stats["cat_2"]["J-Mean"] == 0.0 and out.object_stats["cat_1"]["J-Mean"] == 1.0


def test_binary_255_masks(tmp_path):
    paths = []
    for t in range(3):
        lab = np.zeros((8, 8), np.uint8)
        lab[2:5, 2:5] = 255  # DAVIS 2016 style
        Image.fromarray(lab, mode="L").save(tmp_path / f"{t:05d}.png")
        (tmp_path / "res" / "s").mkdir(parents=True, exist_ok=True)
        Image.fromarray(lab, mode="L").save(tmp_path / "res" / "s" / f"{t:05d}.png")
        paths.append(tmp_path / f"{t:05d}.png")
    out = evaluate_folder({"s": paths}, tmp_path / "res", binary_255=True)
    assert [n for n, _, _ in out.per_object] == ["s_1"] and out.global_metrics["J&F-Mean"] == 1.0


# --- reading masks -------------------------------------------------------------------------------------------
def png_bytes(rows: np.ndarray, filters: list[int], *, colour: int = 3, idat_parts: int = 1) -> bytes:
    """An 8-bit PNG built by hand: ``rows`` (H, W) uint8 already filtered, one filter byte per row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    h, w = rows.shape
    raw = b"".join(bytes([f]) + r.tobytes() for f, r in zip(filters, rows, strict=True))
    packed = zlib.compress(raw)
    cut = len(packed) // idat_parts
    parts = [packed[i * cut : (i + 1) * cut if i < idat_parts - 1 else None] for i in range(idat_parts)]
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
    if colour == 3:
        body += chunk(b"PLTE", bytes(range(256)) * 3)
    return b"\x89PNG\r\n\x1a\n" + body + b"".join(chunk(b"IDAT", d) for d in parts) + chunk(b"IEND", b"")


@pytest.mark.parametrize("inflate", ["zlib-ng", "zlib"])  # zlib: the fallback without zlib-ng
def test_fast_mask_reading_equals_read_mask(tmp_path, monkeypatch, inflate):
    if inflate == "zlib":
        import vidseg.metrics.davis_eval as davis_eval

        monkeypatch.setattr(davis_eval, "_inflate", zlib)
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 6, (6, 8)), np.ones((5, 5), int)).astype(np.uint8)  # (30, 40)
    write_mask(tmp_path / "davis_palette.png", labels)  # 8-bit palette, no row filters: the fast path
    small = Image.fromarray(labels, mode="P")
    small.putpalette(list(range(48)))  # 16 colours: PIL writes a 4-bit PNG, read by PIL
    small.save(tmp_path / "small_palette.png")
    Image.fromarray(labels, mode="L").save(tmp_path / "gray.png")  # PIL filters grayscale rows: read by PIL
    sub = labels.astype(np.int16)
    sub[:, 1:] -= labels[:, :-1]  # PNG "Sub" filter on every other row
    filtered = np.where(np.arange(30)[:, None] % 2 == 1, sub % 256, labels).astype(np.uint8)
    (tmp_path / "filtered.png").write_bytes(png_bytes(filtered, [i % 2 for i in range(30)]))
    (tmp_path / "two_idat.png").write_bytes(png_bytes(labels, [0] * 30, idat_parts=2))
    (tmp_path / "gray_plain.png").write_bytes(png_bytes(labels, [0] * 30, colour=0))
    fast = {"davis_palette.png": True, "small_palette.png": False, "gray.png": False, "filtered.png": False,
            "two_idat.png": True, "gray_plain.png": True}
    for name, expect_fast in fast.items():
        path = tmp_path / name
        slot = np.full(labels.shape, 77, np.uint8)
        assert _read_plain_png_into(path, slot) is expect_fast, name
        if not expect_fast:
            assert (slot == 77).all(), name  # untouched
        for binary in (False, True):
            got = _read_frame(path, np.empty_like(labels), binary_255=binary)
            np.testing.assert_array_equal(got, read_mask(path, binary_255=binary), err_msg=name)
        np.testing.assert_array_equal(read_mask(path), labels, err_msg=name)  # the oracle itself is right


def test_fast_mask_reading_keeps_read_masks_errors(tmp_path):
    rgb, good = tmp_path / "rgb.png", tmp_path / "good.png"
    Image.fromarray(np.zeros((12, 16, 3), np.uint8), mode="RGB").save(rgb)
    write_mask(good, np.ones((12, 16), np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-30])
    slot = np.empty((12, 16), np.uint8)
    with pytest.raises(MaskFormatError, match=r"rgb\.png.*RGB"):
        _read_frame(rgb, slot, binary_255=False)
    with pytest.raises(MaskFormatError, match=r"truncated\.png"):
        _read_frame(truncated, slot, binary_255=False)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        _read_frame(tmp_path / "missing.png", slot, binary_255=False)
    other = _read_frame(good, np.empty((6, 8), np.uint8), binary_255=False)  # another size: returned as read
    assert other.shape == (12, 16)


def test_annotation_of_another_size_is_named(tiny):
    gt, res = tiny
    write_mask(gt["cat"][2], np.zeros((24, 32), np.uint8))
    with pytest.raises(MaskFormatError, match=r"gt/cat/00002\.png: annotation size \(24, 32\) differs"):
        evaluate_folder(gt, res)


# --- writing and printing -----------------------------------------------------------------------------------
def test_write_results_overwrites_stale_files(fixture_results, tmp_path):
    stale = tmp_path / "global_results-val.csv"
    stale.write_text("J&F-Mean,J-Mean\n0.999,0.999\n")
    (tmp_path / "per-sequence_results-val.csv").write_text("Sequence,J-Mean,F-Mean\nold_1,0.9,0.9\n")
    paths = write_results(fixture_results, tmp_path, "val")
    assert paths == {
        "global": stale,
        "per_sequence": tmp_path / "per-sequence_results-val.csv",
        "json": tmp_path / "results-val.json",
        "plot": tmp_path / "results-val-jf.png",
    }
    assert stale.read_text() == EXPECTED["csv"]["global_results-fixture.csv"]
    assert "old_1" not in paths["per_sequence"].read_text()
    data = json.loads(paths["json"].read_text())
    assert data["split"] == "val"
    assert data["global"]["J&F-Mean"] == pytest.approx(EXPECTED["global"]["J&F-Mean"], abs=TOL)
    first = data["per_object"][0]
    assert first["name"] == "alpha_1" and first["J"] == pytest.approx(EXPECTED["per_object"]["alpha_1"]["J"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in paths.values()
    )  # no temp files


def test_write_results_with_no_objects(tmp_path):
    empty = DavisResults.from_sequences([])
    assert all(math.isnan(v) for v in empty.global_metrics.values())
    paths = write_results(empty, tmp_path, "val")
    assert "plot" not in paths and not list(tmp_path.glob("*.png"))  # nothing to draw
    assert paths["global"].read_text().splitlines()[1] == ",,,,,,"  # NaN -> empty field, as pandas writes
    assert json.loads(paths["json"].read_text())["global"]["J-Mean"] is None


def test_format_table_has_the_headline(fixture_results):
    text = format_table(fixture_results, "val")
    value = f"{EXPECTED['global']['J&F-Mean']:.3f}"
    assert any("J&F-Mean" in line and value in line for line in text.splitlines())
    assert "alpha_1" in text and "delta_3" in text

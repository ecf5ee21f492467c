"""Results-folder evaluation and the result tables, including equality with the official toolkit."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.data.io import MaskFormatError, read_mask, write_mask
from vidseg.metrics import JAndF, boundary_f, evaluate_folder, format_table, jaccard, write_results
from vidseg.metrics.davis_eval import DavisResults

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
    assert paths["global"].read_text().splitlines()[1] == ",,,,,,"  # NaN -> empty field, as pandas writes
    assert json.loads(paths["json"].read_text())["global"]["J-Mean"] is None


def test_format_table_has_the_headline(fixture_results):
    text = format_table(fixture_results, "val")
    value = f"{EXPECTED['global']['J&F-Mean']:.3f}"
    assert any("J&F-Mean" in line and value in line for line in text.splitlines())
    assert "alpha_1" in text and "delta_3" in text

"""`python -m vidseg.evaluate task=vps predictions=...` on toy Cityscapes-VPS and VIPER-VPS sets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.configs import compose_config
from tests.helpers.vps_submission import submission_from_ground_truth
from vidseg.data.vps_layout import CITYSCAPES_VPS, LAYOUTS, VIPER
from vidseg.errors import DataError
from vidseg.evaluate import evaluate
from vidseg.predict import predict
from vidseg.train import train


def test_layouts_name_their_datamodules():
    from hydra.utils import get_class

    for layout in LAYOUTS.values():
        assert get_class(layout.datamodule).layout is layout


def test_perfect_cityscapes_vps_submission_scores_100_and_writes_the_official_files(toy_cityscapes_vps_root,
                                                                                    tmp_path, capsys):
    submission = submission_from_ground_truth(toy_cityscapes_vps_root, CITYSCAPES_VPS, "val", tmp_path / "sub")
    cfg = compose_config("evaluate", tmp_path / "run", ["task=vps", f"data.root={toy_cityscapes_vps_root}",
                                                        f"predictions={submission}", f"output_dir={submission}"])
    results = evaluate(cfg)
    printed = capsys.readouterr().out
    assert "STQ" in printed and str(submission.resolve()) in printed
    for k in (0, 5, 10, 15):
        assert (submission / f"vpq-{k}.txt").is_file()
    final = (submission / "vpq-final.txt").read_text().splitlines()
    assert final == ["vpq_all:100.0000", "vpq_thing:100.0000", "vpq_stuff:100.0000"]
    saved = json.loads((submission / "results-val.json").read_text())
    assert saved["stq"] == {"STQ": 1.0, "AQ": 1.0, "SQ": 1.0}
    assert results.vpq["all"] == 1.0


def test_shifted_submission_scores_lower_and_a_failed_rerun_keeps_the_results(toy_cityscapes_vps_root, tmp_path):
    def shift(index, ids, segments):
        shifted = np.roll(ids, 6, axis=1)
        present = set(np.unique(shifted).tolist())
        return shifted, [s for s in segments if s["id"] in present]

    submission = submission_from_ground_truth(toy_cityscapes_vps_root, CITYSCAPES_VPS, "val", tmp_path / "sub",
                                              transform=shift)
    out = tmp_path / "out"
    cfg = compose_config("evaluate", tmp_path / "run", ["task=vps", f"data.root={toy_cityscapes_vps_root}",
                                                        f"predictions={submission}", f"output_dir={out}"])
    results = evaluate(cfg)
    assert 0.0 < results.vpq["all"] < 1.0 and 0.0 < results.stq["STQ"] < 1.0
    before = {p.name: p.read_bytes() for p in out.glob("*") if p.is_file()}
    # an unknown category in pred.json: the run fails and earlier result files stay as they were
    pred = json.loads((submission / "pred.json").read_text())
    pred["annotations"][0]["segments_info"][0]["category_id"] = 99
    (submission / "pred.json").write_text(json.dumps(pred))
    with pytest.raises(DataError, match="99"):
        evaluate(cfg)
    assert {p.name: p.read_bytes() for p in out.glob("*") if p.is_file()} == before


def test_viper_protocol_windows_and_files(make_toy_vps, tmp_path):
    # VIPER ignores GT tubes under 32x32 px but still counts predictions on them as false positives (official
    # rule), so a perfect submission scores 100 only when every segment is large: this toy set is big enough
    # for the stuff and most things.
    root = make_toy_vps("viper", height=128, width=256, max_objects=2)
    submission = submission_from_ground_truth(root, VIPER, "val", tmp_path / "sub")
    cfg = compose_config("evaluate", tmp_path / "run", ["task=vps", "data=viper", f"data.root={root}",
                                                        f"predictions={submission}", f"output_dir={tmp_path / 'o'}"])
    results = evaluate(cfg)
    assert sorted(p.name for p in (tmp_path / "o").glob("vpq-*.txt")) == [
        "vpq-1.txt", "vpq-10.txt", "vpq-15.txt", "vpq-5.txt", "vpq-final.txt"]
    assert 0.5 < results.vpq["all"] <= 1.0 and results.stq["STQ"] == 1.0


def test_vps_has_no_model_yet_and_says_what_works(toy_cityscapes_vps_root, tmp_path):
    train_cfg = compose_config("train", tmp_path / "t", ["task=vps", f"data.root={toy_cityscapes_vps_root}"])
    with pytest.raises(DataError, match="no trainable model.*predictions=<dir>"):
        train(train_cfg)
    eval_cfg = compose_config("evaluate", tmp_path / "e", ["task=vps", f"data.root={toy_cityscapes_vps_root}",
                                                          "ckpt=x.ckpt"])
    with pytest.raises(DataError, match="no trainable model"):
        evaluate(eval_cfg)
    predict_cfg = compose_config("predict", tmp_path / "p", ["task=vps", "ckpt=x.ckpt", "input=x.mp4"])
    with pytest.raises(DataError, match="nothing to predict"):
        predict(predict_cfg)


def test_cli_bad_submission_prints_one_line_and_exits_2(toy_cityscapes_vps_root, tmp_path):
    submission = submission_from_ground_truth(toy_cityscapes_vps_root, CITYSCAPES_VPS, "val", tmp_path / "sub")
    missing = sorted((submission / "pan_pred").glob("*.png"))[3]
    shutil.move(missing, tmp_path / missing.name)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "vidseg.evaluate", "task=vps", f"data.root={toy_cityscapes_vps_root}",
                           f"predictions={submission}", f"output_dir={tmp_path / 'out'}",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidseg: error:") and missing.name in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr

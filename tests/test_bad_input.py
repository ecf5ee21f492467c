"""Bad input through the entry points, as a user meets it: one line ``vidseg: error: ...`` naming the file,
exit status 2, no traceback, and nothing written earlier lost or written outside the output folder.

Each case runs the real entry point function under :func:`vidseg.utils.cli.run_cli` (what ``python -m
vidseg.<entry>`` runs after Hydra composed the config); a few run as real subprocesses at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.configs import TINY_FEELVOS, compose_config
from tests.helpers.toy_vps import copy_toy_vps
from tests.helpers.training_runs import subprocess_env
from tests.helpers.vps_submission import layout_of, submission_from_ground_truth
from tests.helpers.vps_training import train_tiny_vps
from vidseg.utils.cli import run_cli

TINY_VOS_TRAIN = ["task=vos", *TINY_FEELVOS, "data.crop_size=[64,112]", "data.batch_size=2",
                  "data.samples_per_epoch=4", "data.num_workers=0", "data.val_max_frames=3", "trainer.max_steps=1"]


def _entry(name: str) -> Callable:
    if name == "train":
        from vidseg.train import train

        return train
    if name == "evaluate":
        from vidseg.evaluate import evaluate

        return evaluate
    from vidseg.predict import predict

    return predict


@pytest.fixture(scope="module")
def vos_ckpt(toy_davis_root: Path, tmp_path_factory) -> Path:
    from vidseg.train import train

    out = tmp_path_factory.mktemp("vos_train")
    train(compose_config("train", out, [*TINY_VOS_TRAIN, f"data.root={toy_davis_root}"]))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def vps_ckpt(toy_cityscapes_vps_root: Path, tmp_path_factory) -> Path:
    return Path(train_tiny_vps(toy_cityscapes_vps_root, tmp_path_factory.mktemp("vps_train"))["last_checkpoint"])


@pytest.fixture
def davis_copy(toy_davis_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(toy_davis_root, tmp_path / "davis"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expect_user_error(capsys, entry: str, out: Path, overrides: list[str], names: str | Path) -> str:
    """Run ``entry`` with ``overrides`` (output in ``out``, which holds an earlier file); check the contract."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "earlier-result.txt").write_text("written by an earlier run\n")
    before = _snapshot(out)
    cfg = compose_config(entry, out, overrides)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: _entry(entry)(cfg))
    stderr = capsys.readouterr().err
    lines = [ln for ln in stderr.splitlines() if ln.startswith("vidseg: error: ")]
    assert exit_info.value.code == 2, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert str(names) in lines[0], f"{names} not named in: {lines[0]}"
    after = _snapshot(out)
    assert all(after.get(k) == v for k, v in before.items()), "an earlier output was changed or removed"
    return lines[0]


def _first_seq(root: Path, split: str) -> str:
    return (root / "ImageSets" / "2017" / f"{split}.txt").read_text().split()[0]


def _frame(root: Path, seq: str, kind: str = "JPEGImages", index: int = 1) -> Path:
    suffix = "*.jpg" if kind == "JPEGImages" else "*.png"
    return sorted((root / kind / "480p" / seq).glob(suffix))[index]


# ------------------------------------------------------------------------------------------------- VOS train


def test_train_missing_dataset_root(capsys, tmp_path):
    missing = tmp_path / "no_davis"
    expect_user_error(capsys, "train", tmp_path / "run", [*TINY_VOS_TRAIN, f"data.root={missing}"], missing)


def test_train_corrupt_frame(capsys, tmp_path, davis_copy):
    bad = _frame(davis_copy, _first_seq(davis_copy, "train"))
    bad.write_bytes(b"not a jpeg")
    expect_user_error(capsys, "train", tmp_path / "run", [*TINY_VOS_TRAIN, f"data.root={davis_copy}"], bad)


def test_train_rgb_annotation(capsys, tmp_path, davis_copy):
    bad = _frame(davis_copy, _first_seq(davis_copy, "train"), "Annotations", 0)
    Image.open(bad).convert("RGB").save(bad)
    expect_user_error(capsys, "train", tmp_path / "run", [*TINY_VOS_TRAIN, f"data.root={davis_copy}"], bad)


def test_train_annotation_of_another_size(capsys, tmp_path, davis_copy):
    bad = _frame(davis_copy, _first_seq(davis_copy, "train"), "Annotations", 2)
    image = Image.open(bad)
    image.resize((image.width // 2, image.height // 2), Image.NEAREST).save(bad)
    expect_user_error(capsys, "train", tmp_path / "run", [*TINY_VOS_TRAIN, f"data.root={davis_copy}"], bad)


def test_train_split_names_an_unknown_sequence(capsys, tmp_path, davis_copy):
    split = davis_copy / "ImageSets" / "2017" / "train.txt"
    split.write_text(split.read_text() + "no_such_sequence\n")
    message = expect_user_error(capsys, "train", tmp_path / "run", [*TINY_VOS_TRAIN, f"data.root={davis_copy}"],
                                split)
    assert "no_such_sequence" in message


def test_train_resume_from_a_truncated_checkpoint(capsys, tmp_path, toy_davis_root, vos_ckpt):
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(vos_ckpt.read_bytes()[:5000])
    expect_user_error(capsys, "train", tmp_path / "run",
                      [*TINY_VOS_TRAIN, f"data.root={toy_davis_root}", f"ckpt_path={bad}"], bad)


def test_train_resume_from_a_checkpoint_of_the_other_task(capsys, tmp_path, toy_davis_root, vps_ckpt):
    expect_user_error(capsys, "train", tmp_path / "run",
                      [*TINY_VOS_TRAIN, f"data.root={toy_davis_root}", f"ckpt_path={vps_ckpt}"], vps_ckpt)


def test_train_vps_missing_instances_json(capsys, tmp_path, toy_cityscapes_vps_root):
    root = copy_toy_vps(toy_cityscapes_vps_root, tmp_path / "city")
    json_path = root / "instances_train_city_vps_rle.json"
    json_path.unlink()
    expect_user_error(capsys, "train", tmp_path / "run",
                      ["task=vps", "experiment=toy_vps", f"data.root={root}", "trainer.max_steps=1"], json_path.name)


def test_train_vps_corrupt_json(capsys, tmp_path, toy_cityscapes_vps_root):
    root = copy_toy_vps(toy_cityscapes_vps_root, tmp_path / "city")
    json_path = root / "instances_train_city_vps_rle.json"
    json_path.write_text('{"images": [')
    expect_user_error(capsys, "train", tmp_path / "run",
                      ["task=vps", "experiment=toy_vps", f"data.root={root}", "trainer.max_steps=1"], json_path)


# ---------------------------------------------------------------------------------------------- VOS evaluate


def _results_folder(root: Path, dest: Path) -> Path:
    """A complete results folder: the ground truth of every val frame (a perfect method)."""
    for seq in (root / "ImageSets" / "2017" / "val.txt").read_text().split():
        shutil.copytree(root / "Annotations" / "480p" / seq, dest / seq)
    return dest


def test_evaluate_results_missing_a_frame(capsys, tmp_path, toy_davis_root):
    results = _results_folder(toy_davis_root, tmp_path / "results")
    seq = _first_seq(toy_davis_root, "val")
    missing = sorted((results / seq).glob("*.png"))[3]
    missing.unlink()
    expect_user_error(capsys, "evaluate", tmp_path / "eval",
                      ["task=vos", f"data.root={toy_davis_root}", f"predictions={results}"], missing.name)


def test_evaluate_results_with_an_rgb_mask(capsys, tmp_path, toy_davis_root):
    results = _results_folder(toy_davis_root, tmp_path / "results")
    bad = sorted((results / _first_seq(toy_davis_root, "val")).glob("*.png"))[2]
    Image.open(bad).convert("RGB").save(bad)
    expect_user_error(capsys, "evaluate", tmp_path / "eval",
                      ["task=vos", f"data.root={toy_davis_root}", f"predictions={results}"], bad)


def test_evaluate_results_of_another_size(capsys, tmp_path, toy_davis_root):
    results = _results_folder(toy_davis_root, tmp_path / "results")
    bad = sorted((results / _first_seq(toy_davis_root, "val")).glob("*.png"))[1]
    Image.open(bad).resize((20, 10), Image.NEAREST).save(bad)
    expect_user_error(capsys, "evaluate", tmp_path / "eval",
                      ["task=vos", f"data.root={toy_davis_root}", f"predictions={results}"], bad.name)


def test_evaluate_truncated_checkpoint(capsys, tmp_path, toy_davis_root, vos_ckpt):
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(vos_ckpt.read_bytes()[: len(vos_ckpt.read_bytes()) // 2])
    expect_user_error(capsys, "evaluate", tmp_path / "eval", ["task=vos", f"data.root={toy_davis_root}",
                                                              f"ckpt={bad}"], bad)


def test_evaluate_vos_with_a_vps_checkpoint(capsys, tmp_path, toy_davis_root, vps_ckpt):
    expect_user_error(capsys, "evaluate", tmp_path / "eval", ["task=vos", f"data.root={toy_davis_root}",
                                                              f"ckpt={vps_ckpt}"], vps_ckpt)


def test_evaluate_split_with_a_path_escape_writes_nothing_outside(capsys, tmp_path, davis_copy, vos_ckpt):
    # The crafted split names ../../escape, and frames and masks exist at that path.
    seq = _first_seq(davis_copy, "val")
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(davis_copy / kind / "480p" / seq, davis_copy / "escape", dirs_exist_ok=True)
    split = davis_copy / "ImageSets" / "2017" / "val.txt"
    split.write_text("../../escape\n")
    out = tmp_path / "out" / "inner"
    out.mkdir(parents=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    message = expect_user_error(capsys, "evaluate", out, ["task=vos", f"data.root={davis_copy}", f"ckpt={vos_ckpt}"],
                                split)
    assert "../../escape" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["inner"]


# ---------------------------------------------------------------------------------------------- VPS evaluate


@pytest.fixture
def vps_submission(toy_cityscapes_vps_root: Path, tmp_path: Path) -> Path:
    sub = tmp_path / "submission"
    submission_from_ground_truth(toy_cityscapes_vps_root, layout_of("cityscapes_vps"), "val", sub)
    return sub


def _vps_eval(root: Path, sub: Path) -> list[str]:
    return ["task=vps", f"data.root={root}", f"predictions={sub}", "workers=1"]


def test_evaluate_vps_submission_without_pred_json(capsys, tmp_path, toy_cityscapes_vps_root, vps_submission):
    (vps_submission / "pred.json").unlink()
    expect_user_error(capsys, "evaluate", tmp_path / "eval", _vps_eval(toy_cityscapes_vps_root, vps_submission),
                      vps_submission / "pred.json")


def test_evaluate_vps_submission_missing_a_png(capsys, tmp_path, toy_cityscapes_vps_root, vps_submission):
    missing = sorted((vps_submission / "pan_pred").glob("*.png"))[0]
    missing.unlink()
    expect_user_error(capsys, "evaluate", tmp_path / "eval", _vps_eval(toy_cityscapes_vps_root, vps_submission),
                      missing.name)


def test_evaluate_vps_submission_with_an_unknown_image_id(capsys, tmp_path, toy_cityscapes_vps_root, vps_submission):
    pred = json.loads((vps_submission / "pred.json").read_text())
    names = sorted(p.stem for p in (vps_submission / "pan_pred").glob("*.png"))
    gt = json.loads((Path(toy_cityscapes_vps_root) / "panoptic_gt_val_city_vps.json").read_text())
    for entry, image in zip(pred["annotations"], gt["images"], strict=True):
        entry["image_id"] = str(image["id"])
    assert sorted(e["image_id"] for e in pred["annotations"]) == names
    pred["annotations"][0]["image_id"] = "9999_9999"
    (vps_submission / "pred.json").write_text(json.dumps(pred))
    message = expect_user_error(capsys, "evaluate", tmp_path / "eval",
                                _vps_eval(toy_cityscapes_vps_root, vps_submission), "pred.json")
    assert "9999_9999" in message


def test_evaluate_vps_ground_truth_with_a_path_escape(capsys, tmp_path, toy_cityscapes_vps_root, vps_submission):
    root = copy_toy_vps(toy_cityscapes_vps_root, tmp_path / "city")
    gt_path = root / "panoptic_gt_val_city_vps.json"
    gt = json.loads(gt_path.read_text())
    gt["images"][0]["file_name"] = "../../" + gt["images"][0]["file_name"]
    gt_path.write_text(json.dumps(gt))
    message = expect_user_error(capsys, "evaluate", tmp_path / "eval", _vps_eval(root, vps_submission), gt_path)
    assert "../../" in message


# ---------------------------------------------------------------------------------------------------- predict


def _predict(ckpt: Path, input_path: Path, out: Path, *extra: str) -> list[str]:
    return ["task=vos", f"ckpt={ckpt}", f"input={input_path}", f"output={out}", "overlay=false", *extra]


def test_predict_missing_input(capsys, tmp_path, vos_ckpt, toy_davis_root):
    missing = tmp_path / "no_video.mp4"
    mask = _frame(toy_davis_root, _first_seq(toy_davis_root, "val"), "Annotations", 0)
    expect_user_error(capsys, "predict", tmp_path / "out", _predict(vos_ckpt, missing, tmp_path / "out",
                                                                    f"mask={mask}"), missing)


def test_predict_unreadable_video(capsys, tmp_path, vos_ckpt, toy_davis_root):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    mask = _frame(toy_davis_root, _first_seq(toy_davis_root, "val"), "Annotations", 0)
    expect_user_error(capsys, "predict", tmp_path / "out", _predict(vos_ckpt, bad, tmp_path / "out", f"mask={mask}"),
                      bad)


def test_predict_mask_of_another_size(capsys, tmp_path, vos_ckpt, toy_video_path):
    mask = tmp_path / "mask.png"
    Image.fromarray(np.ones((10, 20), np.uint8), mode="L").convert("P").save(mask)
    expect_user_error(capsys, "predict", tmp_path / "out", _predict(vos_ckpt, toy_video_path, tmp_path / "out",
                                                                    f"mask={mask}"), mask)


def test_predict_rgb_mask(capsys, tmp_path, vos_ckpt, toy_video_path, toy_davis_root):
    mask = tmp_path / "mask.png"
    Image.open(_frame(toy_davis_root, _first_seq(toy_davis_root, "val"), "Annotations", 0)).convert("RGB").save(mask)
    expect_user_error(capsys, "predict", tmp_path / "out", _predict(vos_ckpt, toy_video_path, tmp_path / "out",
                                                                    f"mask={mask}"), mask)


def test_predict_missing_mask_file(capsys, tmp_path, vos_ckpt, toy_video_path):
    mask = tmp_path / "no_mask.png"
    expect_user_error(capsys, "predict", tmp_path / "out", _predict(vos_ckpt, toy_video_path, tmp_path / "out",
                                                                    f"mask={mask}"), mask)


def test_predict_empty_frame_folder(capsys, tmp_path, vos_ckpt, toy_davis_root):
    empty = tmp_path / "frames"
    empty.mkdir()
    mask = _frame(toy_davis_root, _first_seq(toy_davis_root, "val"), "Annotations", 0)
    expect_user_error(capsys, "predict", tmp_path / "out", _predict(vos_ckpt, empty, tmp_path / "out",
                                                                    f"mask={mask}"), empty)


def test_predict_vps_with_a_vos_checkpoint(capsys, tmp_path, vos_ckpt, toy_video_path):
    expect_user_error(capsys, "predict", tmp_path / "out", ["task=vps", f"ckpt={vos_ckpt}", f"input={toy_video_path}",
                                                            f"output={tmp_path / 'out'}", "overlay=false"], vos_ckpt)


def test_predict_vps_corrupt_frame_in_a_folder(capsys, tmp_path, vps_ckpt, toy_davis_root):
    frames = Path(shutil.copytree(toy_davis_root / "JPEGImages" / "480p" / _first_seq(toy_davis_root, "val"),
                                  tmp_path / "frames"))
    bad = sorted(frames.glob("*.jpg"))[2]
    bad.write_bytes(b"garbage")
    expect_user_error(capsys, "predict", tmp_path / "out", ["task=vps", f"ckpt={vps_ckpt}", f"input={frames}",
                                                            f"output={tmp_path / 'out'}", "overlay=false"], bad)


# ------------------------------------------------------------------------------------- the real command line


@pytest.mark.parametrize("entry, args", [
    ("evaluate", ["task=vos", "data.root={missing}", "predictions={missing}"]),
    ("predict", ["task=vos", "ckpt={missing}", "input={missing}", "mask={missing}"]),
])
def test_command_line_prints_one_line_and_exits_2(tmp_path, entry, args):
    missing = tmp_path / "missing_thing"
    argv = [sys.executable, "-m", f"vidseg.{entry}", *[a.format(missing=missing) for a in args],
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("vidseg: error: ") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(missing) in proc.stderr

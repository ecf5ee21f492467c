"""Outputs you can trust, through the entry points (issue 15, points 1 and 5).

- predict and evaluate replace only what vidseg wrote (``overwrite=true`` for anything else), never write over
  their own inputs, remove their own stale outputs, and refuse a folder another run is writing;
- predict keeps the input's frame names;
- nothing is written into the caller's working directory when the output folder is given, even when the run
  fails (real subprocesses).

Most cases run the entry point function under :func:`vidseg.utils.cli.run_cli` with stand-in models
(tests/helpers/stub_models.py), so no network is trained; the command-line cases use a tiny trained FEELVOS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.configs import TINY_FEELVOS, compose_config
from tests.helpers.stub_models import ShiftPreviousFEELVOS, StubVPSNet
from tests.helpers.training_runs import subprocess_env
from tests.helpers.vps_submission import layout_of, submission_from_ground_truth
from vidseg.utils.cli import run_cli
from vidseg.utils.outputs import MANIFEST_NAME, STAGING_PREFIX, open_output_folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _val_sequence(root: Path) -> tuple[list[Path], list[Path]]:
    seq = (root / "ImageSets" / "2017" / "val.txt").read_text().split()[0]
    return (sorted((root / "JPEGImages" / "480p" / seq).glob("*.jpg")),
            sorted((root / "Annotations" / "480p" / seq).glob("*.png")))


@pytest.fixture
def stub_models(monkeypatch):
    """predict/evaluate load stand-in models instead of reading ``ckpt`` (which need only exist)."""
    from vidseg.inference.vos import VOSPredictor
    from vidseg.inference.vps import VPSPredictor
    from vidseg.tasks import vos_entry

    monkeypatch.setattr(vos_entry, "_load_predictor", lambda cfg: VOSPredictor(ShiftPreviousFEELVOS(shift=0)))
    monkeypatch.setattr(VPSPredictor, "from_checkpoint", classmethod(lambda cls, *a, **k: cls(StubVPSNet())))


@pytest.fixture
def clip(toy_davis_root: Path, tmp_path: Path) -> dict[str, Path]:
    """A user's clip folder: frames/shot_<n>.jpg (n = 1, 2, 10: natural order differs from plain sorting),
    masks/shot_1.png (the user's own first-frame annotation) and masks/notes.txt; ckpt: an existing file."""
    frames, masks = _val_sequence(toy_davis_root)
    folder = tmp_path / "clip"
    (folder / "frames").mkdir(parents=True)
    (folder / "masks").mkdir()
    for number, frame in zip((1, 2, 10), frames, strict=False):
        shutil.copy(frame, folder / "frames" / f"shot_{number}.jpg")
    shutil.copy(masks[0], folder / "masks" / "shot_1.png")
    (folder / "masks" / "notes.txt").write_text("my notes\n")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"stand-in")
    return {"folder": folder, "frames": folder / "frames", "mask": folder / "masks" / "shot_1.png",
            "masks": folder / "masks", "ckpt": ckpt}


def _run(capsys, entry: str, overrides: list[str], run_dir: Path):
    """Run ``entry`` as ``python -m vidseg.<entry>`` runs it after Hydra; returns (result, error line or None)."""
    from vidseg.evaluate import evaluate
    from vidseg.predict import predict

    work: Callable = {"predict": predict, "evaluate": evaluate}[entry]
    cfg = compose_config(entry, run_dir, overrides)
    capsys.readouterr()
    try:
        return run_cli(lambda: work(cfg)), None
    except SystemExit as exit_info:
        stderr = capsys.readouterr().err
        lines = [ln for ln in stderr.splitlines() if ln.startswith("vidseg: error: ")]
        assert exit_info.code == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
        return None, lines[0]


def _predict_vos(clip: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return ["task=vos", f"ckpt={clip['ckpt']}", f"input={clip['frames']}", f"mask={clip['mask']}",
            f"output={output}", "overlay=false", *extra]


# ------------------------------------------------------------------------------- only vidseg's own files


def test_predict_into_the_folder_of_its_own_mask_is_refused(capsys, clip, stub_models, tmp_path):
    # The reported failure: predict mask=clip/masks/... output=clip replaced the user's masks/ folder.
    elsewhere = Path(shutil.copytree(clip["frames"], tmp_path / "frames"))
    before = _snapshot(clip["folder"])
    for mask in (clip["mask"], clip["masks"]):
        overrides = [*_predict_vos(clip, clip["folder"]), f"input={elsewhere}", f"mask={mask}"]
        _, error = _run(capsys, "predict", overrides, tmp_path / "run")
        assert error and str(clip["folder"]) in error and str(mask) in error and "output=" in error
    assert _snapshot(clip["folder"]) == before


def test_predict_refuses_to_replace_a_masks_folder_vidseg_did_not_write(capsys, clip, stub_models, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(clip["masks"], out / "masks")
    mask = tmp_path / "first.png"
    shutil.copy(clip["mask"], mask)
    before = _snapshot(out)
    _, error = _run(capsys, "predict", [*_predict_vos(clip, out), f"mask={mask}"], tmp_path / "run")
    assert error.startswith(f"vidseg: error: {out / 'masks'}") and "was not written by vidseg" in error
    assert "output=" in error and "overwrite=true" in error
    assert _snapshot(out) == before
    summary, error = _run(capsys, "predict", [*_predict_vos(clip, out), f"mask={mask}", "overwrite=true"],
                          tmp_path / "run")
    assert error is None and sorted(p.name for p in (out / "masks").iterdir()) == [
        "shot_1.png", "shot_10.png", "shot_2.png"]
    _, error = _run(capsys, "predict", [*_predict_vos(clip, out), f"mask={mask}", "overwrite=no"], tmp_path / "run")
    assert error.startswith("vidseg: error: overwrite=no: expected true or false")
    # Now the masks are vidseg's: a rerun replaces them without overwrite=true.
    summary, error = _run(capsys, "predict", [*_predict_vos(clip, out), f"mask={mask}"], tmp_path / "run")
    assert error is None and summary["frames"] == 3


@pytest.mark.parametrize("task, name", [("vos", "overlay.mp4"), ("vos", "prediction.json"), ("vps", "panoptic"),
                                        ("vps", "segments"), ("vps", "overlay.mp4")])
def test_predict_refuses_every_output_name_it_did_not_write(capsys, clip, stub_models, tmp_path, task, name):
    out = tmp_path / "out"
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    if "." in name:
        (out / name).write_text("the user's")
    else:
        (out / name).mkdir()
        (out / name / "mine.txt").write_text("the user's")
    before = _snapshot(out)
    args = (["task=vps", f"ckpt={clip['ckpt']}", f"input={clip['frames']}", f"output={out}"] if task == "vps" else
            [*_predict_vos(clip, out), "overlay=true", f"mask={tmp_path / 'first.png'}"])
    shutil.copy(clip["mask"], tmp_path / "first.png")
    _, error = _run(capsys, "predict", args, tmp_path / "run")
    assert f"{out / name}: exists and was not written by vidseg" in error and "overwrite=true" in error
    assert _snapshot(out) == before


def test_evaluate_youtube_vos_with_a_checkpoint_refuses_a_foreign_submission(capsys, stub_models, tmp_path,
                                                                             toy_youtube_vos_root):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"stand-in")
    out = tmp_path / "eval"
    (out / "submission" / "Annotations").mkdir(parents=True)
    (out / "submission" / "Annotations" / "theirs.png").write_bytes(b"another method's")
    overrides = ["task=vos", "data=youtube_vos", f"data.root={toy_youtube_vos_root}", f"ckpt={ckpt}",
                 f"output_dir={out}"]
    _, error = _run(capsys, "evaluate", overrides, tmp_path / "run")
    assert f"{out / 'submission'}: exists and was not written by vidseg" in error
    assert (out / "submission" / "Annotations" / "theirs.png").read_bytes() == b"another method's"


def test_a_rerun_removes_its_own_stale_outputs(capsys, clip, stub_models, tmp_path, toy_video_path):
    out = tmp_path / "out"
    mask = tmp_path / "first.png"
    shutil.copy(clip["mask"], mask)
    long_run = ["task=vos", f"ckpt={clip['ckpt']}", f"input={toy_video_path}", f"mask={mask}", f"output={out}"]
    _run(capsys, "predict", long_run, tmp_path / "run")
    assert (out / "overlay.mp4").is_file() and len(list((out / "masks").iterdir())) == 8
    (out / "notes.txt").write_text("the user's")
    summary, error = _run(capsys, "predict", [*_predict_vos(clip, out), f"mask={mask}"], tmp_path / "run")
    assert error is None and summary["overlay"] is None
    assert not (out / "overlay.mp4").exists()  # overlay=false: the earlier run's overlay is gone
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["shot_1.png", "shot_10.png", "shot_2.png"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "masks", "notes.txt", "prediction.json"]


def test_evaluate_with_a_checkpoint_refuses_another_methods_submission(capsys, stub_models, tmp_path,
                                                                       toy_cityscapes_vps_root):
    # The reported failure: evaluate task=vps ckpt=... output_dir=<submission> overwrote pan_pred/ and pred.json.
    other = submission_from_ground_truth(toy_cityscapes_vps_root, layout_of("cityscapes_vps"), "val",
                                         tmp_path / "other_method")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"stand-in")
    before = _snapshot(other)
    overrides = ["task=vps", f"data.root={toy_cityscapes_vps_root}", f"ckpt={ckpt}", f"output_dir={other}",
                 "workers=1"]
    _, error = _run(capsys, "evaluate", overrides, tmp_path / "run")
    assert "was not written by vidseg" in error and "output_dir=" in error and "overwrite=true" in error
    assert str(other / "pred.json") in error or str(other / "pan_pred") in error
    assert _snapshot(other) == before


def test_scoring_a_submission_in_place_writes_results_but_not_over_eval_vpq_files(capsys, tmp_path,
                                                                                  toy_cityscapes_vps_root):
    submission = submission_from_ground_truth(toy_cityscapes_vps_root, layout_of("cityscapes_vps"), "val",
                                              tmp_path / "sub")
    overrides = ["task=vps", f"data.root={toy_cityscapes_vps_root}", f"predictions={submission}",
                 f"output_dir={submission}", "workers=1"]
    results, error = _run(capsys, "evaluate", overrides, tmp_path / "run")
    assert error is None and results.vpq["all"] == 1.0
    results, error = _run(capsys, "evaluate", overrides, tmp_path / "run")  # vidseg's own results: replaced
    assert error is None
    assert (submission / "pan_pred").is_dir() and (submission / "pred.json").is_file()

    official = tmp_path / "official"  # a folder eval_vpq.py scored: its vpq-*.txt are not vidseg's
    shutil.copytree(submission, official, ignore=shutil.ignore_patterns(MANIFEST_NAME, "*.json", "results-*"))
    shutil.copy(submission / "pred.json", official / "pred.json")
    before = _snapshot(official)
    on_official = [o.replace(str(submission), str(official)) for o in overrides]
    _, error = _run(capsys, "evaluate", on_official, tmp_path / "run")
    assert "vpq-" in error and "was not written by vidseg" in error and "overwrite=true" in error
    assert _snapshot(official) == before
    results, error = _run(capsys, "evaluate", [*on_official, "overwrite=true"], tmp_path / "run")
    assert error is None and (official / "results-val.json").is_file()


def test_evaluate_vos_refuses_a_masks_folder_it_did_not_write_and_a_data_root_it_would_replace(
        capsys, stub_models, tmp_path, toy_davis_root):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"stand-in")
    out = tmp_path / "eval"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "mine.png").write_bytes(b"the user's")
    overrides = ["task=vos", f"data.root={toy_davis_root}", f"ckpt={ckpt}", "workers=1", "plots=false"]
    _, error = _run(capsys, "evaluate", [*overrides, f"output_dir={out}"], tmp_path / "run")
    assert f"{out / 'masks'}: exists and was not written by vidseg" in error
    assert (out / "masks" / "mine.png").read_bytes() == b"the user's"
    # The data root inside <output_dir>/masks: writing masks/ would replace it.
    nested = tmp_path / "nested"
    shutil.copytree(toy_davis_root, nested / "masks" / "davis")
    _, error = _run(capsys, "evaluate", [*overrides, f"data.root={nested / 'masks' / 'davis'}",
                                         f"output_dir={nested}"], tmp_path / "run")
    assert "would replace the input data.root=" in error and str(nested / "masks") in error


def test_evaluate_rerun_without_plots_removes_its_earlier_plot(capsys, tmp_path, toy_davis_root):
    overrides = ["task=vos", f"data.root={toy_davis_root}", f"predictions={toy_davis_root / 'Annotations' / '480p'}",
                 f"output_dir={tmp_path / 'eval'}", "workers=1"]
    _run(capsys, "evaluate", overrides, tmp_path / "run")
    assert (tmp_path / "eval" / "results-val-jf.png").is_file()
    _run(capsys, "evaluate", [*overrides, "plots=false"], tmp_path / "run")
    assert not (tmp_path / "eval" / "results-val-jf.png").exists()
    assert (tmp_path / "eval" / "results-val.json").is_file()


# ------------------------------------------------------------------------------------- lock and staging


def test_a_second_run_into_a_folder_being_written_is_refused(capsys, clip, stub_models, tmp_path):
    out = tmp_path / "out"
    mask = tmp_path / "first.png"
    shutil.copy(clip["mask"], mask)
    with open_output_folder(out, key="predict") as first, first.staging() as staging:
        _, error = _run(capsys, "predict", [*_predict_vos(clip, out), f"mask={mask}"], tmp_path / "run")
        assert error == (f"vidseg: error: {out}: another vidseg run (pid {__import__('os').getpid()}) is writing "
                         "here; wait for it or give another output=<folder>")
        assert staging.is_dir()
    # A staging folder left by a killed run is removed by the next run, which works.
    (out / f"{STAGING_PREFIX}killed" / "masks").mkdir(parents=True)
    summary, error = _run(capsys, "predict", [*_predict_vos(clip, out), f"mask={mask}"], tmp_path / "run")
    assert error is None and not list(out.glob(f"{STAGING_PREFIX}*"))


# ------------------------------------------------------------------------------------------- frame names


def test_predict_vos_keeps_the_frame_names_of_a_folder(capsys, clip, stub_models, tmp_path):
    out = tmp_path / "out"
    mask_dir = tmp_path / "given"  # a mask folder names frames by their stem
    mask_dir.mkdir()
    shutil.copy(clip["mask"], mask_dir / "shot_1.png")
    summary, error = _run(capsys, "predict", [*_predict_vos(clip, out), f"mask={mask_dir}"], tmp_path / "run")
    assert error is None
    saved = json.loads((out / "prediction.json").read_text())
    assert saved["frame_names"] == summary["frame_names"] == ["shot_1", "shot_2", "shot_10"]
    assert (out / "masks" / "shot_1.png").read_bytes() != b"" and (out / "masks" / "shot_10.png").is_file()


def test_predict_vos_numbers_the_frames_of_a_video(capsys, clip, stub_models, tmp_path, toy_video_path):
    out = tmp_path / "out"
    overrides = ["task=vos", f"ckpt={clip['ckpt']}", f"input={toy_video_path}", f"mask={clip['mask']}",
                 f"output={out}", "overlay=false"]
    summary, _ = _run(capsys, "predict", overrides, tmp_path / "run")
    names = [f"{i:05d}" for i in range(8)]
    assert summary["frame_names"] == names and sorted(p.stem for p in (out / "masks").iterdir()) == names


def test_predict_vps_keeps_the_frame_names_of_a_folder(capsys, clip, stub_models, tmp_path):
    out = tmp_path / "out"
    overrides = ["task=vps", f"ckpt={clip['ckpt']}", f"input={clip['frames']}", f"output={out}", "overlay=false"]
    summary, error = _run(capsys, "predict", overrides, tmp_path / "run")
    assert error is None and summary["frame_names"] == ["shot_1", "shot_2", "shot_10"]
    assert sorted(p.name for p in (out / "panoptic").iterdir()) == ["shot_1.png", "shot_10.png", "shot_2.png"]
    record = json.loads((out / "segments" / "shot_10.json").read_text())
    assert record["frame"] == 2 and record["name"] == "shot_10"


def test_frames_whose_outputs_would_collide_are_refused(capsys, clip, stub_models, tmp_path):
    shutil.copy(clip["frames"] / "shot_2.jpg", clip["frames"] / "shot_2.png")
    _, error = _run(capsys, "predict", _predict_vos(clip, tmp_path / "out"), tmp_path / "run")
    assert "shot_2.jpg and shot_2.png" in error and str(clip["frames"]) in error
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- no litter (subprocesses)


TINY_VOS_TRAIN = ["task=vos", *TINY_FEELVOS, "data.crop_size=[64,112]", "data.batch_size=2",
                  "data.samples_per_epoch=2", "data.num_workers=0", "data.val_max_frames=3",
                  "data.val_max_sequences=1", "trainer.max_steps=1"]


@pytest.fixture(scope="module")
def vos_ckpt(toy_davis_root: Path, tmp_path_factory) -> Path:
    from vidseg.train import train

    out = tmp_path_factory.mktemp("vos_train")
    train(compose_config("train", out, [*TINY_VOS_TRAIN, f"data.root={toy_davis_root}"]))
    return out / "checkpoints" / "last.ckpt"


def _command(entry: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", f"vidseg.{entry}", *args], cwd=cwd, capture_output=True,
                          text=True, env=subprocess_env(), timeout=300)


def test_commands_given_an_output_write_nothing_in_the_working_directory(vos_ckpt, toy_davis_root, tmp_path):
    frames, masks = _val_sequence(toy_davis_root)
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    runs = [
        ("predict", ["task=vos", f"ckpt={vos_ckpt}", f"input={frames[0].parent}", f"mask={masks[0]}",
                     f"output={out / 'pred'}", "overlay=false"], 0),
        ("predict", ["task=vos", f"ckpt={vos_ckpt}", f"input={tmp_path / 'missing.mp4'}", f"mask={masks[0]}",
                     f"output={out / 'failed_pred'}"], 2),
        ("evaluate", ["task=vos", f"data.root={toy_davis_root}", f"predictions={masks[0].parent.parent}",
                      f"output_dir={out / 'eval'}", "plots=false", "workers=1"], 0),
        ("evaluate", ["task=vos", f"data.root={toy_davis_root}", f"predictions={tmp_path / 'missing'}",
                      f"output_dir={out / 'failed_eval'}"], 2),
    ]
    for entry, args, status in runs:
        proc = _command(entry, args, cwd)
        assert proc.returncode == status, proc.stderr
        assert list(cwd.iterdir()) == [], f"{entry} {args} left {list(cwd.iterdir())} in the working directory"
    assert sorted(p.name for p in out.iterdir()) == ["eval", "pred"]  # failed runs made no output folder
    assert (out / "pred" / "masks").is_dir() and not (out / "pred" / ".hydra").exists()
    assert not list(out.rglob("*.log"))


def test_a_refused_run_without_an_output_leaves_no_run_folder(toy_davis_root, tmp_path):
    # Without output=/output_dir= Hydra's run folder is the output, made before vidseg's checks run: a refused
    # run removes it (and the parents Hydra made) again, but never a folder that was there before.
    cwd = tmp_path / "cwd"
    refused = [("predict", ["task=vos", f"input={tmp_path / 'missing.mp4'}"]),  # no ckpt=
               ("evaluate", ["task=vos", f"data.root={toy_davis_root}", f"predictions={tmp_path / 'missing'}"])]
    for entry, args in refused:
        proc = _command(entry, args, cwd)
        assert proc.returncode == 2, proc.stderr
        assert list(cwd.iterdir()) == [], f"{entry} {args} left {list(cwd.rglob('*'))}"
    (cwd / "outputs" / "vos").mkdir(parents=True)  # the user's own (empty) folders stay
    proc = _command("evaluate", refused[1][1], cwd)
    assert proc.returncode == 2, proc.stderr
    assert [p.relative_to(cwd).as_posix() for p in sorted(cwd.rglob("*"))] == ["outputs", "outputs/vos"]

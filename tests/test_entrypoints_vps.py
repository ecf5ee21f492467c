"""`python -m vidseg.evaluate task=vps predictions=... | ckpt=...` and `python -m vidseg.predict task=vps` on toy
Cityscapes-VPS and VIPER-VPS sets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers.configs import compose_config
from tests.helpers.vps_submission import submission_from_ground_truth
from tests.helpers.vps_training import train_tiny_vps
from vidseg.data.io import read_image
from vidseg.data.panoptic import read_panoptic_png
from vidseg.data.video import write_video
from vidseg.data.vps_layout import CITYSCAPES_VPS, LAYOUTS, VIPER
from vidseg.errors import DataError
from vidseg.evaluate import evaluate
from vidseg.inference.checkpoint import CheckpointError
from vidseg.predict import predict


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


@pytest.fixture(scope="module")
def vps_run(toy_cityscapes_vps_root, tmp_path_factory):
    """A 2-step fusetrack checkpoint trained through the real configs (low detection threshold, so that the
    random detector yields instances and the thing/track paths are written)."""
    return train_tiny_vps(toy_cityscapes_vps_root, tmp_path_factory.mktemp("vps_run"), variant="fusetrack",
                          extra=["model.net.detector.score_thresh=0.0", "model.net.detector.detections_per_img=3"])


def test_evaluate_checkpoint_writes_the_submission_scores_it_and_resumes_per_clip(vps_run, toy_cityscapes_vps_root,
                                                                                   tmp_path, capsys):
    ckpt = vps_run["last_checkpoint"]
    out = tmp_path / "eval"
    overrides = ["task=vps", f"data.root={toy_cityscapes_vps_root}", f"ckpt={ckpt}", f"output_dir={out}", "workers=1"]
    results = evaluate(compose_config("evaluate", tmp_path / "run", overrides))
    gt = json.loads((toy_cityscapes_vps_root / "panoptic_gt_val_city_vps.json").read_text())
    pred = json.loads((out / "pred.json").read_text())
    assert [a["image_id"] for a in pred["annotations"]] == [im["id"] for im in gt["images"]]
    assert sorted(p.stem for p in (out / "pan_pred").glob("*.png")) == sorted(im["id"] for im in gt["images"])
    gt_categories = {c["id"] for c in gt["categories"]}
    assert all(s["category_id"] in gt_categories for a in pred["annotations"] for s in a["segments_info"])
    for k in (0, 5, 10, 15, "final"):
        assert (out / f"vpq-{k}.txt").is_file()
    assert 0.0 <= results.vpq["all"] <= 1.0 and results.num_videos == 2
    assert "STQ" in capsys.readouterr().out
    assert json.loads((out / "evaluation.json").read_text())["ckpt"] == str(ckpt)

    # An interrupted run: one clip's record is gone; only that clip is predicted again.
    clips = sorted((out / "clips").glob("*.json"))
    assert len(clips) == 2
    kept = clips[0].read_bytes()
    clips[1].unlink()
    again = evaluate(compose_config("evaluate", tmp_path / "run2", overrides))
    printed = capsys.readouterr().out
    assert printed.count("already predicted with this checkpoint, kept") == 1
    assert clips[0].read_bytes() == kept and again.vpq == results.vpq

    # Another checkpoint (here: the same file rewritten) never reuses the predictions.
    shutil.copyfile(ckpt, tmp_path / "other.ckpt")
    other = ["task=vps", f"data.root={toy_cityscapes_vps_root}", f"ckpt={tmp_path / 'other.ckpt'}",
             f"output_dir={out}", "workers=1"]
    evaluate(compose_config("evaluate", tmp_path / "run3", other))
    assert "kept" not in capsys.readouterr().out


def test_evaluate_refuses_a_checkpoint_of_the_other_task_and_ambiguous_inputs(toy_cityscapes_vps_root, tmp_path):
    vos_ckpt = tmp_path / "vos.ckpt"
    torch.save({"vidseg_task": "vos", "hyper_parameters": {"net": {"embedding_dim": 8}}, "state_dict": {}}, vos_ckpt)
    cfg = compose_config("evaluate", tmp_path / "e", ["task=vps", f"data.root={toy_cityscapes_vps_root}",
                                                     f"ckpt={vos_ckpt}"])
    with pytest.raises(CheckpointError, match="'vos' checkpoint but task=vps; run with task=vos"):
        evaluate(cfg)
    both = compose_config("evaluate", tmp_path / "b", ["task=vps", f"data.root={toy_cityscapes_vps_root}",
                                                      f"ckpt={vos_ckpt}", f"predictions={tmp_path}"])
    with pytest.raises(DataError, match="exactly one of ckpt"):
        evaluate(both)
    video = tmp_path / "x.mp4"  # present: the checks of the command line pass, the checkpoint is what is wrong
    video.write_bytes(b"\x00" * 64)
    predict_cfg = compose_config("predict", tmp_path / "p", ["task=vps", f"ckpt={vos_ckpt}", f"input={video}"])
    with pytest.raises(CheckpointError, match="'vos' checkpoint"):
        predict(predict_cfg)


def test_predict_on_an_mp4_writes_png_and_json_per_frame_and_an_h264_overlay(vps_run, toy_cityscapes_vps_root,
                                                                              tmp_path):
    frames = [read_image(p) for p in sorted((toy_cityscapes_vps_root / "val" / "img_all").glob("*.png"))[:8]]
    video = write_video(tmp_path / "toy.mp4", frames, fps=10)
    out = tmp_path / "pred"
    cfg = compose_config("predict", tmp_path / "run", ["task=vps", f"ckpt={vps_run['last_checkpoint']}",
                                                      f"input={video}", f"output={out}"])
    summary = predict(cfg)
    assert summary["frames"] == 8
    pngs, jsons = sorted((out / "panoptic").glob("*.png")), sorted((out / "segments").glob("*.json"))
    assert [p.stem for p in pngs] == [p.stem for p in jsons] == [f"{i:05d}" for i in range(8)]
    ids = read_panoptic_png(pngs[3])
    record = json.loads(jsons[3].read_text())
    assert record["frame"] == 3 and ids.shape == frames[0].shape[:2]
    assert {s["id"] for s in record["segments_info"]} == set(np.unique(ids).tolist()) - {0}
    for s in record["segments_info"]:
        assert set(s) == {"id", "category_id", "category", "isthing", "track_id", "score", "area"}
        assert s["area"] == int((ids == s["id"]).sum())
    import av

    with av.open(str(out / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == 8


def test_overlay_colours_follow_tracks_and_stuff_classes():
    from vidseg.tasks.vps_entry import panoptic_overlay, track_colour

    categories = [{"id": 0, "name": "road", "isthing": 0, "color": [128, 64, 128]},
                  {"id": 13, "name": "car", "isthing": 1, "color": [0, 0, 142]}]
    frame = np.zeros((4, 6, 3), dtype=np.uint8)
    a = np.array([[1] * 6, [1, 1, 1013, 1013, 1, 1], [1, 1, 1013, 1013, 1, 1], [0] * 6])
    b = np.roll(a, 2, axis=1)  # the car moved; same track
    over_a, over_b = panoptic_overlay(frame, a, categories, alpha=1.0), panoptic_overlay(frame, b, categories, 1.0)
    assert tuple(over_a[1, 2]) == tuple(over_b[1, 4]) == track_colour(0)
    assert tuple(over_a[0, 0]) == (128, 64, 128) and tuple(over_a[3, 0]) == (0, 0, 0)
    assert track_colour(0) != track_colour(1)


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


def test_ddp_on_two_cpu_processes_validates_whole_clips(toy_cityscapes_vps_root, tmp_path):
    """Lightning DDP (spawned, gloo): each rank streams whole clips and the summed VPQ is logged."""
    import torch

    from tests.helpers.vps_training import train_tiny_vps

    result = train_tiny_vps(toy_cityscapes_vps_root, tmp_path, variant="image", extra=[
        "data.val_max_videos=2", "data.num_workers=0", "trainer.accelerator=cpu", "trainer.devices=2",
        "+trainer.strategy=ddp_spawn", "logger=none"])
    assert 0.0 <= result["metrics"]["val/VPQ"] <= 1.0
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_an_interrupted_predict_keeps_the_previous_outputs_and_leaves_nothing_half_written(
        vps_run, toy_cityscapes_vps_root, tmp_path, monkeypatch):
    import vidseg.tasks.vps_entry as vps_entry

    frames = sorted((toy_cityscapes_vps_root / "val" / "img_all").glob("*.png"))
    short, long_ = tmp_path / "short", tmp_path / "long"
    for folder, count in ((short, 3), (long_, 6)):
        folder.mkdir()
        for path in frames[:count]:
            (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "pred"
    args = ["task=vps", f"ckpt={vps_run['last_checkpoint']}", f"output={out}"]
    predict(compose_config("predict", tmp_path / "run", [*args, f"input={short}"]))
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert len([k for k in before if k.startswith("panoptic/")]) == 3

    real = vps_entry.read_video_frames

    def dies_after_four_frames(path):
        for index, frame in enumerate(real(path)):
            if index == 4:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the run
            yield frame

    monkeypatch.setattr(vps_entry, "read_video_frames", dies_after_four_frames)
    with pytest.raises(KeyboardInterrupt):
        predict(compose_config("predict", tmp_path / "run2", [*args, f"input={long_}"]))
    after = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the previous complete outputs, untouched; no staging folder left
    monkeypatch.undo()
    summary = predict(compose_config("predict", tmp_path / "run3", [*args, f"input={long_}"]))
    assert summary["frames"] == 6 and len(list((out / "panoptic").glob("*.png"))) == 6
    assert [p.name for p in out.glob(".*")] == [".vidseg-outputs.json"]  # the manifest; no staging folder

"""YouTube-VOS and objects that appear later through the entry points (issue 8, points 8-10, VOS side):
train on YouTube-VOS / DAVIS + YouTube-VOS, evaluate into the submission layout with vidseg's own scores,
predict with a folder of per-frame masks, atomic predict outputs, progress bars, object ids on the overlay."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
import torch

from tests.helpers.configs import TINY_FEELVOS, compose_config
from vidseg.data.io import read_mask, write_mask
from vidseg.data.youtube_vos_layout import list_videos, load_video, read_meta
from vidseg.errors import DataError
from vidseg.evaluate import evaluate
from vidseg.predict import predict
from vidseg.train import train

TRAIN = [*TINY_FEELVOS, "data.crop_size=[64,112]", "data.batch_size=2", "data.samples_per_epoch=4",
         "data.num_workers=0", "trainer.max_steps=2", "logger=none"]


def _videos(root, split="valid"):
    meta = read_meta(root, split)
    return [load_video(root, split, name, meta) for name in list_videos(root, split)]


@pytest.fixture(scope="module")
def trained(toy_youtube_vos_root, tmp_path_factory):
    """Two steps on the toy YouTube-VOS train split, validated on its valid split (objects that appear later)."""
    out = tmp_path_factory.mktemp("train_ytvos")
    cfg = compose_config("train", out, ["task=vos", "data=youtube_vos", f"data.root={toy_youtube_vos_root}", *TRAIN])
    result = train(cfg)
    return out / "checkpoints" / "last.ckpt", result


def test_train_on_youtube_vos_validates_with_late_objects(trained):
    ckpt, result = trained
    assert ckpt.is_file() and 0.0 <= result["metrics"]["val/J&F"] <= 1.0


def test_train_on_davis_and_youtube_vos(toy_davis_root, toy_youtube_vos_root, tmp_path):
    cfg = compose_config("train", tmp_path, [
        "task=vos", "data=davis_youtube_vos", f"data.root={toy_davis_root}",
        f"data.youtube_vos_root={toy_youtube_vos_root}", "data.sampling_probabilities.davis=0.3",
        "data.val_max_frames=4", "data.val_max_sequences=1", *TRAIN,
    ])
    assert cfg.data.sampling_probabilities == {"davis": 0.3, "youtube_vos": 0.5}
    result = train(cfg)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert 0.0 <= result["metrics"]["val/J&F"] <= 1.0


def test_evaluate_writes_the_submission_and_prints_own_scores(trained, toy_youtube_vos_root, tmp_path, capsys):
    ckpt, _ = trained
    cfg = compose_config("evaluate", tmp_path, ["task=vos", "data=youtube_vos", f"data.root={toy_youtube_vos_root}",
                                                "data.split=valid", f"ckpt={ckpt}"])
    results = evaluate(cfg)
    printed = capsys.readouterr().out
    assert "J&F-Mean" in printed and "after its first frame" in printed and "zip:" in printed
    videos = _videos(toy_youtube_vos_root)
    ann = tmp_path / "submission" / "Annotations"
    expected = sorted(f"Annotations/{v.name}/{f.stem}.png" for v in videos for f in v.frames)
    with zipfile.ZipFile(tmp_path / "submission-valid.zip") as archive:
        assert sorted(archive.namelist()) == expected  # every frame of every valid video, nothing else
    late_seen = False
    for video in videos:
        for obj, first in video.first_frames().items():
            masks = [read_mask(ann / video.name / f"{f.stem}.png") for f in video.frames]
            assert all(set(np.unique(m).tolist()) <= {0, *video.objects} for m in masks)  # the given ids
            assert not any((m == obj).any() for m in masks[:first])  # not segmented before it is given
            given = video.read_given_mask(first) == obj
            assert (masks[first][given] == obj).all()  # its given mask is pasted on at its first frame
            late_seen |= first > 0
    assert late_seen
    saved = json.loads((tmp_path / "results-valid.json").read_text())
    assert saved["global"]["J&F-Mean"] == pytest.approx(results.global_metrics["J&F-Mean"])
    assert len(results.per_object) == sum(len(v.objects) for v in videos)
    assert json.loads((tmp_path / "evaluation.json").read_text())["submission_zip"].endswith("submission-valid.zip")

    evaluate(cfg)  # rerun with the same checkpoint: every video kept
    assert printed.count("frames, objects") == len(videos)
    assert capsys.readouterr().out.count("already predicted") == len(videos)


def test_evaluate_scores_a_results_folder_and_refuses_what_it_cannot_score(toy_youtube_vos_root, tmp_path):
    root = toy_youtube_vos_root
    results = tmp_path / "gt" / "Annotations"  # a submission folder: <dir>/Annotations/<video>/<frame>.png
    for video in _videos(root):
        for frame in video.frames:
            write_mask(results / video.name / f"{frame.stem}.png",
                       read_mask(root / "valid_full_annotations" / video.name / f"{frame.stem}.png"))
    cfg = compose_config("evaluate", tmp_path / "eval", ["task=vos", "data=youtube_vos", f"data.root={root}",
                                                         f"predictions={tmp_path / 'gt'}"])
    assert evaluate(cfg).global_metrics["J&F-Mean"] == 1.0
    real_like = tmp_path / "real_like"
    shutil.copytree(root, real_like, ignore=shutil.ignore_patterns("valid_full_annotations"))
    cfg = compose_config("evaluate", tmp_path / "eval2", ["task=vos", "data=youtube_vos", f"data.root={real_like}",
                                                          f"predictions={tmp_path / 'gt'}"])
    with pytest.raises(DataError, match="server"):
        evaluate(cfg)


def test_predict_with_a_folder_of_per_frame_masks(trained, toy_youtube_vos_root, tmp_path):
    ckpt, _ = trained
    video = next(v for v in _videos(toy_youtube_vos_root) if max(v.first_frames().values()) > 0)
    mask_dir = toy_youtube_vos_root / "valid" / "Annotations" / video.name  # sparse: one PNG per first frame
    out = tmp_path / "pred"
    cfg = compose_config("predict", tmp_path, ["task=vos", f"ckpt={ckpt}", f"input={video.frames[0].parent}",
                                               f"mask={mask_dir}", f"output={out}"])
    summary = predict(cfg)
    written = sorted((out / "masks").glob("*.png"))
    assert summary["frames"] == len(written) == len(video.frames)
    assert set(summary["object_ids"]) == set(video.objects)
    assert {int(k): v for k, v in summary["object_first_frames"].items()} == video.first_frames()
    for obj, first in video.first_frames().items():
        assert not any((read_mask(p) == obj).any() for p in written[:first])
        assert (read_mask(written[first])[video.read_given_mask(first) == obj] == obj).all()
    assert (out / "overlay.mp4").stat().st_size > 0
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".vidseg-outputs.json"]  # no staging left

    bad = tmp_path / "bad_masks"
    write_mask(bad / "frame_zero.png", read_mask(next(mask_dir.glob("*.png"))))
    cfg = compose_config("predict", tmp_path, ["task=vos", f"ckpt={ckpt}", f"input={video.frames[0].parent}",
                                               f"mask={bad}", f"output={tmp_path / 'p2'}"])
    with pytest.raises(DataError, match="frame_zero.png"):
        predict(cfg)


def test_interrupted_predict_leaves_the_previous_outputs_and_nothing_half_written(trained, toy_youtube_vos_root,
                                                                                 tmp_path, monkeypatch):
    from vidseg.inference import vos as vos_inference

    ckpt, _ = trained
    video = _videos(toy_youtube_vos_root)[0]
    first = video.annotations[video.frames[0].stem]
    out = tmp_path / "pred"
    overrides = ["task=vos", f"ckpt={ckpt}", f"input={video.frames[0].parent}", f"mask={first}", f"output={out}"]
    predict(compose_config("predict", tmp_path, overrides))
    before = {p.name: p.read_bytes() for p in (out / "masks").iterdir()}
    overlay_before = (out / "overlay.mp4").read_bytes()
    real_step = vos_inference.VOSSession.step_async  # what track() calls per frame
    calls = []

    def dies_at_frame_4(self, frame):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(self, frame)

    monkeypatch.setattr(vos_inference.VOSSession, "step_async", dies_at_frame_4)
    (out / "prediction.json").unlink()
    with pytest.raises(KeyboardInterrupt):
        predict(compose_config("predict", tmp_path, overrides))
    # The interrupted run wrote nothing visible: the previous complete masks and overlay are intact.
    assert {p.name: p.read_bytes() for p in (out / "masks").iterdir()} == before
    assert (out / "overlay.mp4").read_bytes() == overlay_before
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["masks", "overlay.mp4"]
    monkeypatch.setattr(vos_inference.VOSSession, "step_async", real_step)
    predict(compose_config("predict", tmp_path, overrides))
    # the leftover staging folder is cleared; only the manifest is hidden
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".vidseg-outputs.json"]


def test_evaluate_and_predict_drive_a_progress_bar_over_frames(trained, toy_youtube_vos_root, toy_davis_root,
                                                              tmp_path, monkeypatch):
    from vidseg.tasks import vos_entry

    bars = []
    real = vos_entry.progress_bar

    def spy(total, desc):
        bar = real(total, desc)
        bars.append({"total": total, "n": 0})
        update = bar.update

        def counting(n=1):
            bars[-1]["n"] += n
            return update(n)

        bar.update = counting
        return bar

    monkeypatch.setattr(vos_entry, "progress_bar", spy)
    ckpt, _ = trained
    videos = _videos(toy_youtube_vos_root)
    evaluate(compose_config("evaluate", tmp_path / "e", ["task=vos", "data=youtube_vos",
                                                         f"data.root={toy_youtube_vos_root}", f"ckpt={ckpt}"]))
    assert bars[-1] == {"total": sum(len(v.frames) for v in videos), "n": sum(len(v.frames) for v in videos)}
    video = videos[0]
    predict(compose_config("predict", tmp_path / "p", [
        "task=vos", f"ckpt={ckpt}", f"input={video.frames[0].parent}",
        f"mask={video.annotations[video.frames[0].stem]}", f"output={tmp_path / 'p'}", "overlay=false"]))
    assert bars[-1] == {"total": len(video.frames), "n": len(video.frames)}


def test_overlay_draws_each_object_id(tmp_path, monkeypatch):
    from vidseg.data.video import OverlayVideoWriter, overlay

    labels = np.zeros((64, 112), np.uint8)
    labels[8:40, 8:48] = 3
    labels[30:60, 60:108] = 12
    frame = np.full((64, 112, 3), 90, np.uint8)
    plain = overlay(frame, labels)
    drawn = OverlayVideoWriter.draw_ids(plain, labels)
    changed = np.any(drawn != plain, axis=2)
    for obj in (3, 12):
        ys, xs = np.nonzero(labels == obj)
        box = changed[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert box.any()  # a label inside the object's extent
        cy, cx = int(ys.mean()), int(xs.mean())
        assert changed[max(0, cy - 6):cy + 7, max(0, cx - 8):cx + 9].any()  # near its centre
    assert not changed[labels == 0].any()  # boxes sit inside these objects
    inside = drawn[changed]
    assert (inside.min(axis=1) > 180).any() and (inside.max(axis=1) == 0).any()  # light text on a dark box
    ring = np.zeros((64, 112), np.uint8)
    ring[10:54, 20:90] = 5
    ring[20:44, 35:75] = 0  # the centroid is in the hole: the id goes on the ring itself
    ring_drawn = np.any(OverlayVideoWriter.draw_ids(overlay(frame, ring), ring) != overlay(frame, ring), axis=2)
    ys, xs = np.nonzero(ring_drawn)
    assert (ring[ys, xs] == 5).any()

    written = []
    monkeypatch.setattr(OverlayVideoWriter.__mro__[1], "write", lambda self, image: written.append(image))
    OverlayVideoWriter(tmp_path / "o.mp4").write(frame, labels)
    OverlayVideoWriter(tmp_path / "o.mp4", show_ids=False).write(frame, labels)
    assert np.array_equal(written[0], drawn) and np.array_equal(written[1], plain)

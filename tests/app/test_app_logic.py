"""The web app's non-UI logic (options, upload checks, painted masks, runs, session folders); no browser."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.stub_models import ShiftPreviousFEELVOS, StubVPSNet
from vidseg.app.config import parse_args
from vidseg.app.inputs import (
    MAX_PAINT_OBJECTS,
    Limits,
    brush_colours,
    check_video,
    describe_annotations,
    mask_layer,
    object_colour,
    painted_mask,
    read_mask_upload,
    store_upload,
)
from vidseg.app.runs import (
    RunProgress,
    VOSResult,
    VPSResult,
    legend_html,
    new_run_folder,
    reusable_frames,
    run_vos,
    run_vps,
)
from vidseg.app.sessions import SessionFolders
from vidseg.data.io import write_mask
from vidseg.data.video import count_frames
from vidseg.errors import DataError

LIMITS = Limits(max_bytes=10 * 2**20, max_frames=100, max_seconds=60, max_pixels=640 * 480)


# ------------------------------------------------------------------------------------------------ options
def test_parse_args_defaults_are_local_and_say_how_to_get_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no outputs/demo here
    cfg = parse_args([])
    assert (cfg.host, cfg.port) == ("127.0.0.1", 7860)
    assert cfg.vos_checkpoint() is None and cfg.vps_checkpoint() is None
    assert len(cfg.notes) == 2 and all("make demo" in note for note in cfg.notes)


def test_parse_args_finds_the_demo_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = tmp_path / "outputs/demo/train/checkpoints/last.ckpt"
    demo.parent.mkdir(parents=True)
    demo.write_bytes(b"x")
    cfg = parse_args(["port=7999", "max_frames=10"])
    assert cfg.vos_checkpoint() == str(Path("outputs/demo/train/checkpoints/last.ckpt"))
    assert (cfg.port, cfg.max_frames) == (7999, 10)
    assert len(cfg.notes) == 1 and "VPS" in cfg.notes[0]
    # a pretrained folder or a Hub id is taken as given (a Hub id is never folded into a path)
    folder = tmp_path / "pretrained"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x")
    cfg = parse_args([f"ckpt_vos={folder}", "ckpt_vps=hf://owner/vpsnet"])
    assert (cfg.vos_checkpoint(), cfg.vps_checkpoint()) == (str(folder), "hf://owner/vpsnet")
    with pytest.raises(FileNotFoundError, match="pretrained folder or hf://"):
        parse_args([f"ckpt_vos={tmp_path / 'nothing'}"])


@pytest.mark.parametrize("argv, words", [
    (["prt=1"], "unknown option"), (["port"], "key=value"), (["port=x"], "number"), (["port=70000"], "1..65535"),
    (["max_frames=0"], "> 0"), (["precision=64"], "precision"),
])
def test_parse_args_refuses_bad_options(argv, words):
    with pytest.raises(DataError, match=words):
        parse_args(argv)


def test_parse_args_refuses_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_vos"):
        parse_args([f"ckpt_vos={tmp_path / 'none.ckpt'}"])


# ------------------------------------------------------------------------------------------------ uploads
def test_check_video_accepts_a_toy_video(toy_video_path):
    info = check_video(toy_video_path, LIMITS)
    assert (info.frames, info.height, info.width) == (8, 64, 112) and info.fps == pytest.approx(10)


@pytest.mark.parametrize("limits, words", [
    (Limits(100, 100, 60, 10**6), "MB is over"), (Limits(2**30, 5, 60, 10**6), "limit of 5 frames"),
    (Limits(2**30, 100, 0.5, 10**6), "limit of 0 s"), (Limits(2**30, 100, 60, 1000), "pixels"),
])
def test_check_video_refuses_videos_over_the_limits(toy_video_path, limits, words):
    with pytest.raises(DataError, match=words):
        check_video(toy_video_path, limits)


def test_check_video_refuses_what_is_not_a_video(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match="not a video file"):
        check_video(text, LIMITS)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DataError, match="fake.mp4: cannot read this video") as err:
        check_video(fake, LIMITS)
    assert str(tmp_path) not in str(err.value)  # the server's paths stay on the server


def test_store_upload_copies_into_the_session_and_drops_refused_copies(toy_video_path, tmp_path):
    info = store_upload(toy_video_path, tmp_path / "s", "vos", LIMITS)
    assert info.path == tmp_path / "s" / "vos-input.mp4" and info.path.read_bytes() == toy_video_path.read_bytes()
    with pytest.raises(DataError, match=rf"{toy_video_path.name}: longer than"):
        store_upload(toy_video_path, tmp_path / "t", "vos", Limits(2**30, 3, 60, 10**6))
    assert list((tmp_path / "t").iterdir()) == []


# ------------------------------------------------------------------------------------------------ masks
def test_painted_mask_maps_brush_colours_to_object_ids():
    assert len(brush_colours()) == MAX_PAINT_OBJECTS and brush_colours()[0] == "#800000"  # DAVIS colour 1
    layer = np.zeros((6, 8, 4), np.uint8)
    layer[1:3, 1:3] = (*object_colour(1), 255)
    layer[4, 5] = (*(np.array(object_colour(3)) + 9), 200)  # an antialiased edge: near colour 3, opaque enough
    layer[0, 7] = (*object_colour(2), 40)  # nearly transparent: not painted
    over = np.zeros_like(layer)
    over[2, 2] = (*object_colour(2), 255)  # a later layer paints over
    mask = painted_mask([layer, over], (6, 8))
    expected = np.zeros((6, 8), np.uint8)
    expected[1:3, 1:3] = 1
    expected[2, 2], expected[4, 5] = 2, 3
    np.testing.assert_array_equal(mask, expected)


def test_mask_layer_and_painted_mask_round_trip_and_resample():
    ids = np.zeros((8, 12), np.uint8)
    ids[1:4, 2:6], ids[5:7, 7:11], ids[0, 0] = 1, MAX_PAINT_OBJECTS, 255
    layer = mask_layer(ids)
    assert layer.shape == (8, 12, 4) and layer[0, 0, 3] == 0  # void is not painted
    expected = np.where(ids == 255, 0, ids)
    np.testing.assert_array_equal(painted_mask([layer], (8, 12)), expected)
    big = np.asarray(Image.fromarray(layer).resize((24, 16), Image.NEAREST))  # a canvas at twice the size
    np.testing.assert_array_equal(painted_mask([big], (8, 12)), expected)
    with pytest.raises(DataError, match="renumber"):
        mask_layer(np.full((2, 2), MAX_PAINT_OBJECTS + 1, np.uint8))


def test_read_mask_upload_checks_size_and_objects(tmp_path):
    good = np.zeros((4, 6), np.uint8)
    good[1, 1] = 2
    write_mask(tmp_path / "m.png", good)
    np.testing.assert_array_equal(read_mask_upload(tmp_path / "m.png", (4, 6)), good)
    with pytest.raises(DataError, match="6x4 but the video is 5x4"):
        read_mask_upload(tmp_path / "m.png", (4, 5))
    write_mask(tmp_path / "empty.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(DataError, match="no object"):
        read_mask_upload(tmp_path / "empty.png", (4, 6))
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError) as err:
        read_mask_upload(tmp_path / "rgb.png", (4, 6))
    assert str(tmp_path) not in str(err.value)
    assert describe_annotations({0: good, 5: np.where(good, 7, 0)}) == "frame 0: object 2; frame 5: object 7"


# ------------------------------------------------------------------------------------------------ runs
def _drain(run):
    items = list(run)
    assert all(isinstance(i, RunProgress) for i in items[:-1])
    return items[:-1], items[-1]


def test_run_vos_writes_masks_zip_and_overlay_and_adds_later_objects(toy_video_path, tmp_path):
    from vidseg.inference.vos import VOSPredictor

    info = check_video(toy_video_path, LIMITS)
    first, later = np.zeros((64, 112), np.uint8), np.zeros((64, 112), np.uint8)
    first[16:32, 16:40], later[40:56, 60:90] = 1, 2
    folder = new_run_folder(tmp_path, "vos")
    progress, result = _drain(run_vos(VOSPredictor(ShiftPreviousFEELVOS(shift=0)), info, {0: first, 3: later},
                                      folder))
    assert isinstance(result, VOSResult) and result.frames == 8 and result.object_ids == [1, 2]
    assert result.object_first_frames == {1: 0, 2: 3}
    assert [p.done for p in progress] == list(range(1, 9)) and progress[-1].total == 8
    names = sorted(zipfile.ZipFile(result.masks_zip).namelist())
    assert names == [f"masks/{i:05d}.png" for i in range(8)]
    mask3 = np.asarray(Image.open(folder / "masks" / "00003.png"))
    assert Image.open(folder / "masks" / "00003.png").mode == "P" and (mask3 == 2).sum() == (later == 2).sum()
    assert not (np.asarray(Image.open(folder / "masks" / "00002.png")) == 2).any()
    assert count_frames(result.overlay) == 8
    rerun = new_run_folder(tmp_path, "vos")  # a rerun starts afresh; the page keeps only the latest run
    assert rerun != folder and not folder.exists() and list(rerun.iterdir()) == []


def test_rerun_with_a_later_object_resumes_at_its_frame(toy_video_path, tmp_path):
    """Run 1: object 1 from frame 0. Object 2 is then added at frame 5: run 2 keeps frames 0-4 of run 1 and
    gives what a run from the start gives; run 1's folder is removed, and a run with nothing changed reuses
    every frame."""
    from vidseg.inference.vos import VOSPredictor

    predictor = VOSPredictor(ShiftPreviousFEELVOS(shift=1))
    info = check_video(toy_video_path, LIMITS)
    first, later = np.zeros((64, 112), np.uint8), np.zeros((64, 112), np.uint8)
    first[16:32, 16:40], later[40:56, 60:90] = 1, 2
    _, run1 = _drain(run_vos(predictor, info, {0: first}, new_run_folder(tmp_path, "vos")))
    assert run1.reused == 0 and run1.video == info.path
    folder2 = new_run_folder(tmp_path, "vos", keep=run1.folder)
    assert run1.folder.is_dir()  # kept: run 2 reads its masks
    _, run2 = _drain(run_vos(predictor, info, {0: first, 5: later}, folder2, previous=run1))
    assert run2.reused == 5 and run2.object_first_frames == {1: 0, 2: 5} and not run1.folder.exists()
    _, full = _drain(run_vos(predictor, info, {0: first, 5: later}, tmp_path / "full"))
    for index in range(8):
        name = f"{index:05d}.png"
        assert np.array_equal(np.asarray(Image.open(folder2 / "masks" / name)),
                              np.asarray(Image.open(tmp_path / "full" / "masks" / name))), index
    assert count_frames(run2.overlay) == 8 and len(zipfile.ZipFile(run2.masks_zip).namelist()) == 8
    _, run3 = _drain(run_vos(predictor, info, {0: first, 5: later}, new_run_folder(tmp_path, "vos", keep=run2.folder),
                             previous=run2))
    assert run3.reused == 8
    # frame 0 changed: nothing is reused
    moved = np.roll(first, 4, axis=1)
    _, run4 = _drain(run_vos(predictor, info, {0: moved, 5: later}, new_run_folder(tmp_path, "vos", keep=run3.folder),
                             previous=run3))
    assert run4.reused == 0


def test_reusable_frames_stop_at_the_first_changed_annotation():
    a, b = np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8)
    assert reusable_frames({0: a}, {0: a, 7: b}, 10) == 7
    assert reusable_frames({0: a, 7: b}, {0: a}, 10) == 7  # removed
    assert reusable_frames({0: a, 7: b}, {0: a, 7: a}, 10) == 7  # changed
    assert reusable_frames({0: a, 3: b}, {0: a, 3: b}, 10) == 10  # nothing changed
    assert reusable_frames({0: a}, {0: b}, 10) == 0


def test_run_vos_closed_midway_leaves_no_overlay_or_zip(toy_video_path, tmp_path):
    from vidseg.inference.vos import VOSPredictor

    first = np.zeros((64, 112), np.uint8)
    first[16:32, 16:40] = 1
    run = run_vos(VOSPredictor(ShiftPreviousFEELVOS(shift=0)), check_video(toy_video_path, LIMITS), {0: first},
                  tmp_path)
    assert next(run).done == 1 and next(run).done == 2
    run.close()  # what a cancelled page event does
    assert not (tmp_path / "overlay.mp4").exists() and not (tmp_path / "masks.zip").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary video left


def test_run_vps_writes_the_predict_layout_and_a_track_table(toy_video_path, tmp_path):
    from vidseg.inference.vps import VPSPredictor

    progress, result = _drain(run_vps(VPSPredictor(StubVPSNet()), check_video(toy_video_path, LIMITS), tmp_path))
    assert isinstance(result, VPSResult) and result.frames == 8 and len(progress) == 8
    names = zipfile.ZipFile(result.panoptic_zip).namelist()
    assert sorted(n for n in names if n.startswith("panoptic/")) == [f"panoptic/{i:05d}.png" for i in range(8)]
    assert sorted(n for n in names if n.startswith("segments/")) == [f"segments/{i:05d}.json" for i in range(8)]
    # the stub puts its thing on track t at frame t: one row per track, seen in one frame
    assert [row[0] for row in result.tracks] == list(range(8))
    assert all(row[2] == row[3] == row[0] and row[4] == 1 and row[5] > 0 for row in result.tracks)
    assert count_frames(result.overlay) == 8
    html = legend_html(result)
    assert "class_0" in html and "class_3 #7" in html


# ------------------------------------------------------------------------------------------------ sessions
def test_session_folders_are_removed_at_session_end_expiry_and_close(tmp_path):
    sessions = SessionFolders(tmp_path / "root", ttl_s=10)
    a, b = sessions.folder("a"), sessions.folder("b")
    assert a != b and a.parent == b.parent == tmp_path / "root" and sessions.folder("a") == a
    (a / "x.mp4").write_bytes(b"1")
    sessions.end("a")
    assert not a.exists() and b.exists() and len(sessions) == 1
    sessions.end("never-seen")  # nothing to do
    assert sessions.expire(now=__import__("time").monotonic() + 11) == ["b"] and not b.exists()
    sessions.folder("c")
    sessions.close()
    assert not (tmp_path / "root").exists()

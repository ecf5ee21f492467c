"""VIPSeg scoring (vidseg.metrics.vps_eval with the "vipseg" layout/protocol) = the official eval_vpq_vspw.py and
eval_stq_vspw.py: against a loop-based oracle (tests/helpers/vipseg_official.py), against numbers the official
scripts printed on the same generated sets, the STQ crowd quirk and its corrected mode, and every refusal."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import vipseg_official as official
from tests.helpers.configs import compose_config
from tests.helpers.vipseg_submission import (
    CATEGORIES,
    as_official,
    frame_names,
    make_videos,
    write_vipseg_gt,
    write_vipseg_submission,
)
from tests.helpers.vps_submission import VideoData, segments_from_ids
from vidseg.data.panoptic import write_panoptic_png
from vidseg.data.vps_layout import VIPSEG
from vidseg.errors import DataError, SubmissionError
from vidseg.metrics.vpq import VIPSEG_PROTOCOL
from vidseg.metrics.vps_eval import (
    evaluate_submission,
    load_ground_truth,
    with_stq_mode,
    write_vps_results,
)

WINDOWS = dict(zip((0, 5, 15, 25, 35), official.WINDOWS, strict=True))  # k label -> nframes

# What the official scripts printed on make_videos(seed) written by write_vipseg_gt / write_vipseg_submission
# (run in /tmp with the venv's python: eval_vpq_vspw.py --num_processes 1 and eval_stq_vspw.py), and the first
# 16 hex digits of the sha256 of the vpq-<k>.txt / vpq-final.txt files eval_vpq_vspw.py wrote.
OFFICIAL = {
    0: {"STQ": 0.23945907590903107, "AQ": 0.161301353331663, "SQ": 0.35548771198035134,
        "final": ["vpq_all:26.7953", "vpq_thing:10.0828", "vpq_stuff:52.3068"],
        "sha256": {"vpq-0.txt": "ff81c2532f3361c6", "vpq-5.txt": "9c82faac13536585", "vpq-15.txt": "6bcd680a27f2e06e",
                   "vpq-25.txt": "6c7638a70cff768d", "vpq-35.txt": "1a18e6f66db2340d",
                   "vpq-final.txt": "719db8fefbae580e"}},
    1: {"STQ": 0.1822217639314574, "AQ": 0.1272741416706217, "SQ": 0.2608917319295216,
        "final": ["vpq_all:21.6767", "vpq_thing:4.8104", "vpq_stuff:61.2197"],
        "sha256": {"vpq-0.txt": "5cc54af235200944", "vpq-5.txt": "201515aadbdb23a8", "vpq-15.txt": "87f359becba95e50",
                   "vpq-25.txt": "10fe77a6f416a75a", "vpq-35.txt": "9ac8d9b41a6e7f03",
                   "vpq-final.txt": "b76f28786add1363"}},
    2: {"STQ": 0.21152837550273437, "AQ": 0.1779048070736263, "SQ": 0.25150671518565704,
        "final": ["vpq_all:21.0456", "vpq_thing:10.1760", "vpq_stuff:33.7475"],
        "sha256": {"vpq-0.txt": "f125a015b3bf6491", "vpq-5.txt": "c783f5a5f3eb850c", "vpq-15.txt": "bf8e0a05d463e563",
                   "vpq-25.txt": "ed81593b84308c3e", "vpq-35.txt": "416f80b145178b0d",
                   "vpq-final.txt": "1a8f0ee09cfe34b6"}},
}
# The official per-window VPQ (all) of seed 0, as printed (percent).
OFFICIAL_SEED0_WINDOWS = [34.452719131253424, 27.584168533735586, 25.4499752454127, 23.97268166960694,
                          22.516878505710668]


def _write_set(base: Path, videos) -> tuple[Path, Path]:
    root, sub = base / "data", base / "sub"
    (root / "VIPSeg_720P").mkdir(parents=True)
    write_vipseg_gt(root, "val", videos)
    write_vipseg_submission(sub, videos)
    return root, sub


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """seed -> (GT root, submission dir, videos) for the three recorded sets."""
    out = {}
    for seed in OFFICIAL:
        videos = make_videos(seed)
        out[seed] = (*_write_set(tmp_path_factory.mktemp(f"vipseg{seed}"), videos), videos)
    return out


def _score(root, sub, stq_mode="official", workers=0):
    gt = load_ground_truth(VIPSEG, root, "val")
    return evaluate_submission(gt, sub, with_stq_mode(VIPSEG_PROTOCOL, stq_mode), workers=workers)


# -------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("seed", sorted(OFFICIAL))
def test_equals_the_oracle_per_class_per_window_and_stq_in_both_modes(sets, seed):
    root, sub, videos = sets[seed]
    results = _score(root, sub)
    stats = official.vpq_stats(as_official(videos))
    assert list(results.windows) == [0, 5, 15, 25, 35]
    for k, nframes in WINDOWS.items():
        entry = results.windows[k]
        assert entry["nframes"] == nframes
        for cid, r in entry["per_class"].items():
            iou, tp, fp, fn = stats[nframes].get(cid, [0.0, 0, 0, 0])
            assert (r["tp"], r["fp"], r["fn"]) == (tp, fp, fn), (k, cid)
            assert r["iou"] == pytest.approx(iou, abs=1e-12)
        expected = official.pq_summary(stats[nframes], CATEGORIES)
        for name in ("all", "thing", "stuff"):
            assert entry[name]["pq"] == pytest.approx(expected[name], abs=1e-12)
    for mode, corrected in (("official", False), ("corrected", True)):
        got = results.stq if mode == "official" else _score(root, sub, mode).stq
        want = official.stq(as_official(videos), CATEGORIES, corrected=corrected)
        assert got == pytest.approx(want, abs=1e-12), mode


@pytest.mark.parametrize("seed", sorted(OFFICIAL))
def test_equals_what_the_official_scripts_printed(sets, seed, tmp_path):
    root, sub, _ = sets[seed]
    results = _score(root, sub)
    want = OFFICIAL[seed]
    assert results.stq == pytest.approx({k: want[k] for k in ("STQ", "AQ", "SQ")}, abs=1e-12)
    assert results.stq_crowd == "first_segment"
    if seed == 0:
        got = [100 * results.windows[k]["all"]["pq"] for k in WINDOWS]
        assert got == pytest.approx(OFFICIAL_SEED0_WINDOWS, abs=1e-9)
    paths = write_vps_results(results, tmp_path, "val")
    assert paths["final"].read_text().split() == want["final"]
    # vpq-<k>.txt byte for byte: per-class TP/FP/FN, IoU sums and PQ/SQ/RQ of every window, as the script writes.
    for name, digest in want["sha256"].items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()[:16] == digest, name


def test_workers_do_not_change_a_number(sets):
    root, sub, _ = sets[1]
    one, two = _score(root, sub, workers=0), _score(root, sub, workers=2)
    assert one.windows == two.windows and one.stq == two.stq and one.vpq == two.vpq


# -------------------------------------------------------------------------------- the STQ crowd quirk
def _quirk_video(first_frame_has_stuff: bool) -> VideoData:
    """8 frames of 4 x 8 (VIPSeg's longest window). GT: sky band + door 301 (left) + person 6101 (right); frame 0
    without the sky unless asked. The prediction gets the person right and gives the door id 50 in frame 0 and
    id 51 after (one split track)."""
    sky, door, person = 1, 301, 6101
    cats = {sky: 28, door: 2, person: 60}
    assert [CATEGORIES[c]["isthing"] for c in cats.values()] == [0, 1, 1]
    later = np.array([[door] * 4 + [person] * 4] * 4)
    later[0] = sky
    first = later.copy() if first_frame_has_stuff else np.array([[door] * 4 + [person] * 4] * 4)
    gt = [first] + [later.copy() for _ in range(7)]
    pred = [np.where(g == door, 50 if t == 0 else 51, g) for t, g in enumerate(gt)]
    pcats = {**cats, 50: 2, 51: 2}
    return VideoData("7_quirk", gt, [segments_from_ids(g, cats) for g in gt], pred,
                     [segments_from_ids(p, pcats) for p in pred])


@pytest.mark.parametrize("first_frame_has_stuff", [False, True])
def test_stq_crowd_quirk_and_the_corrected_mode(tmp_path, first_frame_has_stuff):
    video = _quirk_video(first_frame_has_stuff)
    root, sub = _write_set(tmp_path, [video])
    off, cor = _score(root, sub).stq, _score(root, sub, "corrected").stq
    for got, corrected in ((off, False), (cor, True)):
        assert got == pytest.approx(official.stq(as_official([video]), CATEGORIES, corrected=corrected), abs=1e-12)
    # The door's AQ: a px under id 50, b under 51 -> (a^2 + b^2) / (a + b)^2; the person's 1.
    a = sum(np.count_nonzero(p == 50) for p in video.pred_ids)
    b = sum(np.count_nonzero(p == 51) for p in video.pred_ids)
    assert cor["AQ"] == pytest.approx((1 + (a * a + b * b) / (a + b) ** 2) / 2)
    if first_frame_has_stuff:  # the first listed segment is the sky: nothing is crowd, both modes agree
        assert off == cor
    else:  # the door is listed first: the official script takes it as crowd and only the person is a track
        assert off["AQ"] == pytest.approx(1.0) and off["SQ"] == cor["SQ"] and off["STQ"] > cor["STQ"]


def test_corrected_mode_takes_iscrowd_segments_as_crowd(sets):
    root, sub, videos = sets[0]
    assert any(s["iscrowd"] for v in videos for segs in v.gt_segments for s in segs)
    off, cor = _score(root, sub).stq, _score(root, sub, "corrected").stq
    assert off != cor
    with pytest.raises(DataError, match="stq_mode"):
        with_stq_mode(VIPSEG_PROTOCOL, "fixed")


# ------------------------------------------------------------------------------------------ entry point
def test_evaluate_command_writes_the_official_files(sets, tmp_path, capsys):
    from vidseg.evaluate import evaluate

    root, sub, _ = sets[0]
    mine = tmp_path / "sub"
    shutil.copytree(sub, mine)
    cfg = compose_config("evaluate", tmp_path / "run", ["task=vps", "data=vipseg", f"data.root={root}",
                                                        "data.split=val", f"predictions={mine}", f"output_dir={mine}",
                                                        "workers=1"])
    results = evaluate(cfg)
    assert "STQ" in capsys.readouterr().out
    for name, digest in OFFICIAL[0]["sha256"].items():
        assert hashlib.sha256((mine / name).read_bytes()).hexdigest()[:16] == digest, name
    saved = json.loads((mine / "results-val.json").read_text())
    assert saved["protocol"] == "vipseg" and saved["stq_crowd"] == "first_segment"
    assert saved["stq"]["STQ"] == pytest.approx(OFFICIAL[0]["STQ"], abs=1e-12)
    assert set(saved["windows"]) == {"0", "5", "15", "25", "35"}
    assert saved["windows"]["35"]["per_class"]["60"].keys() >= {"tp", "fp", "fn", "iou"}
    assert results.vpq["all"] == pytest.approx(np.mean(OFFICIAL_SEED0_WINDOWS) / 100, abs=1e-12)

    out2 = tmp_path / "corrected"
    cfg = compose_config("evaluate", tmp_path / "run2", ["task=vps", "data=vipseg", f"data.root={root}",
                                                         f"predictions={sub}", f"output_dir={out2}",
                                                         "stq_mode=corrected"])
    corrected = evaluate(cfg)
    assert corrected.stq_crowd == "iscrowd" and corrected.stq != results.stq and corrected.vpq == results.vpq


# ---------------------------------------------------------------------------------------------- refusals
@pytest.fixture
def bad(sets, tmp_path):
    """(GT root, a writable copy of seed 1's submission, its pred.json as a dict)."""
    root, sub, _ = sets[1]
    dst = tmp_path / "sub"
    shutil.copytree(sub, dst)
    return root, dst, json.loads((dst / "pred.json").read_text())


def _save(sub, pred):
    (sub / "pred.json").write_text(json.dumps(pred))


def _first_video(pred):
    return pred["annotations"][0]


@pytest.mark.parametrize("how, error, match", [
    ("missing video", SubmissionError, "no entry in annotations"),
    ("missing frame", SubmissionError, "frame entries"),
    ("png id not listed", SubmissionError, "not in this frame's pred.json"),
    ("listed id without pixels", SubmissionError, "no pixel"),
    ("unknown category", SubmissionError, "unknown category_id"),
    ("listed twice", SubmissionError, "listed twice"),
    ("frames out of order", SubmissionError, "pair by position"),
    ("size", SubmissionError, "GT resolution"),
    ("missing png", FileNotFoundError, "prediction PNG not found"),
    ("no pred.json", FileNotFoundError, "pred.json not found"),
    ("flat pred.json", SubmissionError, "video_id"),
])
def test_refuses_what_the_official_scripts_cannot_score(bad, how, error, match):
    root, sub, pred = bad
    video = _first_video(pred)
    name = video["video_id"]
    frame0 = video["annotations"][0]
    if how == "missing video":
        pred["annotations"].pop(0)
    elif how == "missing frame":
        video["annotations"].pop()
    elif how == "png id not listed":
        frame0["segments_info"].pop()
    elif how == "listed id without pixels":
        frame0["segments_info"].append({"id": 777, "category_id": 5})
    elif how == "unknown category":
        frame0["segments_info"][0]["category_id"] = 124
    elif how == "listed twice":  # with another category; the same category is scored (next test)
        frame0["segments_info"].append(dict(frame0["segments_info"][0], category_id=5))
    elif how == "frames out of order":
        video["annotations"][0], video["annotations"][1] = video["annotations"][1], video["annotations"][0]
    elif how == "size":
        write_panoptic_png(sub / "pan_pred" / name / f"{frame_names(1)[0]}.png", np.zeros((5, 5), np.int64))
        frame0["segments_info"] = []
    elif how == "missing png":
        (sub / "pan_pred" / name / f"{frame_names(1)[0]}.png").unlink()
    elif how == "no pred.json":
        (sub / "pred.json").unlink()
    elif how == "flat pred.json":
        pred = {"annotations": video["annotations"]}
    if how != "no pred.json":
        _save(sub, pred)
    with pytest.raises(error, match=match) as err:
        _score(root, sub)
    assert "\n" not in str(err.value)


def test_scores_what_the_official_scripts_score_and_warns(bad, sets, capsys):
    root, sub, pred = bad
    want = _score(root, sets[1][1])
    # A video listed twice (the last entry counts, as in the scripts' dict), an extra video and pan_pred folder.
    # Names that are no GT frame are not used for pairing (ClipPanoFCN may write full image paths).
    _first_video(pred)["annotations"][0]["file_name"] = "/somewhere/else/image.jpg"
    segments = _first_video(pred)["annotations"][1]["segments_info"]
    segments.append(dict(segments[0]))  # listed twice with one category: scored once
    stale = json.loads(json.dumps(_first_video(pred)))
    for frame in stale["annotations"]:
        frame["segments_info"] = []
    pred["annotations"].insert(0, stale)
    pred["annotations"].append({"video_id": "not_a_gt_video", "annotations": []})
    (sub / "pan_pred" / "not_a_gt_video").mkdir()
    _save(sub, pred)
    got = _score(root, sub)
    assert got.windows == want.windows and got.stq == want.stq
    err = capsys.readouterr().err
    assert "more than once" in err and "not_a_gt_video" in err and "not GT videos" in err
    assert "listed twice in one frame with the same category" in err


def test_a_perfect_submission_written_as_vidseg_writes_it_scores_100(sets, tmp_path):
    from vidseg.tasks.vps_entry import submission_json

    root, _, _ = sets[2]
    gt = load_ground_truth(VIPSEG, root, "val")
    segments = {}
    for video in gt.videos:
        (tmp_path / "pan_pred" / video.name).mkdir(parents=True)
        for f in video.frames:  # what predict_clips writes: pan_pred/<video>/<image id>.png
            shutil.copy(f.png_path, tmp_path / "pan_pred" / video.name / f"{f.image_id}.png")
            segments[f"{video.name}/{f.image_id}"] = [{"id": s["id"], "category_id": s["category_id"]}
                                                      for s in f.segments_info]
    (tmp_path / "pred.json").write_text(json.dumps(submission_json(gt, segments)))
    results = evaluate_submission(gt, tmp_path, workers=0)
    assert results.vpq == {"all": 1.0, "thing": 1.0, "stuff": 1.0}
    assert results.stq == {"STQ": 1.0, "AQ": 1.0, "SQ": 1.0}


def test_validation_metric_follows_the_protocols_crowd_rule():
    from vidseg.metrics.vpq import get_protocol
    from vidseg.metrics.vps_metrics import SegmentationTrackingQuality

    video = _quirk_video(first_frame_has_stuff=False)
    for rule, corrected in ((get_protocol("vipseg").stq_crowd, False), ("iscrowd", True)):
        metric = SegmentationTrackingQuality(CATEGORIES, crowd_rule=rule)
        metric.update(video.gt_ids, video.gt_segments, video.pred_ids, video.pred_segments)
        want = official.stq(as_official([video]), CATEGORIES, corrected=corrected)
        assert metric.compute() == pytest.approx({"stq": want["STQ"], "aq": want["AQ"], "sq": want["SQ"]}, abs=1e-12)
    with pytest.raises(ValueError, match="crowd_rule"):
        SegmentationTrackingQuality(CATEGORIES, crowd_rule="first")


def test_refuses_a_gt_video_whose_frames_differ_in_size(tmp_path):
    video = make_videos(3, lengths=(2,))[0]
    video.gt_ids[1] = video.gt_ids[1][:, :-4]
    video.pred_ids[1] = video.pred_ids[1][:, :-4]
    video.gt_segments[1] = segments_from_ids(video.gt_ids[1], {s["id"]: s["category_id"] for s in
                                                              video.gt_segments[0] + video.gt_segments[1]})
    video.pred_segments[1] = [s for s in video.pred_segments[1] if (video.pred_ids[1] == s["id"]).any()]
    root, sub = _write_set(tmp_path, [video])
    with pytest.raises(DataError, match="one size"):
        _score(root, sub)


@pytest.mark.slow
def test_evaluate_with_a_checkpoint_writes_the_official_vipseg_submission(make_toy_vps, tmp_path):
    """Train 2 steps on toy VIPSeg, then ``evaluate ckpt=...``: the submission is what eval_vpq_vspw.py reads."""
    from vidseg.evaluate import evaluate
    from vidseg.train import train

    root = make_toy_vps("vipseg")
    result = train(compose_config("train", tmp_path / "train", [
        "task=vps", "data=vipseg", "experiment=toy_vipseg", f"data.root={root}", "data.crop_size=[64,128]",
        "data.batch_size=2", "data.train_max_videos=1", "data.val_max_videos=1", "trainer.max_steps=2"]))
    out = tmp_path / "eval"
    results = evaluate(compose_config("evaluate", tmp_path / "run", [
        "task=vps", "data=vipseg", f"data.root={root}", "data.split=val", f"ckpt={result['last_checkpoint']}",
        f"output_dir={out}", "workers=1"]))
    gt = load_ground_truth(VIPSEG, root, "val")
    pred = json.loads((out / "pred.json").read_text())
    assert [a["video_id"] for a in pred["annotations"]] == [v.name for v in gt.videos]
    for entry, video in zip(pred["annotations"], gt.videos, strict=True):
        assert [f["file_name"] for f in entry["annotations"]] == [f.file_name for f in video.frames]
        assert all((out / "pan_pred" / video.name / f.file_name).is_file() for f in video.frames)
    again = evaluate_submission(gt, out, workers=0)
    assert again.windows == results.windows and again.stq == results.stq
    assert (out / "vpq-35.txt").is_file() and (out / "results-val.json").is_file()


def test_refuses_a_split_the_official_vpq_cannot_average(tmp_path):
    # No video of 8 frames: eval_vpq_vspw.py divides by zero in the 8-frame window (checked with the script).
    root, sub = _write_set(tmp_path / "short", make_videos(6, lengths=(5, 6, 6, 4)))
    with pytest.raises(DataError, match=r"35 \(all\).*at least 8 frames \(the longest here has 6\)") as err:
        _score(root, sub)
    assert "\n" not in str(err.value)

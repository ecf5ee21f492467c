"""YouTube-VOS meta.json frame lists are not promised in order: an object's first frame is its earliest frame
by name whatever the order of its list, in the layout reader, the validation dataset and vidseg's scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vidseg.data.youtube_vos import YouTubeVOSEvalDataset
from vidseg.data.youtube_vos_layout import evaluate_folder, list_videos, load_video, read_meta


def _shuffled_copy(src: Path, dst: Path) -> Path:
    """A copy of the toy set whose valid meta.json lists every object's frames in a shuffled order, with the
    earliest frame never first."""
    shutil.copytree(src, dst)
    path = dst / "valid" / "meta.json"
    meta = json.loads(path.read_text())
    rng = np.random.default_rng(0)
    for video in meta["videos"].values():
        for obj in video["objects"].values():
            frames = sorted(obj["frames"])
            if len(frames) > 1:
                shuffled = [frames[i] for i in rng.permutation(len(frames))]
                if shuffled[0] == frames[0]:
                    shuffled = shuffled[1:] + shuffled[:1]
                obj["frames"] = shuffled
    path.write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def shuffled_root(toy_youtube_vos_root, tmp_path_factory) -> Path:
    return _shuffled_copy(toy_youtube_vos_root, tmp_path_factory.mktemp("ytvos_shuffled") / "root")


def test_first_frames_do_not_depend_on_the_meta_json_order(toy_youtube_vos_root, shuffled_root):
    for name in list_videos(toy_youtube_vos_root, "valid"):
        ordered = load_video(toy_youtube_vos_root, "valid", name)
        shuffled = load_video(shuffled_root, "valid", name)
        assert shuffled.first_frames() == ordered.first_frames()
        assert shuffled.given_frames() == ordered.given_frames()
        assert shuffled.objects == ordered.objects
        assert all(frames == sorted(frames) for frames in shuffled.objects.values())
    # the toy set has objects that first appear after frame 0 (the case the order matters most for)
    late = [t for name in list_videos(toy_youtube_vos_root, "valid")
            for t in load_video(toy_youtube_vos_root, "valid", name).first_frames().values() if t > 0]
    assert late
    meta = read_meta(shuffled_root, "valid")
    assert all(obj["frames"] == sorted(obj["frames"]) for video in meta.values() for obj in video.values())


def test_validation_items_do_not_depend_on_the_meta_json_order(toy_youtube_vos_root, shuffled_root):
    ordered, shuffled = YouTubeVOSEvalDataset(toy_youtube_vos_root), YouTubeVOSEvalDataset(shuffled_root)
    assert len(ordered) == len(shuffled)
    for k in range(len(ordered)):
        a, b = ordered[k], shuffled[k]
        assert a["first_frames"] == b["first_frames"] and a["frame_ids"] == b["frame_ids"]
        assert sorted(a["given"]) == sorted(b["given"])
        assert all(np.array_equal(a["given"][t].numpy(), b["given"][t].numpy()) for t in a["given"])


def test_scores_do_not_depend_on_the_meta_json_order(toy_youtube_vos_root, shuffled_root):
    # the full ground truth scored as a submission: the same objects and frames are scored with either meta.json
    scores = []
    for root in (toy_youtube_vos_root, shuffled_root):
        videos = [load_video(root, "valid", name) for name in list_videos(root, "valid")]
        gt = root / "valid_full_annotations"
        results, skipped = evaluate_folder(videos, gt, gt)
        scores.append(json.dumps([results.global_metrics, results.per_object, results.per_frame, skipped],
                                 sort_keys=True, default=str))
    assert scores[0] == scores[1]

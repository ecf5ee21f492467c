"""YouTube-VOS (issue 8, point 8): toy generator in the YouTube-VOS layout, layout reader, vidseg's own scores,
submission zip, training / validation datasets and the mixed DAVIS + YouTube-VOS sampling."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.data.io import DAVIS_PALETTE, read_mask, write_mask
from vidseg.data.toy import generate_toy_youtube_vos
from vidseg.data.toy import main as toy_main
from vidseg.data.youtube_vos_layout import (
    evaluate_folder,
    ground_truth_dir,
    list_videos,
    load_video,
    read_meta,
    scored_objects,
    write_submission_zip,
)
from vidseg.errors import DataError, DatasetLayoutError, MaskFormatError

from ..conftest import TOY_YOUTUBE_VOS_PARAMS


def _videos(root: Path, split: str):
    meta = read_meta(root, split)
    return [load_video(root, split, name, meta) for name in list_videos(root, split)]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------
# Toy generator
# ---------------------------------------------------------------------------------------------------------


def test_toy_set_has_the_youtube_vos_layout_with_late_objects_and_sparse_valid(toy_youtube_vos_root):
    root = toy_youtube_vos_root
    frames = TOY_YOUTUBE_VOS_PARAMS["frames"]
    names = [f"{5 * i:05d}" for i in range(frames)]  # every 5th source frame, as YouTube-VOS
    late = 0
    for split in ("train", "valid"):
        meta = json.loads((root / split / "meta.json").read_text())["videos"]
        assert len(meta) == TOY_YOUTUBE_VOS_PARAMS[f"num_{split}"]
        for video, entry in meta.items():
            jpgs = sorted(p.stem for p in (root / split / "JPEGImages" / video).glob("*.jpg"))
            assert jpgs == names
            anns = sorted(p.stem for p in (root / split / "Annotations" / video).glob("*.png"))
            firsts = {obj: o["frames"][0] for obj, o in entry["objects"].items()}
            if split == "train":
                assert anns == names  # every frame annotated
                continue
            late += sum(f != "00000" for f in firsts.values())
            assert anns == sorted(set(firsts.values()))  # only where objects first appear
            for stem in anns:
                path = root / split / "Annotations" / video / f"{stem}.png"
                with Image.open(path) as img:
                    assert img.mode == "P" and img.getpalette()[:30] == DAVIS_PALETTE[:30]
                ids = set(np.unique(read_mask(path)).tolist()) - {0}
                assert ids == {int(o) for o, f in firsts.items() if f == stem}  # the objects starting there
            for obj, first in firsts.items():
                assert entry["objects"][obj]["frames"] == names[names.index(first):]
                full = [read_mask(root / "valid_full_annotations" / video / f"{n}.png") for n in names]
                present = [n for n, m in zip(names, full, strict=True) if (m == int(obj)).any()]
                assert present[0] == first  # the object is absent from the frames before its first one
    assert late >= 1


def test_toy_youtube_vos_is_deterministic_resumable_and_guarded(tmp_path):
    params = dict(num_train=1, num_valid=2, frames=5, height=40, width=64, max_objects=3, seed=4)
    a = generate_toy_youtube_vos(tmp_path / "a", **params)
    b = generate_toy_youtube_vos(tmp_path / "b", **params)
    assert _files(a) == _files(b)
    before = _files(a)
    victim = next((a / "valid" / "JPEGImages").iterdir()) / "00020.jpg"
    (a / "valid_full_annotations" / victim.parent.name / "00020.png").unlink()
    victim.unlink()
    generate_toy_youtube_vos(a, **params)  # completes the partial video, byte-identical
    assert _files(a) == before
    with pytest.raises(ValueError, match="other parameters"):
        generate_toy_youtube_vos(a, **{**params, "seed": 5})
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing"):
        generate_toy_youtube_vos(tmp_path / "foreign", **params)


def test_toy_cli_format_youtube_vos(tmp_path, capsys):
    root = toy_main(["--format", "youtube_vos", "--root", str(tmp_path / "y"), "--num-train", "1", "--num-val", "1",
                     "--frames", "4", "--height", "40", "--width", "64"])
    assert (root / "train" / "meta.json").is_file() and (root / "valid" / "meta.json").is_file()
    assert "data=youtube_vos" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------------


def test_layout_first_frames_and_given_masks(toy_youtube_vos_root):
    videos = _videos(toy_youtube_vos_root, "valid")
    late = [v for v in videos if max(v.first_frames().values()) > 0]
    assert late
    video = late[0]
    for index, ids in video.given_frames().items():
        mask = video.read_given_mask(index)
        assert set(np.unique(mask).tolist()) - {0} == set(ids)
    assert ground_truth_dir(toy_youtube_vos_root, "valid", videos) == toy_youtube_vos_root / "valid_full_annotations"
    train = _videos(toy_youtube_vos_root, "train")
    assert ground_truth_dir(toy_youtube_vos_root, "train", train) == toy_youtube_vos_root / "train" / "Annotations"


def test_given_mask_keeps_only_the_objects_starting_there(toy_youtube_vos_root, tmp_path):
    root = tmp_path / "yt"
    shutil.copytree(toy_youtube_vos_root, root)
    shutil.rmtree(root / "valid_full_annotations")
    video = next(v for v in _videos(root, "valid") if max(v.first_frames().values()) > 0)
    index, ids = max(video.given_frames().items())
    path = video.annotations[video.frames[index].stem]
    full = read_mask(path)
    full[:3, :3] = 1  # an object that started earlier, drawn again in the later file
    write_mask(path, full)
    assert set(np.unique(video.read_given_mask(index)).tolist()) - {0} == set(ids)
    assert ground_truth_dir(root, "valid", _videos(root, "valid")) is None  # real valid: only the server scores
    write_mask(path, np.zeros_like(full))
    with pytest.raises(DatasetLayoutError, match=path.name):
        video.read_given_mask(index)


def test_meta_errors_name_the_file_and_refuse_escaping_names(tmp_path):
    split = tmp_path / "valid"
    split.mkdir()
    with pytest.raises(FileNotFoundError, match="youtube-vos.org.*toy"):
        read_meta(tmp_path, "valid")
    (split / "meta.json").write_text(json.dumps({"videos": {"../escape": {"objects": {}}}}))
    with pytest.raises(DatasetLayoutError, match="escape"):
        read_meta(tmp_path, "valid")
    (split / "meta.json").write_text(json.dumps({"videos": {"v": {"objects": {"1": {"frames": ["../x"]}}}}}))
    with pytest.raises(DatasetLayoutError, match="frame name"):
        read_meta(tmp_path, "valid")
    (split / "meta.json").write_text(json.dumps({"videos": {"v": {"objects": {"0": {"frames": ["00000"]}}}}}))
    with pytest.raises(DatasetLayoutError, match="1..254"):
        read_meta(tmp_path, "valid")
    (split / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="meta.json is not valid JSON"):
        read_meta(tmp_path, "valid")
    (split / "meta.json").write_text(json.dumps({"videos": {"v": {"objects": {"1": {"frames": ["00000"]}}}}}))
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        list_videos(tmp_path, "valid")


# ---------------------------------------------------------------------------------------------------------
# vidseg's own scores and the submission
# ---------------------------------------------------------------------------------------------------------


def test_scored_frames_are_those_after_each_objects_first_frame():
    assert scored_objects({1: 0, 2: 3, 3: 6, 4: 5}, 8) == {1: 0, 2: 3, 4: 5}


def _gt_as_results(root: Path, videos, out: Path) -> None:
    for video in videos:
        for stem in video.frame_names:
            write_mask(out / video.name / f"{stem}.png", read_mask(root / "valid_full_annotations" / video.name /
                                                                    f"{stem}.png"))


def test_own_scores_count_each_object_only_after_its_first_frame(toy_youtube_vos_root, tmp_path):
    root = toy_youtube_vos_root
    videos = _videos(root, "valid")
    gt_dir = root / "valid_full_annotations"
    results = tmp_path / "results"
    _gt_as_results(root, videos, results)
    perfect, skipped = evaluate_folder(videos, results, gt_dir)
    assert perfect.global_metrics["J&F-Mean"] == 1.0 and not skipped
    assert len(perfect.per_object) == sum(len(v.objects) for v in videos)

    video = next(v for v in videos if max(v.first_frames().values()) > 0)
    obj, first = max(video.first_frames().items(), key=lambda kv: kv[1])
    # Painting the late object in frames before its first one changes nothing: those frames are not its.
    for stem in video.frame_names[:first]:
        path = results / video.name / f"{stem}.png"
        mask = read_mask(path)
        mask[:6, :6] = obj
        write_mask(path, mask)
    score, _ = evaluate_folder(videos, results, gt_dir)
    name = f"{video.name}_{obj}"
    assert score.object_stats[name]["J-Mean"] == 1.0
    frames = score.per_frame[name]["frames"]
    assert [f for f, j in zip(frames, score.per_frame[name]["J"], strict=True) if not np.isnan(j)] == \
        video.frame_names[first + 1:-1]  # its scored frames: after its first one, the last one excluded
    # ... while losing it in a frame after its first one lowers its score.
    path = results / video.name / f"{video.frame_names[first + 1]}.png"
    mask = read_mask(path)
    mask[mask == obj] = 0
    write_mask(path, mask)
    score, _ = evaluate_folder(videos, results, gt_dir)
    assert score.object_stats[name]["J-Mean"] < 1.0 and score.global_metrics["J&F-Mean"] < 1.0
    mask[:2, :2] = 99
    write_mask(path, mask)
    with pytest.raises(MaskFormatError, match="99"):
        evaluate_folder(videos, results, gt_dir)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=path.name):
        evaluate_folder(videos, results, gt_dir)


def test_submission_zip_has_annotations_at_the_top_and_no_hidden_files(tmp_path):
    ann = tmp_path / "submission" / "Annotations"
    write_mask(ann / "vid_b" / "00005.png", np.ones((4, 4), np.uint8))
    write_mask(ann / "vid_a" / "00000.png", np.zeros((4, 4), np.uint8))
    (ann / "vid_a" / ".done").write_text("fingerprint")
    path = write_submission_zip(ann, tmp_path / "submission.zip")
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["Annotations/vid_a/00000.png", "Annotations/vid_b/00005.png"]
        assert archive.read("Annotations/vid_b/00005.png") == (ann / "vid_b" / "00005.png").read_bytes()
    first = path.read_bytes()
    write_submission_zip(ann, path)
    assert path.read_bytes() == first  # reproducible
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # written like a plain file, not a private temporary


# ---------------------------------------------------------------------------------------------------------
# Datasets and datamodules
# ---------------------------------------------------------------------------------------------------------


def test_train_dataset_items_are_feelvos_triplets(toy_youtube_vos_root):
    from vidseg.data.youtube_vos import YouTubeVOSTrainDataset

    dataset = YouTubeVOSTrainDataset(toy_youtube_vos_root, crop_size=(64, 112), samples_per_epoch=4, seed=1)
    item = dataset[0]
    assert item["images"].shape == (3, 3, 64, 112) and item["masks"].shape == (3, 64, 112)
    assert item["sequence"].startswith("ytoy-s0-train-") and 1 <= item["num_objects"] <= 3
    assert int(item["masks"][0][item["masks"][0] != 255].max()) == item["num_objects"]


def test_eval_dataset_gives_late_objects_at_their_frame(toy_youtube_vos_root, tmp_path):
    from vidseg.data.youtube_vos import YouTubeVOSEvalDataset

    dataset = YouTubeVOSEvalDataset(toy_youtube_vos_root, split="valid")
    items = [dataset[i] for i in range(len(dataset))]
    late = next(it for it in items if max(it["first_frames"].values()) > 0)
    for obj, first in late["first_frames"].items():
        assert (late["given"][first] == obj).any()
        assert not (late["masks"][:first] == obj).any() and (late["masks"][first] == obj).any()
    assert late["images"].shape[1] == 3 and late["masks"].shape[0] == late["images"].shape[0]
    copy = tmp_path / "yt"
    shutil.copytree(toy_youtube_vos_root, copy)
    shutil.rmtree(copy / "valid_full_annotations")
    with pytest.raises(DataError, match="davis_youtube_vos"):
        YouTubeVOSEvalDataset(copy, split="valid")


class _Source:
    """A training dataset stand-in that records the item keys it is asked for."""

    def __init__(self, name):
        self.name = name

    def reseed(self, seed):  # the mix forwards worker reseeds; item draws must not depend on them
        self.reseeded = seed

    def __getitem__(self, key):
        return {"key": key, "source": self.name}


def test_mixed_dataset_follows_the_probabilities_and_depends_on_epoch_and_index_only():
    from vidseg.data.youtube_vos import MixedVOSTrainDataset

    def run(probabilities, epoch=0, reseed=None, seed=0):
        mixed = MixedVOSTrainDataset({"davis": _Source("davis"), "youtube_vos": _Source("youtube_vos")},
                                     probabilities, samples_per_epoch=400, seed=seed)
        if reseed is not None:
            mixed.reseed(reseed)
        return [mixed[(epoch, i)] for i in range(len(mixed))]

    counts = Counter(item["dataset"] for item in run({"davis": 1, "youtube_vos": 3}))
    assert 70 <= counts["davis"] <= 130 and counts["davis"] + counts["youtube_vos"] == 400  # 100 expected
    assert {item["dataset"] for item in run({"davis": 0, "youtube_vos": 1})} == {"youtube_vos"}
    even = run({"davis": 1, "youtube_vos": 1})
    assert all(item["dataset"] == item["source"] for item in even)
    assert [item["key"] for item in even] == [(0, i) for i in range(400)]  # the item key reaches the dataset
    assert run({"davis": 1, "youtube_vos": 1}, reseed=4) == even  # a worker's reseed changes nothing
    assert run({"davis": 1, "youtube_vos": 1}, epoch=1) != [dict(e, key=(1, i)) for i, e in enumerate(even)]
    assert run({"davis": 1, "youtube_vos": 1}, seed=1) != even
    with pytest.raises(ValueError, match="probabilities"):
        MixedVOSTrainDataset({"davis": _Source("d")}, {"youtube_vos": 1}, samples_per_epoch=1)
    with pytest.raises(ValueError, match=">= 0"):
        MixedVOSTrainDataset({"davis": _Source("d")}, {"davis": 0}, samples_per_epoch=1)


@pytest.mark.parametrize("data", ["youtube_vos", "davis_youtube_vos"])
def test_datamodules_from_the_configs(data, toy_youtube_vos_root, toy_davis_root, tmp_path):
    from hydra.utils import instantiate

    from tests.helpers.configs import compose_config

    roots = ([f"data.root={toy_youtube_vos_root}"] if data == "youtube_vos" else
             [f"data.root={toy_davis_root}", f"data.youtube_vos_root={toy_youtube_vos_root}"])
    cfg = compose_config("train", tmp_path, ["task=vos", f"data={data}", *roots, "data.num_workers=0",
                                             "data.crop_size=[64,112]", "data.batch_size=2",
                                             "data.samples_per_epoch=40"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 20 and batches[0]["images"].shape == (2, 3, 3, 64, 112)
    names = {name for batch in batches for name in batch["sequence"]}
    if data == "davis_youtube_vos":  # both datasets are sampled (p = 0.5 each: all 40 from one has p ~ 1e-12)
        assert any(n.startswith("ytoy-") for n in names) and any(n.startswith("toy-") for n in names)
        assert datamodule.val_dataset.root == toy_davis_root  # validation on DAVIS
    else:
        assert all(n.startswith("ytoy-s0-train-") for n in names)
        val = next(iter(datamodule.val_dataloader()))
        assert "given" in val and val["name"].startswith("ytoy-s0-valid-")

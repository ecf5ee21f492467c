"""Cityscapes-VPS datasets and datamodule on the toy set: samples, augmentation, reference frames,
evaluation order, seeding, config, and every layout/format error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tests.helpers.toy_vps import copy_toy_vps
from vidseg.constants import IGNORE_LABEL
from vidseg.data.cityscapes_vps import (
    CityscapesVPSDataModule,
    CityscapesVPSEvalDataset,
    CityscapesVPSTrainDataset,
    collate_train,
)
from vidseg.data.io import write_image
from vidseg.data.sampling import EpochSampler
from vidseg.data.vps_layout import CITYSCAPES_VPS
from vidseg.errors import DataError, DatasetLayoutError, MaskFormatError
from vidseg.utils.seeding import worker_init_fn

CROP = (48, 96)



def _train(root: Path, **kw) -> CityscapesVPSTrainDataset:
    return CityscapesVPSTrainDataset(root, **{"crop_size": CROP, "seed": 0, **kw})


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------------ samples


def test_train_sample_shapes_dtypes_and_consistency(toy_cityscapes_vps_root: Path) -> None:
    ds = _train(toy_cityscapes_vps_root, min_instance_area=4)
    assert len(ds) == 12
    for index in range(6):
        item = ds[index]
        assert item["images"].shape == (2, 3, *CROP) and item["images"].dtype == torch.uint8
        for key in ("semantic", "panoptic"):
            assert item[key].shape == (2, *CROP) and item[key].dtype == torch.int64
        assert item["image_ids"].shape == (2,) and len(item["file_names"]) == 2
        assert all(name[:4] == item["video"] for name in item["file_names"])
        for k, inst in enumerate(item["instances"]):
            n = len(inst["labels"])
            assert inst["boxes"].shape == (n, 4) and inst["boxes"].dtype == torch.float32
            assert inst["masks"].shape == (n, *CROP) and inst["masks"].dtype == torch.uint8
            assert inst["labels"].dtype == inst["track_ids"].dtype == torch.int64
            assert ((inst["labels"] >= 11) & (inst["labels"] <= 18)).all()
            assert (inst["track_ids"] // 1000 == inst["labels"]).all()
            pan, sem = item["panoptic"][k], item["semantic"][k]
            for box, mask, track in zip(inst["boxes"], inst["masks"].bool(), inst["track_ids"], strict=True):
                assert mask.sum() >= 4
                assert torch.equal(mask, pan == track)  # panoptic target = the instance masks
                ys, xs = torch.nonzero(mask, as_tuple=True)
                assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            thing_px = pan >= 1000
            assert torch.equal(torch.where(thing_px, pan // 1000, pan), sem)  # crowd/dropped: bare class
        assert set(torch.unique(item["semantic"]).tolist()) <= set(range(19)) | {IGNORE_LABEL}


def test_tracks_match_between_target_and_reference(toy_cityscapes_vps_root: Path) -> None:
    ds = _train(toy_cityscapes_vps_root, scale=(1.0, 1.0), crop_size=(64, 128))
    shared = 0
    for index in range(len(ds)):
        item = ds[index]
        target, ref = item["instances"]
        shared += len(set(target["track_ids"].tolist()) & set(ref["track_ids"].tolist()))
    assert shared >= len(ds)  # the reference shows the same tracked instances


def test_reference_is_a_neighbouring_annotated_frame(toy_cityscapes_vps_root: Path) -> None:
    ds = _train(toy_cityscapes_vps_root)
    offsets: dict[int, set[int]] = {}
    for epoch in range(8):  # the reference draw depends on (epoch, index)
        for index in range(len(ds)):
            item = ds[(epoch, index)]
            frames = [CITYSCAPES_VPS.frame_index_of(n) for n in item["file_names"]]
            assert item["file_names"][0][:4] == item["file_names"][1][:4]  # never another video
            offsets.setdefault(frames[0], set()).add(frames[1] - frames[0])
    assert offsets[5] == {5} and offsets[30] == {-5}  # first / last fall back to the one that exists
    assert all(offsets[f] == {-5, 5} for f in (10, 15, 20, 25))


def _static_copy(root: Path, dest: Path) -> Path:
    """A copy whose training images are all the same pixel pattern (unique colour per pixel)."""
    root = copy_toy_vps(root, dest)
    h, w = 64, 128
    yy, xx = np.mgrid[0:h, 0:w]
    pattern = np.stack([xx * 2, yy * 4, (xx + yy) % 256], axis=-1).astype(np.uint8)
    for path in (root / "train" / "img").iterdir():
        write_image(path, pattern)
    return root


def test_augmentation_is_identical_for_target_and_reference(tmp_path: Path, toy_cityscapes_vps_root: Path) -> None:
    ds = _train(_static_copy(toy_cityscapes_vps_root, tmp_path / "static"), scale=(0.8, 1.5))
    signatures = set()
    flips = set()
    for index in range(len(ds)):
        images = ds[index]["images"]
        assert torch.equal(images[0], images[1])  # same scale, crop and flip on both frames
        signatures.add(images.numpy().tobytes())
        row = images[0, 0, images.shape[2] // 2].int()
        valid = row[(row != 124)]
        flips.add(bool((valid[1:] - valid[:-1]).float().mean() < 0))  # red grows with x unless flipped
    assert len(signatures) > 6 and flips == {True, False}


def test_padding_uses_mean_colour_and_void(toy_cityscapes_vps_root: Path) -> None:
    ds = _train(toy_cityscapes_vps_root, crop_size=(96, 192), scale=(0.8, 0.8))  # scaled 51x102 < crop
    item = ds[0]
    pad = item["semantic"][0] == IGNORE_LABEL
    corner = item["images"][0, :, pad].T
    assert pad.float().mean() > 0.4
    assert (corner == torch.tensor([124, 116, 104], dtype=torch.uint8)).all(dim=1).float().mean() > 0.5
    assert (item["panoptic"][0][pad] == IGNORE_LABEL).all()


# --------------------------------------------------------------------------------------------------- seeding


def test_draws_depend_on_seed_epoch_and_index_only(toy_cityscapes_vps_root: Path) -> None:
    ds = _train(toy_cityscapes_vps_root)
    a = ds[(0, 0)]["images"]
    ds.reseed(8)  # a worker's reseed does not change what an item draws
    assert torch.equal(ds[(0, 0)]["images"], a)
    assert not torch.equal(ds[(1, 0)]["images"], a)  # another epoch, another draw
    other_seed = _train(toy_cityscapes_vps_root)
    other_seed.seed = ds.seed + 1
    assert not torch.equal(other_seed[(0, 0)]["images"], a)

    def run(workers: int) -> list[bytes]:
        loader = DataLoader(ds, batch_size=1, num_workers=workers, sampler=EpochSampler(len(ds), seed=0),
                            worker_init_fn=worker_init_fn, collate_fn=collate_train)
        return [b["images"].numpy().tobytes() for b in loader]

    assert run(2) == run(0)  # the same samples whatever the number of workers


# ---------------------------------------------------------------------------------------------- evaluation


def test_eval_frames_in_order_with_previous_frame_reference(toy_cityscapes_vps_root: Path) -> None:
    ds = CityscapesVPSEvalDataset(toy_cityscapes_vps_root)
    assert len(ds) == 60
    gt = json.loads((toy_cityscapes_vps_root / "panoptic_gt_val_city_vps.json").read_text())
    gt_ids = {im["id"] for im in gt["images"]}
    prev = None
    flagged = []
    for index in range(len(ds)):
        item = ds[index]
        t = item["frame_index"]
        assert item["num_frames"] == 30 and item["is_first"] == (t == 0)
        assert item["image_id"] == int(item["video"]) * 10000 + t + 1
        assert item["images"].shape == (2, 3, 64, 128) and item["images"].dtype == torch.uint8
        assert item["panoptic"].shape == (64, 128) and item["panoptic"].dtype == torch.int64
        if t == 0:
            assert torch.equal(item["images"][1], item["images"][0])  # first frame: its own reference
        else:
            assert torch.equal(item["images"][1], prev["images"][0])  # reference = previous raw frame
        assert item["annotated"] == ((t + 1) % 5 == 0)
        if item["annotated"]:
            flagged.append(item["panoptic_image_id"])
            assert (item["panoptic"] != IGNORE_LABEL).any()
        else:
            assert (item["panoptic"] == IGNORE_LABEL).all()
        prev = item
    assert set(flagged) == gt_ids and len(flagged) == 12


def test_eval_ground_truth_matches_panoptic_inst(toy_cityscapes_vps_root: Path) -> None:
    root = toy_cityscapes_vps_root
    ds = CityscapesVPSEvalDataset(root)
    seen: dict[str, dict[int, int]] = {}
    for index in range(len(ds)):
        item = ds[index]
        if not item["annotated"]:
            continue
        inst = np.array(Image.open(root / "val" / "panoptic_inst" /
                                   CITYSCAPES_VPS.gt_png_name(item["file_name"]))).astype(np.int64)
        pan = item["panoptic"].numpy()
        stuff_or_void = inst < 1000
        np.testing.assert_array_equal(pan[stuff_or_void], inst[stuff_or_void])  # stuff, crowd, void kept
        mapping = seen.setdefault(item["video"], {})
        for value in np.unique(inst[~stuff_or_void]).tolist():
            ours = np.unique(pan[inst == value])
            assert len(ours) == 1 and ours[0] // 1000 == value // 1000
            assert mapping.setdefault(value, int(ours[0])) == ours[0]  # stable within the video
        assert (item["semantic"].numpy() == np.where(inst >= 1000, inst // 1000, inst)).all()


# ------------------------------------------------------------------------------------------- datamodule


def test_datamodule_loaders_and_collate(toy_cityscapes_vps_root: Path) -> None:
    dm = CityscapesVPSDataModule(toy_cityscapes_vps_root, crop_size=list(CROP), batch_size=3, num_workers=0,
                                 val_max_videos=1, repeat=2)
    dm.setup("fit")
    assert len(dm.train_dataset) == 24 and len(dm.val_dataset) == 30
    loader = dm.train_dataloader()
    assert loader.drop_last and loader.worker_init_fn is worker_init_fn
    batch = next(iter(loader))
    assert batch["images"].shape == (3, 2, 3, *CROP) and batch["panoptic"].shape == (3, 2, *CROP)
    assert batch["image_ids"].shape == (3, 2) and len(batch["instances"]) == 3
    assert all(len(pair) == 2 and "track_ids" in pair[0] for pair in batch["instances"])
    item = next(iter(dm.val_dataloader()))
    assert item["is_first"] and item["images"].shape == (2, 3, 64, 128)
    assert CityscapesVPSDataModule.layout is CITYSCAPES_VPS  # read from the class by the evaluate entry point


def test_hydra_config_instantiates(toy_cityscapes_vps_root: Path) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import vidseg.conf

    cfg = OmegaConf.load(Path(vidseg.conf.__file__).parent / "data" / "cityscapes_vps.yaml")
    assert cfg.root == "data/cityscapes_vps" and cfg.split == "val" and list(cfg.crop_size) == [800, 1600]
    cfg = OmegaConf.merge(cfg, {"seed": 0, "root": str(toy_cityscapes_vps_root), "crop_size": [32, 64]})
    dm = instantiate(cfg)
    assert isinstance(dm, CityscapesVPSDataModule) and dm.crop_size == (32, 64)
    dm.setup("validate")
    assert len(dm.val_dataset) == 60


# ------------------------------------------------------------------------------------------------- errors


def test_missing_root_says_where_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    dm = CityscapesVPSDataModule(None)
    with pytest.raises(FileNotFoundError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "data/cityscapes_vps" in msg and "leftImg8bit_sequence" in msg
    assert "python -m vidseg.data.toy_vps --root data/toy_cityscapes_vps --format cityscapes_vps --seed 0" in msg


@pytest.fixture
def damaged(tmp_path: Path, toy_cityscapes_vps_root: Path) -> Path:
    return copy_toy_vps(toy_cityscapes_vps_root, tmp_path / "damaged")


def test_clip_with_fewer_than_30_frames(damaged: Path) -> None:
    _edit_json(damaged / "im_all_info_val_city_vps.json", lambda d: d["images"].pop(7))
    with pytest.raises(DatasetLayoutError, match=r"im_all_info_val_city_vps.json: clip 0003 has 29 frames"):
        CityscapesVPSEvalDataset(damaged)


def test_missing_dense_frame_file(damaged: Path) -> None:
    victim = sorted((damaged / "val" / "img_all").iterdir())[3]
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match=f"frame 4 of clip 0003 not found: .*{victim.name}"):
        CityscapesVPSEvalDataset(damaged)


def test_video_without_reference_frame(damaged: Path) -> None:
    def keep_one_of_video_1(d):
        d["images"] = [im for im in d["images"]
                       if not im["file_name"].startswith("0001_") or "_0005_" in im["file_name"]]
    _edit_json(damaged / "instances_train_city_vps_rle.json", keep_one_of_video_1)
    with pytest.raises(DatasetLayoutError, match="video 0001 has a single annotated frame .*no reference frame"):
        _train(damaged)


def _first_thing(d: dict) -> dict:
    return next(a for a in d["annotations"] if not a.get("iscrowd", 0))


@pytest.mark.parametrize("edit, field", [
    (lambda d: _first_thing(d).update(category_id="car"), r"annotations\[\d+\]\.category_id: expected"),
    (lambda d: _first_thing(d).pop("inst_id"), r"annotations\[\d+\]\.inst_id: expected"),
    (lambda d: _first_thing(d).update(inst_id=-1), r"annotations\[\d+\]\.inst_id: expected"),
    (lambda d: d["annotations"][0].pop("segmentation"), r"annotations\[0\]\.segmentation: expected"),
    (lambda d: d["annotations"][0].update(iscrowd=2), r"annotations\[0\]\.iscrowd: expected 0 or 1"),
    (lambda d: d["images"][0].pop("height"), r"images\[0\]\.height: expected"),
    (lambda d: d["images"][0].update(width=float("nan")), r"images\[0\]\.width: expected"),
    (lambda d: d["images"][0].pop("file_name"), r"images\[0\]\.file_name: expected"),
])
def test_training_json_fields_are_checked_when_indexed(damaged: Path, edit, field) -> None:
    # Checked when the dataset is built, not when a worker reads the frame: a KeyError in a data-loader worker
    # mid-epoch would be a traceback after hours of training.
    _edit_json(damaged / "instances_train_city_vps_rle.json", edit)
    with pytest.raises(DatasetLayoutError, match=rf"instances_train_city_vps_rle.json: {field}"):
        _train(damaged)


def test_missing_training_label_map(damaged: Path) -> None:
    victim = sorted((damaged / "train" / "labelmap").iterdir())[0]
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match=f"label map of .* not found: .*{victim.name}"):
        _train(damaged)


def _first_item_index(ds: CityscapesVPSTrainDataset, label_name: str) -> int:
    return next(i for i, f in enumerate(ds.frames) if CITYSCAPES_VPS.gt_png_name(f.file_name) == label_name)


def test_truncated_and_rgb_label_maps(damaged: Path) -> None:
    names = sorted(p.name for p in (damaged / "train" / "labelmap").iterdir())
    truncated, rgb = damaged / "train" / "labelmap" / names[0], damaged / "train" / "labelmap" / names[6]
    truncated.write_bytes(truncated.read_bytes()[:60])
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(rgb)
    ds = _train(damaged)
    with pytest.raises(MaskFormatError, match=f"{names[0]}: cannot decode PNG"):
        ds[_first_item_index(ds, names[0])]
    with pytest.raises(MaskFormatError, match=f"{names[6]}: label map PNG is mode 'RGB'.*class ids"):
        ds[_first_item_index(ds, names[6])]


def test_label_map_with_labelids_and_size_mismatch(damaged: Path) -> None:
    names = sorted(p.name for p in (damaged / "train" / "labelmap").iterdir())
    Image.fromarray(np.full((64, 128), 26, np.uint8)).save(damaged / "train" / "labelmap" / names[0])
    Image.fromarray(np.zeros((32, 128), np.uint8)).save(damaged / "train" / "labelmap" / names[6])
    ds = _train(damaged)
    with pytest.raises(MaskFormatError, match="value 26 is not a class id"):
        ds[_first_item_index(ds, names[0])]
    with pytest.raises(DatasetLayoutError, match=f"size mismatch: .*{names[6]} is 32x128"):
        ds[_first_item_index(ds, names[6])]


def test_rle_of_another_size(damaged: Path) -> None:
    def shrink(d):
        for ann in d["annotations"]:
            if not ann["iscrowd"]:
                ann["segmentation"]["size"] = [32, 64]
    _edit_json(damaged / "instances_train_city_vps_rle.json", shrink)
    with pytest.raises(MaskFormatError, match="RLE counts sum to"):
        _train(damaged)[0]


def test_bad_ground_truth_pngs(damaged: Path) -> None:
    gt_dir = damaged / "val" / "panoptic_video"
    names = sorted(p.name for p in gt_dir.iterdir())
    (gt_dir / names[0]).write_bytes((gt_dir / names[0]).read_bytes()[:80])  # truncated
    Image.fromarray(np.zeros((64, 128), np.uint8)).save(gt_dir / names[1])  # grayscale, not COCO RGB
    from vidseg.data.panoptic import write_panoptic_png
    write_panoptic_png(gt_dir / names[2], np.full((64, 128), 12345))  # id absent from the JSON
    ds = CityscapesVPSEvalDataset(damaged)
    by_name = {CITYSCAPES_VPS.gt_png_name(rec["file_name"]): i for i, (rec, _, _) in enumerate(ds.items)}
    with pytest.raises(MaskFormatError, match=f"{names[0]}: cannot decode PNG"):
        ds[by_name[names[0]]]
    with pytest.raises(MaskFormatError, match=f"{names[1]}: PNG mode is 'L'"):
        ds[by_name[names[1]]]
    with pytest.raises(DatasetLayoutError, match=f"{names[2]}: segment id 12345 is in the PNG but not in the JSON"):
        ds[by_name[names[2]]]


def test_missing_ground_truth_png_and_json(damaged: Path) -> None:
    victim = sorted((damaged / "val" / "panoptic_video").iterdir())[0]
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match=f"ground-truth PNG of .* not found: .*{victim.name}"):
        CityscapesVPSEvalDataset(damaged)
    (damaged / "panoptic_gt_val_city_vps.json").write_text("{broken")
    with pytest.raises(Exception, match="panoptic_gt_val_city_vps.json: .*not valid JSON"):
        CityscapesVPSEvalDataset(damaged)


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["images"][1].update(id=d["images"][0]["id"]), r"images\[1\]\.id: image id .* is also the id"),
    (lambda d: d["annotations"][0]["segments_info"][0].update(area="abc"),
     r"annotations\[0\]\.segments_info\[0\]\.area: expected an integer >= 0, found 'abc'"),
    (lambda d: d["annotations"][0]["segments_info"][0].update(category_id="3"),
     r"segments_info\[0\]\.category_id: expected an integer, found '3'"),
    (lambda d: d["annotations"][0]["segments_info"][0].pop("iscrowd"), r"segments_info\[0\]\.iscrowd"),
    (lambda d: d["annotations"][1].pop("segments_info"), r"annotations\[1\]\.segments_info"),
    (lambda d: d["images"][0].pop("file_name"), r"images\[0\]\.file_name"),
    (lambda d: d["images"][0].pop("height"), "has no 'height'"),
    (lambda d: [a["segments_info"].clear() for a in d["annotations"]], "no annotation lists any segment"),
])
def test_validation_refuses_the_ground_truth_evaluate_refuses(damaged: Path, edit, field) -> None:
    # Validation during training reads the GT JSON through the scorer's checks (one DataError naming the field).
    path = damaged / "panoptic_gt_val_city_vps.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=field):
        CityscapesVPSEvalDataset(damaged)

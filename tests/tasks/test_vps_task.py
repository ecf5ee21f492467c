"""VPSTask: the schedule, ground-truth conversion, whole-clip sharding, and training every variant through the
real configs (2 steps, validation VPQ, checkpoints, resume)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from tests.helpers.configs import compose_config
from tests.helpers.vps_training import TINY_VPS, train_tiny_vps
from vidseg.data.vps_common import VideoShardSampler, video_index_ranges
from vidseg.inference.checkpoint import TASK_KEY, read_checkpoint
from vidseg.models.vpsnet import VARIANTS
from vidseg.tasks.vps import ground_truth_segments, lr_factor
from vidseg.train import build_task, train


def test_lr_factor_warmup_then_step_and_poly():
    assert lr_factor(0, 1000, warmup_iters=500, warmup_ratio=1 / 3) == pytest.approx(1 / 3)
    assert lr_factor(250, 1000, warmup_iters=500, warmup_ratio=1 / 3) == pytest.approx(2 / 3)
    assert lr_factor(500, 1200, warmup_iters=500) == 1.0
    assert lr_factor(800, 1200, warmup_iters=500) == pytest.approx(0.1)   # epoch 8 of 12
    assert lr_factor(1100, 1200, warmup_iters=500) == pytest.approx(0.01)  # epoch 11 of 12
    assert lr_factor(600, 1000, warmup_iters=0, milestones=[300, 900]) == pytest.approx(0.1)  # absolute steps
    assert lr_factor(500, 1000, warmup_iters=0, policy="poly", power=1.0) == pytest.approx(0.5)
    assert lr_factor(10, 1000, warmup_iters=0, policy="constant") == 1.0
    with pytest.raises(ValueError, match="policy"):
        lr_factor(0, 10, policy="cosine")


def test_ground_truth_segments_numbers_like_predictions():
    panoptic = np.array([[0, 0, 13000, 13001], [255, 11, 13000, 2]])  # road, crowd person, 2 cars, building
    ids, segments = ground_truth_segments(torch.from_numpy(panoptic), thing_ids=range(11, 19))
    assert ids.tolist() == [[1, 1, 1013, 2013], [0, 12, 1013, 3]]
    by_id = {s["id"]: s for s in segments}
    assert by_id[1013] == {"id": 1013, "category_id": 13, "iscrowd": 0, "area": 2}
    assert by_id[12]["iscrowd"] == 1 and by_id[1]["iscrowd"] == 0 and 0 not in by_id


def test_video_shard_sampler_keeps_clips_whole():
    videos = ["a"] * 3 + ["b"] * 2 + ["c"] * 4
    assert [list(r) for r in video_index_ranges(videos)] == [[0, 1, 2], [3, 4], [5, 6, 7, 8]]
    shards = [list(VideoShardSampler(videos, num_replicas=2, rank=r)) for r in range(2)]
    assert shards == [[0, 1, 2, 5, 6, 7, 8], [3, 4]]
    assert sorted(shards[0] + shards[1]) == list(range(len(videos)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_train_two_steps_every_variant(variant, toy_cityscapes_vps_root, tmp_path):
    result = train_tiny_vps(toy_cityscapes_vps_root, tmp_path / "run", variant=variant)
    assert {"val/VPQ", "val/STQ", "val/VPQ_0", "val/VPQ_15", "train/loss", "train/loss_semantic",
            "train/loss_panoptic"} <= set(result["metrics"])
    assert ("train/loss_track" in result["metrics"]) == (variant in ("track", "fusetrack"))
    assert all(np.isfinite(v) for v in result["metrics"].values())
    ckpt = read_checkpoint(result["last_checkpoint"], task="vps")
    assert ckpt.hyper_parameters["net"]["variant"] == variant
    assert ckpt.hyper_parameters["net"]["num_stuff"] == 11 and ckpt.hyper_parameters["net"]["num_things"] == 8
    assert [c["name"] for c in ckpt.hyper_parameters["categories"]][:2] == ["road", "sidewalk"]
    raw = torch.load(result["last_checkpoint"], map_location="cpu", weights_only=True)
    assert raw[TASK_KEY] == "vps" and raw["global_step"] == 2
    if variant == "fusetrack":  # the CSV log has each loss and the validation metrics
        rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
        keys = set(rows[0])
        assert {"train/loss_mask", "train/loss_track", "val/VPQ", "lr-AdamW"} <= keys


def test_resume_from_last_checkpoint(toy_cityscapes_vps_root, tmp_path):
    first = train_tiny_vps(toy_cityscapes_vps_root, tmp_path / "a", variant="image")
    resumed = train_tiny_vps(toy_cityscapes_vps_root, tmp_path / "b", variant="image",
                             extra=["trainer.max_steps=3", f"ckpt_path={first['last_checkpoint']}"])
    raw = torch.load(resumed["last_checkpoint"], map_location="cpu", weights_only=True)
    assert raw["global_step"] == 3  # one more step, not three


def test_class_counts_are_checked_against_the_data(toy_viper_root, tmp_path):
    cfg = compose_config("train", tmp_path, [*TINY_VPS, "data=viper", f"data.root={toy_viper_root}",
                                             "model.net.num_stuff=11", "model.net.num_things=8"])
    with pytest.raises(ValueError, match=r"model.net.num_stuff=11 but the data \(viper\) has 13"):
        train(cfg)


def test_variant_and_paper_recipe_in_the_default_config(tmp_path):
    cfg = compose_config("train", tmp_path, ["task=vps", "model.variant=image"])
    assert cfg.model.net.backbone.name == "resnet50" and cfg.model.net.backbone.output_stride == 32
    assert cfg.model.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.model.optimizer.lr, cfg.model.optimizer.momentum, cfg.model.optimizer.weight_decay) == (
        0.005, 0.9, 1e-4)
    assert cfg.model.grad_clip_norm == 35 and cfg.model.scheduler.warmup_iters == 500
    task = build_task(cfg.model)
    assert task.hparams.net["variant"] == "image"
    with pytest.raises(ValueError, match="variant"):
        build_task(compose_config("train", tmp_path, ["task=vps", "model.variant=both"]).model)


def test_validation_loader_gives_each_rank_whole_clips(toy_cityscapes_vps_root, monkeypatch):
    from vidseg.data.cityscapes_vps import CityscapesVPSDataModule

    datamodule = CityscapesVPSDataModule(toy_cityscapes_vps_root, crop_size=(64, 128))
    datamodule.setup("validate")
    assert datamodule.val_dataloader().sampler.__class__.__name__ == "SequentialSampler"  # one process: in order
    loaders = []
    for rank in range(2):  # what each DDP process's datamodule builds
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        loaders.append(datamodule.val_dataloader())
        assert isinstance(loaders[-1].sampler, VideoShardSampler)
    monkeypatch.undo()
    seen = [[(item["video"], item["frame_index"]) for item in loader] for loader in loaders]
    assert [len(s) for s in seen] == [30, 30]
    assert {v for v, _ in seen[0]}.isdisjoint({v for v, _ in seen[1]})
    assert [t for _, t in seen[1]] == list(range(30))  # a whole clip, in order


def test_lr_factor_milestones_at_their_exact_step():
    # a milestone applies from its own step on (step >= milestone), fractions of the total and step numbers alike
    assert lr_factor(299, 1000, warmup_iters=0, milestones=[300]) == 1.0
    assert lr_factor(300, 1000, warmup_iters=0, milestones=[300]) == pytest.approx(0.1)
    assert lr_factor(499, 1000, warmup_iters=0, milestones=[0.5]) == 1.0
    assert lr_factor(500, 1000, warmup_iters=0, milestones=[0.5]) == pytest.approx(0.1)
    # a milestone of 1 is step 1 (values < 1 are fractions), not the end of training
    assert lr_factor(0, 1000, warmup_iters=0, milestones=[1]) == 1.0
    assert lr_factor(1, 1000, warmup_iters=0, milestones=[1]) == pytest.approx(0.1)
    # the warm-up ends exactly at warmup_iters
    assert lr_factor(99, 1000, warmup_iters=100, warmup_ratio=0.0, policy="constant") == pytest.approx(0.99)
    assert lr_factor(100, 1000, warmup_iters=100, warmup_ratio=0.0, policy="constant") == 1.0
    assert lr_factor(1000, 1000, warmup_iters=0, policy="poly") == 0.0


def test_ground_truth_segments_first_instance_of_a_class():
    # 1000 = class 1, instance 0 (a thing); 999 would be a class id (no instance)
    ids, segments = ground_truth_segments(np.array([[1000, 1001, 1, 255]]), thing_ids=[1])
    assert ids.tolist() == [[1001, 2001, 2, 0]]
    assert segments == [{"id": 2, "category_id": 1, "iscrowd": 1, "area": 1},
                        {"id": 1001, "category_id": 1, "iscrowd": 0, "area": 1},
                        {"id": 2001, "category_id": 1, "iscrowd": 0, "area": 1}]


@pytest.mark.parametrize("grad_clip_norm, expected", [(35.0, (35.0, "norm")), (None, (None, None))])
def test_grad_clip_norm_is_a_global_norm(grad_clip_norm, expected, monkeypatch):
    from vidseg.tasks.vps import VPSTask

    task = VPSTask(net={"variant": "image"}, optimizer={"_target_": "torch.optim.SGD", "lr": 0.01},
                   grad_clip_norm=grad_clip_norm)
    seen = []
    monkeypatch.setattr(task, "clip_gradients", lambda optimizer, gradient_clip_val=None,
                        gradient_clip_algorithm=None: seen.append((gradient_clip_val, gradient_clip_algorithm)))
    task.configure_gradient_clipping(None)
    assert seen == [expected]

"""VPSTask validation: every clip streams through its own session, each finished clip is scored once with
its annotated frames only, frame t (not its reference) is what the network sees, and ground truth is
numbered like the predictions (with a stand-in network of known output, tests/helpers/stub_models.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers.stub_models import STUB_BOX, StubVPSNet, stub_thing_id
from vidseg.tasks.vps import VPSTask

H, W = 8, 12
CLIPS = [("v1", [True, False, True]), ("v2", [True, True])]  # (video, annotated per frame)


def make_task() -> VPSTask:
    task = VPSTask(net={"variant": "image"}, optimizer={"_target_": "torch.optim.SGD", "lr": 0.01})
    task.hparams.net = {**task.hparams.net, "num_stuff": StubVPSNet.num_stuff, "num_things": StubVPSNet.num_things}
    task.model = StubVPSNet()
    task.setup("validate")
    return task


def ground_truth() -> torch.Tensor:
    panoptic = torch.zeros(H, W, dtype=torch.int64)  # stuff class 0
    panoptic[0:2, 0:4] = 3        # a bare thing class: crowd of class 3
    panoptic[5:8, 6:12] = 4001    # instance 1 of class 4
    return panoptic


def batches():
    for clip, (video, annotated) in enumerate(CLIPS):
        for t, is_annotated in enumerate(annotated):
            frame = torch.full((3, H, W), 10 * clip + t, dtype=torch.uint8)
            reference = torch.full((3, H, W), 200, dtype=torch.uint8)  # frame t - 1 in the real data
            yield {"images": torch.stack([frame, reference]), "video": video, "frame_index": t, "is_first": t == 0,
                   "annotated": is_annotated,
                   "panoptic": ground_truth() if is_annotated else torch.full((H, W), 255, dtype=torch.int64)}


def test_validation_scores_each_clip_once_from_a_fresh_session(monkeypatch):
    task = make_task()
    updates = {"vpq": [], "stq": []}
    for name, metric in (("vpq", task.val_vpq), ("stq", task.val_stq)):
        real = metric.update
        monkeypatch.setattr(metric, "update", lambda *args, _name=name, _real=real: (
            updates[_name].append(args), _real(*args)))
    monkeypatch.setattr(task, "log_dict", lambda *args, **kwargs: None)
    task.on_validation_epoch_start()
    sent = list(batches())
    for i, batch in enumerate(sent):
        task.validation_step(batch, i)
    task.on_validation_epoch_end()

    # the network saw frame t of every batch, never its reference
    assert len(task.model.frames) == len(sent)
    assert all(torch.equal(got, b["images"][0]) for got, b in zip(task.model.frames, sent, strict=True))
    for name in ("vpq", "stq"):
        assert len(updates[name]) == 2, name  # one update per clip
        for (gt_ids, gt_segments, pred_ids, pred_segments), (_, annotated) in zip(updates[name], CLIPS, strict=True):
            frames = [t for t, a in enumerate(annotated) if a]
            assert len(gt_ids) == len(gt_segments) == len(pred_ids) == len(pred_segments) == len(frames)
            for t, gt, gt_seg, pred, pred_seg in zip(frames, gt_ids, gt_segments, pred_ids, pred_segments,
                                                     strict=True):
                # predictions: the session's frame index restarts with each clip
                assert int(np.asarray(pred)[STUB_BOX][0, 0]) == stub_thing_id(t)
                assert {s["id"] for s in pred_seg} == {1, stub_thing_id(t)}
                assert all(s["iscrowd"] == 0 for s in pred_seg)
                # ground truth numbered like predictions: stuff c -> c + 1, instance i of c -> (i + 1) * 1000 + c
                gt = np.asarray(gt)
                assert gt[0, 0] == 4 and gt[6, 7] == 2004 and gt[3, 0] == 1
                crowd = {s["id"]: s["iscrowd"] for s in gt_seg}
                assert crowd == {1: 0, 4: 1, 2004: 0}


def test_lr_is_scaled_to_the_effective_batch_warmed_up_and_stepped():
    """lr 0.01 for 8 images, 2 per device x 2 devices x 3 accumulated = 12: 0.015; linear warm-up from half of
    it over 10 steps; x 0.1 at half of the 100 steps. Frozen parameters are not optimised."""
    task = VPSTask(net={"variant": "image"}, optimizer={"_target_": "torch.optim.SGD", "lr": 0.01},
                   scheduler={"warmup_iters": 10, "warmup_ratio": 0.5, "policy": "step", "milestones": [0.5],
                              "gamma": 0.1})
    task.model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    task.model[0].requires_grad_(False)
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(batch_size=2), world_size=2, accumulate_grad_batches=3,
                                    estimated_stepping_batches=100)
    config = task.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in task.model[1].parameters()}
    lrs = []
    for _ in range(60):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.0075) and lrs[5] == pytest.approx(0.0075 * 1.5)
    assert lrs[10] == pytest.approx(0.015) and lrs[49] == pytest.approx(0.015) and lrs[50] == pytest.approx(0.0015)

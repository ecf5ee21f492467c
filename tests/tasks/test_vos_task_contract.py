"""VOSTask's training contract: the bootstrapping schedule and pixel count, what training_step feeds the network
and scores, and validation through the streaming predictor (with stand-in networks of known output)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.feelvos import TINY_FEELVOS
from tests.helpers.stub_models import ShiftPreviousFEELVOS
from vidseg.constants import IGNORE_LABEL
from vidseg.tasks.vos import VOSTask, bootstrapped_cross_entropy

SGD = {"_target_": "torch.optim.SGD", "lr": 7e-4, "momentum": 0.9, "weight_decay": 4e-5}


def make_task(scheduler: dict | None = None, **kwargs) -> VOSTask:
    torch.manual_seed(0)
    return VOSTask(net=TINY_FEELVOS, optimizer=SGD, scheduler=scheduler, **kwargs)


def attach_trainer(task: VOSTask, *, step: int, total: int) -> None:
    # bootstrap_fraction and configure_optimizers read only these two numbers from the trainer
    task._trainer = SimpleNamespace(global_step=step, estimated_stepping_batches=total)


@pytest.mark.parametrize(("anneal", "final", "step", "expected"), [
    (0.5, 0.15, 0, 1.0),
    (0.5, 0.15, 250, 1.0 - 0.5 * 0.85),    # half-way through the annealing part (the first 500 of 1000 steps)
    (0.5, 0.15, 500, 0.15),
    (0.5, 0.15, 900, 0.15),                # stays at the final fraction afterwards
    (0.25, 0.15, 125, 1.0 - 0.5 * 0.85),   # another annealing length: the same point is reached earlier
    (0.25, 0.15, 250, 0.15),
    (1.0, 0.3, 500, 1.0 - 0.5 * 0.7),      # another final fraction
])
def test_bootstrap_fraction_anneals_linearly_over_bootstrap_anneal(anneal, final, step, expected):
    task = make_task(loss={"bootstrap_anneal": anneal, "bootstrap_final": final})
    attach_trainer(task, step=step, total=1000)
    assert task.bootstrap_fraction() == pytest.approx(expected)


@pytest.mark.parametrize(("fraction", "kept"), [(0.25, 3), (0.15, 2), (0.05, 1), (0.91, 10)])
def test_hardest_pixel_count_is_rounded_up_over_valid_pixels(fraction, kept):
    """10 valid pixels with losses growing with their index, 10 ignored ones: the hardest ceil(f * 10)."""
    logits = torch.zeros(1, 2, 1, 20)
    logits[0, 0, 0, :10] = torch.arange(10.0)  # target 1: pixel i has a loss growing with i
    target = torch.ones(1, 1, 20, dtype=torch.long)
    target[0, 0, 10:] = IGNORE_LABEL
    pixel = F.cross_entropy(logits[..., :10], target[..., :10], reduction="none").flatten()
    expected = pixel.sort().values[-kept:].mean()
    assert torch.allclose(bootstrapped_cross_entropy(logits, target, fraction), expected)


def test_poly_schedule_steps_every_batch_over_all_training_steps():
    task = make_task(scheduler={"power": 2.0})
    attach_trainer(task, step=0, total=100)
    config = task.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([7e-4 * 0.5**2] * 2)  # (1 - 50/100)^2
    assert [g["weight_decay"] for g in optimizer.param_groups] == [4e-5, 0.0]


class RecordingFEELVOS(nn.Module):
    """forward_train stand-in: records its inputs and returns fixed random logits (times a trainable scale)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.logits = logits
        self.inputs: list[dict] = []

    def forward_train(self, images, masks, num_objects):
        self.inputs.append({"images": images.clone(), "masks": masks.clone(), "num_objects": num_objects.clone()})
        return self.logits * self.scale


def training_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 3, 24, 24, dtype=torch.long)
    for b in range(2):
        for k in range(3):  # a different layout in each frame: a wrong frame choice changes the result
            masks[b, k, 4 + 3 * k: 14 + 3 * k, 4: 12 + 2 * k] = 1
            masks[b, k, 14: 22, 10 + 2 * k: 20] = 2
        masks[b, :, 0] = IGNORE_LABEL
    return {"images": torch.randint(0, 256, (2, 3, 3, 24, 24), dtype=torch.uint8, generator=g), "masks": masks,
            "num_objects": torch.tensor([2, 2])}


@pytest.mark.parametrize("option", ["damage_initial_previous_frame_mask", "prev_mask_damage"])
def test_training_step_damages_only_the_previous_frame_and_scores_the_current_one(option, monkeypatch):
    task = make_task(loss={"bootstrap_anneal": 0.5, "bootstrap_final": 0.15},
                     **{option: {"probability": 1.0, "max_shift": 3, "max_morph": 1}})
    logits = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    task.model = RecordingFEELVOS(logits)
    attach_trainer(task, step=250, total=1000)
    logged = {}
    monkeypatch.setattr(task, "log", lambda name, value, **kwargs: logged.__setitem__(name, value))
    batch = training_batch()
    torch.manual_seed(0)
    loss = task.training_step(batch, 0)

    seen = task.model.inputs[0]
    assert torch.equal(seen["images"], batch["images"]) and torch.equal(seen["num_objects"], batch["num_objects"])
    assert torch.equal(seen["masks"][:, 0], batch["masks"][:, 0])  # the reference is never damaged
    assert torch.equal(seen["masks"][:, 2], batch["masks"][:, 2])  # nor the frame the loss is on
    assert not torch.equal(seen["masks"][:, 1], batch["masks"][:, 1])  # the previous frame is
    fraction = 1.0 - 0.5 * 0.85
    assert logged["train/bootstrap_fraction"] == pytest.approx(fraction)
    # the loss is on the current frame's ground truth, with the annealed fraction, summed over samples
    expected = bootstrapped_cross_entropy(logits, batch["masks"][:, 2], fraction, reduction="sum")
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, bootstrapped_cross_entropy(logits, batch["masks"][:, 1], fraction))
    loss.backward()
    assert task.model.scale.grad is not None


def test_training_step_without_damage_feeds_the_ground_truth_unchanged(monkeypatch):
    task = make_task()
    task.model = RecordingFEELVOS(torch.zeros(2, 3, 24, 24))
    monkeypatch.setattr(task, "log", lambda *args, **kwargs: None)
    batch = training_batch()
    task.training_step(batch, 0)
    assert torch.equal(task.model.inputs[0]["masks"], batch["masks"])


def test_validation_scores_the_streaming_predictions_of_each_sequence():
    """A stand-in network that moves the mask 4 px per frame, on ground truth that moves the same way, scores
    J&F = 1; the same run scored against ground truth that does not move scores less."""
    height, width, frames = 32, 40, 5
    first = np.zeros((height, width), np.int64)
    first[:, 4:12] = 1
    first[:, 16:20] = 2
    moving = np.stack([np.roll(first, 4 * t, axis=1) for t in range(frames)])  # objects never wrap around
    images = torch.full((frames, 3, height, width), 90, dtype=torch.uint8)
    scores = []
    for gt in (moving, np.repeat(first[None], frames, 0)):
        task = make_task()
        task.model = ShiftPreviousFEELVOS(shift=1)
        task.on_validation_epoch_start()
        task.validation_step({"images": images, "masks": torch.from_numpy(gt), "name": "seq"}, 0)
        scores.append(float(task.val_jf.compute()["J&F-Mean"]))
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] < 0.9


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_reduction_option_reaches_training_step(reduction, monkeypatch):
    task = make_task(loss={"reduction": reduction})
    logits = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    task.model = RecordingFEELVOS(logits)
    attach_trainer(task, step=0, total=10)  # fraction 1: plain cross-entropy of each sample
    monkeypatch.setattr(task, "log", lambda *args, **kwargs: None)
    batch = training_batch()
    loss = task.training_step(batch, 0)
    target = batch["masks"][:, 2]
    per_sample = [F.cross_entropy(logits[b:b + 1], target[b:b + 1], ignore_index=IGNORE_LABEL) for b in range(2)]
    expected = sum(per_sample) if reduction == "sum" else sum(per_sample) / 2
    assert torch.allclose(loss, expected)


def test_weight_decay_on_all_reaches_the_optimizer():
    task = make_task(weight_decay_on="all")
    attach_trainer(task, step=0, total=10)
    optimizer = task.configure_optimizers()
    trainable = [p for p in task.model.parameters() if p.requires_grad]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [4e-5]
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in trainable}
    with pytest.raises(ValueError, match="weight_decay_on"):
        make_task(weight_decay_on="convs")


@pytest.mark.parametrize("limit", [1.0, None])
def test_grad_clip_per_tensor_option_is_the_limit_used(limit):
    task = make_task(grad_clip_per_tensor=limit)
    optimizer = task.configure_optimizers()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.full_like(p, 3.0)  # every tensor's norm is >= 3
    task.configure_gradient_clipping(optimizer)
    norms = [p.grad.norm().item() for p in params]
    if limit is None:  # no per-tensor clipping (Lightning's gradient_clip_val is the alternative)
        assert all(torch.equal(p.grad, torch.full_like(p, 3.0)) for p in params)
    else:
        assert max(norms) == pytest.approx(1.0, rel=1e-3) and min(norms) == pytest.approx(1.0, rel=1e-3)


def test_validation_with_objects_given_later_scores_each_from_its_own_first_frame(monkeypatch):
    """YouTube-VOS validation: the predictor gets every given mask; each object is scored from its own first
    frame on (frames first..T-1 go to the metric, which skips the first and the last), objects first given
    in the last two frames are not scored."""
    task = make_task()
    num_frames = 6
    gt = torch.zeros(num_frames, 4, 4, dtype=torch.long)
    gt[:, 0, 0], gt[2:, 1, 1], gt[4:, 2, 2] = 3, 9, 5
    pred = gt.clone()
    pred[3, 1, 1] = 0  # one miss of object 9
    given = {0: gt[0] * (gt[0] == 3), 2: gt[2] * (gt[2] == 9), 4: gt[4] * (gt[4] == 5)}
    calls, updates = [], []

    def predict_sequence(images, first_mask=None, *, masks=None):
        calls.append((first_mask, masks))
        return pred

    task._val_predictor = SimpleNamespace(predict_sequence=predict_sequence)
    monkeypatch.setattr(task.val_jf, "update", lambda p, g, sequence=None, num_objects=None: updates.append(
        (sequence, num_objects, p.clone(), g.clone())))
    batch = {"images": torch.zeros(num_frames, 3, 4, 4, dtype=torch.uint8), "masks": gt, "name": "vid",
             "given": given, "first_frames": {3: 0, 9: 2, 5: 4}}
    task.validation_step(batch, 0)
    assert len(calls) == 1 and calls[0][0] is None and calls[0][1] is given
    assert [(name, n, len(p)) for name, n, p, _ in updates] == [("vid_3", 1, 6), ("vid_9", 1, 4)]
    for name, _, p, g in updates:
        obj, first = int(name.split("_")[1]), {"vid_3": 0, "vid_9": 2}[name]
        assert torch.equal(p, (pred[first:] == obj).long()) and torch.equal(g, (gt[first:] == obj).long())


def test_the_damaged_previous_frame_is_the_previous_frame_damaged(monkeypatch):
    from vidseg.tasks.vos import damage_labels

    damage = {"probability": 1.0, "max_shift": 3, "max_morph": 1}
    task = make_task(damage_initial_previous_frame_mask=damage)
    task.model = RecordingFEELVOS(torch.zeros(2, 3, 24, 24))
    monkeypatch.setattr(task, "log", lambda *args, **kwargs: None)
    batch = training_batch()
    torch.manual_seed(7)
    task.training_step(batch, 0)
    torch.manual_seed(7)
    expected = damage_labels(batch["masks"][:, 1], **damage)
    assert torch.equal(task.model.inputs[0]["masks"][:, 1], expected)
    # probability 0 (or no option): the ground truth itself
    task = make_task(damage_initial_previous_frame_mask={**damage, "probability": 0.0})
    task.model = RecordingFEELVOS(torch.zeros(2, 3, 24, 24))
    monkeypatch.setattr(task, "log", lambda *args, **kwargs: None)
    task.training_step(batch, 0)
    assert torch.equal(task.model.inputs[0]["masks"], batch["masks"])

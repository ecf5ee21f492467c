"""No host syncs in the training steps (issue 16, point 6), checked on CPU with tests/helpers/host_sync.py.

A host read of device data in a training step (``.item()``, ``bool(t)``, boolean-mask indexing, a Python
number logged through ``self.log``) stalls the GPU's launch queue every step; on CPU it costs nothing, so
only these tests catch one. The tasks' own code (loss, logging) must have none. The models' syncs listed in
KNOWN_MODEL_SYNCS are known (the FEELVOS and VPSNet training forwards; VPSNet's torchvision detector has its
own): a new one fails here, and one removed only shortens the list.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.configs import compose_config
from tests.helpers.host_sync import GuardTrainingStep, HostSyncGuard
from tests.helpers.training_runs import TINY_VOS_RUN
from tests.helpers.vps_training import train_tiny_vps
from vidseg.constants import IGNORE_LABEL
from vidseg.tasks.vos import bootstrapped_cross_entropy, damage_labels

# (file under src/vidseg, function) -> why it reads back; to be removed from the models, not from the tasks.
KNOWN_MODEL_SYNCS = {
    ("models/feelvos/model.py", "forward_train"): "int(num_objects.max()): the object count N",
    ("models/feelvos/model.py", "sample_reference_pixels"): "nonzero per sample and object",
    ("models/feelvos/model.py", "segment"): "int(num_objects.max()) again; boolean masks of the present slots",
    ("models/vpsnet/semantic_head.py", "loss"): "if not (semantic != 255).any()",
    ("models/vpsnet/model.py", "to_detector_labels"): "label range check",
    ("models/vpsnet/detector.py", "forward_train"): "inside torchvision's RPN / RoI heads (sampling, matching)",
    ("models/vpsnet/detector.py", "__call__"): "torchvision's Matcher (boolean-mask assignment) in MaxIoUMatcher",
    ("models/vpsnet/panoptic_head.py", "box_regions"): "boxes .cpu().tolist() for crops",
    ("models/vpsnet/panoptic_head.py", "crop_semantic_logits"): "classes.tolist()",
    ("models/vpsnet/panoptic_head.py", "loss"): "if (target != 255).any()",
    ("models/vpsnet/track_head.py", "loss"): "valid.any() and boolean masks",
}


def test_the_guard_flags_reads_of_device_data_only():
    data = torch.arange(6.0)
    with HostSyncGuard([data]) as guard:
        host = torch.rand(())  # a CPU draw, not device data: reading it is free
        bool(host < 0.5), int(torch.randint(0, 3, ())), float(host * 2)
        derived = data * 2
        derived.sum().item()
        bool(derived.any())
        derived[derived > 3]
        derived.nonzero()
        derived[1:3] = 0.0  # slicing is fine
        torch.tensor(1.0, device=data.device)  # a pageable upload on an accelerator
    assert [s.op for s in guard.syncs] == ["item", "__bool__", "boolean-mask __getitem__", "nonzero",
                                           "torch.tensor(..., device=)"]
    assert all(s.file.endswith("test_training_step_syncs.py") and s.function.startswith("test_") for s in guard.syncs)


def _reference_bootstrapped_cross_entropy(logits, target, top_fraction, reduction="sum"):
    """The per-sample loop with boolean masks and host k (vidseg before issue 16): the numerical reference."""
    pixel_loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_LABEL, reduction="none").flatten(1)
    valid = (target != IGNORE_LABEL).flatten(1)
    losses = []
    for sample_loss, sample_valid in zip(pixel_loss, valid, strict=True):
        values = sample_loss[sample_valid]
        if values.numel() == 0:
            continue
        k = max(1, math.ceil(top_fraction * values.numel()))
        losses.append(values.topk(k, sorted=False).values.mean() if k < values.numel() else values.mean())
    if not losses:
        return logits.sum() * 0.0
    stacked = torch.stack(losses)
    return stacked.sum() if reduction == "sum" else stacked.mean()


def _case(seed: int, ignored: str):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 17, 23, generator=generator, requires_grad=True)
    target = torch.randint(0, 4, (3, 17, 23), generator=generator)
    if ignored in ("some", "one sample"):
        target[torch.rand(target.shape, generator=generator) < 0.3] = IGNORE_LABEL
    if ignored == "one sample":
        target[1] = IGNORE_LABEL
    if ignored == "all":
        target[:] = IGNORE_LABEL
    return logits, target


@pytest.mark.parametrize("ignored", ["none", "some", "one sample", "all"])
@pytest.mark.parametrize("fraction", [1.0, 0.999, 0.5, 0.15, 1e-4])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_bootstrapped_cross_entropy_matches_the_per_sample_loop(ignored, fraction, reduction):
    logits, target = _case(0, ignored)
    loss = bootstrapped_cross_entropy(logits, target, fraction, reduction=reduction)
    (grad,) = torch.autograd.grad(loss, logits)
    expected = _reference_bootstrapped_cross_entropy(logits, target, fraction, reduction)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    # The same pixels and sums, added in another order: equal to float32 rounding.
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-8)


def test_bootstrapped_cross_entropy_reads_nothing_back():
    logits, target = _case(1, "one sample")
    with HostSyncGuard([logits, target]) as guard:
        for fraction in (1.0, 0.15):
            for reduction in ("sum", "mean"):
                bootstrapped_cross_entropy(logits, target, fraction, reduction=reduction)
    assert [str(s) for s in guard.sites()] == []


def test_damage_labels_reads_back_only_the_objects_present():
    labels = torch.zeros(2, 20, 30, dtype=torch.long)
    labels[:, 4:10, 5:12], labels[:, 12:18, 15:25], labels[0, 0] = 1, 2, IGNORE_LABEL
    torch.manual_seed(0)
    with HostSyncGuard([labels]) as guard:
        damage_labels(labels, probability=1.0, max_shift=3, max_morph=2)
    # One read per damaged sample: which objects are still there decides the random draws that follow.
    assert {(s.op, s.function) for s in guard.sites()} == {("unique", "damage_labels"), ("tolist", "damage_labels")}
    assert len([s for s in guard.syncs if s.op == "tolist"]) == 2


def _sites_by_place(guarded: GuardTrainingStep):
    return {(s.file, s.function): s for s in guarded.sites()}


def _check(guarded: GuardTrainingStep, task_file: str) -> None:
    assert guarded.guards, "no training step ran under the guard"
    sites = _sites_by_place(guarded)
    in_task = [str(s) for (file, _), s in sites.items() if file.startswith("tasks/") or file == task_file]
    assert in_task == [], f"host syncs in the task's training step: {in_task}"
    unknown = [str(s) for place, s in sites.items() if place not in KNOWN_MODEL_SYNCS]
    assert unknown == [], f"new host syncs in the training step (log tensors, use torch.where, ...): {unknown}"


@pytest.mark.parametrize("damage", [False, True], ids=["official", "damaged_previous_mask"])
def test_feelvos_training_step_has_no_task_syncs(toy_davis_root, tmp_path, damage):
    from vidseg.train import train

    GuardTrainingStep.instances.clear()
    overrides = [f"data.root={toy_davis_root}", *TINY_VOS_RUN, "trainer.max_steps=2",
                 "+callbacks.guard._target_=tests.helpers.host_sync.GuardTrainingStep"]
    if damage:
        overrides.append("model.damage_initial_previous_frame_mask={probability:1.0,max_shift:4,max_morph:2}")
    train(compose_config("train", tmp_path / "run", overrides))
    (guarded,) = GuardTrainingStep.instances
    if damage:  # the one read damage_labels needs (see test_damage_labels_reads_back_only_the_objects_present)
        for guard in guarded.guards:
            guard.syncs = [s for s in guard.syncs if s.function != "damage_labels"]
    _check(guarded, "tasks/vos.py")


def test_vpsnet_training_step_has_no_task_syncs(toy_cityscapes_vps_root, tmp_path):
    GuardTrainingStep.instances.clear()
    train_tiny_vps(toy_cityscapes_vps_root, tmp_path / "run",
                   extra=["+callbacks.guard._target_=tests.helpers.host_sync.GuardTrainingStep",
                          "trainer.check_val_every_n_epoch=1000"])
    (guarded,) = GuardTrainingStep.instances
    _check(guarded, "tasks/vps.py")

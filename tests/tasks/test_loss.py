import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidseg.tasks.vos import (
    VOSTask,
    bootstrapped_cross_entropy,
    clip_gradient_norms_per_tensor,
    damage_labels,
    parameter_groups,
)


def test_full_fraction_is_plain_cross_entropy_summed_over_samples():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, 0] = 255
    # per-sample mean over valid pixels, then summed over samples (official: a clone's loss is the sum over
    # its samples); reduction="mean" averages instead
    per_sample = torch.stack([
        F.cross_entropy(logits[b:b + 1], target[b:b + 1], ignore_index=255) for b in range(2)
    ])
    assert torch.allclose(bootstrapped_cross_entropy(logits, target, 1.0), per_sample.sum())
    assert torch.allclose(bootstrapped_cross_entropy(logits, target, 1.0, reduction="mean"), per_sample.mean())
    with pytest.raises(ValueError, match="reduction"):
        bootstrapped_cross_entropy(logits, target, 1.0, reduction="none")


def test_hardest_fraction_keeps_the_largest_losses():
    logits = torch.zeros(1, 2, 1, 10)
    logits[0, 0, 0] = torch.arange(10.0)  # pixel i: logit i for class 0, target 1 -> loss grows with i
    target = torch.ones(1, 1, 10, dtype=torch.long)
    pixel = F.cross_entropy(logits, target, reduction="none").flatten()
    assert torch.allclose(bootstrapped_cross_entropy(logits, target, 0.3), pixel[7:].mean())
    assert torch.allclose(bootstrapped_cross_entropy(logits, target, 0.01), pixel[9:].mean())


def test_all_ignored_gives_zero_with_graph():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = bootstrapped_cross_entropy(logits, torch.full((1, 3, 3), 255), 0.5)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


def test_damage_labels_shifts_and_keeps_ignored():
    torch.manual_seed(0)
    labels = torch.zeros(3, 20, 20, dtype=torch.long)
    labels[:, 5:10, 5:10] = 1
    labels[:, 12:16, 12:18] = 2
    labels[:, 0, :] = 255
    before = labels.clone()
    same = damage_labels(labels, probability=0.0, max_shift=4, max_morph=2)
    assert torch.equal(same, labels)
    damaged = damage_labels(labels, probability=1.0, max_shift=4, max_morph=2)
    assert damaged.shape == labels.shape and not torch.equal(damaged, labels)
    assert set(torch.unique(damaged).tolist()) <= {0, 1, 2, 255}
    assert torch.equal(labels, before)  # input untouched


def test_damage_labels_keeps_void_exactly_where_it_was():
    """Over many random damaged samples no void pixel changes and no pixel becomes void (issue 8, point 13)."""
    torch.manual_seed(1)
    generator = torch.Generator().manual_seed(2)
    changed = 0
    for _ in range(200):
        labels = torch.zeros(1, 24, 32, dtype=torch.long)
        for obj in (1, 2, 3):
            y, x = (int(v) for v in torch.randint(0, 18, (2,), generator=generator))
            labels[0, y:y + 6, x:x + 9] = obj
        band = int(torch.randint(0, 28, (), generator=generator))
        labels[0, :, band:band + 3] = 255      # a void band, as DAVIS object borders
        labels[0, -2:] = 255                   # and a void pad at the bottom, as padded crops
        damaged = damage_labels(labels, probability=1.0, max_shift=6, max_morph=2)
        assert torch.equal(damaged == 255, labels == 255)
        changed += int(not torch.equal(damaged, labels))
    assert changed > 150  # the damage still damages


def test_parameter_groups_decay_conv_weights_only():
    net = nn.Sequential(
        nn.Conv2d(4, 4, 3, groups=4, bias=True),   # depthwise: no decay on kernel or bias
        nn.BatchNorm2d(4),                         # norm: no decay
        nn.Conv2d(4, 8, 1, bias=True),             # conv weight: decay; its bias: none
        nn.Linear(8, 2),                           # linear weight: decay
    )
    net[1].requires_grad_(False)                   # frozen parameters are not optimised at all
    groups = parameter_groups(net, 4e-5)
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decay == {id(net[2].weight), id(net[3].weight)}
    assert no_decay == {id(net[0].weight), id(net[0].bias), id(net[2].bias), id(net[3].bias)}
    assert [g["weight_decay"] for g in groups] == [4e-5, 0.0]
    everything = parameter_groups(net, 4e-5, mode="all")
    assert len(everything) == 1 and len(everything[0]["params"]) == 6


def test_gradient_clipping_is_per_tensor():
    small, big = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))
    small.grad = torch.tensor([3.0, 0.0, 0.0])          # norm 3: untouched
    big.grad = torch.tensor([30.0, 40.0, 0.0, 0.0])     # norm 50: scaled to 5 on its own
    clip_gradient_norms_per_tensor([small, big], 5.0)
    assert torch.allclose(small.grad, torch.tensor([3.0, 0.0, 0.0]))
    assert torch.allclose(big.grad.norm(), torch.tensor(5.0), atol=1e-4)
    assert torch.allclose(big.grad, torch.tensor([3.0, 4.0, 0.0, 0.0]), atol=1e-4)
    # a global norm (sqrt(9 + 2500)) would have shrunk the small tensor too: it did not.


TINY_TASK_NET = dict(
    backbone=dict(name="resnet18", output_stride=16), decoder=dict(decoder_channels=8, aspp_channels=8),
    embedding_dim=4, head_channels=8, head_kernel=3, head_layers=1, local_max_distance=1,
)


def test_task_defaults_are_the_official_optimisation():
    task = VOSTask(net=TINY_TASK_NET, optimizer={"_target_": "torch.optim.SGD", "lr": 7e-4, "momentum": 0.9,
                                                 "weight_decay": 4e-5}, scheduler=None)
    optimizer = task.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    depthwise = task.model.embedding_head.depthwise
    assert id(task.model.embedding_head.pointwise.weight) in decayed
    assert id(depthwise.weight) not in decayed and id(depthwise.bias) not in decayed
    assert task.hparams.grad_clip_per_tensor == 5.0 and task.loss_config["reduction"] == "sum"

    # configure_gradient_clipping (called by Lightning before every step) clips each tensor on its own
    for p in task.model.parameters():
        p.grad = torch.full_like(p, 10.0)
    bias = task.model.head.classifier.bias
    bias.grad = torch.full_like(bias, 0.5)
    task.configure_gradient_clipping(optimizer)
    norms = [p.grad.norm().item() for g in optimizer.param_groups for p in g["params"]]
    assert max(norms) == pytest.approx(5.0, rel=1e-3)  # float32 norms of ~1e5 equal values
    assert bias.grad.item() == 0.5  # under the limit: untouched (a global norm would have shrunk it)


def test_damage_shifts_cover_the_whole_range_both_ways():
    """With max_shift=2 every shift in [-2, 2] x [-2, 2] occurs (inclusive bounds), and nothing beyond."""
    torch.manual_seed(0)
    labels = torch.zeros(1, 9, 9, dtype=torch.long)
    labels[0, 4, 4] = 1
    shifts = set()
    for _ in range(400):
        damaged = damage_labels(labels, probability=1.0, max_shift=2, max_morph=0)
        (y, x), = (damaged[0] == 1).nonzero().tolist()
        shifts.add((y - 4, x - 4))
    assert shifts == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}


def test_damage_morphology_dilates_and_erodes_up_to_max_morph():
    torch.manual_seed(0)
    labels = torch.zeros(1, 9, 9, dtype=torch.long)
    labels[0, 3:6, 3:6] = 1  # 3 x 3
    areas = {int((damage_labels(labels, probability=1.0, max_shift=0, max_morph=1)[0] == 1).sum())
             for _ in range(100)}
    assert areas == {9, 25, 1}  # radius 0: unchanged; radius 1: dilated to 5 x 5 or eroded to its centre


def test_damage_probability_is_per_sample():
    torch.manual_seed(0)
    labels = torch.zeros(400, 6, 6, dtype=torch.long)
    labels[:, 2:4, 2:4] = 1
    damaged = damage_labels(labels, probability=0.25, max_shift=2, max_morph=1)
    changed = sum(not torch.equal(d, s) for d, s in zip(damaged, labels, strict=True))
    # a damaged sample is unchanged only when its draw is the identity (shift 0, radius 0): ~1 / 25 x 1 / 2
    assert 60 < changed < 120
    assert torch.equal(damage_labels(labels, probability=1.0 - 1e-9, max_shift=0, max_morph=0), labels)

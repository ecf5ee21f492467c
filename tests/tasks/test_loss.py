import torch
import torch.nn.functional as F

from vidseg.tasks.vos import bootstrapped_cross_entropy


def test_full_fraction_is_plain_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, 0] = 255
    # per-sample mean over valid pixels, then mean over samples
    expected = torch.stack([
        F.cross_entropy(logits[b:b + 1], target[b:b + 1], ignore_index=255) for b in range(2)
    ]).mean()
    assert torch.allclose(bootstrapped_cross_entropy(logits, target, 1.0), expected)


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
    from vidseg.tasks.vos import damage_labels

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

import pytest
import torch

from vidseg.models.feelvos import FEELVOS
from vidseg.models.feelvos.model import (
    ABSENT_LOGIT,
    IGNORE_LABEL,
    downsample_labels,
    one_hot_probabilities,
    pad_to_multiple,
    sample_reference_pixels,
)

TINY_NET = dict(
    backbone=dict(name="resnet18", output_stride=16), decoder=dict(decoder_channels=16, aspp_channels=16),
    embedding_dim=8, head_channels=16, head_kernel=3, head_layers=1, local_max_distance=2,
    max_reference_per_object=20,
)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return FEELVOS(**TINY_NET)


def test_forward_train_shapes_and_absent_objects(tiny_model):
    images = torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8)
    masks = torch.zeros(2, 3, 64, 64, dtype=torch.long)
    masks[0, :, 10:30, 10:30] = 1
    masks[0, :, 40:60, 40:60] = 2
    masks[1, :, 5:25, 30:50] = 1
    masks[1, 2, 0:4] = IGNORE_LABEL
    num_objects = torch.tensor([2, 1])
    logits = tiny_model.forward_train(images, masks, num_objects)
    assert logits.shape == (2, 3, 64, 64)
    # sample 1 has one object: its third slot is masked out everywhere, so softmax gives it zero probability
    assert torch.all(logits[1, 2] == ABSENT_LOGIT)
    assert torch.all(logits[0, 2] != ABSENT_LOGIT)
    probs = logits.softmax(1)
    assert probs[1, 2].max() < 1e-6
    logits.sum().backward()
    grads = [p.grad for p in tiny_model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


def test_sample_reference_pixels_caps_each_object():
    emb = torch.randn(2, 4, 8, 8)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[0, :4] = 1          # 32 pixels of object 1, 32 background
    labels[1, 0, 0] = 1        # one pixel of object 1
    labels[1, 7] = IGNORE_LABEL
    out_emb, out_lab = sample_reference_pixels(emb, labels, 2, max_per_object=10)
    assert out_emb.shape[:3] == (2, 4, 1) and out_lab.shape[:2] == (2, 1)
    for b in range(2):
        for obj in range(2):
            kept = (out_lab[b] == obj).sum().item()
            available = (labels[b] == obj).sum().item()
            assert kept == min(10, available)
        # every kept pixel carries the embedding of a reference pixel with the same label
        for k in range(out_lab.shape[-1]):
            lab = out_lab[b, 0, k].item()
            if lab == IGNORE_LABEL:
                continue
            matches = (emb[b].flatten(1).T == out_emb[b, :, 0, k]).all(1)
            assert matches.any() and (labels[b].flatten()[matches] == lab).all()
    assert (out_lab == IGNORE_LABEL).sum() > 0  # padding of the shorter batch element


def test_label_helpers():
    labels = torch.tensor([[[0, 1], [IGNORE_LABEL, 2]]])
    probs = one_hot_probabilities(labels, 3)
    assert probs.shape == (1, 3, 2, 2)
    assert probs[0, :, 1, 0].sum() == 0  # ignored pixel: no object
    assert probs[0, 2, 1, 1] == 1 and probs[0, 1, 0, 1] == 1
    big = torch.arange(16).view(1, 4, 4)
    assert downsample_labels(big, (2, 2)).tolist() == [[[0, 2], [8, 10]]]
    padded = pad_to_multiple(torch.zeros(1, 5, 7, dtype=torch.long), 4, value=IGNORE_LABEL)
    assert padded.shape == (1, 8, 8) and padded[0, 5:].eq(IGNORE_LABEL).all() and padded[0, :5, :7].eq(0).all()

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.feelvos import TINY_NET
from vidseg.models.feelvos import FEELVOS, DynamicSegmentationHead
from vidseg.models.feelvos.model import (
    ABSENT_LOGIT,
    IGNORE_LABEL,
    downsample_labels,
    one_hot_probabilities,
    pad_to_multiple,
    sample_reference_pixels,
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


def _segment_inputs(num_objects: list[int], seed: int = 0, size: int = 12, channels: int = 16, dim: int = 8):
    """Random current/reference/previous tensors for FEELVOS.segment with the given per-sample object counts."""
    g = torch.Generator().manual_seed(seed)
    batch = len(num_objects)
    labels = torch.stack([torch.randint(0, n + 1, (size, size), generator=g) for n in num_objects])
    return dict(
        features=torch.rand(batch, channels, size, size, generator=g),
        embedding=torch.rand(batch, dim, size, size, generator=g),
        ref_embedding=torch.rand(batch, dim, size, size, generator=g), ref_labels=labels,
        prev_embedding=torch.rand(batch, dim, size, size, generator=g), prev_labels=labels.roll(1, -1),
        num_objects=torch.tensor(num_objects),
    )


def test_dynamic_head_is_the_official_one_by_default(tiny_model):
    modules = list(tiny_model.head.modules())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in modules)
    convs = [m for m in modules if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs)
    depthwise, pointwise = tiny_model.head.layers[0][0], tiny_model.head.layers[0][2]
    assert depthwise.groups == depthwise.in_channels and pointwise.kernel_size == (1, 1)
    assert isinstance(tiny_model.head.layers[0][1], torch.nn.ReLU) and isinstance(tiny_model.head.layers[0][3],
                                                                                   torch.nn.ReLU)


def test_embedding_head_is_separable_with_bias_and_relu(tiny_model):
    head = tiny_model.embedding_head
    assert head.depthwise.bias is not None and head.depthwise.groups == head.depthwise.in_channels
    assert head.pointwise.bias is not None and head.pointwise.out_channels == 8
    features = torch.randn(2, 16, 6, 7)  # negative inputs too: the output is still >= 0 (ReLU)
    out = head(features)
    assert out.shape == (2, 8, 6, 7) and (out >= 0).all() and (out > 0).any()
    expected = F.relu(head.pointwise(F.relu(head.depthwise(features))))
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("train_mode", [True, False])
def test_padded_object_slots_never_reach_a_batch_norm_head(train_mode):
    """Sample 0 has 1 object, sample 1 has 3: sample 0's slots 2 and 3 are padding and must never enter the
    head (so neither its BatchNorm batch statistics nor its running averages)."""
    torch.manual_seed(0)
    model = FEELVOS(**{**TINY_NET, "head_norm": "batch"}).train(train_mode)
    inputs = _segment_inputs([1, 3])
    seen_rows = []
    hook = model.head.register_forward_hook(lambda module, args, out: seen_rows.append(args[0].shape[0]))
    with torch.no_grad():
        logits = model.segment(**inputs)
    hook.remove()
    assert seen_rows == [2 + 4]  # the real slots only
    assert torch.all(logits[0, 2:] == ABSENT_LOGIT) and torch.all(logits[1] != ABSENT_LOGIT)
    if not train_mode:  # eval mode: the one-object sample alone (no padding at all) gives the same logits
        with torch.no_grad():
            alone = model.segment(**{k: v[:1] for k, v in inputs.items()})
        assert torch.allclose(alone, logits[:1, :2], atol=1e-5)


def test_padded_slots_leave_train_mode_batch_statistics_unchanged():
    """Train-mode BN on a batch [1 object, 3 objects] (2 padded slots): logits and running averages equal those
    of the head run on the 6 real slots alone."""
    torch.manual_seed(0)
    model = FEELVOS(**{**TINY_NET, "head_norm": "batch"}).train()
    inputs = _segment_inputs([1, 3])
    captured = []
    hook = model.head.register_forward_hook(lambda module, args, out: captured.append(args[0].clone()))
    with torch.no_grad():
        logits = model.segment(**inputs)
    hook.remove()
    real_inputs = captured[0]  # (6, C + 3, h, w): 2 slots of sample 0 then 4 of sample 1
    head_copy = DynamicSegmentationHead(TINY_NET["decoder"]["decoder_channels"] + 3, 16, 3, 1, "batch")
    head_copy.load_state_dict({k: v for k, v in model.head.state_dict().items()})
    for module in head_copy.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
    head_copy.train()
    with torch.no_grad():
        expected = head_copy(real_inputs)[:, 0]
    assert torch.allclose(logits[0, :2], expected[:2], atol=1e-5)
    assert torch.allclose(logits[1], expected[2:], atol=1e-5)
    for mine, theirs in zip(model.head.modules(), head_copy.modules(), strict=True):
        if isinstance(mine, torch.nn.BatchNorm2d):
            assert torch.allclose(mine.running_mean, theirs.running_mean, atol=1e-6)
            assert torch.allclose(mine.running_var, theirs.running_var, atol=1e-6)


def test_previous_frame_feedback_is_the_one_hot_of_the_matched_labels(tiny_model):
    inputs = _segment_inputs([2, 1])
    inputs["prev_labels"][0, 0, :3] = IGNORE_LABEL
    captured = []
    hook = tiny_model.head.register_forward_hook(lambda module, args, out: captured.append(args[0]))
    with torch.no_grad():
        tiny_model.eval().segment(**inputs)
    hook.remove()
    feedback = captured[0][:, 16 + 1]  # channels: features (16), global, feedback, local
    expected = one_hot_probabilities(inputs["prev_labels"], 3)
    assert torch.equal(feedback[:3], expected[0]) and torch.equal(feedback[3:], expected[1, :2])


def test_frozen_bn_keeps_statistics_and_trains_no_affine_parameter():
    torch.manual_seed(0)
    model = FEELVOS(**{**TINY_NET, "frozen_bn": True}).train()
    norms = [m for m in model.feature_extractor.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)  # eval-mode BN inside a train-mode model
    assert all(not p.requires_grad for m in norms for p in m.parameters())
    assert any(m.training for m in model.head.modules())  # the rest trains
    before = [m.running_mean.clone() for m in norms]
    images = torch.randint(0, 256, (1, 3, 3, 32, 32), dtype=torch.uint8)
    masks = torch.zeros(1, 3, 32, 32, dtype=torch.long)
    masks[:, :, 8:20, 8:20] = 1
    model.forward_train(images, masks, torch.tensor([1])).sum().backward()
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, norms, strict=True))
    # the state dict is the same as with trainable BN: checkpoints load either way
    assert model.state_dict().keys() == FEELVOS(**TINY_NET).state_dict().keys()


def test_for_inference_redilates_to_the_inference_stride_sharing_weights():
    torch.manual_seed(0)
    model = FEELVOS(**{**TINY_NET, "inference_output_stride": 8})
    assert model.output_stride == 16 and model.for_inference is not None
    infer = model.for_inference()
    assert infer is not model and infer.output_stride == 8 and infer.size_divisor == 8
    assert infer.feature_extractor.decoder.atrous_rates == (12, 24, 36)
    assert model.feature_extractor.decoder.atrous_rates == (6, 12, 18)
    assert not infer.training
    for (name, a), b in zip(model.named_parameters(), infer.parameters(), strict=True):
        assert a is b, name  # the same tensors: training updates are seen by the inference network
    images = torch.randint(0, 256, (1, 3, 32, 48), dtype=torch.uint8)
    with torch.no_grad():
        features16, _ = model.eval().embed(images)
        features8, _ = infer.embed(images)
    assert features16.shape == features8.shape == (1, 16, 8, 12)
    assert not torch.allclose(features16, features8)  # a different (denser) network, same weights
    same = FEELVOS(**TINY_NET)
    assert same.for_inference() is same  # null inference stride: the training network itself
    explicit = FEELVOS(**{**TINY_NET, "decoder": {**TINY_NET["decoder"], "atrous_rates": [2, 4, 6]},
                          "inference_output_stride": 8})
    assert explicit.for_inference().feature_extractor.decoder.atrous_rates == (4, 8, 12)


def test_sample_reference_pixels_cap_at_its_exact_size():
    """An object with max_per_object + 1 pixels loses one; one with exactly max_per_object keeps all."""
    emb = torch.arange(2 * 16, dtype=torch.float32).view(1, 2, 4, 4)
    labels = torch.full((1, 4, 4), IGNORE_LABEL, dtype=torch.long)
    labels.view(-1)[:5] = 1   # 5 pixels
    labels.view(-1)[5:9] = 0  # 4 pixels
    out_emb, out_lab = sample_reference_pixels(emb, labels, 2, max_per_object=4, generator=torch.Generator())
    assert out_lab.shape == (1, 1, 8)
    assert (out_lab == 0).sum() == 4 and (out_lab == 1).sum() == 4 and not (out_lab == IGNORE_LABEL).any()
    # background kept whole (in order), the object a subset of its pixels; each with its own embedding
    assert out_emb[0, 0, 0, :4].tolist() == [5.0, 6.0, 7.0, 8.0]
    picked = out_emb[0, 0, 0, 4:].long().tolist()
    assert len(set(picked)) == 4 and set(picked) <= {0, 1, 2, 3, 4}
    torch.testing.assert_close(out_emb[0, 1, 0], out_emb[0, 0, 0] + 16)

"""FEELVOS training wiring: which frame's embedding and labels reach each input of the head, and how the
reference pixels are sampled (a random subset per object, not the first pixels in raster order)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.helpers.feelvos import TINY_FEELVOS
from vidseg.constants import IGNORE_LABEL
from vidseg.models.feelvos import FEELVOS
from vidseg.models.feelvos.model import downsample_labels, sample_reference_pixels


def _indexed_reference(height: int = 40, width: int = 40):
    """An embedding whose value is the raster index of its pixel; background on the first row, object 2 on a
    5 x 5 block (25 pixels, just above the cap of 20), object 1 everywhere else."""
    emb = torch.arange(height * width, dtype=torch.float32).view(1, 1, height, width)
    labels = torch.ones(1, height, width, dtype=torch.long)
    labels[0, 0] = 0
    labels[0, 10:15, 10:15] = 2
    return emb, labels


def test_reference_pixels_are_a_random_subset_of_each_object():
    emb, labels = _indexed_reference()
    torch.manual_seed(0)
    out_emb, out_lab = sample_reference_pixels(emb, labels, 3, max_per_object=20)
    for obj in (1, 2):
        chosen = out_emb[0, 0, 0][out_lab[0, 0] == obj].long()
        # capped, without repetition (20 draws with replacement among 25 pixels repeat one almost surely)
        assert len(chosen) == 20 and len(set(chosen.tolist())) == 20
        assert (labels.flatten()[chosen] == obj).all()
    # 1535 pixels of object 1: 20 random ones all among the first half in raster order has probability 2^-20
    chosen = out_emb[0, 0, 0][out_lab[0, 0] == 1].long()
    assert int(chosen.max()) > 800
    # the cap applies per object: 20 of the 40 background pixels too
    background = out_emb[0, 0, 0][out_lab[0, 0] == 0].long()
    assert len(background) == 20 and (labels.flatten()[background] == 0).all()


def test_reference_pixels_differ_between_draws_and_repeat_with_a_generator():
    emb, labels = _indexed_reference()

    def draw(generator=None):
        out_emb, out_lab = sample_reference_pixels(emb, labels, 3, max_per_object=20, generator=generator)
        return set(out_emb[0, 0, 0][out_lab[0, 0] == 1].long().tolist())

    torch.manual_seed(0)
    assert draw() != draw()  # a new draw every training step
    assert draw(torch.Generator().manual_seed(3)) == draw(torch.Generator().manual_seed(3))


def _frame_coded_inputs(batch: int = 2, size: int = 32):
    """Frames of uniform value 10 * (k + 1) + 100 * b (frame k of sample b), and masks whose layout differs
    per frame."""
    values = torch.tensor([[10 * (k + 1) + 100 * b for k in range(3)] for b in range(batch)], dtype=torch.uint8)
    images = values[:, :, None, None, None].expand(batch, 3, 3, size, size).contiguous()
    masks = torch.zeros(batch, 3, size, size, dtype=torch.long)
    for k in range(3):
        masks[:, k, 4 * k: 4 * k + 12, 0:16] = 1
        masks[:, k, 20:28, 8 * k: 8 * k + 8] = 2
    masks[:, :, :, -4:] = IGNORE_LABEL
    return images, masks


def test_forward_train_feeds_reference_previous_and_current_frames_to_their_inputs(monkeypatch):
    torch.manual_seed(0)
    model = FEELVOS(**TINY_FEELVOS)
    images, masks = _frame_coded_inputs()
    calls = []

    def embed(frames):  # features = embedding = the frame's value at stride 4
        x = F.avg_pool2d(frames.float().mean(1, keepdim=True), 4)
        return x, x.clone()

    def segment(features, embedding, ref_embedding, ref_labels, prev_embedding, prev_labels, num_objects):
        calls.append(dict(features=features, embedding=embedding, ref_embedding=ref_embedding,
                          ref_labels=ref_labels, prev_embedding=prev_embedding, prev_labels=prev_labels,
                          num_objects=num_objects))
        n = int(num_objects.max()) + 1
        return features.new_zeros(features.shape[0], n, *features.shape[-2:]) + features.mean()

    monkeypatch.setattr(model, "embed", embed)
    monkeypatch.setattr(model, "segment", segment)
    num_objects = torch.tensor([2, 2])
    logits = model.forward_train(images, masks, num_objects)
    assert logits.shape == (2, 3, 32, 32)  # at input resolution
    (call,) = calls
    labels = downsample_labels(masks.flatten(0, 1), (8, 8)).unflatten(0, (2, 3))
    for b in range(2):
        value = lambda k, b=b: 10 * (k + 1) + 100 * b  # noqa: E731
        assert (call["features"][b] == value(2)).all() and (call["embedding"][b] == value(2)).all()
        assert (call["prev_embedding"][b] == value(1)).all()
        assert torch.equal(call["prev_labels"][b], labels[b, 1])  # the previous frame's labels, never q+1's
        kept = call["ref_labels"][b, 0] != IGNORE_LABEL
        assert (call["ref_embedding"][b, 0, 0][kept] == value(0)).all()
        for obj in range(3):  # the reference frame's objects, each capped at max_reference_per_object
            available = int((labels[b, 0] == obj).sum())
            assert int((call["ref_labels"][b, 0] == obj).sum()) == min(available, 20)
    assert torch.equal(call["num_objects"], num_objects)


def test_head_input_channels_are_features_global_feedback_local():
    """Per object the head sees [decoder features, global matching to the reference, one-hot of the previous
    labels, local matching to the previous frame], in that order (the official concatenation)."""
    from vidseg.models.feelvos.model import one_hot_probabilities
    from vidseg.ops import global_matching, local_matching

    torch.manual_seed(0)
    model = FEELVOS(**TINY_FEELVOS).eval()
    g = torch.Generator().manual_seed(0)
    channels, dim, size = TINY_FEELVOS["decoder"]["decoder_channels"], TINY_FEELVOS["embedding_dim"], 10
    rand = lambda c: torch.rand(1, c, size, size, generator=g)  # noqa: E731
    labels = lambda: torch.randint(0, 3, (1, size, size), generator=g)  # noqa: E731
    inputs = dict(
        features=rand(channels), embedding=rand(dim), ref_embedding=rand(dim), ref_labels=labels(),
        prev_embedding=rand(dim), prev_labels=labels(),
        num_objects=torch.tensor([2]),
    )
    seen = []
    hook = model.head.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        model.segment(**inputs)
    hook.remove()
    head_input = seen[0]  # (3 objects, channels + 3, h, w)
    expected_global = global_matching(inputs["embedding"], inputs["ref_embedding"], inputs["ref_labels"], 3)[0]
    expected_local = local_matching(inputs["embedding"], inputs["prev_embedding"], inputs["prev_labels"], 3,
                                    TINY_FEELVOS["local_max_distance"], 1)[0]
    assert torch.equal(head_input[:, :channels], inputs["features"].expand(3, -1, -1, -1))
    assert torch.allclose(head_input[:, channels], expected_global, atol=1e-6)
    assert torch.equal(head_input[:, channels + 1], one_hot_probabilities(inputs["prev_labels"], 3)[0])
    assert torch.allclose(head_input[:, channels + 2], expected_local, atol=1e-6)
    assert not torch.allclose(expected_global, expected_local, atol=1e-3)  # the two are told apart

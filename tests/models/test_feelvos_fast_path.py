"""FEELVOS inference's fast path (VOSPredictor(fast=..., compile=..., pipelined=...)) on CPU.

What a GPU run measures (time, host syncs per frame) needs CUDA; what is checked here is that each transform
keeps the answer: BatchNorm folding is exact up to float rounding, the fp32 fast path gives the base path's
masks, bf16 weights stay within a stated tolerance, the per-frame step compiles in one graph (so CUDA graphs
can capture it), labels are validated once per session and the one-frame-late yield loses no frame.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vidseg.models.feelvos.model as feelvos_model
from tests.helpers.feelvos import TINY_NET
from tests.helpers.stub_models import ShiftPreviousFEELVOS
from vidseg.inference.vos import VOSPredictor
from vidseg.models.feelvos import FEELVOS
from vidseg.models.feelvos.model import downsample_labels, fold_batch_norms, inference_copy, track_step
from vidseg.ops import global_matching

H, W = 48, 70  # 70 is not a multiple of the stride: every frame is padded

# bf16 weights (fast=True, precision="bf16-mixed"): logits within BF16_LOGIT_TOL of the fp32 network's, relative
# to the largest |logit| (measured: 0.7% on the tiny net; bf16 keeps 8 significant bits, 0.4% per rounding).
# Masks agree wherever the fp32 top-2 margin exceeds twice the logit error; below it a near-tie may flip (on this
# random net most pixels are near-ties: a mask-level comparison would say nothing).
BF16_LOGIT_TOL = 3e-2


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms (fresh ones are the identity, which folds trivially)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) or type(module).__name__ == "FrozenBatchNorm2d":
                n = module.running_mean.numel()
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


def _net(head_norm: str = "none", frozen_bn: bool = False) -> FEELVOS:
    torch.manual_seed(0)
    net = {**TINY_NET, "head_norm": head_norm,
           "backbone": {**TINY_NET["backbone"], "frozen_bn": frozen_bn}}
    return _randomise_norms(FEELVOS(**net)).eval()


def _video(num_frames: int = 4) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    frames = [np.roll(base, 2 * t, axis=1) for t in range(num_frames)]
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 10:30] = 3
    mask[25:45, 40:65] = 7
    return frames, mask


def _padded_images(frames: list[np.ndarray], divisor: int) -> torch.Tensor:
    images = torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames])
    return F.pad(images, (0, (-W) % divisor, 0, (-H) % divisor), value=120)


def _norm_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) or type(m).__name__ == "FrozenBatchNorm2d"
               for m in model.modules())


@pytest.mark.parametrize("head_norm, frozen_bn", [("batch", False), ("none", True)])
def test_folding_batch_norms_is_exact_and_leaves_the_model_alone(head_norm, frozen_bn):
    model = _net(head_norm, frozen_bn)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = _norm_count(model)
    folded = inference_copy(model, fold_bn=True)
    assert _norm_count(folded) == 0 and norms > 0  # every norm of ResNet, DeepLabv3+ and the head folded
    images = _padded_images(_video(1)[0], model.size_divisor)
    with torch.no_grad():
        for a, b in zip(model.embed(images), folded.embed(images), strict=True):
            assert (a - b).abs().max() <= 1e-5 * a.abs().max()  # equal up to float rounding
    after = model.state_dict()  # the original keeps its norms and tensors (validation shares them in training)
    assert _norm_count(model) == norms
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fold_batch_norms_skips_a_norm_it_cannot_prove_follows_the_conv():
    class Residual(nn.Module):  # bn(x + conv(x)): no conv feeds the norm alone
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(x + self.conv(x))

    module = _randomise_norms(Residual()).eval()
    assert fold_batch_norms(module) == 0
    assert isinstance(module.bn, nn.BatchNorm2d)


def test_fast_fp32_path_gives_the_base_masks():
    """Folding, channels_last, pinned uploads, Python object counts and one validation change no mask."""
    model = _net("batch")
    frames, mask = _video()
    base = [m for _, _, m in VOSPredictor(model).track(frames, mask)]
    fast = [m for _, _, m in VOSPredictor(model, fast=True).track(frames, mask)]
    for t, (a, b) in enumerate(zip(base, fast, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {t}")


def test_bf16_weights_stay_within_the_stated_tolerance():
    """fast + bf16-mixed casts the weights once and matches bf16 embeddings: one frame's logits against the
    fp32 network's, from the same frames and labels."""
    model = _net("batch")
    fast = inference_copy(model, fold_bn=True, channels_last=True, dtype=torch.bfloat16)
    assert fast.embedding_head.pointwise.weight.dtype == torch.bfloat16
    assert fast.pixel_mean.dtype == torch.float32  # normalisation stays fp32
    frames, mask = _video(2)
    images = _padded_images(frames, model.size_divisor)
    labels = torch.from_numpy(mask.astype(np.int64))
    labels = torch.where(labels == 3, 1, torch.where(labels == 7, 2, labels))
    labels = F.pad(labels, (0, (-W) % model.size_divisor, 0, (-H) % model.size_divisor), value=255)[None]
    logits = {}
    with torch.inference_mode():
        for name, net, layout in (("fp32", model, torch.contiguous_format), ("bf16", fast, torch.channels_last)):
            features, embedding = net.embed(images.contiguous(memory_format=layout))
            assert embedding.dtype == (torch.bfloat16 if name == "bf16" else torch.float32)
            small = downsample_labels(labels, tuple(embedding.shape[-2:]))
            logits[name] = net.segment(features[1:], embedding[1:], embedding[:1], small, embedding[:1], small, 2)
    ref, got = logits["fp32"], logits["bf16"]
    assert got.dtype == torch.float32
    scale = ref.abs().max()
    error = (got - ref).abs().max()
    assert error <= BF16_LOGIT_TOL * scale
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * error  # no error this size can swap these two
    assert clear.any()
    assert torch.equal(got.argmax(1)[clear], ref.argmax(1)[clear])


@pytest.mark.parametrize("fast", [False, True])
def test_per_frame_step_compiles_without_graph_breaks(fast):
    """fullgraph=True fails on any graph break: a host read (int(tensor), bool(tensor.any())), boolean-mask
    indexing or other data-dependent shapes in embed + matching + head would show here without a GPU."""
    torch._dynamo.reset()
    model = _net("batch")
    net = inference_copy(model, channels_last=True, dtype=torch.bfloat16) if fast else model
    layout = torch.channels_last if fast else torch.contiguous_format
    images = _padded_images(_video(2)[0], model.size_divisor).contiguous(memory_format=layout)
    with torch.inference_mode():
        _, embedding = net.embed(images[:1])
        labels = torch.zeros((1, *embedding.shape[-2:]), dtype=torch.long)
        labels[:, 2:5, 3:9] = 1
        args = (net, images[1:], (H, W), embedding, labels, embedding, labels, 1)
        eager = track_step(*args)
        compiled = torch.compile(track_step, fullgraph=True, dynamic=False, backend="eager")(*args)
    for a, b in zip(eager, compiled, strict=True):
        assert torch.equal(a, b)


def test_compiled_predictor_gives_the_eager_masks():
    torch._dynamo.reset()
    model = _net("batch")
    frames, mask = _video()
    base = [m for _, _, m in VOSPredictor(model, fast=True).track(frames, mask)]
    compiled = [m for _, _, m in VOSPredictor(model, fast=True, compile=True, compile_backend="eager")
                .track(frames, mask)]
    for t, (a, b) in enumerate(zip(base, compiled, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {t}")


def test_labels_are_validated_on_the_first_frame_and_after_new_objects(monkeypatch):
    flags = []
    real = feelvos_model.global_matching

    def spy(*args, validate=True, **kwargs):
        flags.append(validate)
        return real(*args, validate=validate, **kwargs)

    monkeypatch.setattr(feelvos_model, "global_matching", spy)
    frames, mask = _video(5)
    new = np.zeros((H, W), np.uint8)
    new[2:8, 2:8] = 9
    list(VOSPredictor(_net()).track(frames, masks={0: mask, 2: new}))
    # frame 1 checks the session's labels; frame 2 (objects added) segments with the checked ones; frame 3
    # checks the new reference; frame 4 does not read labels back
    assert flags == [True, False, True, False]


def test_the_first_frame_still_rejects_bad_labels():
    frames, mask = _video(3)
    session = VOSPredictor(_net()).start(frames[0], mask)
    session.ref_labels = session.ref_labels.clone()
    session.ref_labels[0, 0, 0] = 7  # 3 slots (background + 2 objects): 7 is no label
    with pytest.raises(ValueError, match="label value 7"):
        session.step(frames[1])


def test_matching_skips_the_value_check_only_when_asked():
    query = torch.rand(1, 4, 5, 6)
    labels = torch.zeros(1, 5, 6, dtype=torch.long)
    labels[0, 0, 0] = 9
    with pytest.raises(ValueError, match="label value 9"):
        global_matching(query, query, labels, 2)
    assert global_matching(query, query, labels, 2, validate=False).shape == (1, 2, 5, 6)


class _CountingFrames:
    """Frames handed out one by one, counting how many were read."""

    def __init__(self, frames):
        self.frames, self.read = frames, 0

    def __iter__(self):
        for frame in self.frames:
            self.read += 1
            yield frame


@pytest.mark.parametrize("masks", [{0: "first"}, {1: "first", 3: "new"}])
def test_pipelined_track_yields_every_frame_in_order_one_frame_late(masks):
    frames = [np.full((48, 52, 3), 20 + 30 * t, np.uint8) for t in range(6)]
    first = np.zeros((48, 52), np.uint8)
    first[:, 4:12], first[:, 16:28] = 3, 7
    new = np.zeros((48, 52), np.uint8)
    new[:, 40:44] = 9
    given = {k: first if v == "first" else new for k, v in masks.items()}
    expected = list(VOSPredictor(ShiftPreviousFEELVOS(shift=1)).track(frames, masks=given))
    source = _CountingFrames(frames)
    seen = []
    for index, ids, mask in VOSPredictor(ShiftPreviousFEELVOS(shift=1), pipelined=True).track(source, masks=given):
        seen.append((index, ids, mask))
        assert source.read == min(index + 2, len(frames))  # frame t comes out once frame t+1 is queued
    assert [(i, ids) for i, ids, _ in seen] == [(i, ids) for i, ids, _ in expected]  # the last one included
    for (_, _, a), (_, _, b) in zip(seen, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_no_host_sync_per_frame_on_cuda(precision):
    """After the first frame (validation, cudnn.benchmark) no frame synchronises the host with the GPU: CUDA's
    sync debug mode reports nothing while frames 2.. run (the pipelined mask's event wait is not a reported
    sync; it waits for a frame that is already one frame behind)."""
    import warnings

    model = _net("batch").cuda()
    frames, mask = _video(6)
    predictor = VOSPredictor(model, device="cuda", precision=precision, fast=True, pipelined=True)
    reported = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for index, _, _ in predictor.track(frames, mask):
            if index == 1:
                torch.cuda.synchronize()
                start = len(caught)
                torch.cuda.set_sync_debug_mode("warn")
        torch.cuda.set_sync_debug_mode(0)
        reported = [str(w.message) for w in caught[start:] if "synchroniz" in str(w.message)]
    assert not reported, reported

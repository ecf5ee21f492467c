"""Shapes and hand-checked values of VPSNet's modules on tiny inputs (random init, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidseg.backbones import FPN, get_backbone
from vidseg.models.vpsnet import (
    FuseModule,
    SpatialTemporalAttention,
    TinyFlow,
    TrackHead,
    UPSNetPanopticHead,
    UPSNetSemanticHead,
    build_detector,
    build_flow,
    crop_semantic_logits,
    paste_mask_logits,
)
from vidseg.models.vpsnet.flow import RAFTFlow, resize_flow

C = 32  # FPN width used in these tests (the paper's is 256)


@pytest.fixture(scope="module")
def pyramid() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    backbone = get_backbone("resnet18", output_stride=32, frozen_bn=True)
    fpn = FPN(backbone.out_channels, C)
    with torch.no_grad():
        return fpn(backbone(torch.randn(2, 3, 64, 128)))


def test_fpn_levels_p2_to_p6(pyramid):
    assert list(pyramid) == ["p2", "p3", "p4", "p5", "p6"]
    for k, name in enumerate(pyramid, start=2):
        assert pyramid[name].shape == (2, C, 64 // 2**k, 128 // 2**k)


def test_detector_train_and_detect_shapes(pyramid):
    torch.manual_seed(0)
    det = build_detector(num_things=3, in_channels=C, box_fc_channels=32, mask_channels=16,
                         box_batch_size_per_image=32, rpn_pre_nms_top_n={"training": 100, "testing": 50},
                         rpn_post_nms_top_n={"training": 50, "testing": 20}, score_thresh=0.0, detections_per_img=5)
    images = torch.zeros(2, 3, 64, 128)
    masks = torch.zeros(1, 64, 128, dtype=torch.uint8)
    masks[0, 8:40, 16:64] = 1
    targets = [{"boxes": torch.tensor([[16.0, 8.0, 64.0, 40.0]]), "labels": torch.tensor([2]), "masks": masks},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros(0, 64, 128, dtype=torch.uint8)}]
    det.train()
    losses, samples = det.forward_train(pyramid, images, [(64, 128)] * 2, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert samples[0]["roi_features"].shape[1:] == (C, 7, 7)
    assert (samples[0]["labels"] > 0).any()  # the ground-truth box is always a positive proposal
    assert (samples[1]["labels"] == 0).all()
    det.eval()
    with torch.no_grad():
        out = det.detect(pyramid, images, [(64, 128)] * 2)
    for r in out:
        n = len(r["boxes"])
        assert 0 < n <= 5
        assert r["mask_logits"].shape == (n, 28, 28) and r["roi_features"].shape == (n, C, 7, 7)
        assert r["labels"].min() >= 1 and r["labels"].max() <= 3
        assert (r["scores"][:-1] >= r["scores"][1:]).all()


def test_semantic_head_shape_and_loss(pyramid):
    head = UPSNetSemanticHead(5, in_channels=C, channels=(16, 8), num_groups=4)
    logits = head(pyramid)
    assert logits.shape == (2, 5, 16, 32)
    labels = torch.randint(0, 5, (2, 64, 128))
    labels[:, :8] = 255
    loss = head.loss(logits, labels)["loss_semantic"]
    assert torch.isfinite(loss) and loss.requires_grad
    assert head.loss(logits, torch.full((2, 64, 128), 255))["loss_semantic"] == 0  # all void: 0, not NaN


def test_deformable_convs_start_as_plain_convs():
    head = UPSNetSemanticHead(3, in_channels=8, channels=(8, 8), num_groups=2)
    block = head.subnet[0]
    x = torch.randn(1, 8, 6, 10)
    expected = F.conv2d(x, block.conv.weight, padding=1)
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)


def test_paste_and_crop_hand_checked():
    # one instance, box x 1..4 (cols 1, 2, 3), y 2..4 (rows 2, 3), in a 6 x 8 map
    boxes = torch.tensor([[1.0, 2.0, 4.0, 4.0]])
    semantic = torch.arange(3 * 6 * 8, dtype=torch.float32).view(3, 6, 8)
    crop = crop_semantic_logits(semantic, boxes, torch.tensor([2]))
    expected = torch.zeros(1, 6, 8)
    expected[0, 2:4, 1:4] = semantic[2, 2:4, 1:4]
    torch.testing.assert_close(crop, expected)
    # a constant mask logit resizes to itself
    pasted = paste_mask_logits(torch.full((1, 28, 28), 1.5), boxes, (6, 8))
    expected_mask = torch.zeros(1, 6, 8)
    expected_mask[0, 2:4, 1:4] = 1.5
    torch.testing.assert_close(pasted, expected_mask)
    # a box partly outside the map is clipped
    clipped = paste_mask_logits(torch.ones(1, 28, 28), torch.tensor([[6.0, -2.0, 10.0, 1.0]]), (6, 8))
    assert clipped.sum() == 2 * 1 and clipped[0, 0, 6:].eq(1).all()


def test_panoptic_head_instance_channel_is_semantic_plus_mask_in_box():
    num_stuff = 2
    head = UPSNetPanopticHead(num_stuff)
    semantic = torch.randn(4, 8, 10)  # classes 0, 1 stuff; 2, 3 things
    boxes = torch.tensor([[2.0, 1.0, 6.0, 5.0], [0.0, 0.0, 3.0, 3.0]])
    classes = torch.tensor([3, 2])
    masks = torch.randn(2, 8, 10)
    inside = torch.zeros(2, 8, 10, dtype=torch.bool)
    inside[0, 1:5, 2:6] = True
    inside[1, 0:3, 0:3] = True
    masks = masks * inside  # pasted mask logits are zero outside the box
    logits = head(semantic, boxes, classes, masks)
    assert logits.shape == (num_stuff + 2, 8, 10)
    torch.testing.assert_close(logits[:2], semantic[:2])
    for i, cls in enumerate(classes.tolist()):
        expected = torch.where(inside[i], semantic[cls] + masks[i], torch.zeros(8, 10))
        torch.testing.assert_close(logits[num_stuff + i], expected)


def test_panoptic_targets_and_loss():
    head = UPSNetPanopticHead(2)
    semantic = torch.tensor([[0, 1, 3, 3], [255, 2, 2, 1]])
    masks = torch.zeros(1, 2, 4, dtype=torch.uint8)
    masks[0, 0, 2:] = 1  # the class-3 instance; class-2 pixels have no instance
    target = head.targets(semantic, masks)
    assert target.tolist() == [[0, 1, 2, 2], [255, 255, 255, 1]]
    logits = torch.randn(3, 2, 4, requires_grad=True)
    loss = head.loss([logits], [target])["loss_panoptic"]
    expected = 0.5 * F.cross_entropy(logits[None], target[None], ignore_index=255)
    torch.testing.assert_close(loss, expected)


def test_tiny_flow_shape_and_zero_start():
    flow = TinyFlow(channels=8)
    out = flow(torch.rand(2, 3, 64, 128), torch.rand(2, 3, 64, 128))
    assert out.shape == (2, 2, 16, 32)
    assert out.abs().max() == 0  # the last conv starts at zero: identity warp


def test_raft_wrapper_shape_scale_and_freezing(tmp_path):
    raft = build_flow(name="raft_small", num_flow_updates=1)
    assert isinstance(raft, RAFTFlow) and not raft.frozen
    assert any(p.requires_grad for p in raft.parameters())
    with torch.no_grad():
        out = raft(torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 2, 16, 24)
    # weights given -> frozen: a local state dict file of torchvision's RAFT
    path = tmp_path / "raft.pth"
    torch.save(raft.raft.state_dict(), path)
    frozen = build_flow(name="raft_small", weights=path, num_flow_updates=1)
    assert frozen.frozen and not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert not frozen.raft.training
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_flow(name="raft_small", weights=tmp_path / "missing.pth")
    assert build_flow(name="none") is None


def test_resize_flow_scales_values():
    flow = torch.ones(1, 2, 16, 32)
    flow[:, 1] = 4.0
    small = resize_flow(flow, (4, 8))
    torch.testing.assert_close(small, torch.cat([torch.full((1, 1, 4, 8), 0.25), torch.ones(1, 1, 4, 8)], dim=1))


def test_fuse_zero_flow_identical_frames(pyramid):
    torch.manual_seed(0)
    fuse = FuseModule(C, flow_hidden=(8, 8, 8))
    zero = torch.zeros(2, 2, 16, 32)
    out = fuse(pyramid, pyramid, zero)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in pyramid.items()}
    assert all(torch.isfinite(v).all() for v in out.values())
    torch.testing.assert_close(fuse(pyramid, pyramid, zero)["p2"], out["p2"])  # deterministic
    # with a zero residual, zero flow warps the reference onto itself exactly
    torch.nn.init.zeros_(fuse.flow_refiner.convs[-1].weight)
    torch.nn.init.zeros_(fuse.flow_refiner.convs[-1].bias)
    bsf = fuse.gather(pyramid)
    aligned, residual = fuse.align(bsf, bsf, zero)
    assert residual.abs().max() == 0
    torch.testing.assert_close(aligned, bsf)


def test_fuse_gather_and_redistribute_sizes(pyramid):
    fuse = FuseModule(C, flow_hidden=(8, 8, 8))
    gathered = fuse.gather(pyramid)
    assert gathered.shape == pyramid["p2"].shape
    # gather = mean of nearest-upsampled levels
    manual = sum(F.interpolate(v, size=(16, 32), mode="nearest") for v in pyramid.values()) / 5
    torch.testing.assert_close(gathered, manual)


@pytest.mark.parametrize("compose", [False, True])
def test_fuse_warping_convention_on_shifted_image(compose):
    """The reference shows the target moved 3 px right: flow target->reference is u = +3, and warping the
    reference with it recovers the target (away from the border)."""
    fuse = FuseModule(4, flow_hidden=(4, 4, 4), compose_flow=compose)
    torch.nn.init.zeros_(fuse.flow_refiner.convs[-1].weight)
    torch.nn.init.zeros_(fuse.flow_refiner.convs[-1].bias)
    target = torch.randn(1, 4, 12, 20)
    reference = torch.zeros_like(target)
    reference[..., 3:] = target[..., :-3]
    flow = torch.zeros(1, 2, 12, 20)
    flow[:, 0] = 3.0
    aligned, _ = fuse.align(target, reference, flow)
    torch.testing.assert_close(aligned[..., :-3], target[..., :-3])
    assert aligned[..., -2:].abs().max() == 0  # sampled beyond the reference border: zero padding


def test_spatial_temporal_attention_shape():
    att = SpatialTemporalAttention(8)
    frames = torch.randn(2, 2, 8, 9, 13)  # odd sizes: the pyramid upsamples back to (9, 13)
    assert att(frames).shape == (2, 8, 9, 13)
    weights = att.temporal_attention(frames)
    assert weights.shape == (2, 2, 9, 13) and ((weights >= 0) & (weights <= 1)).all()


def test_track_head_affinity_and_loss():
    torch.manual_seed(0)
    head = TrackHead(C, hidden=16)
    emb = head.embed(torch.randn(5, C, 7, 7))
    ref = head.embed(torch.randn(3, C, 7, 7))
    assert emb.shape == (5, 16)
    aff = head.affinity(emb, ref)
    assert aff.shape == (5, 4)
    assert aff[:, 0].abs().max() == 0
    torch.testing.assert_close(aff[:, 1:], emb @ ref.T)
    targets = torch.tensor([1, 0, 3, -1, -1])  # two negatives, not scored
    loss = head.loss([aff], [targets])["loss_track"]
    expected = 0.5 * F.cross_entropy(aff[:3], targets[:3], reduction="sum") / 3  # official: / the positives
    torch.testing.assert_close(loss, expected)
    sampled = TrackHead(C, hidden=16, loss_normalizer="sampled")
    sampled.load_state_dict(head.state_dict())
    torch.testing.assert_close(sampled.loss([aff], [targets])["loss_track"], expected * 3 / 5)
    assert torch.isfinite(head.loss([aff[:, :1]], [torch.full((5,), -1)])["loss_track"])


def test_deformable_conv_runs_under_cpu_autocast_in_float32():
    """torchvision has no bfloat16 CPU deformable conv: under bf16 autocast it runs in float32 (same values)."""
    from vidseg.models.vpsnet.semantic_head import DeformableConv

    torch.manual_seed(0)
    conv = DeformableConv(4, 6)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        reference = conv(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = conv(x.bfloat16())
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, atol=0.05, rtol=0.05)  # only the bf16 input rounding differs


@pytest.mark.parametrize("compose", [False, True])
def test_fuse_residual_flow_one_warp_or_two(compose):
    """Initial flow 0.5 px and a residual of 0.5 px: compose_flow warps the reference once by 1 px (exact);
    the official path warps twice by 0.5 px (two bilinear half-pixel blurs: weights 1/4, 1/2, 1/4)."""
    fuse = FuseModule(4, flow_hidden=(4, 4, 4), compose_flow=compose)
    torch.nn.init.zeros_(fuse.flow_refiner.convs[-1].weight)
    with torch.no_grad():
        fuse.flow_refiner.convs[-1].bias.copy_(torch.tensor([0.5, 0.0]))
    target = torch.randn(1, 4, 6, 12)
    reference = torch.randn(1, 4, 6, 12)
    flow = torch.zeros(1, 2, 6, 12)
    flow[:, 0] = 0.5
    aligned, residual = fuse.align(target, reference, flow)
    torch.testing.assert_close(residual, flow)
    inner = aligned[..., :-2]
    if compose:
        expected = reference[..., 1:-1]
    else:
        expected = 0.25 * reference[..., :-2] + 0.5 * reference[..., 1:-1] + 0.25 * reference[..., 2:]
    torch.testing.assert_close(inner, expected)


def test_fuse_adds_the_fused_map_to_every_level_max_pooled(pyramid, monkeypatch):
    """Redistribution: P2 gets the fused map as it is, coarser levels its adaptive max pooling (official)."""
    fuse = FuseModule(C, flow_hidden=(8, 8, 8))
    fused = torch.randn(2, C, 16, 32)
    monkeypatch.setattr(fuse.refine, "forward", lambda x: fused)
    out = fuse(pyramid, pyramid, torch.zeros(2, 2, 16, 32))
    torch.testing.assert_close(out["p2"], pyramid["p2"] + fused)
    for k in (3, 4, 5, 6):
        size = pyramid[f"p{k}"].shape[-2:]
        torch.testing.assert_close(out[f"p{k}"], pyramid[f"p{k}"] + F.adaptive_max_pool2d(fused, size))
    torch.testing.assert_close(out["p3"][0, 0, 0, 0], pyramid["p3"][0, 0, 0, 0] + fused[0, 0, :2, :2].max())


def test_panoptic_targets_later_instances_win_overlaps_and_stuff_boundary():
    head = UPSNetPanopticHead(2)
    semantic = torch.tensor([[0, 1, 2, 2]])  # 2 = num_stuff: the first thing class, never a stuff target
    masks = torch.zeros(2, 1, 4, dtype=torch.uint8)
    masks[0, 0, 1:3] = 1
    masks[1, 0, 2:4] = 1  # overlaps instance 0 at column 2: the later instance takes it (official)
    assert head.targets(semantic, masks).tolist() == [[0, 2, 3, 3]]
    assert head.targets(semantic, masks[:0]).tolist() == [[0, 1, 255, 255]]


def test_fuse_aligns_the_reference_onto_the_target(pyramid, monkeypatch):
    fuse = FuseModule(C, flow_hidden=(8, 8, 8))
    target = {k: v[:1] for k, v in pyramid.items()}
    reference = {k: v[1:] for k, v in pyramid.items()}
    flow = torch.randn(1, 2, 16, 32)
    seen = []
    real_align = fuse.align
    monkeypatch.setattr(fuse, "align", lambda t, r, f: seen.append((t, r, f)) or real_align(t, r, f))
    attention_inputs = []
    hook = fuse.attention.register_forward_pre_hook(lambda module, args: attention_inputs.append(args[0]))
    fuse(target, reference, flow)
    hook.remove()
    (t, r, f), = seen
    torch.testing.assert_close(t, fuse.gather(target))
    torch.testing.assert_close(r, fuse.gather(reference))
    torch.testing.assert_close(f, flow)
    aligned, _ = real_align(t, r, f)
    torch.testing.assert_close(attention_inputs[0], torch.stack([t, aligned], dim=1))  # the target is frame 0

"""VPSNet end to end on tiny inputs: training losses of every variant, streaming inference, COCO init."""

from __future__ import annotations

import pytest
import torch

from vidseg.models.vpsnet import TINY, VARIANTS, VPSState, build_vpsnet, coco_key, load_coco_maskrcnn

H, W = 64, 128
NUM_STUFF, NUM_THINGS = 3, 2  # classes 0..2 stuff, 3..4 things


def make_batch(batch_size: int = 2, *, with_instances: bool = True, seed: int = 0) -> dict:
    """A training batch in the datamodule's format (vidseg.data.vps_common.collate_train) with two moving
    rectangles per clip."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch_size, 2, 3, H, W), dtype=torch.uint8, generator=g)
    semantic = torch.randint(0, NUM_STUFF, (batch_size, 2, H, W), generator=g)
    semantic[:, :, :4] = 255
    instances = []
    for _ in range(batch_size):
        pair = []
        for frame in range(2):
            boxes, masks = [], []
            for x0, y0, w, h in ((8 + 4 * frame, 8, 30, 20), (70 - 4 * frame, 28, 40, 30)):
                mask = torch.zeros(H, W, dtype=torch.uint8)
                mask[y0 : y0 + h, x0 : x0 + w] = 1
                boxes.append([x0, y0, x0 + w, y0 + h])
                masks.append(mask)
            n = 2 if with_instances else 0
            labels = torch.tensor([3, 4])[:n]
            for m, cls in zip(masks[:n], labels.tolist(), strict=True):
                semantic[len(instances), frame][m.bool()] = cls
            pair.append({"boxes": torch.tensor(boxes, dtype=torch.float32)[:n],
                         "labels": labels,
                         "masks": torch.stack(masks)[:n] if n else torch.zeros(0, H, W, dtype=torch.uint8),
                         "track_ids": torch.tensor([3000, 4001])[:n]})
        instances.append(pair)
    return {"images": images, "semantic": semantic, "panoptic": semantic.clone(), "instances": instances}


def tiny_model(variant: str, **kwargs):
    torch.manual_seed(0)
    return build_vpsnet(variant=variant, backbone={"name": "resnet18"}, num_stuff=NUM_STUFF, num_things=NUM_THINGS,
                        flow={"name": "tiny", "channels": 8}, **{**TINY, **kwargs})


EXPECTED_LOSSES = {"loss_semantic", "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
                   "loss_mask", "loss_panoptic"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_train_losses_and_gradients(variant):
    model = tiny_model(variant).train()
    assert model.variant == variant
    losses = model.forward_train(make_batch())
    with_track = variant in ("track", "fusetrack")
    assert set(losses) == EXPECTED_LOSSES | ({"loss_track"} if with_track else set())
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert value.requires_grad, name
    sum(losses.values()).backward()
    parts = {"semantic": model.semantic_head.classifier, "rpn": model.detector.rpn.head.cls_logits,
             "box": model.detector.roi_heads.box_predictor.cls_score,
             "mask": model.detector.roi_heads.mask_predictor.mask_fcn_logits, "fpn": model.fpn}
    if variant in ("fuse", "fusetrack"):
        parts["fuse"] = model.fuse.attention.fusion
        parts["flow"] = model.flow.decoder  # the tiny flow net trains with the rest
    if with_track:
        parts["track"] = model.track_head.fc2
    for name, module in parts.items():
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    # frozen stem + layer1 (official frozen_stages=1)
    assert all(p.grad is None for p in model.backbone.layer1.parameters())


def test_forward_train_without_instances_is_finite():
    model = tiny_model("fusetrack").train()
    losses = model.forward_train(make_batch(1, with_instances=False))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_forward_train_rejects_bad_batches():
    model = tiny_model("image").train()
    batch = make_batch(1)
    with pytest.raises(ValueError, match=r"\(B, 2, 3, H, W\)"):
        model.forward_train({**batch, "images": batch["images"][:, 0]})
    bad = make_batch(1)
    bad["instances"][0][0]["labels"] = torch.tensor([1, 3])  # a stuff class as an instance
    with pytest.raises(ValueError, match="thing classes"):
        model.forward_train(bad)


def _state_shapes(state: VPSState) -> dict:
    shapes = {}
    if state.features is not None:
        shapes.update({k: tuple(v.shape) for k, v in state.features.items()})
        shapes["image"] = tuple(state.image.shape)
    if state.mask_tracks is not None:
        shapes["track_map"] = tuple(state.mask_tracks.track_map.shape)
    return shapes


@pytest.mark.parametrize("variant", VARIANTS)
def test_streaming_inference_keeps_state_constant(variant):
    # a low score threshold so that a randomly initialised detector returns detections
    model = tiny_model(variant, detector={**TINY["detector"], "score_thresh": 0.0, "detections_per_img": 6},
                       stuff_area_limit=16).eval()
    frames = make_batch(2)["images"][:, 0]  # two "frames"; a third repeats the first
    state, shapes, outputs = None, [], []
    for image in (frames[0], frames[1], frames[0]):
        out, state = model.infer_frame(image[:, :60, :120], state)  # not a multiple of 32: padded inside
        outputs.append(out)
        shapes.append(_state_shapes(state))
    assert shapes[0] == shapes[1] == shapes[2]
    assert state.frame_index == 3
    for out in outputs:
        assert out.panoptic.shape == (60, 120) and out.panoptic.dtype == torch.int64
        assert out.semantic.shape == (60, 120)
        ids = {s["id"] for s in out.segments_info}
        assert set(out.panoptic.unique().tolist()) - {0} == ids
        for s in out.segments_info:
            assert s["area"] == int((out.panoptic == s["id"]).sum())
            assert s["isthing"] == (s["category_id"] >= NUM_STUFF)
            if s["isthing"]:
                assert s["id"] == (s["track_id"] + 1) * 1000 + s["category_id"]
            else:
                assert s["id"] == s["category_id"] + 1
        assert len(out.boxes) == len(out.scores) == len(out.labels) == len(out.track_ids) <= 6
    if variant in ("track", "fusetrack"):
        assert len(state.tracks) <= 3 * 6  # bounded by the detections
        assert state.tracks.features.shape[1] == TINY["track_hidden"]
        assert state.features is None if variant == "track" else state.features is not None
    if variant in ("image", "track"):
        assert state.image is None and state.features is None  # nothing kept that is not used
    # a new video of another size needs a new state
    with pytest.raises(ValueError, match="new VPSState"):
        model.infer_frame(frames[0], state)


def test_infer_frame_requires_eval_mode():
    model = tiny_model("image").train()
    with pytest.raises(RuntimeError, match="eval"):
        model.infer_frame(torch.zeros(3, H, W, dtype=torch.uint8))


def test_coco_maskrcnn_key_mapping(tmp_path):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    coco = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    assert coco_key("backbone.body.layer1.0.conv1.weight") == "backbone.layer1.0.conv1.weight"
    assert coco_key("backbone.fpn.inner_blocks.0.0.weight") == "fpn.fpn.inner_blocks.0.0.weight"
    assert coco_key("rpn.head.conv.0.0.weight") == "detector.rpn.head.conv.0.0.weight"
    assert coco_key("roi_heads.mask_head.0.0.weight") == "detector.roi_heads.mask_head.0.0.weight"
    model = build_vpsnet(variant="image", backbone={"name": "resnet50"}, flow=None)
    report = load_coco_maskrcnn(model, coco)
    own = model.state_dict()
    for key in ("backbone.body.layer3.2.conv2.weight", "backbone.body.bn1.running_var",
                "backbone.fpn.layer_blocks.3.0.bias", "rpn.head.bbox_pred.weight", "roi_heads.box_head.fc7.weight",
                "roi_heads.mask_head.3.0.weight", "roi_heads.mask_predictor.conv5_mask.weight"):
        torch.testing.assert_close(own[coco_key(key)], coco[key])
    # the 91-class predictors do not fit 8 things + background: skipped, the rest loaded
    assert {k for k in report["skipped"] if not k.endswith("num_batches_tracked")} == {
        "roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias",
        "roi_heads.mask_predictor.mask_fcn_logits.weight", "roi_heads.mask_predictor.mask_fcn_logits.bias"}
    assert not any(k.startswith(("semantic_head", "fuse", "track_head")) for k in report["loaded"])
    # from a file, through the builder
    path = tmp_path / "coco.pth"
    torch.save(coco, path)
    again = build_vpsnet(variant="image", backbone={"name": "resnet50"}, flow=None, coco_checkpoint=path)
    torch.testing.assert_close(again.state_dict()["detector.rpn.head.conv.0.0.weight"],
                               coco["rpn.head.conv.0.0.weight"])
    # another backbone does not fit: a clear error
    with pytest.raises(ValueError, match="does not fit"):
        load_coco_maskrcnn(tiny_model("image"), coco)


@pytest.mark.parametrize("frozen_stages, frozen", [(-1, []), (0, ["conv1", "bn1"]),
                                                   (1, ["conv1", "bn1", "layer1"]),
                                                   (2, ["conv1", "bn1", "layer1", "layer2"])])
def test_frozen_stages_freeze_exactly_the_stem_and_the_first_layers(frozen_stages, frozen):
    model = build_vpsnet(variant="image", backbone={"name": "resnet18"}, num_stuff=NUM_STUFF, num_things=NUM_THINGS,
                         flow=None, frozen_stages=frozen_stages, **TINY)
    parts = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    trains = {name: any(p.requires_grad for p in getattr(model.backbone, name).parameters()) for name in parts}
    assert trains == {name: name not in frozen for name in parts}
    assert all(p.requires_grad for p in model.fpn.parameters())


def test_frozen_batch_norm_follows_pretrained_weights(tmp_path):
    # random init: trained BN; with pretrained weights (or a COCO checkpoint): the official norm_eval
    # (statistics frozen, affine trained); frozen_bn=True freezes both (an option)
    from torchvision.ops import FrozenBatchNorm2d

    from vidseg.backbones.base import StatisticsFrozenBatchNorm2d

    model = build_vpsnet(variant="image", backbone={"name": "resnet18"}, num_stuff=NUM_STUFF, num_things=NUM_THINGS,
                         flow=None, **TINY)
    assert type(model.backbone.bn1) is torch.nn.BatchNorm2d
    path = tmp_path / "r18.pth"
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), path)
    pretrained = build_vpsnet(variant="image", backbone={"name": "resnet18", "weights": str(path)},
                              num_stuff=NUM_STUFF, num_things=NUM_THINGS, flow=None, **TINY)
    bn = pretrained.backbone.layer2[0].bn1
    assert isinstance(bn, StatisticsFrozenBatchNorm2d) and bn.weight.requires_grad and bn.bias.requires_grad
    assert not pretrained.backbone.bn1.weight.requires_grad  # frozen_stages=1: the stem stays fixed
    frozen = build_vpsnet(variant="image", backbone={"name": "resnet18", "weights": str(path), "frozen_bn": True},
                          num_stuff=NUM_STUFF, num_things=NUM_THINGS, flow=None, **TINY)
    assert type(frozen.backbone.layer2[0].bn1) is FrozenBatchNorm2d


@pytest.mark.parametrize("variant", ["image", "fuse"])
def test_forward_train_scores_the_target_frame_and_fuses_the_reference(variant, monkeypatch):
    """images[:, 0] is the target (the heads see its features), images[:, 1] the reference (the Fuse module's
    second input); the image variant never looks at the reference."""
    model = tiny_model(variant).train()
    batch = make_batch(2)
    seen = {}
    real_semantic = model.semantic_head.forward

    def semantic(features):
        seen["semantic"] = features["p2"].detach().clone()
        return real_semantic(features)

    monkeypatch.setattr(model.semantic_head, "forward", semantic)
    if variant == "fuse":
        hook = model.fuse.register_forward_pre_hook(
            lambda module, args: seen.update(target=args[0]["p2"].detach().clone(),
                                             reference=args[1]["p2"].detach().clone()))
    model.forward_train(batch)
    frames = model.pad(batch["images"][:, :2 if variant == "fuse" else 1])
    with torch.no_grad():
        expected = model.extract(model.normalize(frames.flatten(0, 1)))["p2"]
    if variant == "image":
        torch.testing.assert_close(seen["semantic"], expected)
        return
    hook.remove()
    torch.testing.assert_close(seen["target"], expected[0::2])
    torch.testing.assert_close(seen["reference"], expected[1::2])
    assert not torch.allclose(seen["semantic"], expected[0::2])  # the heads see the fused target

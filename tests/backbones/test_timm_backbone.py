"""timm encoders in the backbone zoo: taps, dilated output strides, weights (never downloaded here)."""

from __future__ import annotations

import pytest
import torch

from vidseg.backbones import build_deeplabv3plus, get_backbone

timm = pytest.importorskip("timm")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt would fail instead of going online


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_timm_encoder_features_at_the_dilated_strides(output_stride):
    torch.manual_seed(0)
    backbone = get_backbone("resnet10t", library="timm", output_stride=output_stride)
    assert backbone.out_channels == {"c2": 64, "c3": 128, "c4": 256, "c5": 512}
    assert backbone.strides == {name: min(s, output_stride) for name, s in
                                {"c2": 4, "c3": 8, "c4": 16, "c5": 32}.items()}
    features = backbone(torch.randn(1, 3, 64, 96))
    for name, tensor in features.items():
        stride = backbone.strides[name]
        assert tensor.shape == (1, backbone.out_channels[name], 64 // stride, 96 // stride), name


def test_timm_encoder_in_deeplabv3plus_and_strides_share_weights():
    torch.manual_seed(0)
    at16 = build_deeplabv3plus("mobilenetv3_small_050", library="timm", output_stride=16, decoder_channels=16,
                               aspp_channels=16)
    at8 = build_deeplabv3plus("mobilenetv3_small_050", library="timm", output_stride=8, decoder_channels=16,
                              aspp_channels=16)
    at8.load_state_dict(at16.state_dict())  # dilation changes no weight shape
    at16.eval(), at8.eval()  # (ASPP image pooling: batch-norm over one value in train mode)
    assert at16(torch.randn(1, 3, 64, 64)).shape == at8(torch.randn(1, 3, 64, 64)).shape == (1, 16, 16, 16)


def test_timm_weights_from_a_local_file_and_by_name(tmp_path, monkeypatch):
    torch.manual_seed(0)
    classifier = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t.pth"
    torch.save(classifier.state_dict(), path)  # a full classifier state dict: the head is dropped
    backbone = get_backbone("resnet10t", library="timm", weights=str(path))
    assert torch.equal(backbone.body.conv1[0].weight, classifier.conv1[0].weight)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        get_backbone("resnet10t", library="timm", weights=str(tmp_path / "missing.pth"))

    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: calls.append((name, kw)) or real(
        name, **{**kw, "pretrained": False}))
    get_backbone("resnet10t", library="timm", weights="DEFAULT")
    get_backbone("resnet10t", library="timm", weights="c3_in1k")
    assert [(name, kw["pretrained"]) for name, kw in calls] == [("resnet10t", True), ("resnet10t.c3_in1k", True)]


def test_timm_frozen_bn_and_errors():
    backbone = get_backbone("resnet10t", library="timm", frozen_bn=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    with pytest.raises(ValueError, match="not a timm model"):
        get_backbone("no_such_model", library="timm")
    with pytest.raises(ValueError, match="unknown backbone library"):
        get_backbone("resnet18", library="keras")
    # a model timm cannot dilate: a clear error naming it and the stride, not timm's TypeError
    with pytest.raises(ValueError, match=r"'vit_tiny_patch16_224' cannot be built.*output stride 8"):
        get_backbone("vit_tiny_patch16_224", library="timm", output_stride=8)

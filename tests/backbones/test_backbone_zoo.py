"""Shapes, strides and channels of every registered backbone at every output stride; the registry; and
the stride -> dilation conversion checked against torchvision's own dilated models."""

import pytest
import torch
import torchvision
from torch import nn

from vidseg.backbones import (
    FEATURE_NAMES,
    OUTPUT_STRIDES,
    build_deeplabv3plus,
    get_backbone,
    get_backbone_builder,
    list_backbones,
    mobilenet_v3_small,
    register_backbone,
    replace_stride_with_dilation,
    resnet18,
)
from vidseg.backbones.base import dilated_stages

CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
    "mobilenet_v3_large": (24, 40, 112, 960),
    "mobilenet_v3_small": (16, 24, 48, 576),
}


@pytest.fixture
def no_download(monkeypatch):
    """Make every download entry point fail, so a test passes only if nothing tries one."""

    def fail(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fail)
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fail)


def test_registry_lists_the_zoo():
    assert list_backbones() == sorted(CHANNELS)
    assert get_backbone_builder("resnet18") is resnet18


@pytest.mark.parametrize("output_stride", OUTPUT_STRIDES)
@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_features_have_documented_shapes(name, output_stride, no_download):
    torch.manual_seed(0)
    backbone = get_backbone(name, output_stride=output_stride).eval()
    expected_strides = {"c2": 4, "c3": 8, "c4": min(16, output_stride), "c5": min(32, output_stride)}
    assert backbone.strides == expected_strides
    assert backbone.output_stride == output_stride
    assert backbone.out_channels == dict(zip(FEATURE_NAMES, CHANNELS[name], strict=True))
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 64))
    assert list(features) == list(FEATURE_NAMES)
    for key, feature in features.items():
        size = 64 // expected_strides[key]
        assert feature.shape == (1, backbone.out_channels[key], size, size), key
        assert feature.dtype == torch.float32


def test_no_download_without_weights(no_download):
    build_deeplabv3plus("mobilenet_v3_small", output_stride=16, frozen_bn=True)
    resnet18(output_stride=8)


def test_odd_input_sizes_round_up():
    with torch.no_grad():
        features = resnet18(output_stride=16).eval()(torch.randn(1, 3, 50, 70))
    assert features["c2"].shape[-2:] == (13, 18)
    assert features["c5"].shape[-2:] == (4, 5)


def _conv_layout(module: nn.Module) -> list[tuple]:
    return [(m.stride, m.dilation, m.padding) for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_resnet_dilation_matches_torchvision():
    # The conversion used for BasicBlock ResNets, applied to a Bottleneck ResNet, must reproduce
    # torchvision's replace_stride_with_dilation exactly (OS8 dilates both layer3 and layer4).
    dilate = dilated_stages(8)
    ours = torchvision.models.resnet50()
    replace_stride_with_dilation([ours.layer2, ours.layer3, ours.layer4], dilate, exact=True)
    reference = torchvision.models.resnet50(replace_stride_with_dilation=dilate)
    assert _conv_layout(ours) == _conv_layout(reference)


def test_resnet18_dilation_pattern():
    backbone = resnet18(output_stride=8)
    # The formerly strided conv keeps the previous dilation, the convs after it get the new one.
    assert backbone.layer3[0].conv1.stride == (1, 1) and backbone.layer3[0].conv1.dilation == (1, 1)
    assert backbone.layer3[0].conv2.dilation == (2, 2)
    assert backbone.layer4[0].conv1.dilation == (2, 2)
    assert backbone.layer4[1].conv2.dilation == (4, 4) and backbone.layer4[1].conv2.padding == (4, 4)
    assert backbone.layer4[0].downsample[0].stride == (1, 1)


@pytest.mark.parametrize(("name", "output_stride"), [("resnet18", 8), ("resnet18", 16), ("resnet50", 8)])
def test_resnet_dilation_is_exact_a_trous(name, output_stride):
    # Same weights: the dilated features subsampled by the removed stride equal the strided ones, so
    # dilation keeps pretrained features valid while giving denser maps.
    torch.manual_seed(0)
    strided = get_backbone(name, output_stride=32).eval()
    dense = get_backbone(name, output_stride=output_stride).eval()
    dense.load_state_dict(strided.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        coarse, fine = strided(x), dense(x)
    for key in ("c4", "c5"):
        step = strided.strides[key] // dense.strides[key]
        torch.testing.assert_close(fine[key][..., ::step, ::step], coarse[key], rtol=1e-4, atol=1e-4)


def test_mobilenet_os16_matches_torchvision_dilated():
    ours = mobilenet_v3_small(output_stride=16)
    reference = torchvision.models.mobilenet_v3_small(dilated=True)
    assert _conv_layout(ours.features) == _conv_layout(reference.features)


def test_replace_stride_with_dilation_validates():
    stages = [[nn.Conv2d(1, 1, 3, stride=2, padding=1)], [nn.Conv2d(1, 1, 3, stride=2, padding=1)]]
    with pytest.raises(ValueError, match="every later stage"):
        replace_stride_with_dilation(stages, [True, False], exact=True)
    with pytest.raises(ValueError, match="same"):
        replace_stride_with_dilation([[nn.Conv2d(1, 1, 3, stride=2)]], [True], exact=True)


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="available backbones: mobilenet_v3_large, .*resnet50"):
        get_backbone("resnet9000")


def test_bad_output_stride():
    with pytest.raises(ValueError, match="output_stride must be one of"):
        get_backbone("resnet18", output_stride=4)


def test_builders_are_keyword_only():
    with pytest.raises(TypeError):
        resnet18(None)


def test_dilation_kwargs_are_rejected():
    with pytest.raises(TypeError, match="output_stride"):
        resnet18(replace_stride_with_dilation=[False, False, True])
    with pytest.raises(TypeError, match="output_stride"):
        mobilenet_v3_small(dilated=True)


def test_duplicate_registration_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet18")(lambda **kwargs: None)


def test_kwargs_reach_torchvision():
    backbone = resnet18(output_stride=32, zero_init_residual=True)
    assert torch.count_nonzero(backbone.layer1[0].bn2.weight) == 0

"""DeepLabv3+ decoder and the backbone + decoder feature extractor."""

import pytest
import torch

from vidseg.backbones import DeepLabV3PlusDecoder, build_deeplabv3plus, deeplab_atrous_rates


def test_atrous_rates_follow_output_stride():
    assert deeplab_atrous_rates(16) == (6, 12, 18)
    assert deeplab_atrous_rates(8) == (12, 24, 36)
    assert deeplab_atrous_rates(32) == (3, 6, 9)


def test_decoder_output_shape():
    decoder = DeepLabV3PlusDecoder(32, 16, aspp_channels=24, decoder_channels=20, low_proj_channels=8)
    out = decoder(torch.randn(2, 32, 4, 4), torch.randn(2, 16, 16, 16))  # train mode: batch > 1
    assert out.shape == (2, 20, 16, 16)
    assert decoder.out_channels == 20


@pytest.mark.parametrize("output_stride", [8, 16])
def test_features_at_stride_4(output_stride):
    model = build_deeplabv3plus(
        "mobilenet_v3_small", output_stride=output_stride, decoder_channels=32, aspp_channels=32
    ).eval()
    rate = deeplab_atrous_rates(output_stride)[0]
    assert model.decoder.aspp.convs[1][0].dilation == (rate, rate)
    assert model.out_channels == 32 and model.stride == 4
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 32, 16, 16)
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 32, 13, 18)


def test_train_at_os16_infer_at_os8():
    # FEELVOS: parameters trained at OS16 load unchanged into the OS8 model.
    train = build_deeplabv3plus("mobilenet_v3_small", output_stride=16, decoder_channels=16, aspp_channels=16)
    infer = build_deeplabv3plus("mobilenet_v3_small", output_stride=8, decoder_channels=16, aspp_channels=16)
    infer.load_state_dict(train.state_dict())


def test_kwargs_reach_the_backbone():
    model = build_deeplabv3plus("resnet18", output_stride=32, frozen_bn=True, zero_init_residual=True)
    assert model.backbone.output_stride == 32
    assert torch.count_nonzero(model.backbone.layer1[0].bn2.weight) == 0

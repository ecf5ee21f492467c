"""Weights: local state-dict files (round trip, classifier files, clear mismatch errors), torchvision
weight names (without downloading), and frozen BatchNorm."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from vidseg.backbones import freeze_batch_norm, get_backbone, mobilenet_v3_small, resnet18, resnet50


def _outputs(backbone: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return backbone.eval()(x)


def _assert_same_outputs(a: nn.Module, b: nn.Module, tol: float = 0.0) -> None:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out_a, out_b = _outputs(a, x), _outputs(b, x)
    for key in out_a:
        torch.testing.assert_close(out_a[key], out_b[key], rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_local_file_round_trip(name, tmp_path):
    torch.manual_seed(0)
    saved = get_backbone(name, output_stride=16)
    path = tmp_path / "backbone.pt"
    torch.save(saved.state_dict(), path)
    torch.manual_seed(1)  # a different random init, so equal outputs prove the file was loaded
    for weights in (path, str(path)):
        _assert_same_outputs(saved, get_backbone(name, output_stride=16, weights=weights))


def test_torchvision_classifier_file_loads(tmp_path):
    classifier = torchvision.models.resnet18()
    path = tmp_path / "resnet18_classifier.pth"
    torch.save(classifier.state_dict(), path)  # with fc.*: dropped on load
    backbone = resnet18(weights=path)
    torch.testing.assert_close(backbone.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)


def test_weights_load_across_output_strides(tmp_path):
    path = tmp_path / "os32.pt"
    torch.save(resnet18(output_stride=32).state_dict(), path)
    resnet18(output_stride=8, weights=path)  # dilation changes no parameter shape


def test_mismatched_file_names_the_file(tmp_path):
    path = tmp_path / "resnet18_weights.pt"
    torch.save(resnet18().state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet18_weights\.pt.*shape mismatches"):
        resnet50(weights=path)


def test_extra_and_missing_keys_are_listed(tmp_path):
    state = resnet18().state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"broken\.pt.*missing keys \(1\): layer1\.0\.conv1\.weight.*extra"):
        resnet18(weights=path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match=r"tensor\.pt.*not a state dict"):
        resnet18(weights=path)


def test_missing_file_lists_weight_names(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*IMAGENET1K_V1, DEFAULT"):
        resnet18(weights=tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="IMAGENET1K_V9"):
        resnet18(weights="IMAGENET1K_V9")  # not a weights name: taken as a path


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1", "MobileNet_V3_Small_Weights.IMAGENET1K_V1"])
def test_weight_names_go_through_torchvision(weights, monkeypatch):
    # Stand in for the download: the enum's get_state_dict is what torchvision builders call.
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v3_small()
    calls = []

    def fake_get_state_dict(self, *args, **kwargs):
        calls.append(self)
        return reference.state_dict()

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fake_get_state_dict)
    backbone = mobilenet_v3_small(weights=weights, output_stride=32)
    assert calls == [torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1]
    torch.testing.assert_close(
        backbone.features[4].block[1][0].weight, reference.features[4].block[1][0].weight
    )


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_frozen_bn_keeps_statistics_in_train_mode(name, tmp_path):
    torch.manual_seed(0)
    plain = get_backbone(name)
    path = tmp_path / "w.pt"
    torch.save(plain.state_dict(), path)
    frozen = get_backbone(name, weights=path, frozen_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    # BN affine terms are buffers now: only conv weights (and SE biases) remain trainable.
    n_bn_params = sum(
        m.weight.numel() + m.bias.numel() for m in plain.modules() if isinstance(m, nn.BatchNorm2d)
    )
    n_params = sum(p.numel() for p in plain.parameters())
    assert sum(p.numel() for p in frozen.parameters()) == n_params - n_bn_params

    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    frozen.train()(torch.randn(2, 3, 64, 64))
    for key, value in frozen.state_dict().items():
        assert torch.equal(value, before[key]), key
    # Freezing keeps statistics and eps (MobileNet uses eps=1e-3): same outputs as eval-mode BN.
    _assert_same_outputs(plain, frozen, tol=1e-4)


def test_frozen_file_loads_into_plain_backbone(tmp_path):
    path = tmp_path / "frozen.pt"
    torch.save(resnet18(frozen_bn=True).state_dict(), path)  # has no num_batches_tracked
    resnet18(weights=path)


def test_freeze_batch_norm_on_any_module():
    module = freeze_batch_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.BatchNorm2d(4, eps=0.1))))
    assert isinstance(module[1][0], FrozenBatchNorm2d) and module[1][0].eps == 0.1


def test_weights_type_error():
    with pytest.raises(TypeError, match="weights must be"):
        resnet18(weights=3)

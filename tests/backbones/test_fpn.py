"""FPN over backbone features."""

import pytest
import torch

from vidseg.backbones import FPN, mobilenet_v3_small


def test_levels_and_shapes():
    fpn = FPN({"c2": 8, "c3": 16, "c4": 32, "c5": 64}, out_channels=12)
    features = {f"c{k}": torch.randn(2, 8 * 2 ** (k - 2), 64 >> k, 64 >> k) for k in range(2, 6)}
    pyramid = fpn(features)
    assert list(pyramid) == ["p2", "p3", "p4", "p5", "p6"]
    for k, level in enumerate(pyramid.values(), start=2):
        assert level.shape == (2, 12, max(64 >> k, 1), max(64 >> k, 1))


def test_on_a_backbone():
    backbone = mobilenet_v3_small(output_stride=32).eval()
    fpn = FPN(backbone.out_channels, out_channels=16)
    with torch.no_grad():
        pyramid = fpn(backbone(torch.randn(1, 3, 128, 128)))
    assert {k: tuple(v.shape[-2:]) for k, v in pyramid.items()} == {
        "p2": (32, 32),
        "p3": (16, 16),
        "p4": (8, 8),
        "p5": (4, 4),
        "p6": (2, 2),
    }


def test_subset_of_levels():
    fpn = FPN({"c3": 4, "c4": 4, "c5": 4}, out_channels=4)
    assert fpn.out_names == ["p3", "p4", "p5", "p6"]


def test_bad_names():
    with pytest.raises(ValueError, match="c<level>"):
        FPN({"res2": 4})

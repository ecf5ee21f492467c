"""The traceable matching of ONNX exports (vidseg.onnx.matching) computes what vidseg.ops computes."""

from __future__ import annotations

import pytest
import torch

from vidseg.onnx import matching as tensor_matching
from vidseg.ops import global_matching, local_matching


def _inputs(seed: int, height: int, width: int, n: int):
    g = torch.Generator().manual_seed(seed)
    query = torch.rand(1, 6, height, width, generator=g) * 2
    other = torch.rand(1, 6, height, width, generator=g) * 2
    labels = torch.randint(0, n, (1, height, width), generator=g)
    labels[0, : height // 3, : width // 2] = 255  # ignored pixels
    return query, other, labels


@pytest.mark.parametrize(("height", "width", "n"), [(7, 11, 1), (13, 9, 3), (20, 17, 5)])
def test_global_matching_equals_the_ops(height, width, n):
    query, _, _ = _inputs(0, height, width, n)
    g = torch.Generator().manual_seed(1)
    # a reference of another shape, with one object absent (its distance is 1.0) when n > 2
    reference = torch.rand(1, 6, 5, 300, generator=g) * 2  # more than one QUERY_CHUNK of pixels
    labels = torch.randint(0, max(1, n - 1), (1, 5, 300), generator=g)
    labels[0, 0] = 255
    expected = global_matching(query, reference, labels, n, impl="reference")
    got = tensor_matching.global_matching(query, reference, labels, n)
    assert got.shape == expected.shape == (1, n, height, width)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    if n > 2:
        assert (got[0, n - 1] == 1.0).all()


def test_global_matching_with_no_reference_pixel_gives_one():
    query = torch.rand(1, 4, 6, 5)
    got = tensor_matching.global_matching(query, torch.zeros(1, 4, 1, 1), torch.full((1, 1, 1), 255), 2)
    assert torch.equal(got, torch.ones(1, 2, 6, 5))


@pytest.mark.parametrize(("max_distance", "dilation", "n"), [(0, 1, 2), (2, 1, 3), (3, 2, 4), (15, 1, 2)])
def test_local_matching_equals_the_ops(max_distance, dilation, n):
    query, previous, labels = _inputs(2, 14, 19, n)
    expected = local_matching(query, previous, labels, n, max_distance, dilation, impl="reference")
    got = tensor_matching.local_matching(query, previous, labels, n, max_distance, dilation)
    assert got.shape == expected.shape == (1, n, 14, 19)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert (got < 1).any()
    if max_distance <= 3:  # small windows: some hold no pixel of an object
        assert (got == 1).any()


def test_the_symbolic_one_hot_equals_f_one_hot_with_void_zeroed():
    """FEELVOS's previous-frame one-hot (a comparison, so N may be symbolic in an export) is F.one_hot on labels
    in [0, N) and all zeros on void (255) pixels."""
    import torch.nn.functional as F

    from vidseg.models.feelvos.model import one_hot_probabilities

    labels = torch.randint(0, 4, (2, 5, 6), generator=torch.Generator().manual_seed(0))
    labels[0, 0] = 255
    got = one_hot_probabilities(labels, 4)
    expected = F.one_hot(labels.clamp(max=3), 4).permute(0, 3, 1, 2).float() * (labels != 255)[:, None]
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    assert got[0, :, 0].sum() == 0 and (got[1].sum(0) == 1).all()

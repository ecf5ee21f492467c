"""Clip transforms and id remapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseg.constants import IMAGENET_MEAN_UINT8
from vidseg.data.transforms import (
    apply_clip_transform,
    build_clip_transform,
    clip_to_tensors,
    object_pixel_counts,
    remap_to_reference,
)


def test_remap_to_reference() -> None:
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[0, 0, :2] = 5
    masks[0, 1, :] = 2
    masks[0, 3, 3] = 255
    masks[1, 0, 0] = 7  # not in the reference -> background
    masks[1, 2, :] = 5
    masks[2, 3, :] = 2
    out, n = remap_to_reference(masks, 0)
    assert n == 2 and out.dtype == np.int64
    assert out[0, 1, 0] == 1 and out[0, 0, 0] == 2  # compacted in id order: 2 -> 1, 5 -> 2
    assert out[0, 3, 3] == 255  # void kept
    assert out[1, 0, 0] == 0 and (out[1, 2] == 2).all() and (out[2, 3] == 1).all()
    dropped, n_small = remap_to_reference(masks, 0, min_pixels=3)  # id 5 has 2 reference pixels
    assert n_small == 1 and (dropped[1, 2] == 0).all() and (dropped[2, 3] == 1).all()
    assert object_pixel_counts(out[0], 2).tolist() == [4, 2]


def test_clip_transform_shapes_seed_and_padding() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (3, 20, 30), dtype=np.uint8)
    a = apply_clip_transform(build_clip_transform((24, 16), seed=5), images, masks)
    b = apply_clip_transform(build_clip_transform((24, 16), seed=5), images, masks)
    assert a[0].shape == (3, 24, 16, 3) and a[0].dtype == np.uint8 and a[1].shape == (3, 24, 16)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # the Compose seed decides the draw
    # 20 rows < 24: 4 padded rows, void in masks (not background) and the mean colour in images.
    pad_images, pad_masks = apply_clip_transform(build_clip_transform((24, 16), scale=(1.0, 1.0), seed=0),
                                                 images, masks)
    void_rows = (pad_masks == 255).all(axis=(0, 2))
    assert void_rows.sum() == 4
    assert (pad_images[:, void_rows] == np.array(IMAGENET_MEAN_UINT8, np.uint8)).all()
    with pytest.raises(ValueError):
        build_clip_transform((8, 8), scale=(1.3, 1.0))
    with pytest.raises(ValueError):
        apply_clip_transform(build_clip_transform((8, 8)), images, masks[:2])


def test_clip_to_tensors() -> None:
    images = np.zeros((2, 5, 6, 3), np.uint8)
    images[1, 2, 3] = (1, 2, 3)
    t_images, t_masks = clip_to_tensors(images, np.ones((2, 5, 6), np.uint8))
    assert t_images.shape == (2, 3, 5, 6) and t_images.dtype == torch.uint8
    assert t_images[1, :, 2, 3].tolist() == [1, 2, 3]
    assert t_masks.dtype == torch.int64


def test_object_pixel_counts_at_stride_match_the_model_downsampling() -> None:
    """Counting at stride 4 must see what FEELVOS sees: its nearest downsampling to (ceil(H/4), ceil(W/4))."""
    from vidseg.models.feelvos.model import downsample_labels

    rng = np.random.default_rng(0)
    for height, width in ((465, 465), (64, 112), (37, 50)):
        mask = rng.integers(0, 4, (height, width)).astype(np.uint8)
        mask[: height // 3] = 2
        size = (-(-height // 4), -(-width // 4))
        small = downsample_labels(torch.from_numpy(mask.astype(np.int64))[None], size)[0].numpy()
        expected = np.bincount(small.ravel(), minlength=4)[1:4]
        assert object_pixel_counts(mask, 3, stride=4).tolist() == expected.tolist()
    assert object_pixel_counts(mask, 3).tolist() == np.bincount(mask.ravel(), minlength=4)[1:4].tolist()


def test_remap_min_pixels_is_inclusive() -> None:
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 0, :2] = 5  # 2 reference pixels
    masks[0, 1, :3] = 2  # 3 reference pixels
    masks[1] = masks[0]
    for min_pixels, kept in ((2, 2), (3, 1), (4, 0)):
        out, n = remap_to_reference(masks, 0, min_pixels=min_pixels)
        assert n == kept, min_pixels
    out, _ = remap_to_reference(masks, 0, min_pixels=3)
    assert out[1, 0, :2].tolist() == [0, 0] and out[1, 1, :3].tolist() == [1, 1, 1]
    # the reference may be any frame of the clip
    masks[1, 2, :] = 7
    out, n = remap_to_reference(masks, 1, min_pixels=4)
    assert n == 1 and (out[1, 2] == 1).all() and (out[0] == 0).all()


def test_object_pixel_counts_at_stride_by_hand() -> None:
    # 10 x 9 at stride 4 -> 3 x 3 samples at rows / columns floor(i * 10 / 3) = 0, 3, 6 and floor(i * 9 / 3) = 0, 3, 6
    mask = np.zeros((10, 9), np.uint8)
    mask[0, 0] = mask[3, 6] = mask[6, 3] = 1  # three sampled pixels
    mask[9, 8] = mask[1, 1] = 1                # never sampled
    mask[6, 6] = 2
    assert object_pixel_counts(mask, 2, stride=4).tolist() == [3, 1]
    assert object_pixel_counts(mask, 2).tolist() == [5, 1]
    assert object_pixel_counts(mask, 3, stride=4).tolist() == [3, 1, 0]

"""Clip transforms: one random augmentation draw applied identically to every frame and mask of a clip.

FEELVOS training draws twice per sample: once for the reference frame and once for the (previous, current)
pair (official num_frames_individual_preproc=1); see vidseg.data.davis.DavisTrainDataset.

Shapes: a clip is ``images (T, H, W, 3) uint8`` RGB and ``masks (T, H, W) uint8`` ids (255 = void).
The model normalises images itself, so transforms return uint8.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from vidseg.constants import IGNORE_LABEL, IMAGENET_MEAN_UINT8

# Padded image pixels get the ImageNet mean, so they normalise to ~0 instead of looking like black content.
# Padded mask pixels are void (255), not background: they are not part of the scene, so the loss must
# ignore them (ignore_index=255) and matching must not treat them as background evidence. Labelling them
# 0 would teach the model that the pad colour is background and bias it towards background at borders.
MASK_PAD_FILL = IGNORE_LABEL


def build_clip_transform(
    crop_size: tuple[int, int],
    scale: tuple[float, float] = (1.0, 1.3),
    *,
    hflip: bool = True,
    seed: int | None = None,
) -> A.Compose:
    """FEELVOS training augmentation: random up-scale, random crop (pad if needed), horizontal flip.

    Args:
        crop_size: (height, width) of the output.
        scale: range of the random scale factor (1.0-1.3 in FEELVOS).
        seed: seed of the Compose's own RNG (albumentations does not use numpy's global RNG); workers
            must reseed it (see vidseg.utils.seeding.worker_init_fn) or they all produce the same draws.
    """
    crop_h, crop_w = (int(s) for s in crop_size)
    lo, hi = (float(s) for s in scale)
    if not 0 < lo <= hi:
        raise ValueError(f"scale must be a range 0 < lo <= hi, got {scale}")
    transforms = [
        # RandomScale samples the factor in [1 + lo - 1, 1 + hi - 1] = [lo, hi].
        A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        A.PadIfNeeded(min_height=crop_h, min_width=crop_w, border_mode=cv2.BORDER_CONSTANT,
                      fill=IMAGENET_MEAN_UINT8, fill_mask=MASK_PAD_FILL, position="random"),
        A.RandomCrop(height=crop_h, width=crop_w),
    ]
    if hflip:
        transforms.append(A.HorizontalFlip(p=0.5))
    return A.Compose(transforms, seed=seed)


def apply_clip_transform(
    transform: A.Compose, images: np.ndarray, masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transform`` with one random draw to the whole clip.

    Args:
        images: (T, H, W, 3) uint8. masks: (T, H, W) uint8.
    Returns:
        images (T, h, w, 3) uint8 and masks (T, h, w) uint8, contiguous.
    """
    if images.ndim != 4 or masks.ndim != 3 or images.shape[:3] != masks.shape:
        raise ValueError(f"expected images (T,H,W,3) and masks (T,H,W), got {images.shape} and {masks.shape}")
    # images=/masks= make albumentations draw the parameters once and apply them to every frame.
    out = transform(images=images, masks=masks)
    return np.ascontiguousarray(out["images"]), np.ascontiguousarray(out["masks"])


def remap_to_reference(
    masks: np.ndarray, ref_index: int = 0, *, min_pixels: int = 1
) -> tuple[np.ndarray, int]:
    """Remap ids so that the objects of frame ``ref_index`` become 1..n in every frame.

    Ids absent from the reference frame (or with fewer than ``min_pixels`` pixels there) become background 0;
    kept ids are compacted to 1..n in increasing id order; void 255 stays 255.

    Args:
        masks: (T, H, W) integer ids in [0, 255].
    Returns:
        (T, H, W) int64 remapped masks and n, the number of kept objects.
    """
    masks = np.asarray(masks)
    counts = np.bincount(masks[ref_index].ravel().astype(np.int64), minlength=256)
    keep = [i for i in range(1, 255) if counts[i] >= min_pixels and counts[i] > 0]
    lut = np.zeros(256, dtype=np.int64)
    lut[IGNORE_LABEL] = IGNORE_LABEL
    lut[keep] = np.arange(1, len(keep) + 1)
    return lut[masks.astype(np.int64)], len(keep)


def object_pixel_counts(mask: np.ndarray, num_objects: int, stride: int = 1) -> np.ndarray:
    """Pixels per object id 1..num_objects of an ``(H, W)`` mask, ``(num_objects,) int64``.

    With ``stride`` > 1 the mask is first subsampled to ``(ceil(H / stride), ceil(W / stride))`` the way the
    model downsamples labels to its feature map (``F.interpolate(mode="nearest")``: source index
    ``floor(i * H / h)``), so the counts are what the model sees at that stride.
    """
    mask = np.asarray(mask)
    if stride > 1:
        height, width = mask.shape
        out_h, out_w = -(-height // stride), -(-width // stride)
        rows = np.minimum((np.arange(out_h) * (height / out_h)).astype(np.int64), height - 1)
        cols = np.minimum((np.arange(out_w) * (width / out_w)).astype(np.int64), width - 1)
        mask = mask[rows[:, None], cols[None, :]]
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=256)
    return counts[1:num_objects + 1]


def clip_to_tensors(images: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, H, W, 3) uint8`` + ``(T, H, W)`` ints -> ``(T, 3, H, W) uint8``, ``(T, H, W) int64`` tensors."""
    return (
        torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
        torch.from_numpy(np.ascontiguousarray(masks.astype(np.int64))),
    )

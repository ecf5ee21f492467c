"""DAVIS 2016/2017 datasets and the Lightning datamodule for VOS (FEELVOS).

Layout (see data/README.md)::

    <root>/JPEGImages/<resolution>/<seq>/00000.jpg ...
    <root>/Annotations/<resolution>/<seq>/00000.png ...   indexed PNG ids; DAVIS 2016: 0/255 binary
    <root>/ImageSets/<year>/<split>.txt                    one sequence name per line

Samples (all tensors on CPU):

- DavisTrainDataset item (a FEELVOS training sample: [reference, previous, current] frames of one video; the
  reference has its own augmentation draw, previous and current share one): ``images (3, 3, H, W) uint8`` RGB,
  not normalised; ``masks (3, H, W) int64`` ids remapped to the
  reference's objects 1..n (0 background, 255 void); ``num_objects`` int n; ``sequence`` str;
  ``frame_indices (3,) int64``.
- DavisEvalDataset item (one whole sequence): ``name`` str; ``images (T, 3, H, W) uint8``;
  ``masks (T, H, W) int64`` ground truth (frames without an annotation are all 255);
  ``annotated (T,) bool``; ``frame_ids`` list[str] ("00000", ...); ``num_objects`` int (max id of frame 0).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from vidseg.constants import IGNORE_LABEL
from vidseg.data.collate import collate_single
from vidseg.data.davis_layout import (  # noqa: F401  (list_sequences, sequence_paths re-exported)
    DAVIS_URL,
    FRAME_SUFFIXES,
    check_sequence,
    list_sequences,
    sequence_paths,
)
from vidseg.data.io import read_image, read_mask
from vidseg.data.loading import check_loader_settings, loader_options, resolve_pin_memory
from vidseg.data.sampling import split_epoch_index, train_sampler
from vidseg.data.transforms import (
    apply_clip_transform,
    build_clip_transform,
    clip_to_tensors,
    object_pixel_counts,
    remap_to_reference,
)
from vidseg.errors import DatasetLayoutError, MaskFormatError
from vidseg.utils.seeding import ReseedableRNG, worker_init_fn

# FEELVOS skips samples where a reference object has < 10 pixels at stride 4 (the matching resolution).
MIN_OBJECT_PIXELS = 10
MIN_OBJECT_STRIDE = 4


def _read_masks(paths: Sequence[Path], year: str) -> np.ndarray:
    """``(K, H, W) uint8``; DAVIS 2016 masks are 0/255 and become object 1."""
    return np.stack([read_mask(p, binary_255=str(year) == "2016") for p in paths])


def _read_frames(paths: Sequence[Path]) -> np.ndarray:
    """``(K, H, W, 3) uint8``; frames of different sizes are an error naming the file."""
    images = [read_image(p) for p in paths]
    for p, im in zip(paths[1:], images[1:], strict=True):
        if im.shape != images[0].shape:
            raise DatasetLayoutError(
                f"size mismatch: {p} is {im.shape[:2]} but {paths[0]} is {images[0].shape[:2]}"
            )
    return np.stack(images)


def _check_pair(frame: Path, mask_path: Path, image: np.ndarray, mask: np.ndarray) -> None:
    if image.shape[:2] != mask.shape:
        raise DatasetLayoutError(
            f"size mismatch: annotation {mask_path} is {mask.shape} but frame {frame} is {image.shape[:2]}"
        )


# ----------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------


class DavisTrainDataset(ReseedableRNG, Dataset):
    """FEELVOS training samples: [reference, previous q, current q+1] frames of a random sequence.

    The reference is a random frame of the video (it may coincide with q or q+1). As in the official input
    pipeline (num_frames_individual_preproc=1) the reference gets its own augmentation draw (scale, crop/pad,
    flip) and q, q+1 share another one. Ids are remapped to the reference's objects (see
    ``remap_to_reference``). A sample is kept only if the reference has an object and each of its objects
    covers at least ``min_object_pixels`` pixels at ``min_object_stride`` (official: 10 at stride 4) after
    augmentation; otherwise it is redrawn (other frames and crops), ``max_retries`` times per sequence, then
    in the other sequences. Objects are never turned into background to pass the check (that would teach
    the model to call a visible object background); a dataset where no sample passes is an error.

    Each item draws a sequence uniformly, so ``len(dataset) == samples_per_epoch``. The item key is an
    ``(epoch, index)`` pair from :class:`~vidseg.data.sampling.EpochSampler` (a plain index means epoch 0),
    and every draw of the item comes from an RNG seeded by ``(seed, epoch, index)`` only: a resumed run,
    or one with another number of workers, sees the same samples.

    Item: {"images": (3, 3, H, W) uint8, "masks": (3, H, W) int64, "num_objects": int,
    "sequence": str, "frame_indices": (3,) int64} with (H, W) = crop_size.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        year: str = "2017",
        split: str = "train",
        resolution: str = "480p",
        sequences: Sequence[str] | None = None,
        crop_size: tuple[int, int] = (465, 465),
        scale: tuple[float, float] = (1.0, 1.3),
        hflip: bool = True,
        samples_per_epoch: int = 1000,
        min_object_pixels: int = MIN_OBJECT_PIXELS,
        min_object_stride: int = MIN_OBJECT_STRIDE,
        max_retries: int = 10,
        max_frame_gap: int = 1,
        seed: int = 0,
    ) -> None:
        if max_frame_gap < 1:
            raise ValueError(f"max_frame_gap must be >= 1, got {max_frame_gap}")
        self.max_frame_gap = int(max_frame_gap)
        self.root = Path(root)
        self.year = str(year)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.samples_per_epoch = int(samples_per_epoch)
        self.min_object_pixels = int(min_object_pixels)
        self.min_object_stride = int(min_object_stride)
        self.max_retries = int(max_retries)
        self.seed = int(seed)
        if sequences is None:
            sequences = list_sequences(root, year=self.year, split=split, resolution=resolution)
        self.sequences: list[tuple[str, list[Path], list[Path]]] = []
        for name in sequences:
            frames, masks = check_sequence(root, name, resolution=resolution, require_all_masks=True)
            if len(frames) < 2:
                raise DatasetLayoutError(f"{name}: training needs at least 2 frames, found {len(frames)}")
            self.sequences.append((name, frames, masks))
        if not self.sequences:
            raise DatasetLayoutError(f"no training sequences in {root} ({split})")
        self.transform = build_clip_transform(self.crop_size, tuple(scale), hflip=hflip)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _draw(self, rng: np.random.Generator, seq_index: int) -> tuple[list[int], np.ndarray, np.ndarray, int] | None:
        """One sample of sequence ``seq_index``: (frame indices, images (3, H, W, 3) uint8, remapped masks
        (3, H, W) int64, n), or None when the reference fails the object-size check."""
        _, frames, masks = self.sequences[seq_index]
        t = len(frames)
        # FEELVOS uses consecutive frames (gap 1); larger gaps make "previous" a worse guess of "current",
        # which teaches the head to rely on matching more than on copying the previous mask.
        gap = int(rng.integers(1, min(self.max_frame_gap, t - 1) + 1))
        q = int(rng.integers(t - gap))
        idx = [int(rng.integers(t)), q, q + gap]
        images = _read_frames([frames[i] for i in idx])
        labels = _read_masks([masks[i] for i in idx], self.year)
        for i, k in enumerate(idx):
            _check_pair(frames[k], masks[k], images[i], labels[i])
        # The reference first, on its own draw: a failing reference costs no work on the other two frames.
        ref_image, ref_label = apply_clip_transform(self.transform, images[:1], labels[:1])
        ref_remapped, n = remap_to_reference(ref_label, 0)
        counts = object_pixel_counts(ref_remapped[0], n, stride=self.min_object_stride)
        if n == 0 or (counts < self.min_object_pixels).any():
            return None
        pair_images, pair_labels = apply_clip_transform(self.transform, images[1:], labels[1:])
        remapped, n = remap_to_reference(np.concatenate([ref_label, pair_labels]), 0)
        return idx, np.concatenate([ref_image, pair_images]), remapped, n

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        rng = self.item_generator(*split_epoch_index(index))
        # A uniformly drawn sequence first; the others only if it has no sample that passes the check.
        order = rng.permutation(len(self.sequences))
        for seq_index in order:
            for _ in range(self.max_retries + 1):
                sample = self._draw(rng, int(seq_index))
                if sample is not None:
                    idx, images, remapped, n = sample
                    image_t, mask_t = clip_to_tensors(images, remapped)
                    return {
                        "images": image_t,
                        "masks": mask_t,
                        "num_objects": n,
                        "sequence": self.sequences[int(seq_index)][0],
                        "frame_indices": torch.tensor(idx, dtype=torch.int64),
                    }
        raise DatasetLayoutError(
            f"no training sample of {self.root} has a reference frame whose objects all cover >= "
            f"{self.min_object_pixels} pixels at stride {self.min_object_stride} ({self.max_retries + 1} draws in "
            f"each of {len(self.sequences)} sequences, crop {self.crop_size}); lower data.min_object_pixels or "
            "use larger crops"
        )


class DavisEvalDataset(Dataset):
    """One item per sequence, all frames, for validation / evaluation (semi-supervised: frame 0 is given).

    Item: {"name": str, "images": (T, 3, H, W) uint8, "masks": (T, H, W) int64 (frames without an
    annotation are filled with 255), "annotated": (T,) bool, "frame_ids": list[str],
    "num_objects": int (max id in the first-frame mask, void excluded)}.
    Files are read when the item is requested.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        year: str = "2017",
        split: str = "val",
        resolution: str = "480p",
        sequences: Sequence[str] | None = None,
        max_sequences: int | None = None,
        max_frames: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.year = str(year)
        self.max_frames = max_frames
        if sequences is None:
            sequences = list_sequences(root, year=self.year, split=split, resolution=resolution)
        sequences = list(sequences)[:max_sequences] if max_sequences else list(sequences)
        self.sequences = [(name, *check_sequence(root, name, resolution=resolution)) for name in sequences]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, frames, masks = self.sequences[index]
        if self.max_frames:
            frames = frames[: self.max_frames]
        images = _read_frames(frames)
        by_stem = {m.stem: m for m in masks}
        labels = np.full(images.shape[:3], IGNORE_LABEL, dtype=np.uint8)
        annotated = np.zeros(len(frames), dtype=bool)
        for i, frame in enumerate(frames):
            if frame.stem in by_stem:
                labels[i] = self._read_mask_checked(frame, by_stem[frame.stem], images[i])
                annotated[i] = True
        first = labels[0]
        num_objects = int(first[first != IGNORE_LABEL].max(initial=0))
        if num_objects == 0:
            raise MaskFormatError(f"{by_stem[frames[0].stem]}: the first-frame annotation has no object")
        image_t, mask_t = clip_to_tensors(images, labels)
        return {
            "name": name,
            "images": image_t,
            "masks": mask_t,
            "annotated": torch.from_numpy(annotated),
            "frame_ids": [f.stem for f in frames],
            "num_objects": num_objects,
        }

    def _read_mask_checked(self, frame: Path, mask_path: Path, image: np.ndarray) -> np.ndarray:
        mask = read_mask(mask_path, binary_255=self.year == "2016")
        _check_pair(frame, mask_path, image, mask)
        return mask


# ----------------------------------------------------------------------------------------------------------
# Collate + datamodule
# ----------------------------------------------------------------------------------------------------------


def collate_train(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack training items: images (B, 3, 3, H, W) uint8, masks (B, 3, H, W) int64,
    num_objects (B,) int64 (may differ between items), frame_indices (B, 3) int64, sequence list[str]."""
    return {
        "images": torch.stack([b["images"] for b in batch]),
        "masks": torch.stack([b["masks"] for b in batch]),
        "num_objects": torch.tensor([int(b["num_objects"]) for b in batch], dtype=torch.int64),
        "frame_indices": torch.stack([b["frame_indices"] for b in batch]),
        "sequence": [b["sequence"] for b in batch],
    }


class DavisDataModule(pl.LightningDataModule):
    """DAVIS for FEELVOS: random 3-frame training samples and whole-sequence validation.

    ``split`` is the split validation reads and ``vidseg.evaluate`` scores (``data.split=<name>``), as for every
    datamodule; ``train_split`` the one training samples from.
    Missing or inconsistent data is reported by ``setup()`` with the messages of ``list_sequences`` /
    ``check_sequence`` (including how to get DAVIS or generate the toy set).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        year: str = "2017",
        resolution: str = "480p",
        train_split: str = "train",
        crop_size: Sequence[int] = (465, 465),
        scale: Sequence[float] = (1.0, 1.3),
        samples_per_epoch: int = 1000,
        batch_size: int = 2,
        num_workers: int = 0,
        val_max_sequences: int | None = None,
        val_max_frames: int | None = None,
        min_object_pixels: int = MIN_OBJECT_PIXELS,
        min_object_stride: int = MIN_OBJECT_STRIDE,
        max_frame_gap: int = 1,
        pin_memory: bool | str = "auto",
        prefetch_factor: int | None = None,
        seed: int = 0,
        split: str = "val",
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.year = str(year)
        self.resolution = resolution
        self.train_split = train_split
        self.split = split
        # Plain tuples: Hydra passes ListConfig, which must not leak into datasets or checkpoints.
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.samples_per_epoch = int(samples_per_epoch)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.val_max_sequences = val_max_sequences
        self.val_max_frames = val_max_frames
        self.min_object_pixels = int(min_object_pixels)
        self.min_object_stride = int(min_object_stride)
        self.max_frame_gap = int(max_frame_gap)
        resolve_pin_memory(pin_memory)  # a bad value stops here, not at the first loader
        check_loader_settings(self.num_workers, prefetch_factor)
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor  # see vidseg.data.loading
        self.seed = int(seed)
        self.train_dataset: DavisTrainDataset | None = None
        self.val_dataset: DavisEvalDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            if self.samples_per_epoch < self.batch_size:
                raise ValueError(
                    f"samples_per_epoch ({self.samples_per_epoch}) < batch_size ({self.batch_size}): "
                    "with drop_last the epoch would be empty"
                )
            self.train_dataset = DavisTrainDataset(
                self.root, year=self.year, split=self.train_split, resolution=self.resolution,
                crop_size=self.crop_size, scale=self.scale, samples_per_epoch=self.samples_per_epoch,
                min_object_pixels=self.min_object_pixels, min_object_stride=self.min_object_stride,
                max_frame_gap=self.max_frame_gap, seed=self.seed,
            )
        if stage in (None, "fit", "validate", "test") and self.val_dataset is None:
            self.val_dataset = DavisEvalDataset(
                self.root, year=self.year, split=self.split, resolution=self.resolution,
                max_sequences=self.val_max_sequences, max_frames=self.val_max_frames,
            )

    def _require(self, dataset: Dataset | None, stage: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(f"call setup({stage!r}) before asking for its dataloader")
        return dataset

    def _loader_options(self) -> dict[str, Any]:
        return loader_options(self.trainer, num_workers=self.num_workers, pin_memory=self.pin_memory,
                              prefetch_factor=self.prefetch_factor)

    def train_dataloader(self) -> DataLoader:
        dataset = self._require(self.train_dataset, "fit")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=train_sampler(self.trainer, len(dataset), self.batch_size, seed=self.seed),
            drop_last=True,
            worker_init_fn=worker_init_fn,
            collate_fn=collate_train,
            **self._loader_options(),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self._require(self.val_dataset, "validate"),
            batch_size=1,
            shuffle=False,
            worker_init_fn=worker_init_fn,
            collate_fn=collate_single,
            **self._loader_options(),
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

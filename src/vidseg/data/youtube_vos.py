"""YouTube-VOS 2018/2019 datasets, and the datamodules for YouTube-VOS and mixed DAVIS + YouTube-VOS training.

Layout and protocol: :mod:`vidseg.data.youtube_vos_layout` (data/README.md).

- :class:`YouTubeVOSTrainDataset`: FEELVOS training samples from ``<root>/<train_split>``, exactly as
  :class:`vidseg.data.davis.DavisTrainDataset` draws them (the same item).
- :class:`YouTubeVOSEvalDataset` item (one whole video, for validation): ``name`` str; ``images (T, 3, H, W)
  uint8``; ``masks (T, H, W) int64`` full ground truth; ``given`` dict frame index -> ``(H, W) int64`` mask
  of the objects that first appear there (0 elsewhere); ``first_frames`` dict object id -> frame index;
  ``frame_ids`` list[str].
- :class:`MixedVOSTrainDataset`: each item drawn from one of several training datasets with given
  probabilities (official FEELVOS: ``dataset_sampling_probabilities``, uniform by default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vidseg.data.collate import collate_single
from vidseg.data.davis import (
    MIN_OBJECT_PIXELS,
    MIN_OBJECT_STRIDE,
    DavisDataModule,
    DavisTrainDataset,
)
from vidseg.data.io import read_image, read_mask
from vidseg.data.names import checked_join
from vidseg.data.sampling import split_epoch_index
from vidseg.data.youtube_vos_layout import ground_truth_dir, list_videos, load_video, read_meta
from vidseg.errors import DataError, DatasetLayoutError
from vidseg.utils.seeding import mix_seed, worker_init_fn


class YouTubeVOSTrainDataset(DavisTrainDataset):
    """FEELVOS training samples from YouTube-VOS ``<root>/<split>`` (every frame annotated, as train is).

    The same sampling, augmentation, object-size redraws and item as :class:`DavisTrainDataset` (see there);
    objects absent from the drawn reference frame (e.g. appearing later) are background in that sample.
    ``videos`` restricts the videos (default: all of meta.json).
    """

    def __init__(self, root: str | os.PathLike, *, split: str = "train", videos: Sequence[str] | None = None,
                 **kwargs: Any) -> None:
        names = list(videos) if videos is not None else list_videos(root, split)
        # YouTube-VOS's <split>/{JPEGImages,Annotations}/<video> is DAVIS's layout with an empty resolution
        # folder, so DavisTrainDataset's checks (every frame annotated, sizes) read it as they are.
        super().__init__(checked_join(root, str(split), source="data.split", what="split"), sequences=names,
                         resolution="", **kwargs)


class YouTubeVOSEvalDataset(Dataset):
    """One item per video of ``<root>/<split>`` with its full ground truth (validation; see module docstring).

    Args:
        gt_annotations: folder ``<video>/<frame>.png`` of every frame (see
            :func:`vidseg.data.youtube_vos_layout.ground_truth_dir`; found automatically for train and the
            toy set's valid).
        max_videos / max_frames: keep the first videos / frames (objects first given later are dropped).
    Raises:
        DataError: no full ground truth for ``split`` (the message says what to give instead).
    """

    def __init__(self, root: str | os.PathLike, *, split: str = "valid", gt_annotations: str | None = None,
                 max_videos: int | None = None, max_frames: int | None = None) -> None:
        meta = read_meta(root, split)
        names = list_videos(root, split)
        names = names[:max_videos] if max_videos else names
        self.videos = [load_video(root, split, name, meta) for name in names]
        gt_dir = ground_truth_dir(root, split, self.videos, gt_annotations)
        if gt_dir is None:
            raise DataError(
                f"{Path(root)}/{split}: validation needs every frame annotated, but YouTube-VOS {split} has "
                "annotations only where each object first appears (the challenge server scores it). Train with "
                "data=davis_youtube_vos (validates on DAVIS), or give data.gt_annotations=<folder "
                "<video>/<frame>.png with every frame>, or data.split=<a split with every frame annotated>"
            )
        self.gt_dir = gt_dir
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video = self.videos[index]
        frames = video.frames[: self.max_frames] if self.max_frames else video.frames
        images = np.stack([read_image(p) for p in frames])
        masks = []
        for path in frames:
            gt_path = checked_join(self.gt_dir, video.name, f"{path.stem}.png", source=self.gt_dir, what="video id")
            if not gt_path.is_file():
                raise DatasetLayoutError(f"ground truth missing: {gt_path} (frame {path}); validation needs every "
                                         "frame annotated")
            mask = read_mask(gt_path)
            if mask.shape != images.shape[1:3]:
                raise DatasetLayoutError(f"size mismatch: {gt_path} is {mask.shape} but {path} is {images.shape[1:3]}")
            masks.append(mask)
        given = {t: torch.from_numpy(video.read_given_mask(t).astype(np.int64))
                 for t in video.given_frames() if t < len(frames)}
        first_frames = {obj: t for obj, t in video.first_frames().items() if t < len(frames)}
        return {
            "name": video.name,
            "images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            "masks": torch.from_numpy(np.stack(masks).astype(np.int64)),
            "given": given,
            "first_frames": first_frames,
            "frame_ids": [p.stem for p in frames],
        }


class MixedVOSTrainDataset(Dataset):
    """Training samples drawn from several datasets: each item picks dataset ``k`` with probability
    ``probabilities[k]`` and returns that dataset's item (plus ``"dataset"``: its name).

    ``len(self) == samples_per_epoch``. The choice of dataset, like the datasets' own draws, depends only on
    ``(seed, epoch, index)`` (the item key of :class:`vidseg.data.sampling.EpochSampler`), so a resumed run
    or one with another number of workers draws the same samples.
    """

    def __init__(self, datasets: Mapping[str, Dataset], probabilities: Mapping[str, float], *,
                 samples_per_epoch: int, seed: int = 0) -> None:
        if set(datasets) != set(probabilities):
            raise ValueError(f"sampling probabilities are for {sorted(probabilities)} but the datasets are "
                             f"{sorted(datasets)}")
        weights = np.array([float(probabilities[name]) for name in datasets], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"sampling probabilities must be >= 0 and not all 0, got {dict(probabilities)}")
        self.names = list(datasets)
        self.datasets = [datasets[name] for name in self.names]
        self.probabilities = weights / weights.sum()
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def reseed(self, seed: int) -> None:
        """Forwarded to the datasets (their non-item randomness); the choice itself needs no stream."""
        for k, dataset in enumerate(self.datasets):
            if hasattr(dataset, "reseed"):
                dataset.reseed(mix_seed(seed, k))

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        epoch, i = split_epoch_index(index)
        # A salt keeps this choice independent of the chosen dataset's own draws for the same key.
        rng = np.random.default_rng(np.random.SeedSequence([self.seed % (2**63), epoch, i, 0x6D6978]))
        k = int(rng.choice(len(self.datasets), p=self.probabilities))
        return {**self.datasets[k][(epoch, i)], "dataset": self.names[k]}


def _train_kwargs(module: DavisDataModule) -> dict[str, Any]:
    """The DavisTrainDataset keywords a datamodule was configured with (sampling, augmentation, seed)."""
    return dict(crop_size=module.crop_size, scale=module.scale, samples_per_epoch=module.samples_per_epoch,
                min_object_pixels=module.min_object_pixels, min_object_stride=module.min_object_stride,
                max_frame_gap=module.max_frame_gap, seed=module.seed)


class YouTubeVOSDataModule(DavisDataModule):
    """YouTube-VOS for FEELVOS: random 3-frame samples from ``train_split``, whole-video validation on ``split``.

    ``split`` is what validation reads and ``vidseg.evaluate`` predicts (the submission, default ``valid``).
    Validation needs full ground truth (train, the toy set's ``valid_full_annotations``, or
    ``gt_annotations``); real valid/test have none, so train on them with ``data=davis_youtube_vos``. The
    training keywords are those of :class:`vidseg.data.davis.DavisDataModule`.
    """

    def __init__(self, root: str | os.PathLike, *, train_split: str = "train", split: str = "valid",
                 gt_annotations: str | None = None, val_max_sequences: int | None = None,
                 val_max_frames: int | None = None, crop_size: Sequence[int] = (465, 465),
                 scale: Sequence[float] = (1.0, 1.3), samples_per_epoch: int = 1000, batch_size: int = 2,
                 num_workers: int = 0, min_object_pixels: int = MIN_OBJECT_PIXELS,
                 min_object_stride: int = MIN_OBJECT_STRIDE, max_frame_gap: int = 1,
                 pin_memory: bool | str = "auto", prefetch_factor: int | None = None, seed: int = 0) -> None:
        super().__init__(root, train_split=train_split, split=split, crop_size=crop_size, scale=scale,
                         samples_per_epoch=samples_per_epoch, batch_size=batch_size, num_workers=num_workers,
                         val_max_frames=val_max_frames, min_object_pixels=min_object_pixels,
                         min_object_stride=min_object_stride, max_frame_gap=max_frame_gap, pin_memory=pin_memory,
                         prefetch_factor=prefetch_factor, seed=seed)
        self.gt_annotations = gt_annotations
        self.val_max_sequences = val_max_sequences

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            if self.samples_per_epoch < self.batch_size:
                raise ValueError(f"samples_per_epoch ({self.samples_per_epoch}) < batch_size ({self.batch_size}): "
                                 "with drop_last the epoch would be empty")
            self.train_dataset = YouTubeVOSTrainDataset(self.root, split=self.train_split, **_train_kwargs(self))
        if stage in (None, "fit", "validate", "test") and self.val_dataset is None:
            self.val_dataset = YouTubeVOSEvalDataset(self.root, split=self.split, gt_annotations=self.gt_annotations,
                                                     max_videos=self.val_max_sequences, max_frames=self.val_max_frames)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._require(self.val_dataset, "validate"), batch_size=1, shuffle=False,
                          worker_init_fn=worker_init_fn, collate_fn=collate_single, **self._loader_options())


class DavisYouTubeVOSDataModule(DavisDataModule):
    """FEELVOS's training data: samples from DAVIS and YouTube-VOS train, validation on DAVIS.

    Every DAVIS keyword is :class:`vidseg.data.davis.DavisDataModule`'s (``root`` is DAVIS's, ``split`` the
    DAVIS split validation and ``vidseg.evaluate`` use). Each training sample comes from DAVIS
    ``train_split`` or YouTube-VOS ``youtube_vos_split`` with ``sampling_probabilities``
    (``{"davis": p, "youtube_vos": q}``, normalised; the official default when none is given is uniform).
    """

    def __init__(self, root: str | os.PathLike, *, youtube_vos_root: str | os.PathLike,
                 youtube_vos_split: str = "train", sampling_probabilities: Mapping[str, float] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.youtube_vos_root = Path(youtube_vos_root)
        self.youtube_vos_split = str(youtube_vos_split)
        probabilities = dict(sampling_probabilities or {"davis": 0.5, "youtube_vos": 0.5})
        self.sampling_probabilities = {str(k): float(v) for k, v in probabilities.items()}

    def setup(self, stage: str | None = None) -> None:
        fresh = stage in (None, "fit") and self.train_dataset is None
        super().setup(stage)
        if fresh:
            youtube_vos = YouTubeVOSTrainDataset(self.youtube_vos_root, split=self.youtube_vos_split,
                                                 **_train_kwargs(self))
            self.train_dataset = MixedVOSTrainDataset(
                {"davis": self.train_dataset, "youtube_vos": youtube_vos}, self.sampling_probabilities,
                samples_per_epoch=self.samples_per_epoch, seed=self.seed,
            )

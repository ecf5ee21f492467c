"""Reproducible randomness per DataLoader worker, rank and epoch, shared by every datamodule.

Datasets that own a random generator expose ``reseed(seed)``; :func:`worker_init_fn` calls it in each
worker with a seed that depends only on the run's seed, the epoch, the worker and the global rank.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info


def global_rank() -> int:
    """The process's global rank (0 without distributed training); also right inside DataLoader workers."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    # Lightning sets this per process (from RANK/SLURM_PROCID/... env vars or the strategy).
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def mix_seed(*values: int) -> int:
    """A 63-bit seed from several integers (SeedSequence hashes them well)."""
    state = np.random.SeedSequence([int(v) % (2**63) for v in values]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def _reseedable(dataset: Any) -> list[Any]:
    """Datasets with a ``reseed`` method inside (possibly nested) Subset/ConcatDataset wrappers."""
    if hasattr(dataset, "reseed"):
        return [dataset]
    if hasattr(dataset, "dataset"):
        return _reseedable(dataset.dataset)
    if hasattr(dataset, "datasets"):
        return [d for sub in dataset.datasets for d in _reseedable(sub)]
    return []


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: distinct, reproducible randomness per worker, rank and epoch.

    ``get_worker_info().seed`` is base_seed + worker_id, where base_seed is drawn from the parent's torch
    RNG per epoch (per run with persistent workers, whose streams then continue): reproducible under
    seed_everything and different per worker and epoch. Ranks are seeded alike by seed_everything, so the
    global rank is mixed in. Python, numpy, torch and the datasets' own RNGs (including albumentations'
    Compose RNG, which would otherwise be a copy of the parent's) are reseeded.
    """
    info = get_worker_info()
    if info is None:  # called outside a worker (tests, num_workers=0): nothing to do
        return
    seed = mix_seed(info.seed, global_rank())
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    for dataset in _reseedable(info.dataset):
        dataset.reseed(seed)


class ReseedableRNG:
    """Mixin for training datasets that draw samples and augmentations at random.

    The dataset sets ``self.seed`` (int) and ``self.transform`` (an albumentations Compose, whose own RNG must
    be reseeded too); :func:`worker_init_fn` calls :meth:`reseed` in each worker, and :meth:`_generator`
    gives the RNG to draw from.
    """

    seed: int
    transform: Any
    _rng: np.random.Generator | None = None
    _rng_pid: int | None = None

    def reseed(self, seed: int) -> None:
        """Reset this dataset's RNG and its albumentations RNG from ``seed`` (mixed with the dataset seed)."""
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(seed) % (2**63)]))
        self.transform.set_random_seed(int(self._rng.integers(2**31)))
        self._rng_pid = os.getpid()

    def item_generator(self, epoch: int, index: int) -> np.random.Generator:
        """The RNG of one training item, from ``(dataset seed, epoch, index)`` only; reseeds the transform too.

        Draws made from it do not depend on how many items this process drew before, on the worker or on
        the number of workers, so a resumed run reproduces the uninterrupted one (see
        :class:`vidseg.data.sampling.EpochSampler`, which gives each rank its own indices).
        """
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed) % (2**63), int(epoch), int(index)]))
        self.transform.set_random_seed(int(rng.integers(2**31)))
        return rng

    def _generator(self) -> np.random.Generator:
        # A forked worker without worker_init_fn would replay the parent's stream: reseed when the pid
        # changes. torch.initial_seed() is the run seed in the main process and base_seed + worker_id in a
        # worker, so this stays reproducible.
        if self._rng is None or self._rng_pid != os.getpid():
            self.reseed(mix_seed(torch.initial_seed(), global_rank()))
        return self._rng

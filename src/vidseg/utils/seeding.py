"""Reproducible randomness per DataLoader worker, rank and epoch, shared by every datamodule.

Datasets that own a random generator expose ``reseed(seed)``; :func:`worker_init_fn` calls it in each
worker with a seed that depends only on the run's seed, the epoch, the worker and the global rank.
"""

from __future__ import annotations

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

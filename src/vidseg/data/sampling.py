"""Training sampler whose draws depend only on (seed, epoch, rank, index), so a resumed run sees the same data.

A training dataset that draws at random (sequence, frames, augmentation) seeds that draw from the *item*,
not from a stream that advances with every item drawn in this process: :class:`EpochSampler` yields
``(epoch, index)`` pairs and the dataset builds its generator from ``(dataset seed, epoch, index)``
(:meth:`vidseg.utils.seeding.ReseedableRNG.item_generator`). A run resumed from a checkpoint in the middle
of an epoch skips the batches that epoch already trained on (:func:`batches_done_in_epoch`) and then draws
exactly what the uninterrupted run drew, whatever the number of workers.

Under DDP each rank takes every ``world_size``-th position of the epoch's order (it is a DistributedSampler,
so Lightning keeps it instead of wrapping it).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import DistributedSampler

from vidseg.utils.seeding import mix_seed


class EpochSampler(DistributedSampler):
    """``(epoch, index)`` pairs over ``range(num_items)``, shuffled per epoch, for one rank.

    Args:
        num_items: items per epoch (the dataset's length).
        seed: the run's seed (the order of an epoch depends on it and the epoch only).
        shuffle: a new permutation per epoch; False keeps index order.
        num_replicas, rank: the DDP world (1, 0 without DDP).

    ``set_epoch(e)`` is called by Lightning before each epoch. ``skip_batches(epoch, n, batch_size)`` makes
    the next pass over ``epoch`` start after its first ``n`` batches of this rank (resume mid-epoch).
    Each rank gets ``num_items // num_replicas`` items (the remainder is dropped, as with ``drop_last``).
    """

    def __init__(self, num_items: int, *, seed: int = 0, shuffle: bool = True, num_replicas: int = 1,
                 rank: int = 0) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in a world of {num_replicas}")
        # DistributedSampler's constructor only needs something sized; the order is computed in __iter__.
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=True)
        self.num_items = int(num_items)
        self._skip: tuple[int, int] | None = None  # (epoch, items to skip) for one resumed pass

    def skip_batches(self, epoch: int, batches: int, batch_size: int) -> None:
        """Start the next pass over ``epoch`` after this rank's first ``batches`` batches."""
        self._skip = (int(epoch), int(batches) * int(batch_size)) if batches > 0 else None

    def order(self, epoch: int) -> np.ndarray:
        """``(num_items,) int64``: the epoch's item order before it is split across ranks."""
        if not self.shuffle:
            return np.arange(self.num_items, dtype=np.int64)
        return np.random.default_rng(mix_seed(self.seed, epoch)).permutation(self.num_items)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = int(self.epoch)
        mine = self.order(epoch)[: self.num_samples * self.num_replicas][self.rank :: self.num_replicas]
        start = 0
        if self._skip is not None and self._skip[0] == epoch:
            start = min(self._skip[1], len(mine))
            self._skip = None  # only the resumed pass skips
        return iter([(epoch, int(i)) for i in mine[start:]])

    def __len__(self) -> int:
        return self.num_samples


def batches_done_in_epoch(trainer, batches_per_epoch: int) -> int:
    """Batches of the current epoch a (resumed) trainer has already trained on, from its restored step count.

    ``global_step`` counts optimizer steps; with gradient accumulation each takes ``accumulate_grad_batches``
    batches. Epochs of a run all have ``batches_per_epoch`` batches (the sampler drops the remainder).
    Returns 0 when the run starts fresh or at an epoch boundary.
    """
    if trainer is None or batches_per_epoch < 1:
        return 0
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    done = int(trainer.global_step) * accumulate - int(trainer.current_epoch) * batches_per_epoch
    return done if 0 < done < batches_per_epoch else 0


def split_epoch_index(index: int | tuple[int, int]) -> tuple[int, int]:
    """An item key from :class:`EpochSampler` ``(epoch, index)`` or a plain index (epoch 0)."""
    if isinstance(index, tuple):
        return int(index[0]), int(index[1])
    return 0, int(index)


def train_sampler(trainer, num_items: int, batch_size: int, *, seed: int, shuffle: bool = True) -> EpochSampler:
    """The training sampler of a datamodule: this rank's share, resuming mid-epoch where ``trainer`` stopped.

    ``trainer`` is the datamodule's trainer (None outside Lightning: one process, fresh start).
    """
    world, rank = (1, 0) if trainer is None else (int(trainer.world_size), int(trainer.global_rank))
    sampler = EpochSampler(num_items, seed=seed, shuffle=shuffle, num_replicas=world, rank=rank)
    batches_per_epoch = len(sampler) // batch_size
    done = batches_done_in_epoch(trainer, batches_per_epoch)
    if done:
        sampler.skip_batches(int(trainer.current_epoch), done, batch_size)
    return sampler

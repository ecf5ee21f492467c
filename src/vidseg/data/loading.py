"""DataLoader worker and memory options shared by every datamodule.

- ``persistent_workers`` whenever there are workers: a new epoch (and every validation) otherwise forks the
  workers again, re-opens the datasets and refills the prefetch queue, a stall of seconds per epoch.
  Draws stay reproducible: a training item seeds its own generator (:mod:`vidseg.data.sampling`).
- ``pin_memory`` ("auto": when the trainer runs on CUDA): Lightning copies batches with ``non_blocking=True``,
  which is asynchronous only from pinned (page-locked) memory; from pageable memory each copy blocks the host.
- ``prefetch_factor``: batches each worker loads ahead (None: PyTorch's default, 2). PyTorch refuses both
  ``persistent_workers`` and ``prefetch_factor`` without workers, so they are passed only with workers.
"""

from __future__ import annotations

from typing import Any

PIN_MEMORY_CHOICES = ("auto", True, False)


def resolve_pin_memory(pin_memory: bool | str | None, trainer: Any = None) -> bool:
    """``pin_memory`` as given (True/False), or for "auto"/None: whether ``trainer`` runs on a CUDA device
    (no trainer, as outside Lightning: False)."""
    if pin_memory is None or pin_memory == "auto":
        return trainer is not None and trainer.strategy.root_device.type == "cuda"
    if not isinstance(pin_memory, bool):
        raise ValueError(f"data.pin_memory must be one of {PIN_MEMORY_CHOICES}, got {pin_memory!r}")
    return pin_memory


def check_loader_settings(num_workers: int, prefetch_factor: int | None) -> None:
    """Refuse settings PyTorch would refuse later, with the config key to change."""
    if num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
    if prefetch_factor is not None and int(prefetch_factor) < 1:
        raise ValueError(f"data.prefetch_factor must be >= 1 or null (PyTorch's default), got {prefetch_factor}")


def loader_options(trainer: Any, *, num_workers: int, pin_memory: bool | str | None,
                   prefetch_factor: int | None = None) -> dict[str, Any]:
    """The ``DataLoader`` keywords ``num_workers``, ``pin_memory`` and, with workers, ``persistent_workers=True``
    and ``prefetch_factor``. ``trainer`` is the datamodule's (None outside Lightning)."""
    check_loader_settings(num_workers, prefetch_factor)
    options: dict[str, Any] = {"num_workers": int(num_workers), "pin_memory": resolve_pin_memory(pin_memory, trainer)}
    if num_workers > 0:
        options["persistent_workers"] = True
        if prefetch_factor is not None:
            options["prefetch_factor"] = int(prefetch_factor)
    return options

"""Checkpoints that survive kills and preemption, for every task.

- :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plugin): every checkpoint is written to a
  temporary file next to its destination, flushed to disk, then renamed over it. A kill at any point of a
  save leaves either the previous file or the new one, never a truncated one. (Lightning's own writer goes
  through a temporary file in the system temp folder, which is a copy, not a rename, when that folder is on
  another file system.)
- :class:`LastCheckpoint` writes ``<dirpath>/last.ckpt`` every ``every_n_steps`` optimizer steps and every
  ``every_minutes`` minutes, independently of validation, at the end of training, and when the run is
  stopped by SIGTERM (clusters send it before preemption; Lightning turns it into an exception at the end
  of the current step) or SIGINT (Ctrl-C: the run stops after the current step instead of in the middle
  of it). Lightning's ModelCheckpoint keeps the best checkpoint on the validation metric.
- :class:`StepSeed` reseeds torch's RNG before every training step from ``(seed, global_step, rank)``:
  randomness inside a step (reference-pixel sampling, mask damage, the detector's box sampling) then
  depends on the step only, so a run resumed from ``last.ckpt`` draws exactly what the uninterrupted run
  drew. Data draws are made reproducible the same way by :class:`vidseg.data.sampling.EpochSampler`.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from vidseg.data.io import chmod_like_open
from vidseg.errors import TrainingStopped
from vidseg.utils.seeding import mix_seed

LAST_NAME = "last.ckpt"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``.<name>.<random>.tmp`` in the destination folder, fsync, then ``os.replace``.

    Local paths only (remote URLs go through Lightning's writer unchanged).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            chmod_like_open(tmp)  # mkstemp makes 0600; a checkpoint is shared like any output
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class LastCheckpoint(pl.Callback):
    """Keep ``<dirpath>/last.ckpt`` fresh: every N steps, every M minutes, at the end, and on SIGTERM/SIGINT.

    Args:
        dirpath: the folder (normally the run's ``checkpoints/``, next to the best checkpoint).
        every_n_steps: save after every N optimizer steps; 0 turns the step trigger off.
        every_minutes: save when this many minutes have passed since the last save; 0 turns it off.
    """

    def __init__(self, dirpath: str | os.PathLike, *, every_n_steps: int = 1000, every_minutes: float = 10.0) -> None:
        if every_n_steps < 0 or every_minutes < 0:
            raise ValueError("every_n_steps and every_minutes must be >= 0 (0 turns a trigger off)")
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self.every_seconds = float(every_minutes) * 60.0
        self.last_path: str | None = None
        self._last_time = time.monotonic()
        self._saved_step = -1
        self._sigint = False
        self._previous_sigint: Any = None

    @property
    def state_key(self) -> str:
        return f"LastCheckpoint[{self.dirpath.name}]"

    def save(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` now (all ranks call it; the strategy writes on rank 0 only)."""
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.global_step == self._saved_step:
            return
        path = self.dirpath / LAST_NAME
        trainer.save_checkpoint(path)
        self.last_path, self._saved_step, self._last_time = str(path), trainer.global_step, time.monotonic()

    # -- triggers --------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_time = time.monotonic()
        self._saved_step = trainer.global_step  # a resumed run does not rewrite the checkpoint it loaded
        self._sigint = False
        try:
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread (e.g. a notebook runner): keep Python's handler
            self._previous_sigint = None

    def _on_sigint(self, signum, frame) -> None:
        if self._sigint:  # a second Ctrl-C: stop at once, as Python would
            raise KeyboardInterrupt
        self._sigint = True
        print("\nvidseg: Ctrl-C: stopping after this step and writing last.ckpt (press again to abort)",
              flush=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        due_steps = self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0
        due_time = self.every_seconds > 0 and time.monotonic() - self._last_time >= self.every_seconds
        if trainer.world_size > 1:  # every rank must take the same decision (saving has a barrier)
            due_time = bool(trainer.strategy.broadcast(due_time))
        stop = bool(trainer.strategy.broadcast(self._sigint)) if trainer.world_size > 1 else self._sigint
        if due_steps or due_time or stop:
            self.save(trainer)
        if stop:
            raise TrainingStopped("SIGINT", trainer.global_step, self.last_path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException at the end of a step (or validation batch), so the state is whole.
        if isinstance(exception, SIGTERMException):
            self.save(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None


class StepSeed(pl.Callback):
    """Seed torch's RNG before each training step from ``(seed, global_step, global rank)``.

    Makes in-step randomness a function of the step, so resuming reproduces the uninterrupted run.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        torch.manual_seed(mix_seed(self.seed, trainer.global_step, trainer.global_rank))

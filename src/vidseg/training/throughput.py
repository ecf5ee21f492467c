"""Training throughput written as training goes: steps/s, samples/s, frames/s and peak CUDA memory.

:class:`Throughput` measures windows of ``every_n_steps`` optimizer steps after ``warmup_steps`` (cudnn
autotuning, the allocator's first growth, compilation and the first data-loader fill are not training
speed). A window is timed by the wall clock between its two ends; on CUDA the device is synchronised at
those two ends only, never in between, so the measurement itself does not stall the launch queue (one
sync per window, and one at each end of a validation; Lightning already reads the logged losses back at its
own logging steps). Validation in the middle of a window is not training: the window's clock stops while
validation runs.

Each window is written at once through every logger of the trainer (CSVLogger, TensorBoard, ...) at the
window's last ``global_step``, the loggers are flushed (a CSVLogger otherwise holds rows back for 100
logging calls), and ``train/steps_per_s`` is shown in the progress bar. The partial window at the end of
training is written too, so a short run (or one stopped early) still reports a rate.

Keys: ``train/steps_per_s`` (optimizer steps), ``train/samples_per_s`` and, where a sample is a clip
(``batch[batch_key]`` is (B, T, C, H, W)), ``train/frames_per_s``: all processes together (this process's
count times the world size; every rank draws the same batch size). ``train/peak_cuda_mib`` is the peak
memory allocated by tensors on this process's CUDA device since training started.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

STEPS_PER_S = "train/steps_per_s"
SAMPLES_PER_S = "train/samples_per_s"
FRAMES_PER_S = "train/frames_per_s"
PEAK_CUDA_MIB = "train/peak_cuda_mib"


def batch_counts(batch: Any, key: str = "images") -> tuple[int, int]:
    """``(samples, frames)`` of a training batch from the shape of ``batch[key]``: (B, T, C, H, W) is B clips
    of T frames, anything else B single-frame samples. Shapes only: nothing is read from the device."""
    images = batch.get(key) if isinstance(batch, Mapping) else batch
    if not isinstance(images, torch.Tensor) or images.ndim == 0:
        raise ValueError(f"Throughput: the training batch has no tensor {key!r} to count samples from "
                         f"(found {type(images).__name__}); set callbacks.throughput.batch_key to a batched tensor")
    samples = int(images.shape[0])
    return samples, samples * (int(images.shape[1]) if images.ndim == 5 else 1)


class Throughput(pl.Callback):
    """Log training speed every ``every_n_steps`` optimizer steps after the first ``warmup_steps``.

    Args:
        every_n_steps: optimizer steps per measured window (one CUDA sync per window).
        warmup_steps: optimizer steps left out before the first window.
        batch_key: the batch entry whose leading dimensions count samples (and frames), see :func:`batch_counts`.
        prog_bar: show ``train/steps_per_s`` in the progress bar.

    ``history`` keeps every written window (``{"step": ..., key: value}``) for callers that run training in
    process (benchmarks).
    """

    def __init__(self, every_n_steps: int = 50, warmup_steps: int = 10, batch_key: str = "images",
                 prog_bar: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.throughput.every_n_steps must be >= 1, got {every_n_steps}")
        if warmup_steps < 0:
            raise ValueError(f"callbacks.throughput.warmup_steps must be >= 0, got {warmup_steps}")
        self.every_n_steps = int(every_n_steps)
        self.warmup_steps = int(warmup_steps)
        self.batch_key = batch_key
        self.prog_bar = bool(prog_bar)
        self.history: list[dict[str, float]] = []
        self._window_step: int | None = None  # global_step the open window started at (None: no window)
        self._elapsed = 0.0  # training seconds of the open window before its current stretch
        self._since: float | None = None  # when the current stretch started (None: paused by validation)
        self._samples = self._frames = 0  # counted since the window started
        self._clips = False
        self._warmup_until = self.warmup_steps  # global_step at which the first window opens

    # ---- timing ---------------------------------------------------------------------------------------

    @staticmethod
    def _now(trainer: pl.Trainer) -> float:
        """The wall clock once the device has run what was queued (a CUDA sync: window ends only)."""
        device = trainer.strategy.root_device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def _open(self, trainer: pl.Trainer) -> None:
        self._since = self._now(trainer)
        self._window_step, self._elapsed = trainer.global_step, 0.0
        self._samples = self._frames = 0

    def _close(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, prog_bar: bool) -> None:
        """Write the open window (if it has steps) and open the next one."""
        assert self._window_step is not None and self._since is not None
        now, step = self._now(trainer), trainer.global_step
        steps, seconds = step - self._window_step, self._elapsed + now - self._since
        if steps > 0 and seconds > 0:
            world = max(1, int(trainer.world_size))
            metrics = {STEPS_PER_S: steps / seconds, SAMPLES_PER_S: self._samples * world / seconds}
            if self._clips:
                metrics[FRAMES_PER_S] = self._frames * world / seconds
            device = trainer.strategy.root_device
            if device.type == "cuda":
                metrics[PEAK_CUDA_MIB] = torch.cuda.max_memory_allocated(device) / 2**20
            self._write(trainer, pl_module, step, metrics, prog_bar=prog_bar)
        self._since, self._window_step, self._elapsed = now, step, 0.0
        self._samples = self._frames = 0

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, metrics: dict[str, float],
               *, prog_bar: bool) -> None:
        self.history.append({"step": step, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            logger.save()  # written now, not when the logger's buffer fills
        if self.prog_bar and prog_bar:  # LightningModule.log is refused in on_train_end
            # A CPU tensor: a Python number would be copied to the device (a host sync) by LightningModule.log.
            pl_module.log(STEPS_PER_S, torch.tensor(metrics[STEPS_PER_S]), prog_bar=True, logger=False,
                          on_step=True, on_epoch=False)

    # ---- hooks ----------------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._window_step = self._since = None
        self._warmup_until = trainer.global_step + self.warmup_steps  # a resumed run warms up again
        if self._warmup_until == trainer.global_step:
            self._open(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self._window_step is None:
            if step >= self._warmup_until:
                self._open(trainer)  # this batch ends the warm-up; it is not counted
            return
        samples, frames = batch_counts(batch, self.batch_key)
        self._samples += samples
        self._frames += frames
        self._clips = self._clips or frames != samples
        if step - self._window_step >= self.every_n_steps:
            self._close(trainer, pl_module, prog_bar=True)

    def _in_fit(self, trainer: pl.Trainer) -> bool:
        return trainer.state.fn == "fit" and not trainer.sanity_checking and self._window_step is not None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._in_fit(trainer) and self._since is not None:  # validation is not training: pause the window
            self._elapsed += self._now(trainer) - self._since
            self._since = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._in_fit(trainer) and self._since is None:
            self._since = self._now(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._window_step is not None and self._since is not None and trainer.global_step > self._window_step:
            self._close(trainer, pl_module, prog_bar=False)
        self._window_step = self._since = None

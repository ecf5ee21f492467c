"""Train a model: ``python -m vidseg.train task=<vos|vps> [experiment=toy_vos] [trainer=gpu|ddp] [data.root=...]``.

Everything is built from the Hydra config; outputs (checkpoints, CSV logs, the resolved config) go to the
Hydra run directory. ``<run>/checkpoints/last.ckpt`` is kept fresh every ``callbacks.last_checkpoint.every_n_steps``
steps and ``every_minutes`` minutes, and written on SIGTERM/SIGINT; ``ckpt_path=<last.ckpt>`` resumes the run
where it stopped, drawing the same data and randomness as an uninterrupted run would (see vidseg.training).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from vidseg.errors import DataError
from vidseg.inference.checkpoint import read_checkpoint
from vidseg.tasks import get_task
from vidseg.training import AtomicCheckpointIO, LastCheckpoint, TrainingStopped
from vidseg.utils.cli import run_cli


def build_task(model_cfg: DictConfig) -> pl.LightningModule:
    """Instantiate the LightningModule with plain-container arguments (safe, weights_only checkpoints)."""
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    task_class = get_class(kwargs.pop("_target_"))
    return task_class(**kwargs)


def build_trainer(cfg: DictConfig, **overrides) -> pl.Trainer:
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if not loggers:  # logger=none: the learning-rate monitor has nowhere to write and would refuse to start
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    # Every checkpoint is written to a temporary file and renamed: a kill during a save never truncates one.
    overrides.setdefault("plugins", [AtomicCheckpointIO()])
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)


def _last_checkpoint(trainer: pl.Trainer) -> str | None:
    for callback in trainer.callbacks:
        if isinstance(callback, LastCheckpoint) and callback.last_path:
            return callback.last_path
    return getattr(trainer.checkpoint_callback, "last_model_path", "") or None


def train(cfg: DictConfig) -> dict:
    """Fit the task described by ``cfg``; returns the final metrics and checkpoint paths."""
    spec = get_task(cfg.task_name)
    if cfg.get("model") is None:
        raise DataError(f"task={spec.name} ({spec.summary}) has no trainable model in this version of vidseg; "
                        f"`python -m vidseg.evaluate task={spec.name} predictions=<dir>` scores any method's output")
    if cfg.get("ckpt_path"):  # a missing, truncated or other-task checkpoint: a clear error before any work
        read_checkpoint(cfg.ckpt_path, task=spec.name)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    task = build_task(cfg.model)
    trainer = build_trainer(cfg)
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except SIGTERMException:  # Lightning stops at the end of a step; LastCheckpoint has saved it
        raise TrainingStopped("SIGTERM", trainer.global_step, _last_checkpoint(trainer)) from None

    checkpoint = trainer.checkpoint_callback
    result = {
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "best_checkpoint": getattr(checkpoint, "best_model_path", "") or None,
        "last_checkpoint": _last_checkpoint(trainer),
        "output_dir": trainer.default_root_dir,
    }
    if trainer.is_global_zero:
        print("\nTraining finished.")
        for key, value in sorted(result["metrics"].items()):
            print(f"  {key:<28s} {value:.4f}")
        for key in ("best_checkpoint", "last_checkpoint"):
            if result[key]:
                print(f"  {key:<28s} {Path(result[key]).resolve()}")
        print(f"  {'logs':<28s} {Path(trainer.default_root_dir).resolve()}")
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run_cli(lambda: train(cfg))


if __name__ == "__main__":
    main()

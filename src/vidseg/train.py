"""Train a model: ``python -m vidseg.train task=<vos|vps> [experiment=toy_vos] [trainer=gpu|ddp] [data.root=...]``.

Everything is built from the Hydra config; outputs (checkpoints, CSV logs, the resolved config) go to the
Hydra run directory. ``<run>/checkpoints/last.ckpt`` is kept fresh every ``callbacks.last_checkpoint.every_n_steps``
steps and ``every_minutes`` minutes, and written on SIGTERM/SIGINT; ``ckpt_path=<last.ckpt>`` resumes the run
where it stopped, drawing the same data and randomness as an uninterrupted run would (see vidseg.training).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from vidseg.errors import DataError
from vidseg.inference.checkpoint import check_resume_fits, read_checkpoint
from vidseg.pretrained import training_provenance
from vidseg.tasks import get_task
from vidseg.training import AtomicCheckpointIO, LastCheckpoint, TrainingStopped
from vidseg.utils.cli import print_usage_on_help, run_cli
from vidseg.utils.config_check import ConfigError, check_config, user_paths

EXAMPLE = "python -m vidseg.train task=vos data.root=/datasets/DAVIS backbone.weights=IMAGENET1K_V1 trainer=gpu"

USAGE = f"""\
python -m vidseg.train: train a model; checkpoints, logs and the resolved config go to the run folder.

Options that matter:
  task=vos|vps                 FEELVOS on DAVIS (vos), VPSNet on Cityscapes-VPS (vps)
  experiment=toy_vos|toy_vps   a small recipe on the toy sets (CPU, minutes)
  data=<dataset>               vos: davis (default), davis_youtube_vos, youtube_vos; vps: cityscapes_vps, viper
  data.root=<folder>           the dataset's folder
  data.batch_size=<n>          data.num_workers=<n>   data.crop_size=[h,w]
  backbone=<name>              resnet18|resnet50|resnet101|mobilenet_v3_large|mobilenet_v3_small|timm
  backbone.weights=<name|file> pretrained encoder weights: a torchvision name or a local state-dict file
  model.variant=<name>         task=vps: image|fuse|track|fusetrack
  trainer=cpu|gpu|ddp          trainer.max_steps=<n>   trainer.precision=32|bf16-mixed|16-mixed
  ckpt_path=<file>             resume a run from its <run>/checkpoints/last.ckpt (same config)
  hydra.run.dir=<folder>       the run folder (default: outputs/<task>/train/<time>)

Examples:
  {EXAMPLE}
  python -m vidseg.train task=vps experiment=toy_vps model.variant=image
  python -m vidseg.train task=vos ckpt_path=outputs/vos/train/<time>/checkpoints/last.ckpt
"""


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
    check_config(cfg, command="train", example=EXAMPLE)
    spec = get_task(cfg.task_name)
    if cfg.get("model") is None:
        raise DataError(f"task={spec.name} ({spec.summary}) has no trainable model in this version of vidseg; "
                        f"`python -m vidseg.evaluate task={spec.name} predictions=<dir>` scores any method's output")
    resume = None
    if cfg.get("ckpt_path"):  # a missing, truncated or other-task checkpoint: a clear error before any work
        resume = read_checkpoint(cfg.ckpt_path, task=spec.name)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    try:
        task = build_task(cfg.model)
    except DataError:
        raise
    except ValueError as err:  # the task's constructor checks its choices (model.variant, model.loss.reduction...)
        raise ConfigError(f"{err}; fix that model.* value (python -m vidseg.train --help)") from err
    task.provenance = training_provenance(OmegaConf.to_container(cfg.data, resolve=True))
    trainer = build_trainer(cfg)
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except SIGTERMException:  # Lightning stops at the end of a step; LastCheckpoint has saved it
        raise TrainingStopped("SIGTERM", trainer.global_step, _last_checkpoint(trainer)) from None
    except RuntimeError:
        # Resuming a checkpoint of another configuration: Lightning's strict load lists every state-dict key;
        # say which config keys differ instead. The network may be built only in setup() (its classes come
        # from the data), so this is checked where Lightning restores the weights, after setup().
        if resume is None or trainer.global_step > 0 or getattr(task, "model", None) is None:
            raise
        check_resume_fits(resume, task.model, OmegaConf.to_container(cfg.model, resolve=True))
        raise

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
def _hydra_main(cfg: DictConfig) -> None:
    run_cli(lambda: train(cfg), user_paths=lambda: user_paths(cfg))


def main() -> None:
    """``python -m vidseg.train``: the usage first on ``--help``, then Hydra's."""
    print_usage_on_help(sys.argv[1:], USAGE)
    _hydra_main()


if __name__ == "__main__":
    main()

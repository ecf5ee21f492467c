"""Evaluate a task on its benchmark: ``python -m vidseg.evaluate task=<vos|vps> ...``.

    python -m vidseg.evaluate task=vos ckpt=<ckpt> data.root=<DAVIS> data.split=val       # J&F
    python -m vidseg.evaluate task=vos data.root=<DAVIS> predictions=<results dir>
    python -m vidseg.evaluate task=vps data.root=<cityscapes_vps> predictions=<submission dir>  # VPQ, STQ
    python -m vidseg.evaluate task=vps data=viper data.root=<viper_vps> predictions=<submission dir>

The task's own evaluator (``vidseg.tasks``) does the work; results go to ``output_dir`` (the run directory
unless given) and a table is printed.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vidseg.tasks import get_task
from vidseg.utils.cli import run_cli


def evaluate(cfg: DictConfig):
    """Score ``cfg.ckpt``'s predictions or the folder ``cfg.predictions`` with the task's protocol."""
    return get_task(cfg.task_name).load("evaluate")(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_cli(lambda: evaluate(cfg))


if __name__ == "__main__":
    main()

"""Evaluate a task on its benchmark: ``python -m vidseg.evaluate task=<vos|vps> ...``.

    python -m vidseg.evaluate task=vos ckpt=<ckpt> data.root=<DAVIS> data.split=val       # J&F
    python -m vidseg.evaluate task=vos data.root=<DAVIS> predictions=<results dir>
    python -m vidseg.evaluate task=vps data.root=<cityscapes_vps> predictions=<submission dir>  # VPQ, STQ
    python -m vidseg.evaluate task=vps data=viper data.root=<viper_vps> predictions=<submission dir>

The task's own evaluator (``vidseg.tasks``) does the work; results go to ``output_dir`` (the run directory
unless given) and a table is printed.

Scoring a results folder is a sub-second command, so its fixed costs matter (``bench/jf_speed.py``): the
cyclic garbage collector is off while Hydra composes the config (it would walk Hydra's and OmegaConf's
objects again and again, about 30 ms) and back on when the work starts; Hydra composes the config once, not
twice, when the command line cannot ask for a multirun (50 ms, :func:`vidseg.utils.cli.skip_hydra_mode_probe`);
and a finished run exits without the interpreter's teardown (40 ms, :func:`vidseg.utils.cli.exit_now`).
"""

from __future__ import annotations

import gc
import sys

if __name__ == "__main__":
    gc.disable()  # until run_cli starts the work: see the module docstring

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from vidseg.tasks import get_task  # noqa: E402
from vidseg.utils.cli import exit_now, print_usage_on_help, run_cli, skip_hydra_mode_probe  # noqa: E402
from vidseg.utils.config_check import check_config, user_paths  # noqa: E402

EXAMPLE = "python -m vidseg.evaluate task=vos data.root=/datasets/DAVIS predictions=results/davis-val"

USAGE = f"""\
python -m vidseg.evaluate: score a checkpoint, or any method's results folder, on a benchmark.

Options that matter (give ckpt= or predictions=):
  task=vos|vps           J&F on DAVIS / YouTube-VOS (vos), VPQ and STQ on Cityscapes-VPS / VIPER (vps)
  data=<dataset>         vos: davis (default), youtube_vos; vps: cityscapes_vps (default), viper
  data.root=<folder>     the dataset's folder
  data.split=<name>      the split to score (default: val; YouTube-VOS: valid)
  ckpt=<file>            predict the split with this checkpoint, then score it
  predictions=<folder>   score an existing results folder (vos) or submission (vps: pan_pred/ + pred.json)
  output_dir=<folder>    where the result files go (default: a new run folder)
  workers=<n>            scoring processes (default: one per usable core)
  overwrite=true         also replace files in output_dir that vidseg did not write (refused by default)
  device=auto|cpu|cuda|cuda:N|mps   precision=32|bf16-mixed|16-mixed   (with ckpt=)

Examples:
  {EXAMPLE}
  python -m vidseg.evaluate task=vos ckpt=runs/feelvos/checkpoints/last.ckpt data.root=/datasets/DAVIS
  python -m vidseg.evaluate task=vps data.root=/datasets/cityscapes_vps predictions=submission/
"""


def evaluate(cfg: DictConfig):
    """Score ``cfg.ckpt``'s predictions or the folder ``cfg.predictions`` with the task's protocol."""
    check_config(cfg, command="evaluate", example=EXAMPLE)
    return get_task(cfg.task_name).load("evaluate")(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    run_cli(lambda: evaluate(cfg), user_paths=lambda: user_paths(cfg))


def main() -> None:
    """``python -m vidseg.evaluate``: the usage first on ``--help``, then Hydra's."""
    print_usage_on_help(sys.argv[1:], USAGE)
    _hydra_main()


if __name__ == "__main__":
    skip_hydra_mode_probe(sys.argv[1:])
    main()
    exit_now()

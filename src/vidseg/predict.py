"""Run a trained model on your own video: ``python -m vidseg.predict task=<vos|vps> ckpt=<ckpt> input=<video>``.

    python -m vidseg.predict task=vos ckpt=<ckpt> input=<video.mp4 | frame folder> mask=<first-frame PNG> output=<dir>

The task's predictor (``vidseg.tasks``) reads the frames one at a time (constant memory) and writes its
outputs and an overlay video under ``output``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vidseg.tasks import get_task
from vidseg.utils.cli import run_cli


def predict(cfg: DictConfig) -> dict:
    """Segment ``cfg.input`` with ``cfg.ckpt``; returns a summary with the paths written."""
    return get_task(cfg.task_name).load("predict")(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_cli(lambda: predict(cfg))


if __name__ == "__main__":
    main()

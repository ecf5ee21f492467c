"""Run a trained model on your own video: ``python -m vidseg.predict task=<vos|vps> ckpt=<ckpt> input=<video>``.

    python -m vidseg.predict task=vos ckpt=<ckpt> input=<video.mp4 | frame folder> mask=<first-frame PNG> output=<dir>

The task's predictor (``vidseg.tasks``) reads the frames one at a time (constant memory) and writes its
outputs and an overlay video under ``output``.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from vidseg.onnx.folder import resolve_backend
from vidseg.tasks import get_task
from vidseg.utils.cli import print_usage_on_help, run_cli
from vidseg.utils.config_check import check_config, user_paths

EXAMPLE = ("python -m vidseg.predict task=vos ckpt=runs/feelvos/checkpoints/last.ckpt input=clip.mp4 "
           "mask=clip_first_frame.png output=results/clip")

USAGE = f"""\
python -m vidseg.predict: segment your own video with a checkpoint written by vidseg.train.

Options that matter:
  task=vos|vps        video object segmentation (FEELVOS) or video panoptic segmentation (VPSNet)
  ckpt=<file>         the checkpoint (required), e.g. <run>/checkpoints/last.ckpt, a pretrained folder, or
                      an ONNX folder (python -m vidseg.export format=onnx) with backend=onnx
  backend=torch|onnx  run the network with PyTorch (default) or ONNX Runtime (an ONNX folder)
  input=<video>       a video file (.mp4, ...) or a folder of frames (required)
  mask=<PNG|folder>   task=vos: the first frame's objects (indexed PNG, value = object id), or a folder of
                      per-frame PNGs for objects that appear later; unused for task=vps
  output=<folder>     where masks/ (vos) or panoptic/ + segments/ (vps), overlay.mp4 and prediction.json go
  overlay=true|false  write <output>/overlay.mp4 (default true)
  overwrite=true      also replace outputs in <output> that vidseg did not write (refused by default)
  fps=<number>        the overlay's frame rate (default: the input video's, 10 for a frame folder)
  device=auto|cpu|cuda|cuda:N|mps   precision=32|bf16-mixed|16-mixed

Examples:
  {EXAMPLE}
  python -m vidseg.predict task=vps ckpt=runs/vpsnet/checkpoints/last.ckpt input=frames/ output=results/street
  python -m vidseg.predict task=vos ckpt=onnx/feelvos backend=onnx input=clip.mp4 mask=first.png output=results/clip
"""


def predict(cfg: DictConfig) -> dict:
    """Segment ``cfg.input`` with ``cfg.ckpt``; returns a summary with the paths written."""
    check_config(cfg, command="predict", example=EXAMPLE)
    # The backend must fit ckpt (an ONNX folder runs only under ONNX Runtime, a checkpoint only under PyTorch);
    # the predictor's from_checkpoint then picks the backend from ckpt.
    resolve_backend(cfg.get("backend", "torch"), cfg.ckpt)
    return get_task(cfg.task_name).load("predict")(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    run_cli(lambda: predict(cfg), user_paths=lambda: user_paths(cfg))


def main() -> None:
    """``python -m vidseg.predict``: the usage first on ``--help``, then Hydra's."""
    print_usage_on_help(sys.argv[1:], USAGE)
    _hydra_main()


if __name__ == "__main__":
    main()

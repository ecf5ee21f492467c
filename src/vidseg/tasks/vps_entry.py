"""VPS behind the entry points: scoring a submission with VPQ and STQ on Cityscapes-VPS or VIPER-VPS.

    python -m vidseg.evaluate task=vps data.root=<cityscapes_vps> data.split=val predictions=<submission dir>
    python -m vidseg.evaluate task=vps data=viper data.root=<viper_vps> data.split=val predictions=<submission dir>

A submission is the official format: ``pan_pred/<image id>.png`` (COCO-panoptic RGB) and ``pred.json``.
The dataset's protocol (:mod:`vidseg.metrics.vps_eval`) decides the windows and rules. Writes
``vpq-<k>.txt``, ``vpq-final.txt`` and ``results-<split>.json`` into ``output_dir`` and prints a table.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from vidseg.data.io import write_json_atomic
from vidseg.data.vps_layout import VPSLayout, layout_of_datamodule
from vidseg.errors import DataError
from vidseg.metrics.vpq import PROTOCOLS
from vidseg.metrics.vps_eval import evaluate_submission, format_vps_table, load_ground_truth, write_vps_results


def dataset_layout(data_cfg: DictConfig) -> VPSLayout:
    """The file layout of the dataset a VPS data config describes (found without importing its datamodule)."""
    return layout_of_datamodule(str(data_cfg._target_))


def evaluate_vps(cfg: DictConfig):
    """Score ``cfg.predictions`` against the ground truth of ``cfg.data`` (split ``cfg.data.split``)."""
    if cfg.get("ckpt") is not None:
        raise DataError("task=vps has no trainable model in this version of vidseg, so there is no checkpoint to "
                        "evaluate; score a submission folder with predictions=<dir with pan_pred/ and pred.json>")
    if cfg.get("predictions") is None:
        raise DataError("give predictions=<submission dir> (pan_pred/<image id>.png + pred.json, the official "
                        "COCO-panoptic format) to score")
    layout = dataset_layout(cfg.data)
    root, split = Path(cfg.data.root), str(cfg.data.split)
    submission, output_dir = Path(cfg.predictions), Path(cfg.output_dir)
    ground_truth = load_ground_truth(layout, root, split)
    results = evaluate_submission(ground_truth, submission, PROTOCOLS[layout.name], workers=int(cfg.get("workers", 1)))
    paths = write_vps_results(results, output_dir, split)
    write_json_atomic(output_dir / "evaluation.json", {
        "task": "vps", "dataset": layout.name, "predictions": str(submission.resolve()),
        "data_root": str(root.resolve()), "split": split, "files": {k: str(v) for k, v in paths.items()},
    })
    print(format_vps_table(results))
    print(f"\nsubmission: {submission.resolve()}")
    for path in paths.values():
        print(f"results:    {Path(path).resolve()}")
    return results


def predict_vps(cfg: DictConfig) -> dict:
    raise DataError("task=vps has no trainable model in this version of vidseg, so there is nothing to predict "
                    "with; `python -m vidseg.evaluate task=vps predictions=<dir>` scores any method's submission")

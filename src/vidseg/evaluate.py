"""Evaluate VOS on DAVIS with the official J&F protocol.

    python -m vidseg.evaluate task=vos ckpt=<ckpt> data.root=<DAVIS> data.split=val
    python -m vidseg.evaluate task=vos data.root=<DAVIS> data.split=val predictions=<results dir>

With ``ckpt`` every sequence is predicted into ``<output_dir>/masks/<seq>/<frame>.png`` and scored; with
``predictions`` an existing results folder is scored (any method's output). Writes
``global_results-<split>.csv``, ``per-sequence_results-<split>.csv`` (the official toolkit's columns) and
``results-<split>.json`` (full precision) to ``output_dir``; scores are always recomputed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from vidseg.data.davis import list_sequences, sequence_paths
from vidseg.data.io import read_image, read_mask, write_json_atomic, write_mask
from vidseg.inference.vos import VOSPredictor
from vidseg.metrics.davis_eval import DavisResults, evaluate_folder, format_table, write_results


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def checkpoint_fingerprint(ckpt: Path) -> str:
    """Identifies a checkpoint file version: predictions made with another one are never reused."""
    stat = ckpt.stat()
    return f"{ckpt.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _frames(paths: list[Path]) -> Iterator[np.ndarray]:
    for path in paths:
        yield read_image(path)


def predict_davis(predictor: VOSPredictor, root: Path, sequences: list[str], masks_dir: Path, *,
                  fingerprint: str, resolution: str = "480p", binary_255: bool = False) -> None:
    """Predict every sequence into ``masks_dir/<seq>/<frame>.png``.

    A sequence is skipped on a rerun only if it finished with the same checkpoint (its ``.done`` file holds
    the fingerprint), so an interrupted run resumes and a new checkpoint never reuses stale masks.
    """
    for index, seq in enumerate(sequences):
        seq_dir = masks_dir / seq
        done_file = seq_dir / ".done"
        if done_file.is_file() and done_file.read_text() == fingerprint:
            print(f"[{index + 1}/{len(sequences)}] {seq}: already predicted with this checkpoint, kept")
            continue
        done_file.unlink(missing_ok=True)
        frame_paths, mask_paths = sequence_paths(root, seq, resolution=resolution)
        first_mask = read_mask(mask_paths[0], binary_255=binary_255)
        for frame_idx, _, mask in predictor.track(_frames(frame_paths), first_mask):
            write_mask(seq_dir / f"{frame_paths[frame_idx].stem}.png", mask)
        done_file.write_text(fingerprint)
        print(f"[{index + 1}/{len(sequences)}] {seq}: {len(frame_paths)} frames")


def evaluate(cfg: DictConfig) -> DavisResults:
    """Predict (if ``cfg.ckpt``) and score; returns the results and writes the CSV/JSON files."""
    data = cfg.data
    root = Path(data.root)
    year, split, resolution = str(data.year), str(data.split), str(data.get("resolution", "480p"))
    binary_255 = year == "2016"
    output_dir = Path(cfg.output_dir)
    sequences = list_sequences(root, year=year, split=split, resolution=resolution)

    if (cfg.ckpt is None) == (cfg.predictions is None):
        raise ValueError("give exactly one of ckpt=<checkpoint> (predict, then score) or predictions=<results dir>")
    if cfg.predictions is not None:
        results_dir = Path(cfg.predictions)
    else:
        ckpt = Path(cfg.ckpt)
        predictor = VOSPredictor.from_checkpoint(ckpt, device=resolve_device(cfg.device), precision=str(cfg.precision))
        results_dir = output_dir / "masks"
        predict_davis(predictor, root, sequences, results_dir, fingerprint=checkpoint_fingerprint(ckpt),
                      resolution=resolution, binary_255=binary_255)

    gt_masks = {seq: sequence_paths(root, seq, resolution=resolution)[1] for seq in sequences}
    results = evaluate_folder(gt_masks, results_dir, binary_255=binary_255)
    paths = write_results(results, output_dir, split)
    write_json_atomic(output_dir / "evaluation.json", {
        "ckpt": str(cfg.ckpt) if cfg.ckpt else None, "predictions": str(results_dir.resolve()),
        "data_root": str(root.resolve()), "year": year, "split": split, "sequences": len(sequences),
        "files": {k: str(v) for k, v in paths.items()},
    })
    print(format_table(results))
    print(f"\nmasks:   {results_dir.resolve()}")
    for path in paths.values():
        print(f"results: {Path(path).resolve()}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()

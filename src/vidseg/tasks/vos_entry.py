"""VOS behind the entry points: DAVIS evaluation (J&F) and segmenting a user's video.

    python -m vidseg.evaluate task=vos ckpt=<ckpt> data.root=<DAVIS> data.split=val
    python -m vidseg.evaluate task=vos data.root=<DAVIS> data.split=val predictions=<results dir>
    python -m vidseg.predict task=vos ckpt=<ckpt> input=<video.mp4 | frame folder> mask=<first-frame PNG> output=<dir>

Evaluation: with ``ckpt`` every sequence is predicted into ``<output_dir>/masks/<seq>/<frame>.png`` and
scored; with ``predictions`` an existing results folder is scored (any method's output). Writes
``global_results-<split>.csv``, ``per-sequence_results-<split>.csv`` (the official toolkit's columns) and
``results-<split>.json`` (full precision) to ``output_dir``; scores are always recomputed.

Prediction writes ``<output>/masks/<frame>.png`` (indexed PNGs, DAVIS palette, the ids of the first mask)
and ``<output>/overlay.mp4``. Frames are decoded and segmented one at a time (constant memory).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from typing import TYPE_CHECKING

from vidseg.data.davis_layout import list_sequences, sequence_paths
from vidseg.data.io import read_image, read_mask, write_json_atomic, write_mask
from vidseg.errors import DataError
from vidseg.metrics.davis_eval import DavisResults, evaluate_folder, format_table, write_results

# torch, Lightning and the model are imported only where a checkpoint is run: scoring a results folder
# (``predictions=``) needs none of them, and importing them costs seconds.
if TYPE_CHECKING:
    from vidseg.inference.vos import VOSPredictor


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


def evaluate_vos(cfg: DictConfig) -> DavisResults:
    """Predict (if ``cfg.ckpt``) and score; returns the results and writes the CSV/JSON files."""
    data = cfg.data
    root = Path(data.root)
    year, split, resolution = str(data.year), str(data.split), str(data.get("resolution", "480p"))
    binary_255 = year == "2016"
    output_dir = Path(cfg.output_dir)
    if (cfg.ckpt is None) == (cfg.predictions is None):
        raise DataError("give exactly one of ckpt=<checkpoint> (predict, then score) or predictions=<results dir>")
    sequences = list_sequences(root, year=year, split=split, resolution=resolution)

    if cfg.predictions is not None:
        results_dir = Path(cfg.predictions)
    else:
        from vidseg.inference.checkpoint import checkpoint_fingerprint
        from vidseg.inference.vos import VOSPredictor
        from vidseg.utils.device import resolve_device

        ckpt = Path(cfg.ckpt)
        predictor = VOSPredictor.from_checkpoint(ckpt, device=resolve_device(cfg.device), precision=str(cfg.precision))
        results_dir = output_dir / "masks"
        predict_davis(predictor, root, sequences, results_dir, fingerprint=checkpoint_fingerprint(ckpt),
                      resolution=resolution, binary_255=binary_255)

    gt_masks = {seq: sequence_paths(root, seq, resolution=resolution)[1] for seq in sequences}
    results = evaluate_folder(gt_masks, results_dir, binary_255=binary_255)
    paths = write_results(results, output_dir, split)
    write_json_atomic(output_dir / "evaluation.json", {
        "task": "vos", "ckpt": str(cfg.ckpt) if cfg.ckpt else None, "predictions": str(results_dir.resolve()),
        "data_root": str(root.resolve()), "year": year, "split": split, "sequences": len(sequences),
        "files": {k: str(v) for k, v in paths.items()},
    })
    print(format_table(results))
    print(f"\nmasks:   {results_dir.resolve()}")
    for path in paths.values():
        print(f"results: {Path(path).resolve()}")
    return results


def predict_vos(cfg: DictConfig) -> dict:
    """Run the predictor over ``cfg.input`` from the first-frame mask ``cfg.mask``; returns a summary."""
    if cfg.get("mask") is None:
        raise DataError("task=vos needs the first frame's objects: add mask=<indexed PNG of the first frame, "
                        "pixel value = object id, 0 = background>")
    from vidseg.data.video import OverlayVideoWriter, read_video_frames, video_fps
    from vidseg.inference.vos import VOSPredictor
    from vidseg.utils.device import resolve_device

    input_path, output = Path(cfg.input), Path(cfg.output)
    first_mask = read_mask(cfg.mask)
    frames = iter(read_video_frames(input_path))
    first_frame = next(frames, None)
    if first_frame is None:
        raise DataError(f"{input_path}: no frames to segment (the video or folder is empty)")
    if first_frame.shape[:2] != first_mask.shape:
        raise DataError(
            f"{cfg.mask}: mask is {first_mask.shape[0]}x{first_mask.shape[1]} but the frames of {input_path} are "
            f"{first_frame.shape[0]}x{first_frame.shape[1]} (HxW); give the mask of the first frame at video size"
        )
    predictor = VOSPredictor.from_checkpoint(cfg.ckpt, device=resolve_device(cfg.device), precision=str(cfg.precision))
    session = predictor.start(first_frame, first_mask)
    fps = cfg.fps or video_fps(input_path)
    masks_dir, overlay_path = output / "masks", output / "overlay.mp4"

    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(OverlayVideoWriter(overlay_path, fps=fps)) if cfg.overlay else None

        def emit(index: int, frame, mask) -> None:
            write_mask(masks_dir / f"{index:05d}.png", mask)
            if writer is not None:
                writer.write(frame, mask)

        emit(0, first_frame, first_mask)
        for frame in frames:
            mask = session.step(frame)
            emit(session.frame_index, frame, mask)

    summary = {"frames": session.frame_index + 1, "object_ids": list(session.object_ids),
               "masks": str(masks_dir.resolve()), "overlay": str(overlay_path.resolve()) if cfg.overlay else None,
               "ckpt": str(cfg.ckpt), "input": str(input_path.resolve())}
    write_json_atomic(output / "prediction.json", summary)
    print(f"segmented {summary['frames']} frames, objects {summary['object_ids']}")
    print(f"masks:   {summary['masks']}")
    if summary["overlay"]:
        print(f"overlay: {summary['overlay']}")
    return summary

"""Segment your own video from a first-frame mask.

    python -m vidseg.predict task=vos ckpt=<ckpt> input=<video.mp4 | frame folder> mask=<first-frame PNG> output=<dir>

Writes ``<output>/masks/<frame>.png`` (indexed PNGs, DAVIS palette, the ids of the first mask) and
``<output>/overlay.mp4``. Frames are decoded and segmented one at a time (constant memory).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vidseg.data.io import read_mask, write_json_atomic, write_mask
from vidseg.data.video import OverlayVideoWriter, read_video_frames, video_fps
from vidseg.evaluate import resolve_device
from vidseg.inference.vos import VOSPredictor


def predict(cfg: DictConfig) -> dict:
    """Run the predictor over ``cfg.input``; returns a summary with the paths written."""
    input_path, output = Path(cfg.input), Path(cfg.output)
    first_mask = read_mask(cfg.mask)
    frames = iter(read_video_frames(input_path))
    first_frame = next(frames, None)
    if first_frame is None:
        raise ValueError(f"{input_path}: no frames to segment (the video or folder is empty)")
    if first_frame.shape[:2] != first_mask.shape:
        raise ValueError(
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


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()

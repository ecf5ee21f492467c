"""VOS behind the entry points: DAVIS / YouTube-VOS evaluation (J&F) and segmenting a user's video.

    python -m vidseg.evaluate task=vos ckpt=<ckpt> data.root=<DAVIS> data.split=val
    python -m vidseg.evaluate task=vos data.root=<DAVIS> data.split=val predictions=<results dir>
    python -m vidseg.evaluate task=vos data=youtube_vos ckpt=<ckpt> data.root=<YouTubeVOS> data.split=valid
    python -m vidseg.predict task=vos ckpt=<ckpt> input=<video.mp4 | frames> mask=<PNG | folder of PNGs> output=<dir>

Evaluation: with ``ckpt`` every sequence is predicted into ``<output_dir>/masks/<seq>/<frame>.png`` and
scored; with ``predictions`` an existing results folder is scored (any method's output). Writes
``global_results-<split>.csv``, ``per-sequence_results-<split>.csv`` (the official toolkit's columns) and
``results-<split>.json`` (full precision) to ``output_dir``; scores are always recomputed.

YouTube-VOS (``data=youtube_vos``): with ``ckpt`` every video is predicted into the server's submission layout
``<output_dir>/submission/Annotations/<video>/<frame>.png`` (every frame, the given ids), zipped as
``<output_dir>/submission-<split>.zip``; objects that appear later are added at the frame where meta.json
says they start. Where every frame is annotated (train, the toy set, ``data.gt_annotations``) vidseg's own
J&F is computed too: per object over the frames after its first frame, the last frame excluded
(:mod:`vidseg.data.youtube_vos_layout`).

Prediction writes ``<output>/masks/<frame>.png`` (indexed PNGs, DAVIS palette, the ids of the given masks)
and ``<output>/overlay.mp4`` (object ids drawn on). ``mask=`` is the first frame's PNG, or a folder of PNGs
named like the frames (or by frame index, ``00012.png``) for objects that appear later. Frames are decoded
and segmented one at a time (constant memory); outputs are built in a hidden folder and moved into place
when the video is done, so an interrupted run never leaves masks or an overlay that look complete.
``<frame>`` is the input frame's own name for a frame folder (``shot_10.jpg`` -> ``shot_10.png``) and the
frame index for a video file (``00000.png``...); ``prediction.json`` (written last) lists them in order,
``frame_names[i]`` for frame i.

Both commands write into their output folder through :mod:`vidseg.utils.outputs`: they replace only what
vidseg wrote there (``overwrite=true`` for anything else), never write over their inputs, remove their own
stale outputs, and lock the folder while they write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

from vidseg.data.davis_layout import list_sequences, sequence_paths
from vidseg.data.io import read_image, read_mask, write_json_atomic, write_mask, write_text_atomic
from vidseg.data.names import checked_join
from vidseg.errors import DataError
from vidseg.metrics.davis_eval import DavisResults, evaluate_folder, format_table, write_results
from vidseg.utils.outputs import (
    check_apart,
    finish_evaluation,
    frame_count_hint,
    open_evaluation_folder,
    open_output_folder,
    overwrite_option,
    progress_bar,
)

# torch, Lightning and the model are imported only where a checkpoint is run: scoring a results folder
# (``predictions=``) needs none of them, and importing them costs seconds.
if TYPE_CHECKING:
    from vidseg.data.youtube_vos_layout import YouTubeVOSVideo
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
    paths = {seq: sequence_paths(root, seq, resolution=resolution) for seq in sequences}
    with progress_bar(sum(len(frames) for frames, _ in paths.values()), "predict") as bar:
        for index, seq in enumerate(sequences):
            seq_dir = checked_join(masks_dir, seq, source=root, what="sequence name")
            done_file = seq_dir / ".done"
            frame_paths, mask_paths = paths[seq]
            if done_file.is_file() and done_file.read_text() == fingerprint:
                bar.update(len(frame_paths))
                bar.write(f"[{index + 1}/{len(sequences)}] {seq}: already predicted with this checkpoint, kept")
                continue
            done_file.unlink(missing_ok=True)
            first_mask = read_mask(mask_paths[0], binary_255=binary_255)
            for frame_idx, _, mask in predictor.track(_frames(frame_paths), first_mask):
                write_mask(seq_dir / f"{frame_paths[frame_idx].stem}.png", mask)
                bar.update(1)
            write_text_atomic(done_file, fingerprint)
            bar.write(f"[{index + 1}/{len(sequences)}] {seq}: {len(frame_paths)} frames")


def predict_youtube_vos(predictor: VOSPredictor, videos: list[YouTubeVOSVideo], annotations_dir: Path, *,
                        fingerprint: str) -> None:
    """Predict every video into ``annotations_dir/<video>/<frame>.png`` (all its frames, the given ids).

    Each object starts at its first frame (meta.json) from its mask there; the other ids of that annotation
    file (objects that started earlier) are not re-given. Frames before the first object are all 0. Resumes
    per video like :func:`predict_davis` (a ``.done`` file with the checkpoint's fingerprint).
    """
    with progress_bar(sum(len(v.frames) for v in videos), "predict") as bar:
        for index, video in enumerate(videos):
            video_dir = checked_join(annotations_dir, video.name, source="meta.json", what="video id")
            done_file = video_dir / ".done"
            if done_file.is_file() and done_file.read_text() == fingerprint:
                bar.update(len(video.frames))
                bar.write(f"[{index + 1}/{len(videos)}] {video.name}: already predicted with this checkpoint, kept")
                continue
            done_file.unlink(missing_ok=True)
            given = {t: video.read_given_mask(t) for t in video.given_frames()}  # a few small masks per video
            for frame_idx, _, mask in predictor.track(_frames(video.frames), masks=given):
                write_mask(video_dir / f"{video.frames[frame_idx].stem}.png", mask)
                bar.update(1)
            write_text_atomic(done_file, fingerprint)
            starts = ", ".join(f"{obj}@{video.frames[t].stem}" for obj, t in sorted(video.first_frames().items()))
            bar.write(f"[{index + 1}/{len(videos)}] {video.name}: {len(video.frames)} frames, objects {starts}")


def result_file_names(split: str, *, plots: bool) -> list[str]:
    """The files :func:`vidseg.metrics.davis_eval.write_results` may write for ``split`` (claimed before scoring)."""
    from vidseg.data.names import check_name

    split = check_name(split, source="data.split", what="split")
    return [f"global_results-{split}.csv", f"per-sequence_results-{split}.csv", f"results-{split}.json",
            *([f"results-{split}-jf.png"] if plots else [])]


def _load_predictor(cfg: DictConfig) -> VOSPredictor:
    from vidseg.inference.vos import VOSPredictor
    from vidseg.utils.device import resolve_device

    return VOSPredictor.from_checkpoint(cfg.ckpt, device=resolve_device(cfg.device), precision=str(cfg.precision))


def _is_youtube_vos(data: DictConfig) -> bool:
    return str(data.get("_target_", "")).endswith(".YouTubeVOSDataModule")


def evaluate_vos(cfg: DictConfig) -> DavisResults | None:
    """Predict (if ``cfg.ckpt``) and score; returns the results and writes the CSV/JSON files.

    ``data=youtube_vos``: see :func:`evaluate_youtube_vos` (None when the split cannot be scored locally).
    """
    data = cfg.data
    if _is_youtube_vos(data):
        return evaluate_youtube_vos(cfg)
    root = Path(data.root)
    year, split, resolution = str(data.year), str(data.split), str(data.get("resolution", "480p"))
    binary_255 = year == "2016"
    output_dir = Path(cfg.output_dir)
    if (cfg.ckpt is None) == (cfg.predictions is None):
        raise DataError("give exactly one of ckpt=<checkpoint> (predict, then score) or predictions=<results dir>")
    sequences = list_sequences(root, year=year, split=split, resolution=resolution)
    plots = bool(cfg.get("plots", True))

    with open_evaluation_folder(cfg, split) as folder:
        # Claimed before any work: refused at once if one of these is not vidseg's (or is an input).
        folder.claim(result_file_names(split, plots=plots), fresh=["masks"] if cfg.predictions is None else [])
        if cfg.predictions is not None:
            results_dir, written = Path(cfg.predictions), []
        else:
            from vidseg.inference.checkpoint import checkpoint_fingerprint

            ckpt = Path(cfg.ckpt)
            predictor = _load_predictor(cfg)
            results_dir, written = output_dir / "masks", ["masks"]
            predict_davis(predictor, root, sequences, results_dir, fingerprint=checkpoint_fingerprint(ckpt),
                          resolution=resolution, binary_255=binary_255)

        gt_masks = {seq: sequence_paths(root, seq, resolution=resolution)[1] for seq in sequences}
        results = evaluate_folder(gt_masks, results_dir, binary_255=binary_255, workers=cfg.get("workers"))
        paths = write_results(results, output_dir, split, plots=plots)
        finish_evaluation(folder, [*written, *paths.values()], {
            "task": "vos", "ckpt": str(cfg.ckpt) if cfg.ckpt else None, "predictions": str(results_dir.resolve()),
            "data_root": str(root.resolve()), "year": year, "split": split, "sequences": len(sequences),
            "files": {k: str(v) for k, v in paths.items()},
        })
    print(format_table(results))
    print(f"\nmasks:   {results_dir.resolve()}")
    for path in paths.values():
        print(f"results: {Path(path).resolve()}")
    return results


def evaluate_youtube_vos(cfg: DictConfig) -> DavisResults | None:
    """YouTube-VOS: predict (``cfg.ckpt``) into the submission layout and zip it; score where every frame is
    annotated, or score an existing results folder (``cfg.predictions``: ``<dir>/<video>/<frame>.png`` or a
    submission folder with ``Annotations/``). Returns the results, or None when ``split`` has no full
    ground truth (then only the challenge server can score it: upload the zip)."""
    from vidseg.data.youtube_vos_layout import (
        evaluate_folder as evaluate_youtube_vos_folder,
    )
    from vidseg.data.youtube_vos_layout import (
        ground_truth_dir,
        list_videos,
        load_video,
        read_meta,
        write_submission_zip,
    )

    data = cfg.data
    root, split, output_dir = Path(data.root), str(data.split), Path(cfg.output_dir)
    if (cfg.ckpt is None) == (cfg.predictions is None):
        raise DataError("give exactly one of ckpt=<checkpoint> (predict, then score) or predictions=<results dir>")
    meta = read_meta(root, split)
    videos = [load_video(root, split, name, meta) for name in list_videos(root, split)]
    gt_dir = ground_truth_dir(root, split, videos, data.get("gt_annotations"))
    zip_path = None
    plots = bool(cfg.get("plots", True))
    with open_evaluation_folder(cfg, split) as folder:
        # Claimed before any work: refused at once if one of these is not vidseg's (or is an input).
        results_names = result_file_names(split, plots=plots) if gt_dir is not None else []
        predicted = [f"submission-{split}.zip"] if cfg.predictions is None else []
        folder.claim([*results_names, *predicted], fresh=["submission"] if cfg.predictions is None else [])
        written: list[str] = []
        if cfg.predictions is not None:
            results_dir = Path(cfg.predictions)
            if (results_dir / "Annotations").is_dir():  # a submission folder
                results_dir = results_dir / "Annotations"
            if gt_dir is None:
                raise DataError(
                    f"{root}/{split}: nothing to score {results_dir} against: YouTube-VOS {split} is annotated only "
                    "where each object first appears (the challenge server scores it); give "
                    "data.gt_annotations=<folder <video>/<frame>.png with every frame>, or score a split with every "
                    "frame annotated"
                )
        else:
            from vidseg.inference.checkpoint import checkpoint_fingerprint

            results_dir = output_dir / "submission" / "Annotations"
            written += ["submission", f"submission-{split}.zip"]
            predict_youtube_vos(_load_predictor(cfg), videos, results_dir,
                                fingerprint=checkpoint_fingerprint(Path(cfg.ckpt)))
            zip_path = write_submission_zip(results_dir, checked_join(output_dir, f"submission-{split}.zip",
                                                                      source="data.split", what="split"))

        results, files, skipped = None, {}, []
        if gt_dir is not None:
            results, skipped = evaluate_youtube_vos_folder(videos, results_dir, gt_dir)
            files = write_results(results, output_dir, split, plots=plots)
            written += [path.name for path in files.values()]
            print(format_table(results, split))
            print(f"(vidseg's YouTube-VOS score: J&F per object over the frames after its first frame, the last frame "
                  f"excluded; ground truth {gt_dir.resolve()})")
            if skipped:
                print(f"not scored (first appear in the last two frames): {', '.join(skipped)}")
        else:
            print(f"YouTube-VOS {split} is annotated only where each object first appears: no local scores; "
                  f"upload {zip_path.resolve() if zip_path else results_dir} to the challenge server")
        finish_evaluation(folder, written, {
            "task": "vos", "dataset": "youtube_vos", "ckpt": str(cfg.ckpt) if cfg.ckpt else None,
            "predictions": str(results_dir.resolve()), "data_root": str(root.resolve()), "split": split,
            "videos": len(videos), "ground_truth": str(gt_dir.resolve()) if gt_dir else None,
            "submission_zip": str(zip_path.resolve()) if zip_path else None, "not_scored": skipped,
            "files": {k: str(v) for k, v in files.items()},
        })
    print(f"\nmasks:   {results_dir.resolve()}")
    if zip_path is not None:
        print(f"zip:     {zip_path.resolve()}")
    for path in files.values():
        print(f"results: {Path(path).resolve()}")
    return results


class _GivenMasks(Mapping):
    """Frame index -> mask PNG of the objects that appear there, read (and checked) when asked for."""

    def __init__(self, paths: dict[int, Path], size: tuple[int, int], source: Path):
        self.paths, self.size, self.source = dict(sorted(paths.items())), size, source

    def __getitem__(self, index: int) -> np.ndarray:
        path = self.paths[index]
        mask = read_mask(path)
        if mask.shape != self.size:
            raise DataError(
                f"{path}: mask is {mask.shape[0]}x{mask.shape[1]} but the frames of {self.source} are "
                f"{self.size[0]}x{self.size[1]} (HxW); give masks at video size"
            )
        if index == min(self.paths) and not ((mask > 0) & (mask < 255)).any():
            raise DataError(f"{path}: the mask contains no object (only background/void); pixel values must be "
                            "object ids (indexed PNG, 0 = background)")
        return mask

    def __iter__(self):
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def mask_paths_by_frame(mask: Path, input_path: Path) -> dict[int, Path]:
    """The frames ``mask=`` gives objects for: ``{0: mask}`` for a PNG; for a folder, each PNG by the frame it
    names: the stem of a frame file (``input`` a frame folder) or a frame index (``00012.png`` = frame 12).

    Raises:
        FileNotFoundError: missing path. DataError: a folder without PNGs, or a PNG that names no frame.
    """
    if not mask.exists():
        raise FileNotFoundError(f"mask not found: {mask} (mask= takes the first frame's PNG or a folder of PNGs)")
    if mask.is_file():
        return {0: mask}
    pngs = sorted(p for p in mask.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not pngs:
        raise DataError(f"{mask}: folder has no PNG masks; expected <frame name>.png files (indexed, ids = objects)")
    by_stem: dict[str, int] = {}
    if input_path.is_dir():
        from vidseg.data.video import list_image_frames

        by_stem = {p.stem: i for i, p in enumerate(list_image_frames(input_path))}
    out, unknown = {}, []
    for png in pngs:
        if png.stem in by_stem:
            out[by_stem[png.stem]] = png
        elif png.stem.isdigit() and not by_stem:
            out[int(png.stem)] = png
        else:
            unknown.append(png.name)
    if unknown:
        rule = f"the name of a frame in {input_path}" if by_stem else "a frame index (00012.png = frame 12)"
        raise DataError(f"{mask}: mask(s) {', '.join(unknown[:5])} name no frame; each PNG's name must be {rule}")
    return out


def predict_vos(cfg: DictConfig) -> dict:
    """Run the predictor over ``cfg.input`` from the masks ``cfg.mask`` (a PNG of frame 0, or a folder of
    per-frame PNGs for objects that appear later); returns a summary."""
    if cfg.get("mask") is None:
        raise DataError("task=vos needs the first frame's objects: add mask=<indexed PNG of the first frame, "
                        "pixel value = object id, 0 = background> (or a folder of per-frame PNGs)")
    from vidseg.data.video import OverlayVideoWriter, frame_names, read_video_frames, video_fps

    input_path, output, mask_arg = Path(cfg.input), Path(cfg.output), Path(cfg.mask)
    inputs = {"input": input_path, "mask": mask_arg, "ckpt": cfg.ckpt}
    frames = iter(read_video_frames(input_path))
    names = frame_names(input_path)  # the input's frame names (None: a video file, numbered 00000...)
    given = mask_paths_by_frame(mask_arg, input_path)
    first_frame = next(frames, None)
    if first_frame is None:
        raise DataError(f"{input_path}: no frames to segment (the video or folder is empty)")
    masks = _GivenMasks(given, first_frame.shape[:2], input_path)
    masks[min(given)]  # check the first mask (size, objects) before loading the model
    check_apart(output, inputs, whole_folder=("input", "mask"))  # and where the outputs go
    predictor = _load_predictor(cfg)
    fps = cfg.fps or video_fps(input_path)

    masks_dir, overlay_path = output / "masks", output / "overlay.mp4"
    written = [masks_dir.name, *((overlay_path.name,) if cfg.overlay else ())]
    count, object_ids, added, frame_list = 0, (), {}, []
    with open_output_folder(output, key="predict", overwrite=overwrite_option(cfg), inputs=inputs,
                            whole_folder=("input", "mask")) as folder:
        folder.claim([*written, "prediction.json"])  # refused here if a name is not vidseg's
        with folder.staging() as staging:
            with contextlib.ExitStack() as stack:
                writer = (stack.enter_context(OverlayVideoWriter(staging / overlay_path.name, fps=fps))
                          if cfg.overlay else None)
                bar = stack.enter_context(progress_bar(frame_count_hint(input_path), "predict"))
                all_frames = _FramesWithCurrent(first_frame, frames)
                for index, ids, mask in predictor.track(all_frames, masks=masks):
                    frame_list.append(names[index] if names is not None else f"{index:05d}")
                    write_mask(checked_join(staging, masks_dir.name, f"{frame_list[-1]}.png", source=input_path,
                                            what="frame name"), mask)
                    if writer is not None:
                        writer.write(all_frames.current, mask)
                    for obj in ids[len(object_ids):]:
                        added[obj] = index
                        if index > min(given):
                            bar.write(f"frame {index}: object {obj} added")
                    count, object_ids = index + 1, ids
                    bar.update(1)
            # Done: move the finished outputs over the previous run's (never a half-written folder or video);
            # prediction.json, the sign of a complete run, goes first and comes back last.
            (output / "prediction.json").unlink(missing_ok=True)
            folder.publish(staging, written)
        folder.retire([*written, "prediction.json"])  # e.g. the overlay of an earlier run, now overlay=false

        summary = {"frames": count, "object_ids": list(object_ids),
                   "object_first_frames": {str(k): v for k, v in added.items()},
                   "masks": str(masks_dir.resolve()), "overlay": str(overlay_path.resolve()) if cfg.overlay else None,
                   "ckpt": str(cfg.ckpt), "input": str(input_path.resolve()), "mask": str(mask_arg.resolve()),
                   "frame_names": frame_list, "files": written}
        write_json_atomic(output / "prediction.json", summary)
        folder.record(["prediction.json"])
    print(f"segmented {summary['frames']} frames, objects {summary['object_ids']}")
    print(f"masks:   {summary['masks']}")
    if summary["overlay"]:
        print(f"overlay: {summary['overlay']}")
    return summary


class _FramesWithCurrent:
    """Iterate ``first`` then ``rest``, remembering the frame last handed out (``current``) for the overlay."""

    def __init__(self, first: np.ndarray, rest: Iterator[np.ndarray]):
        self._first, self._rest, self.current = first, rest, None

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        if self._first is not None:
            self.current, self._first = self._first, None
        else:
            self.current = next(self._rest)
        return self.current

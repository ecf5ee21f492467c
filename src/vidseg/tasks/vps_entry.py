"""VPS behind the entry points: Cityscapes-VPS / VIPER-VPS / VIPSeg evaluation (VPQ, STQ) and segmenting a user's video.

    python -m vidseg.evaluate task=vps ckpt=<ckpt> data.root=<cityscapes_vps> data.split=val
    python -m vidseg.evaluate task=vps data.root=<cityscapes_vps> data.split=val predictions=<submission dir>
    python -m vidseg.evaluate task=vps data=viper data.root=<viper_vps> data.split=val predictions=<submission dir>
    python -m vidseg.evaluate task=vps data=vipseg data.root=<folder holding VIPSeg_720P/> data.split=val \
        predictions=<submission dir> [stq_mode=official|corrected]
    python -m vidseg.predict task=vps ckpt=<ckpt> input=<video.mp4 | frame folder> output=<dir>

Evaluation with ``ckpt``: every frame of every clip of the split is predicted in order, one streaming
session per clip (:class:`vidseg.inference.vps.VPSSession`), and the annotated frames are written as the
official submission into ``output_dir``: ``pan_pred/<image id>.png`` (COCO-panoptic RGB) and ``pred.json``
(category ids of the ground-truth JSON). A clip is skipped on a rerun only if it finished with the same
checkpoint (``clips/<video>.json`` holds the checkpoint's fingerprint), so an interrupted run resumes and a
new checkpoint never reuses another's predictions. With ``predictions`` an existing submission folder is
scored (any method's; VIPSeg: ``pan_pred/<video_id>/<frame>.png`` + the nested pred.json of its official
scripts). ``stq_mode=corrected`` scores VIPSeg's STQ without the official script's crowd quirk (each video's
first listed GT segment, when a thing, is crowd there). Scores follow the dataset's protocol
(:mod:`vidseg.metrics.vps_eval`); writes
``vpq-<k>.txt``, ``vpq-final.txt``, ``results-<split>.json`` and ``evaluation.json`` into ``output_dir``
and prints a table.

Prediction writes, per frame, ``<output>/panoptic/<frame>.png`` (COCO-panoptic RGB, id = R + 256 G +
256^2 B) and ``<output>/segments/<frame>.json`` (its segments: id, category id and name, isthing,
track id, score, area), and ``<output>/overlay.mp4`` (H.264) where each track keeps its colour and stuff
classes have their category colours. ``<frame>`` is the input frame's own name for a frame folder
(``shot_10.jpg`` -> ``shot_10.png``) and the index for a video file (``00000``...); ``prediction.json``
(written last) lists them in order. Frames are decoded and segmented one at a time (constant memory).

Both commands write into their output folder through :mod:`vidseg.utils.outputs`: they replace only what
vidseg wrote there (``overwrite=true`` for another method's submission or eval_vpq.py's files), never write
over their inputs, remove their own stale outputs, and lock the folder while they write.
"""

from __future__ import annotations

import colorsys
import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from vidseg.constants import PANOPTIC_LABEL_DIVISOR, PANOPTIC_VOID_ID
from vidseg.data.io import write_json_atomic
from vidseg.data.names import checked_join
from vidseg.data.panoptic import read_json, write_panoptic_png
from vidseg.data.video import VideoWriter, frame_names, overlay, read_video_frames, video_fps
from vidseg.data.vps_layout import VPSLayout, layout_of_datamodule
from vidseg.errors import DataError
from vidseg.metrics.vpq import PROTOCOLS
from vidseg.metrics.vps_eval import (
    evaluate_submission,
    format_vps_table,
    load_ground_truth,
    with_stq_mode,
    write_vps_results,
)
from vidseg.tasks.vps_records import category_table, frame_segments_record
from vidseg.utils.outputs import (
    check_apart,
    finish_evaluation,
    frame_count_hint,
    open_evaluation_folder,
    open_output_folder,
    overwrite_option,
    progress_bar,
)


def dataset_layout(data_cfg: DictConfig) -> VPSLayout:
    """The file layout of the dataset a VPS data config describes (found without importing its datamodule)."""
    return layout_of_datamodule(str(data_cfg._target_))


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------


def json_category_ids(gt_categories: Sequence[Mapping[str, Any]], categories: Sequence[Mapping[str, Any]],
                      where: str = "ground-truth JSON") -> dict[int, int]:
    """Class id of the model -> category id of the ground-truth JSON, matched by name, else by id (the inverse
    of the datasets' reading rule)."""
    by_name = {c.get("name"): int(c["id"]) for c in gt_categories}
    gt_ids = {int(c["id"]) for c in gt_categories}
    mapping = {}
    for cat in categories:
        if cat.get("name") in by_name:
            mapping[int(cat["id"])] = by_name[cat["name"]]
        elif int(cat["id"]) in gt_ids:
            mapping[int(cat["id"])] = int(cat["id"])
        else:
            raise DataError(f"{where}: the model's class {cat.get('name')!r} (id {cat['id']}) is not among its "
                            f"categories ({', '.join(str(n) for n in by_name)}); was the checkpoint trained on "
                            "another dataset?")
    return mapping


def submission_segments(segments: Sequence[Mapping[str, Any]], to_json: Mapping[int, int]) -> list[dict[str, Any]]:
    """A session's segments -> pred.json segments_info (official keys + track id and score)."""
    return [{"id": int(s["id"]), "category_id": to_json[int(s["category_id"])], "iscrowd": 0, "area": int(s["area"]),
             "isthing": int(bool(s["isthing"])), "track_id": s.get("track_id"), "score": s.get("score")}
            for s in segments]


def submission_json(ground_truth, segments: Mapping[str, list[dict]]) -> dict[str, Any]:
    """The pred.json document of the official evaluator of ``ground_truth``'s dataset.

    Args:
        ground_truth: :class:`vidseg.metrics.vps_eval.VPSGroundTruth`.
        segments: ``{image id: segments_info}`` for every id of ``ground_truth.image_ids`` (VIPSeg:
            ``<video_id>/<image id>``, so that ``pan_pred/<id>.png`` is ``pan_pred/<video_id>/<frame>.png``).
    Returns:
        Cityscapes-VPS / VIPER: ``{"annotations": [{"image_id", "file_name", "segments_info"}]}`` in image order;
        VIPSeg: ``{"annotations": [{"video_id", "annotations": [{"image_id", "file_name", "segments_info"}]}]}``.
    """
    if ground_truth.layout != "vipseg":
        return {"annotations": [{"image_id": pid, "file_name": f"{pid}.png", "segments_info": segments[pid]}
                                for pid in ground_truth.image_ids]}
    return {"annotations": [
        {"video_id": video.name, "annotations": [
            {"image_id": f.image_id, "file_name": f.file_name, "segments_info": segments[f"{video.name}/{f.image_id}"]}
            for f in video.frames]}
        for video in ground_truth.videos]}


def predict_clips(predictor, dataset, submission_dir: Path, *, fingerprint: str,
                  to_json: Mapping[int, int]) -> dict[str, list[dict]]:
    """Stream every clip of a VPS evaluation dataset through ``predictor``; write pan_pred PNGs of the annotated
    frames and ``clips/<video>.json``. Returns {image id: segments_info} of every annotated frame.

    An annotated item's ``panoptic_image_id`` names its PNG, ``pan_pred/<panoptic_image_id>.png``: the GT image id
    (Cityscapes-VPS, VIPER), or ``<video_id>/<image id>`` for VIPSeg (whose evaluator reads
    ``pan_pred/<video_id>/<file_name>``; the official JSON's file name is the image id + ``.png``).

    A clip whose ``clips/<video>.json`` holds ``fingerprint`` is kept from the previous run; its record is
    written last, so an interrupted clip is predicted again.
    """
    from vidseg.data.vps_common import video_index_ranges  # imports torch: only when predicting

    videos = dataset.videos()
    clips = video_index_ranges(videos)
    pan_dir, clip_dir = submission_dir / "pan_pred", submission_dir / "clips"
    segments: dict[str, list[dict]] = {}
    bar = progress_bar(len(dataset), "predict")
    for number, indices in enumerate(clips, start=1):
        video = videos[indices[0]]
        record_path = checked_join(clip_dir, f"{video}.json", source="the frames JSON", what="video id")
        if record_path.is_file():
            record = read_json(record_path, what="clip record")
            if record.get("fingerprint") == fingerprint and all(
                    checked_join(pan_dir, f"{pid}.png", source=record_path, what="image id").is_file()
                    for pid in record["frames"]):
                segments.update(record["frames"])
                bar.write(f"[{number}/{len(clips)}] clip {video}: already predicted with this checkpoint, kept")
                bar.update(len(indices))
                continue
        record_path.unlink(missing_ok=True)
        session = predictor.start()
        frames: dict[str, list[dict]] = {}
        for index in indices:
            item = dataset[index]
            result = session.step(item["images"][0])
            bar.update(1)
            if item["annotated"]:
                pid = str(item["panoptic_image_id"])
                write_panoptic_png(checked_join(pan_dir, f"{pid}.png", source="the frames JSON", what="image id"),
                                   result.panoptic)
                frames[pid] = submission_segments(result.segments, to_json)
        write_json_atomic(record_path, {"video": video, "fingerprint": fingerprint, "frames": frames})
        segments.update(frames)
        bar.write(f"[{number}/{len(clips)}] clip {video}: {len(indices)} frames, {len(frames)} annotated")
    bar.close()
    return segments


def vps_result_file_names(protocol, split: str) -> list[str]:
    """The files :func:`vidseg.metrics.vps_eval.write_vps_results` writes (claimed before scoring)."""
    from vidseg.data.names import check_name

    split = check_name(split, source="data.split", what="split")
    return [*(f"vpq-{k}.txt" for k, _ in protocol.windows), "vpq-final.txt", f"results-{split}.json"]


def evaluate_vps(cfg: DictConfig):
    """Predict (if ``cfg.ckpt``) and score ``cfg.data``'s split ``cfg.data.split``; writes the result files."""
    if (cfg.get("ckpt") is None) == (cfg.get("predictions") is None):
        raise DataError("give exactly one of ckpt=<checkpoint> (predict every clip, then score) or "
                        "predictions=<submission dir with pan_pred/ and pred.json> (score any method's output)")
    layout = dataset_layout(cfg.data)
    root, split = Path(cfg.data.root), str(cfg.data.split)
    output_dir = Path(cfg.output_dir)
    ground_truth = load_ground_truth(layout, root, split)
    # stq_mode=corrected: VIPSeg's STQ without its official crowd quirk (vidseg.metrics.stq); the same elsewhere.
    protocol = with_stq_mode(PROTOCOLS[layout.name], str(cfg.get("stq_mode") or "official"))
    with open_evaluation_folder(cfg, split) as folder:
        # Claimed before any work: refused at once if one of these is not vidseg's (another method's submission,
        # eval_vpq.py's vpq-*.txt) or is an input. Scoring a submission in place (output_dir=predictions) writes
        # only the result files.
        predicting = cfg.get("predictions") is None
        folder.claim([*vps_result_file_names(protocol, split), *(["pred.json"] if predicting else [])],
                     fresh=["pan_pred", "clips"] if predicting else [])
        if not predicting:
            submission = Path(cfg.predictions)
        else:
            from vidseg.inference.checkpoint import checkpoint_fingerprint
            from vidseg.inference.vps import VPSPredictor
            from vidseg.utils.device import resolve_device

            ckpt = Path(cfg.ckpt)
            predictor = VPSPredictor.from_checkpoint(ckpt, device=resolve_device(cfg.device),
                                                     precision=str(cfg.precision))
            datamodule = instantiate(cfg.data)
            datamodule.setup("validate")
            dataset = datamodule.val_dataset
            gt_json = read_json(ground_truth.json_path, what=f"{layout.name} panoptic GT JSON")
            to_json = json_category_ids(gt_json["categories"], predictor.categories, str(ground_truth.json_path))
            submission = output_dir
            segments = predict_clips(predictor, dataset, submission, fingerprint=checkpoint_fingerprint(ckpt),
                                     to_json=to_json)
            missing = [pid for pid in ground_truth.image_ids if pid not in segments]
            if missing:
                raise DataError(f"{ground_truth.json_path}: {len(missing)} annotated images (e.g. {missing[0]!r}) are "
                                f"not among the frames of {layout.frames_json(root, split)}; the two JSON files "
                                "disagree")
            write_json_atomic(submission / "pred.json", submission_json(ground_truth, segments))
        written = ["pan_pred", "clips", "pred.json"] if predicting else []
        results = evaluate_submission(ground_truth, submission, protocol, workers=cfg.get("workers"))
        paths = write_vps_results(results, output_dir, split)
        finish_evaluation(folder, [*written, *paths.values()], {
            "task": "vps", "dataset": layout.name, "ckpt": str(cfg.ckpt) if cfg.get("ckpt") else None,
            "predictions": str(submission.resolve()), "data_root": str(root.resolve()), "split": split,
            "files": {k: str(v) for k, v in paths.items()},
        })
    print(format_vps_table(results))
    print(f"\nsubmission: {submission.resolve()}")
    for path in paths.values():
        print(f"results:    {Path(path).resolve()}")
    return results


# ----------------------------------------------------------------------------------------------------------
# Prediction on a user's video
# ----------------------------------------------------------------------------------------------------------


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright colour per track id, the same in every frame (golden-ratio hues)."""
    hue = (0.13 + 0.61803398875 * int(track_id)) % 1.0
    value = 1.0 if track_id % 2 == 0 else 0.8
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return int(255 * r), int(255 * g), int(255 * b)


def panoptic_overlay(frame: np.ndarray, panoptic: np.ndarray, categories: Sequence[Mapping[str, Any]],
                     alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 frame + (H, W) segment ids -> overlay: stuff in its category colour, each track in its
    own colour (:func:`track_colour`), void untouched, contours around every segment."""
    colours = {int(c["id"]): tuple(c["color"]) if c.get("color") else (128, 128, 128) for c in categories}
    uniq, inverse = np.unique(panoptic, return_inverse=True)
    palette = [(0, 0, 0)]
    labels = np.zeros(len(uniq), dtype=np.int64)
    for k, segment in enumerate(uniq.tolist()):
        if segment == PANOPTIC_VOID_ID:
            continue
        if segment < PANOPTIC_LABEL_DIVISOR:
            colour = colours.get(segment - 1, (128, 128, 128))
        else:
            colour = track_colour(segment // PANOPTIC_LABEL_DIVISOR - 1)
        labels[k] = len(palette)
        palette.append(colour)
    return overlay(frame, labels[inverse].reshape(panoptic.shape), alpha, np.asarray(palette, dtype=np.uint8))


def predict_vps(cfg: DictConfig) -> dict:
    """Segment ``cfg.input`` (a video file or a frame folder) with ``cfg.ckpt``; returns a summary."""
    from vidseg.inference.vps import VPSPredictor
    from vidseg.utils.device import resolve_device

    input_path, output = Path(cfg.input), Path(cfg.output)
    inputs = {"input": input_path, "ckpt": cfg.ckpt}
    check_apart(output, inputs, whole_folder=("input",))  # before any work: refused in a blink
    predictor = VPSPredictor.from_checkpoint(cfg.ckpt, device=resolve_device(cfg.device),
                                             precision=str(cfg.precision))
    categories = category_table(predictor.categories)
    frames = read_video_frames(input_path)
    frame_name_list = frame_names(input_path)  # the input's frame names (None: a video file, numbered 00000...)
    fps = cfg.fps or video_fps(input_path)
    panoptic_dir, segments_dir, overlay_path = output / "panoptic", output / "segments", output / "overlay.mp4"
    written = [panoptic_dir.name, segments_dir.name, *((overlay_path.name,) if cfg.overlay else ())]
    session = predictor.start()
    tracks: set[int] = set()
    frame_list: list[str] = []
    with open_output_folder(output, key="predict", overwrite=overwrite_option(cfg), inputs=inputs,
                            whole_folder=("input",)) as folder:
        folder.claim([*written, "prediction.json"])  # refused here if a name is not vidseg's
        # Outputs are built in a staging folder and moved over the previous run's only when every frame is done.
        with folder.staging() as staging, contextlib.ExitStack() as stack:
            writer = stack.enter_context(VideoWriter(staging / overlay_path.name, fps=fps)) if cfg.overlay else None
            bar = stack.enter_context(progress_bar(frame_count_hint(input_path), "predict"))
            for frame in frames:
                index, panoptic, segments = session.step(frame)
                name = frame_name_list[index] if frame_name_list is not None else f"{index:05d}"
                frame_list.append(name)
                write_panoptic_png(checked_join(staging, panoptic_dir.name, f"{name}.png", source=input_path,
                                                what="frame name"), panoptic)
                write_json_atomic(checked_join(staging, segments_dir.name, f"{name}.json", source=input_path,
                                               what="frame name"),
                                  frame_segments_record(index, name, segments, categories))
                tracks.update(s["track_id"] for s in segments if s["isthing"])
                if writer is not None:
                    writer.write(panoptic_overlay(frame, panoptic, predictor.categories))
                bar.update(1)
            if session.frame_index == 0:
                raise DataError(f"{input_path}: no frames to segment (the video or folder is empty)")
            stack.close()  # finish the overlay video before it is moved
            # prediction.json, the sign of a complete run, goes first and comes back last.
            (output / "prediction.json").unlink(missing_ok=True)
            folder.publish(staging, written)
        folder.retire([*written, "prediction.json"])  # e.g. the overlay of an earlier run, now overlay=false
        summary = {"frames": session.frame_index, "tracks": sorted(tracks), "panoptic": str(panoptic_dir.resolve()),
                   "segments": str(segments_dir.resolve()),
                   "overlay": str(overlay_path.resolve()) if cfg.overlay else None, "ckpt": str(cfg.ckpt),
                   "input": str(input_path.resolve()), "frame_names": frame_list, "files": written}
        write_json_atomic(output / "prediction.json", summary)
        folder.record(["prediction.json"])
    print(f"segmented {summary['frames']} frames, {len(tracks)} tracks")
    print(f"panoptic PNGs: {summary['panoptic']}")
    print(f"segments JSON: {summary['segments']}")
    if summary["overlay"]:
        print(f"overlay:       {summary['overlay']}")
    return summary

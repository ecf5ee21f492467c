"""The Gradio page: a VOS tab (upload or toy clip, scrub, paint objects, run, watch, download) and a VPS tab.

Everything the page does goes through :mod:`vidseg.app.inputs` and :mod:`vidseg.app.runs`; this module only
lays out components and wires events. Element ids (``vos-*``, ``vps-*``) are what the browser tests drive.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from vidseg.app.config import AppConfig
from vidseg.app.inputs import (
    MAX_PAINT_OBJECTS,
    TOY_VOS_CLIPS,
    TOY_VPS_CLIPS,
    Limits,
    VideoInfo,
    brush_colours,
    check_video,
    describe_annotations,
    mask_layer,
    painted_mask,
    read_frame,
    read_mask_upload,
    store_upload,
    write_toy_vos_clip,
    write_toy_vps_clip,
)
from vidseg.app.runs import (
    TRACK_COLUMNS,
    RunProgress,
    VOSResult,
    VPSResult,
    legend_html,
    new_run_folder,
    run_vos,
    run_vps,
)
from vidseg.app.sessions import SessionFolders
from vidseg.errors import DataError

log = logging.getLogger("vidseg.app")

# Progress text is pushed to the page at most this often (a message per frame would flood the socket).
PROGRESS_INTERVAL_S = 0.25
EDITOR_LABEL = (f"Paint objects: one colour per object (up to {MAX_PAINT_OBJECTS}); eraser and undo in the toolbar. "
                "To add an object later in the video, go to that frame, paint it in a new colour and Run again: "
                "the run resumes at that frame.")
# Brush and eraser radius in image pixels (Gradio's "auto" is about a 16th of a small frame); the toolbar changes it.
BRUSH_SIZE = 3


class Models:
    """The two predictors, loaded on first use from the server's checkpoints (never from the browser)."""

    def __init__(self, cfg: AppConfig):
        from vidseg.utils.device import resolve_device

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"device **{self.device}**, precision **{self.cfg.precision}**"

    def get(self, task: str):
        with self._lock:
            if task not in self._loaded:
                self._loaded[task] = self._load(task)
            return self._loaded[task]

    def _load(self, task: str):
        if task == "vos":
            from vidseg.inference.vos import VOSPredictor

            path = self.cfg.vos_checkpoint()
            if path is None:
                raise DataError(self.cfg.notes[0] if self.cfg.notes else "no VOS checkpoint")
            return VOSPredictor.from_checkpoint(path, device=self.device, precision=self.cfg.precision)
        from vidseg.inference.vps import VPSPredictor

        path = self.cfg.vps_checkpoint()
        if path is None:
            raise DataError(next((n for n in self.cfg.notes if "VPS" in n), "no VPS checkpoint"))
        return VPSPredictor.from_checkpoint(path, device=self.device, precision=self.cfg.precision)


def _error(err: BaseException) -> str:
    """The page's words for a failure: the message of a user error, never a traceback."""
    if isinstance(err, (DataError, FileNotFoundError, ValueError)):
        return f"**Error:** {' '.join(str(err).split())}"
    log.exception("vidseg app: unexpected error", exc_info=err)
    return f"**Error:** something went wrong on the server ({type(err).__name__}); the server's log has the details"


def _editor_value(frame: np.ndarray, mask: np.ndarray | None) -> dict:
    layers = [mask_layer(mask)] if mask is not None and mask.any() else []
    return {"background": frame, "layers": layers, "composite": None}


def _painting(editor: dict | None, size: tuple[int, int]) -> np.ndarray:
    layers = (editor or {}).get("layers") or []
    return painted_mask([np.asarray(layer) for layer in layers], size)


def build_app(cfg: AppConfig, sessions: SessionFolders) -> gr.Blocks:
    """The page, wired to ``cfg``'s checkpoints and limits; per-session files go under ``sessions``."""
    limits = Limits(cfg.max_upload_mb * 2**20, cfg.max_frames, cfg.max_seconds, cfg.max_pixels)
    models = Models(cfg)
    video_types = [".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"]

    def session_folder(request: gr.Request) -> Path:
        return sessions.folder(request.session_hash or "anonymous")

    with gr.Blocks(title="vidseg", analytics_enabled=False, delete_cache=(600, cfg.session_ttl_s)) as app:
        gr.Markdown("# vidseg: segment your own video\n"
                    f"Runs on this machine: {models.describe()}. Uploads up to {cfg.max_upload_mb} MB, "
                    f"{cfg.max_frames} frames, {cfg.max_seconds:.0f} s. Files stay in a temporary folder that is "
                    "removed when you close this page.")
        for note in cfg.notes:
            gr.Markdown(f"**Note:** {note}")

        # ---------------------------------------------------------------- VOS
        with gr.Tab("Video object segmentation (FEELVOS)", id="vos"):
            vos_state = gr.State({"video": None, "frame": 0, "annotations": {}, "last": None})
            with gr.Row():
                with gr.Column(scale=1):
                    vos_upload = gr.File(label="Upload a video (mp4)", file_types=video_types, elem_id="vos-upload")
                    with gr.Row():
                        vos_toy = gr.Dropdown(list(TOY_VOS_CLIPS), value=next(iter(TOY_VOS_CLIPS)),
                                              label="or a bundled toy clip", elem_id="vos-toy")
                        vos_toy_load = gr.Button("Load toy clip", elem_id="vos-toy-load")
                    vos_status = gr.Markdown("Upload a video or load a toy clip.", elem_id="vos-status")
                    vos_mask = gr.File(label="or upload this frame's mask (indexed PNG, value = object id)",
                                       file_types=[".png"], elem_id="vos-mask")
                    vos_annotations = gr.Markdown(describe_annotations({}), elem_id="vos-annotations")
                    with gr.Row():
                        vos_clear = gr.Button("Clear all objects", elem_id="vos-clear")
                        vos_run = gr.Button("Run", variant="primary", elem_id="vos-run")
                        vos_cancel = gr.Button("Cancel", variant="stop", elem_id="vos-cancel")
                    vos_progress = gr.Markdown("", elem_id="vos-progress")
                with gr.Column(scale=2):
                    vos_frame = gr.Slider(0, 1, value=0, step=1, label="frame", elem_id="vos-frame")
                    # What the editor shows: a new value (the frame and its mask are in vos_state) draws a new
                    # editor. Replacing a painted-on editor's value instead leaves Gradio's ImageEditor
                    # "processing" for good (gradio 6.31, seen in Chromium), so every view gets a fresh editor.
                    vos_view = gr.State(0)

                    @gr.render(inputs=[vos_view, vos_state], triggers=[vos_view.change, app.load])
                    def draw_editor(_view, state):
                        """A fresh editor on the current frame, with the events that read its painting (the
                        handlers are defined below)."""
                        value = None
                        if state["video"] is not None:
                            frame = read_frame(state["video"].path, state["frame"])
                            value = _editor_value(frame, state["annotations"].get(state["frame"]))
                        editor = gr.ImageEditor(
                            value=value, label=EDITOR_LABEL, type="numpy", image_mode="RGBA", format="png",
                            sources=(), transforms=(), layers=False,
                            brush=gr.Brush(default_size=BRUSH_SIZE, colors=brush_colours(), color_mode="fixed"),
                            eraser=gr.Eraser(default_size=BRUSH_SIZE), interactive=True, elem_id="vos-editor")
                        # One concurrency group: a scrub during a run waits for it, so the editor (and these
                        # listeners, Cancel's among them) is not redrawn under a running job.
                        vos_frame.release(on_scrub, [vos_frame, vos_state, editor],
                                          [vos_state, vos_view, vos_annotations, vos_status], concurrency_id="vos")
                        run = vos_run.click(on_vos_run, [vos_state, editor], [vos_state, vos_annotations,
                                            vos_progress, vos_overlay, vos_files, vos_summary], concurrency_id="vos")
                        vos_cancel.click(lambda: "cancelled", None, vos_progress, cancels=[run])

            with gr.Row():
                vos_overlay = gr.Video(label="overlay", interactive=False, autoplay=True, elem_id="vos-overlay")
                with gr.Column():
                    vos_files = gr.File(label="downloads: masks (zip of DAVIS-palette PNGs) and overlay",
                                        file_count="multiple", interactive=False, elem_id="vos-files")
                    vos_summary = gr.Markdown("", elem_id="vos-summary")

            views = itertools.count(1)

            def set_video(state: dict, info: VideoInfo, request: gr.Request, name: str | None = None):
                state = {"video": info, "frame": 0, "annotations": {}, "last": None}
                message = (f"**{name or info.path.name}**: {info.frames} frames, {info.width}x{info.height}, "
                           f"{info.fps:.1f} fps. Paint the objects on frame 0 (or any frame), then Run.")
                return (state, message, gr.Slider(0, max(info.frames - 1, 1), value=0, step=1,
                                                  interactive=info.frames > 1),
                        next(views), describe_annotations({}))

            vos_video_outputs = [vos_state, vos_status, vos_frame, vos_view, vos_annotations]

            def on_vos_upload(file, state, request: gr.Request):
                if file is None:
                    return state, gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
                try:
                    info = store_upload(file, session_folder(request), "vos", limits)
                    return *set_video(state, info, request, name=Path(file).name), gr.update()
                except Exception as err:  # noqa: BLE001 - shown in the page
                    # the refused file leaves the upload box, so another can be dropped at once
                    return state, _error(err), gr.update(), gr.update(), gr.update(), None

            def on_vos_toy(name, state, request: gr.Request):
                try:
                    folder = session_folder(request)
                    path, _ = write_toy_vos_clip(name, folder)
                    return set_video(state, check_video(path, limits), request)
                except Exception as err:  # noqa: BLE001
                    return state, _error(err), gr.update(), gr.update(), gr.update()

            def commit(state: dict, editor) -> dict:
                """The editor's painting becomes the annotation of the frame it shows (none if empty)."""
                info = state["video"]
                if info is None:
                    return state
                mask = _painting(editor, (info.height, info.width))
                annotations = dict(state["annotations"])
                if mask.any():
                    annotations[state["frame"]] = mask
                else:
                    annotations.pop(state["frame"], None)
                return {**state, "annotations": annotations}

            def on_scrub(index, state, editor):
                if state["video"] is None:
                    return state, gr.update(), gr.update(), gr.update()
                try:
                    state = {**commit(state, editor), "frame": int(index)}
                    return state, next(views), describe_annotations(state["annotations"]), gr.update()
                except Exception as err:  # noqa: BLE001
                    return state, gr.update(), gr.update(), _error(err)

            def on_mask_upload(file, state):
                if file is None or state["video"] is None:
                    return state, gr.update(), gr.update(), gr.update()
                try:
                    info = state["video"]
                    mask = read_mask_upload(file, (info.height, info.width))
                    annotations = {**state["annotations"], state["frame"]: mask}
                    state = {**state, "annotations": annotations}
                    return (state, next(views), describe_annotations(annotations),
                            f"mask of frame {state['frame']} loaded")
                except Exception as err:  # noqa: BLE001
                    return state, gr.update(), gr.update(), _error(err)

            def on_clear(state):
                if state["video"] is None:
                    return state, gr.update(), gr.update()
                return {**state, "annotations": {}}, next(views), describe_annotations({})

            def on_vos_run(state, editor, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - how Gradio injects it
                outputs = {vos_overlay: None, vos_files: None, vos_summary: ""}
                if state["video"] is None:
                    yield {vos_progress: "**Error:** upload a video or load a toy clip first", **outputs}
                    return
                try:
                    state = commit(state, editor)
                    info, annotations = state["video"], state["annotations"]
                    if not annotations:
                        raise DataError("no objects: paint at least one object (or upload a mask PNG) first")
                    yield {vos_state: state, vos_annotations: describe_annotations(annotations),
                           vos_progress: "loading the model...", **outputs}
                    predictor = models.get("vos")
                    previous = state.get("last")
                    folder = new_run_folder(session_folder(request), "vos",
                                            keep=previous.folder if previous is not None else None)
                    last = 0.0
                    for item in run_vos(predictor, info, annotations, folder, previous=previous):
                        if isinstance(item, RunProgress):
                            progress((item.done, item.total), desc=item.text(), unit="frames")
                            if time.monotonic() - last > PROGRESS_INTERVAL_S or item.done == item.total:
                                last = time.monotonic()
                                yield {vos_progress: item.text()}
                        else:
                            result: VOSResult = item
                    starts = ", ".join(f"{obj} (from frame {t})" for obj, t in result.object_first_frames.items())
                    done = f"done: {result.frames} frames, {result.fps:.1f} frames/s"
                    if result.reused:
                        done = (f"done: {result.frames} frames (frames 0-{result.reused - 1} kept from the previous "
                                f"run, {result.frames - result.reused} segmented at {result.fps:.1f} frames/s)")
                    yield {vos_state: {**state, "last": result}, vos_progress: done,
                           vos_overlay: str(result.overlay), vos_files: [str(result.masks_zip), str(result.overlay)],
                           vos_summary: f"segmented {result.frames} frames; objects {starts}"}
                except Exception as err:  # noqa: BLE001
                    yield {vos_progress: _error(err), **outputs}

            vos_upload.upload(on_vos_upload, [vos_upload, vos_state], [*vos_video_outputs, vos_upload])
            vos_toy_load.click(on_vos_toy, [vos_toy, vos_state], vos_video_outputs)
            vos_mask.upload(on_mask_upload, [vos_mask, vos_state], [vos_state, vos_view, vos_annotations, vos_status])
            vos_clear.click(on_clear, [vos_state], [vos_state, vos_view, vos_annotations])

        # ---------------------------------------------------------------- VPS
        with gr.Tab("Video panoptic segmentation (VPSNet)", id="vps"):
            vps_state = gr.State({"video": None})
            with gr.Row():
                with gr.Column(scale=1):
                    vps_upload = gr.File(label="Upload a video (mp4)", file_types=video_types, elem_id="vps-upload")
                    with gr.Row():
                        vps_toy = gr.Dropdown(list(TOY_VPS_CLIPS), value=next(iter(TOY_VPS_CLIPS)),
                                              label="or a bundled toy clip", elem_id="vps-toy")
                        vps_toy_load = gr.Button("Load toy clip", elem_id="vps-toy-load")
                    vps_status = gr.Markdown("Upload a video or load a toy clip.", elem_id="vps-status")
                    with gr.Row():
                        vps_run = gr.Button("Run", variant="primary", elem_id="vps-run")
                        vps_cancel = gr.Button("Cancel", variant="stop", elem_id="vps-cancel")
                    vps_progress = gr.Markdown("", elem_id="vps-progress")
                    vps_files = gr.File(label="downloads: panoptic PNGs + segments JSON (zip) and overlay",
                                        file_count="multiple", interactive=False, elem_id="vps-files")
                with gr.Column(scale=2):
                    vps_overlay = gr.Video(label="panoptic overlay", interactive=False, autoplay=True,
                                           elem_id="vps-overlay")
                    vps_legend = gr.HTML("", elem_id="vps-legend")
            vps_tracks = gr.Dataframe(headers=TRACK_COLUMNS, label="tracks", interactive=False, elem_id="vps-tracks")

            def vps_set(info: VideoInfo, name: str | None = None):
                return {"video": info}, (f"**{name or info.path.name}**: {info.frames} frames, "
                                         f"{info.width}x{info.height}, {info.fps:.1f} fps. Press Run.")

            def on_vps_upload(file, state, request: gr.Request):
                if file is None:
                    return state, gr.update(), gr.update()
                try:
                    return *vps_set(store_upload(file, session_folder(request), "vps", limits), Path(file).name), \
                        gr.update()
                except Exception as err:  # noqa: BLE001
                    return state, _error(err), None

            def on_vps_toy(name, state, request: gr.Request):
                try:
                    return vps_set(check_video(write_toy_vps_clip(name, session_folder(request)), limits))
                except Exception as err:  # noqa: BLE001
                    return state, _error(err)

            def on_vps_run(state, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - how Gradio injects it
                outputs = {vps_overlay: None, vps_files: None, vps_legend: "", vps_tracks: None}
                if state["video"] is None:
                    yield {vps_progress: "**Error:** upload a video or load a toy clip first", **outputs}
                    return
                try:
                    yield {vps_progress: "loading the model...", **outputs}
                    predictor = models.get("vps")
                    folder = new_run_folder(session_folder(request), "vps")
                    last = 0.0
                    for item in run_vps(predictor, state["video"], folder):
                        if isinstance(item, RunProgress):
                            progress((item.done, item.total), desc=item.text(), unit="frames")
                            if time.monotonic() - last > PROGRESS_INTERVAL_S or item.done == item.total:
                                last = time.monotonic()
                                yield {vps_progress: item.text()}
                        else:
                            result: VPSResult = item
                    yield {vps_progress: f"done: {result.frames} frames, {result.fps:.1f} frames/s",
                           vps_overlay: str(result.overlay),
                           vps_files: [str(result.panoptic_zip), str(result.overlay)],
                           vps_legend: legend_html(result), vps_tracks: result.tracks}
                except Exception as err:  # noqa: BLE001
                    yield {vps_progress: _error(err), **outputs}

            vps_upload.upload(on_vps_upload, [vps_upload, vps_state], [vps_state, vps_status, vps_upload])
            vps_toy_load.click(on_vps_toy, [vps_toy, vps_state], [vps_state, vps_status])
            vps_event = vps_run.click(on_vps_run, [vps_state],
                                      [vps_progress, vps_overlay, vps_files, vps_legend, vps_tracks])
            vps_cancel.click(lambda: "cancelled", None, vps_progress, cancels=[vps_event])

        def on_unload(request: gr.Request):
            sessions.end(request.session_hash or "anonymous")

        app.unload(on_unload)
    app.queue(default_concurrency_limit=1)  # one run at a time: one model, one device
    return app

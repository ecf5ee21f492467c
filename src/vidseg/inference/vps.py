"""Streaming VPSNet inference: the one inference loop behind validation, evaluate, predict and the API.

    predictor = VPSPredictor.from_checkpoint("last.ckpt")
    for frame_idx, panoptic, segments in predictor.track(frames):   # any iterable of frames, read lazily
        ...  # panoptic: (H, W) int64 segment ids; segments: [{"id", "category_id", "isthing", "track_id", ...}]

    session = predictor.start()            # or frame by frame, e.g. from a camera
    result = session.step(frame)           # VPSFrameResult(frame_index, panoptic, segments)

A session keeps only what :class:`vidseg.models.vpsnet.VPSState` keeps: the previous frame (padded image, FPN
features and, with RAFT, its feature-encoder output, for the Fuse module) and the track memory (one embedding,
box and class per track, or the previous frame's track map for the mask-IoU association option), so memory
is constant in the length of the video.

Segment ids (stable within a video, :mod:`vidseg.models.vpsnet.postprocess`): void 0, stuff class c -> c + 1,
thing of class c on track t -> (t + 1) * 1000 + c, unique within a frame. Category ids are the dataset's class
ids (Cityscapes trainIds: stuff 0-10, things 11-18); ``predictor.categories`` names them. ``track_id`` is a
track of the learned association (track, fusetrack); without a track head (image, fuse) it follows
``model.net.associate_without_track_head``: "rank" (official default) = ``rank * num_things + (c - num_stuff)``
for the instance's rank among the frame's kept detections, so the same class and rank share an id in every
frame; "mask_iou" = an id matched by mask IoU with the previous frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vidseg.errors import DataError
from vidseg.inference.checkpoint import load_model_state, read_checkpoint
from vidseg.models.vpsnet import VPSNet, VPSState, build_vpsnet
from vidseg.pretrained import PretrainedPredictorMixin
from vidseg.utils.device import autocast_dtype as resolve_autocast_dtype

if TYPE_CHECKING:
    from vidseg.onnx.vpsnet import OnnxVPSNet

Frame = np.ndarray | torch.Tensor


def frame_tensor(frame: Frame) -> torch.Tensor:
    """(H, W, 3) uint8 numpy RGB or (3, H, W) uint8 tensor -> (3, H, W) uint8 tensor (CPU)."""
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3) RGB arrays, got shape {frame.shape}")
        frame = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    if not isinstance(frame, torch.Tensor) or frame.ndim != 3 or frame.shape[0] != 3:
        shape = tuple(frame.shape) if hasattr(frame, "shape") else type(frame).__name__
        raise ValueError(f"frame tensors must be (3, H, W) uint8 RGB, got {shape}")
    if frame.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 RGB (0..255), got dtype {frame.dtype}")
    return frame


def vpsnet_config(net_config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`build_vpsnet` keyword arguments from a checkpoint's ``hyper_parameters["net"]``: the weights come
    from the checkpoint, so no pretrained file is looked for (backbone, flow and COCO initialisation off)."""
    net = dict(net_config)
    net["backbone"] = {**dict(net.get("backbone") or {}), "weights": None}
    if net.get("flow") is not None:
        net["flow"] = {**dict(net["flow"]), "weights": None}
    net["coco_checkpoint"] = None
    return net


def load_vps_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[VPSNet, dict]:
    """Build VPSNet from a vidseg VPS checkpoint (``weights_only=True``); returns (model in eval mode,
    hyper-parameters). A checkpoint of another task raises :class:`CheckpointError` naming both tasks."""
    checkpoint = read_checkpoint(path, task="vps", map_location=map_location)
    model = build_vpsnet(**vpsnet_config(checkpoint.hyper_parameters["net"]))
    # A frozen-by-weights flow net or frozen BN statistics are part of the state; strict load catches drift.
    load_model_state(model, checkpoint)
    return model.eval(), checkpoint.hyper_parameters


@dataclass
class VPSFrameResult:
    """One frame of a session: frame_index (0-based), panoptic (H, W) int64 numpy segment ids (0 = void),
    segments: one dict per segment {"id", "category_id", "isthing", "track_id" (None for stuff),
    "score" (None for stuff), "area"}."""

    frame_index: int
    panoptic: np.ndarray
    segments: list[dict[str, Any]]

    def __iter__(self):  # (frame index, panoptic, segments) unpacking, like VOSPredictor.track
        return iter((self.frame_index, self.panoptic, self.segments))


class VPSSession:
    """One video being segmented: feed its frames in order with :meth:`step`.

    Args:
        model: VPSNet in eval mode (its device is used), or :class:`vidseg.onnx.vpsnet.OnnxVPSNet` (the network in
            ONNX Runtime; the state, association and post-processing are the same code).
        autocast_dtype: e.g. torch.bfloat16 to run the network in mixed precision.
    """

    def __init__(self, model: VPSNet | OnnxVPSNet, *, autocast_dtype: torch.dtype | None = None) -> None:
        if model.training:
            raise ValueError("VPSSession needs the model in eval mode: call model.eval() first")
        self.model = model
        self.device = model.pixel_mean.device
        self.autocast_dtype = autocast_dtype
        self.state = VPSState()

    @property
    def frame_index(self) -> int:
        """Frames seen so far (the index the next frame will get)."""
        return self.state.frame_index

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def step_raw(self, frame: Frame):
        """Segment the next frame; returns the model's :class:`VPSFrameOutput` (tensors on the model's device)."""
        image = frame_tensor(frame)
        if self.state.size is not None and tuple(image.shape[-2:]) != self.state.size:
            raise ValueError(f"frame {self.state.frame_index} is {tuple(image.shape[-2:])} (H, W) but the video's "
                             f"frames are {self.state.size}; start a new session for another video")
        with torch.inference_mode(), self._autocast():
            output, self.state = self.model.infer_frame(image.to(self.device), self.state)
        return output

    def step(self, frame: Frame) -> VPSFrameResult:
        """Segment the next frame ((H, W, 3) uint8 numpy or (3, H, W) uint8 tensor)."""
        index = self.state.frame_index
        output = self.step_raw(frame)
        return VPSFrameResult(index, output.panoptic.cpu().numpy(), output.segments_info)


class VPSPredictor(PretrainedPredictorMixin):
    """Video panoptic segmentation with a trained VPSNet: frames in, panoptic maps with stable track ids out.

    Args:
        model: VPSNet (moved to ``device``, put in eval mode), or an ONNX Runtime backend with its inference
            contract (:class:`vidseg.onnx.vpsnet.OnnxVPSNet`, from an exported folder: ``device`` and
            ``precision`` are then the PyTorch backend's options and are not used).
        device: "cpu", "cuda", ...; None keeps the model where it is.
        precision: "32" or "bf16-mixed" / "16-mixed" (network in autocast).
        categories: [{"id", "name", "isthing", "color"}] of the model's classes (from the checkpoint).
    """

    task_module = "VPSTask"  # PretrainedPredictorMixin: what to save instead when there is no checkpoint

    def __init__(self, model: VPSNet | OnnxVPSNet, *, device: str | torch.device | None = None,
                 precision: str = "32", categories: Sequence[Mapping[str, Any]] | None = None) -> None:
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.autocast_dtype = resolve_autocast_dtype(precision)
        self.categories = [dict(c) for c in categories] if categories else default_categories(model)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu", precision: str = "32",
                        backend: str | None = None) -> VPSPredictor:
        """Load a checkpoint written by ``python -m vidseg.train task=vps`` (see :func:`load_vps_model`).

        ``backend``: "torch" (a checkpoint or pretrained folder), "onnx" (a folder written by ``python -m
        vidseg.export task=vps format=onnx``: the network runs in ONNX Runtime on ``device``'s execution provider,
        the rest of the frame in PyTorch on the CPU, :class:`vidseg.onnx.vpsnet.OnnxVPSNet`), or None: "onnx" for
        an ONNX folder, "torch" otherwise.
        Raises:
            DataError: a backend that does not fit ``path``, or a precision for an ONNX folder (one line).
        """
        from vidseg.onnx.folder import resolve_backend

        if resolve_backend(backend, path) == "onnx":
            from vidseg.onnx.vpsnet import OnnxVPSNet

            if str(precision) != "32":
                raise DataError(f"{path}: an ONNX export runs in fp32; drop precision={precision}")
            model = OnnxVPSNet.from_folder(path, device=device)
            return cls(model, categories=model.categories)
        model, hparams = load_vps_model(path)
        predictor = cls(model, device=device, precision=precision, categories=hparams.get("categories"))
        predictor.checkpoint_path = path
        return predictor

    def start(self) -> VPSSession:
        """Open a session for one video (see :class:`VPSSession`)."""
        return VPSSession(self.model, autocast_dtype=self.autocast_dtype)

    def track(self, frames: Iterable[Frame]) -> Iterator[VPSFrameResult]:
        """Yield :class:`VPSFrameResult` (unpacks as (frame index, panoptic, segments)) for every frame of one
        video; ``frames`` is consumed lazily, one frame at a time."""
        session = self.start()
        for frame in frames:
            yield session.step(frame)


def default_categories(model: VPSNet) -> list[dict[str, Any]]:
    """Unnamed categories for a model without names: stuff 0..S-1, things S..S+T-1."""
    return [{"id": c, "name": f"class_{c}", "isthing": int(c >= model.num_stuff), "color": None}
            for c in range(model.num_stuff + model.num_things)]

"""Streaming FEELVOS inference: the one inference loop behind validation, evaluate, predict and the API.

    predictor = VOSPredictor.from_checkpoint("last.ckpt")
    for frame_idx, object_ids, mask in predictor.track(frames, first_mask):
        ...  # mask: (H, W) uint8 with the ids of first_mask

Only the first frame (embedding + labels) and the previous frame (embedding + predicted labels) are kept, so
memory is constant in the length of the video. As in training, the previous frame reaches the head twice:
local matching against its labels and the one-hot of those same labels (official FEELVOS). The network runs
at the model's ``inference_output_stride`` (paper: 8, trained at 16), see :meth:`FEELVOS.for_inference`.
Frames are padded to the network's stride with the ImageNet mean colour, as training crops are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidseg.constants import IGNORE_LABEL, IMAGENET_MEAN_UINT8
from vidseg.inference.checkpoint import CheckpointError, read_checkpoint
from vidseg.models.feelvos.model import FEELVOS, downsample_labels
from vidseg.utils.device import autocast_dtype
from vidseg.utils.padding import pad_to_multiple

Frame = np.ndarray | torch.Tensor


def _frame_tensor(frame: Frame, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 numpy RGB or (3, H, W) tensor -> (1, 3, H, W) tensor on ``device``."""
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3) RGB arrays, got shape {frame.shape}")
        frame = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    if frame.ndim != 3 or frame.shape[0] != 3:
        raise ValueError(f"frame tensors must be (3, H, W), got shape {tuple(frame.shape)}")
    return frame[None].to(device)


# Keys of the DeepLabv3+ decoder that checkpoints from before the backbone/decoder split kept in "backbone".
_DECODER_KEYS = ("decoder_channels", "aspp_channels", "atrous_rates", "low_proj_channels")


def feelvos_config(net_config: dict) -> dict:
    """FEELVOS keyword arguments from a checkpoint's ``hyper_parameters["net"]``; weights come from the ckpt."""
    net = dict(net_config)
    backbone = dict(net["backbone"])
    decoder = dict(net.get("decoder") or {})
    for key in _DECODER_KEYS:
        if key in backbone:
            decoder[key] = backbone.pop(key)
    backbone["weights"] = None
    return {**net, "backbone": backbone, "decoder": decoder}


def load_vos_model(path: str | Path, *, map_location: str | torch.device = "cpu",
                   inference_output_stride: int | None = None) -> FEELVOS:
    """Build FEELVOS from a vidseg VOS checkpoint (loaded with ``weights_only=True``), at its training stride.

    ``inference_output_stride`` overrides the checkpoint's ``net.inference_output_stride`` (what
    :class:`VOSPredictor` runs at); None keeps it.
    """
    checkpoint = read_checkpoint(path, task="vos", map_location=map_location)
    if "embedding_head.depthwise.bias" not in checkpoint.model_state:
        raise CheckpointError(
            f"{checkpoint.path}: trained by a vidseg version whose FEELVOS heads differ from the official ones "
            "(linear embedding head, BatchNorm segmentation head); its weights cannot be used by this version: "
            "retrain it with python -m vidseg.train"
        )
    config = feelvos_config(checkpoint.hyper_parameters["net"])
    if inference_output_stride is not None:
        config["inference_output_stride"] = int(inference_output_stride)
    model = FEELVOS(**config)
    model.load_state_dict(checkpoint.model_state)
    return model.eval()


class VOSSession:
    """One video being segmented. Feed frames one by one with :meth:`step`.

    Args:
        model: FEELVOS in eval mode.
        first_frame: (H, W, 3) uint8 RGB array or (3, H, W) uint8 tensor.
        first_mask: (H, W) integer label map of the first frame; 0 = background, other ids = objects
            (any ids, not necessarily contiguous), 255 = void/unknown.
        autocast_dtype: e.g. torch.bfloat16 to run the network in mixed precision (matching stays fp32).
    """

    def __init__(self, model: FEELVOS, first_frame: Frame, first_mask: np.ndarray | torch.Tensor,
                 *, autocast_dtype: torch.dtype | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.autocast_dtype = autocast_dtype
        mask = torch.as_tensor(np.asarray(first_mask) if not isinstance(first_mask, torch.Tensor) else first_mask)
        frame = _frame_tensor(first_frame, self.device)
        if mask.shape != frame.shape[-2:]:
            raise ValueError(f"first mask is {tuple(mask.shape)} but frames are {tuple(frame.shape[-2:])} (H, W)")
        ids = [int(i) for i in torch.unique(mask) if int(i) not in (0, IGNORE_LABEL)]
        if not ids:
            raise ValueError("the first-frame mask contains no object (only background/void)")
        self.object_ids = tuple(ids)
        # internal labels 0..n; the lookup table maps them back to the user's ids
        self._to_user = torch.tensor([0, *ids], dtype=torch.uint8)
        internal = torch.full_like(mask, IGNORE_LABEL, dtype=torch.long)
        internal[mask == 0] = 0
        for k, obj in enumerate(ids, start=1):
            internal[mask == obj] = k
        self.num_objects = len(ids) + 1
        self.frame_index = 0
        self.size = tuple(frame.shape[-2:])

        with torch.inference_mode():  # no autograd graph may stay attached to the kept reference
            _, embedding = self._embed(frame)
        labels = self._feature_labels(internal[None].to(self.device), embedding.shape[-2:])
        self.ref_embedding, self.ref_labels = embedding, labels
        self.prev_embedding, self.prev_labels = embedding, labels

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _embed(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The ImageNet mean, like the pad of training crops: it normalises to ~0 instead of looking like black.
        padded = pad_to_multiple(frame, self.model.size_divisor, value=IMAGENET_MEAN_UINT8)
        with self._autocast():
            features, embedding = self.model.embed(padded)
        return features, embedding.float()

    def _feature_labels(self, labels: torch.Tensor, size) -> torch.Tensor:
        padded = pad_to_multiple(labels, self.model.size_divisor, value=IGNORE_LABEL)
        return downsample_labels(padded, tuple(size))

    @torch.inference_mode()
    def step(self, frame: Frame) -> np.ndarray:
        """Segment the next frame: returns its (H, W) uint8 label map with the first mask's ids."""
        frame = _frame_tensor(frame, self.device)
        if tuple(frame.shape[-2:]) != self.size:
            raise ValueError(f"frame {self.frame_index + 1} is {tuple(frame.shape[-2:])}, expected {self.size}")
        features, embedding = self._embed(frame)
        num_fg = torch.tensor([self.num_objects - 1], device=self.device)
        with self._autocast():
            logits = self.model.segment(
                features, embedding, self.ref_embedding, self.ref_labels,
                self.prev_embedding, self.prev_labels, num_fg,
            ).float()
        padded_size = (frame.shape[-2] + (-frame.shape[-2]) % self.model.size_divisor,
                       frame.shape[-1] + (-frame.shape[-1]) % self.model.size_divisor)
        full = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
        labels_full = full[..., : self.size[0], : self.size[1]].argmax(1)  # (1, H, W) internal labels
        # The next frame matches against labels made the way training makes them (nearest downsampling of
        # a full-resolution label map); the head also gets their one-hot, as in training.
        self.prev_embedding = embedding
        self.prev_labels = self._feature_labels(labels_full, embedding.shape[-2:])
        self.frame_index += 1
        return self._to_user[labels_full[0].cpu()].numpy()


class VOSPredictor:
    """Semi-supervised VOS with a trained FEELVOS: give frames and a first-frame mask, get masks.

    Args:
        model: FEELVOS at its training stride (moved to ``device``). The predictor runs
            ``model.for_inference()``: the same weights at ``model.inference_output_stride``, in eval mode.
        device: "cpu", "cuda", ...
        precision: "32" or "bf16-mixed"/"16-mixed" (network in autocast; matching always fp32).
    """

    def __init__(self, model: FEELVOS, *, device: str | torch.device | None = None, precision: str = "32"):
        if device is not None:
            model = model.to(device)
        # for_inference shares parameters with model; .to() moves its non-persistent buffers along.
        self.model = model.for_inference().eval()
        if device is not None:
            self.model = self.model.to(device)
        self.autocast_dtype = autocast_dtype(precision)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu", precision: str = "32",
                        inference_output_stride: int | None = None):
        """Load a checkpoint (see :func:`load_vos_model`) and run it at its inference output stride."""
        return cls(load_vos_model(path, inference_output_stride=inference_output_stride), device=device,
                   precision=precision)

    def start(self, first_frame: Frame, first_mask) -> VOSSession:
        """Open a session for one video (see :class:`VOSSession`)."""
        return VOSSession(self.model, first_frame, first_mask, autocast_dtype=self.autocast_dtype)

    def track(self, frames: Iterable[Frame], first_mask) -> Iterator[tuple[int, tuple[int, ...], np.ndarray]]:
        """Yield (frame index, object ids, (H, W) uint8 mask) for every frame; frame 0 yields ``first_mask``.

        ``frames`` may be any iterable (a list, a video reader); it is consumed lazily, one frame at a time.
        """
        iterator = iter(frames)
        try:
            first = next(iterator)
        except StopIteration:
            raise ValueError("no frames to segment (the video is empty)") from None
        session = self.start(first, first_mask)
        first_mask = np.asarray(first_mask if not isinstance(first_mask, torch.Tensor) else first_mask.cpu())
        yield 0, session.object_ids, first_mask.astype(np.uint8)
        for frame in iterator:
            yield session.frame_index + 1, session.object_ids, session.step(frame)

    def predict_sequence(self, images: torch.Tensor, first_mask: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) uint8 frames + (H, W) first mask -> (T, H, W) int64 labels (used in validation)."""
        masks = [torch.from_numpy(mask.astype(np.int64)) for _, _, mask in self.track(images, first_mask.cpu())]
        return torch.stack(masks)

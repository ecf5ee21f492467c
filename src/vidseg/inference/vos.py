"""Streaming FEELVOS inference: the one inference loop behind validation, evaluate, predict and the API.

    predictor = VOSPredictor.from_checkpoint("last.ckpt")
    for frame_idx, object_ids, mask in predictor.track(frames, first_mask):
        ...  # mask: (H, W) uint8 with the ids of first_mask
    # objects that appear later: the mask of each new object at the frame where it appears
    for frame_idx, object_ids, mask in predictor.track(frames, masks={0: first_mask, 12: new_objects}):
        ...

Only the reference (the first frame's embedding + labels, plus the embedding of the pixels of objects added
later, at the frame where each was given) and the previous frame (embedding + predicted labels) are kept, so
memory is constant in the length of the video. As in training, the previous frame reaches the head twice:
local matching against its labels and the one-hot of those same labels (official FEELVOS). The network runs
at the model's ``inference_output_stride`` (paper: 8, trained at 16), see :meth:`FEELVOS.for_inference`.
Frames are padded to the network's stride with the ImageNet mean colour, as training crops are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidseg.constants import IGNORE_LABEL, IMAGENET_MEAN_UINT8
from vidseg.errors import DataError
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


def _as_label_tensor(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W) integer label map (numpy or tensor) -> (H, W) int64 CPU tensor."""
    if isinstance(mask, torch.Tensor):
        return mask.detach().cpu().long()
    return torch.from_numpy(np.asarray(mask).astype(np.int64))


def _object_ids(mask: torch.Tensor) -> list[int]:
    """The object ids of a label map: every value but 0 (background) and 255 (void), ascending."""
    return [int(i) for i in torch.unique(mask) if int(i) not in (0, IGNORE_LABEL)]


class VOSSession:
    """One video being segmented. Feed frames one by one with :meth:`step`; give objects that appear later
    with :meth:`add_objects`.

    User ids and model slots: the model sees internal labels 0 (background), 1..n (objects, in the order
    they were given; within one mask ascending by id) and 255 (unknown). ``object_ids[k - 1]`` is the user id
    of internal label k, and every mask the session returns is in user ids; that mapping lives here only.

    Memory: the reference for global matching is the first frame's embedding and labels, plus, for each
    :meth:`add_objects`, the embedding of the new objects' pixels at the frame where they were given (at
    most one frame's worth per call); the previous frame's embedding and labels are replaced at every
    frame. Nothing grows with the number of frames stepped.

    Args:
        model: FEELVOS in eval mode.
        first_frame: (H, W, 3) uint8 RGB array or (3, H, W) uint8 tensor.
        first_mask: (H, W) integer label map of the first frame; 0 = background, other ids = objects
            (any ids, not necessarily contiguous), 255 = void/unknown.
        autocast_dtype: e.g. torch.bfloat16 to run the network in mixed precision (matching stays fp32).
        frame_index: index of ``first_frame`` in the video (0 unless the first objects appear later).

    Attributes:
        frame_index: index of the last frame segmented (or given).
        object_ids: the user ids tracked, in internal-label order.
        object_frames: user id -> index of the frame where its mask was given.
    """

    def __init__(self, model: FEELVOS, first_frame: Frame, first_mask: np.ndarray | torch.Tensor,
                 *, autocast_dtype: torch.dtype | None = None, frame_index: int = 0):
        self.model = model
        self.device = next(model.parameters()).device
        self.autocast_dtype = autocast_dtype
        mask = _as_label_tensor(first_mask)
        frame = _frame_tensor(first_frame, self.device)
        if mask.shape != frame.shape[-2:]:
            what = "first mask" if frame_index == 0 else f"mask of frame {frame_index}"
            raise ValueError(f"{what} is {tuple(mask.shape)} but frames are {tuple(frame.shape[-2:])} (H, W)")
        ids = _object_ids(mask)
        if not ids:
            what = "first-frame mask" if frame_index == 0 else f"mask of frame {frame_index}"
            raise ValueError(f"the {what} contains no object (only background/void)")
        self.object_ids: tuple[int, ...] = tuple(ids)
        self.object_frames: dict[int, int] = {obj: int(frame_index) for obj in ids}
        # internal labels 0..n; the lookup table maps them back to the user's ids
        self._to_user = torch.tensor([0, *ids], dtype=torch.uint8)
        internal = torch.full_like(mask, IGNORE_LABEL, dtype=torch.long)
        internal[mask == 0] = 0
        for k, obj in enumerate(ids, start=1):
            internal[mask == obj] = k
        self.num_objects = len(ids) + 1
        self.frame_index = int(frame_index)
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

    def _segment(self, frame: Frame) -> tuple[torch.Tensor, torch.Tensor]:
        """The next frame's (1, H, W) int64 internal labels and its (1, E, h, w) embedding."""
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
        return full[..., : self.size[0], : self.size[1]].argmax(1), embedding

    def _advance(self, labels_full: torch.Tensor, embedding: torch.Tensor) -> np.ndarray:
        # The next frame matches against labels made the way training makes them (nearest downsampling of
        # a full-resolution label map); the head also gets their one-hot, as in training.
        self.prev_embedding = embedding
        self.prev_labels = self._feature_labels(labels_full, embedding.shape[-2:])
        self.frame_index += 1
        return self._to_user[labels_full[0].cpu()].numpy()

    @torch.inference_mode()
    def step(self, frame: Frame) -> np.ndarray:
        """Segment the next frame: returns its (H, W) uint8 label map with the user's ids."""
        return self._advance(*self._segment(frame))

    @torch.inference_mode()
    def add_objects(self, frame: Frame, mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """Segment the next frame and add the objects that appear in it.

        The objects tracked so far are segmented as by :meth:`step`; the new objects' pixels are then set
        from ``mask``. From the next frame on, a new object is matched globally against its pixels in this
        frame (where it was given) and locally against the merged labels of this frame.

        Args:
            frame: the next frame, (H, W, 3) uint8 RGB or (3, H, W) uint8 tensor.
            mask: (H, W) integer label map of the new objects only: their ids where they are, 0 or 255
                elsewhere (0 means "not a new object" here, not background: tracked objects keep their
                prediction there).
        Returns:
            (H, W) uint8 label map of this frame in user ids: the prediction with the new objects pasted on.
        Raises:
            ValueError: a size other than the frames', no object in ``mask``, or an id already tracked.
        """
        given = _as_label_tensor(mask)
        if tuple(given.shape) != self.size:
            raise ValueError(f"mask of frame {self.frame_index + 1} is {tuple(given.shape)}, expected {self.size} "
                             "(H, W)")
        new_ids = _object_ids(given)
        if not new_ids:
            raise ValueError(f"the mask given at frame {self.frame_index + 1} contains no object")
        tracked = [obj for obj in new_ids if obj in self.object_frames]
        if tracked:
            raise ValueError(
                f"object id(s) {tracked} given at frame {self.frame_index + 1} are already tracked (given at "
                f"frame(s) {[self.object_frames[o] for o in tracked]}); pass only new objects, with new ids"
            )
        if self.num_objects - 1 + len(new_ids) > IGNORE_LABEL - 1:
            raise ValueError(f"at most {IGNORE_LABEL - 1} objects per video")
        labels_full, embedding = self._segment(frame)
        added = torch.full_like(given, IGNORE_LABEL)
        for k, obj in enumerate(new_ids, start=self.num_objects):
            added[given == obj] = k
        added = added[None].to(self.device)
        merged = torch.where(added != IGNORE_LABEL, added, labels_full)

        # Global-matching reference of the new objects: their pixels of this frame only (one (1, E, 1, K)
        # strip appended to the reference; the frame's other pixels say nothing about the new objects).
        feature_added = self._feature_labels(added, embedding.shape[-2:]).flatten(1)  # (1, h*w)
        keep = (feature_added[0] != IGNORE_LABEL).nonzero().squeeze(1)
        emb = embedding.flatten(2)[:, :, keep][:, :, None]  # (1, E, 1, K)
        self.ref_embedding = torch.cat([self.ref_embedding.flatten(2)[:, :, None], emb], dim=-1)
        self.ref_labels = torch.cat([self.ref_labels.flatten(1)[:, None], feature_added[:, keep][:, None]], dim=-1)

        self.object_ids = (*self.object_ids, *new_ids)
        self._to_user = torch.tensor([0, *self.object_ids], dtype=torch.uint8)
        self.num_objects += len(new_ids)
        for obj in new_ids:
            self.object_frames[obj] = self.frame_index + 1
        return self._advance(merged, embedding)


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

    def start(self, first_frame: Frame, first_mask, *, frame_index: int = 0) -> VOSSession:
        """Open a session for one video (see :class:`VOSSession`)."""
        return VOSSession(self.model, first_frame, first_mask, autocast_dtype=self.autocast_dtype,
                          frame_index=frame_index)

    def track(self, frames: Iterable[Frame], first_mask=None, *,
              masks: Mapping[int, np.ndarray | torch.Tensor] | None = None,
              ) -> Iterator[tuple[int, tuple[int, ...], np.ndarray]]:
        """Yield (frame index, object ids, (H, W) uint8 mask) for every frame.

        Args:
            frames: any iterable (a list, a video reader); consumed lazily, one frame at a time.
            first_mask: (H, W) label map of frame 0 (the same as ``masks={0: first_mask}``).
            masks: frame index -> (H, W) label map of the objects that appear at that frame (objects that
                appear later); any Mapping with int keys, each mask read only when its frame comes. The
                first given mask starts the session: that frame yields the mask as given, earlier frames
                yield all-zero masks and no ids. A later mask adds its ids that are not tracked yet
                (:meth:`VOSSession.add_objects`); ids already tracked are not re-given and their pixels
                there are ignored, so every frame's annotation may be passed.
        Raises:
            ValueError: no mask, an empty video, or the session's errors (sizes, no object in the first
                given mask); DataError (a ValueError) after the last frame: masks for frames the video does
                not have.
        """
        given: Mapping[int, np.ndarray | torch.Tensor] = masks if masks is not None else {}
        indices = {int(k) for k in given}  # masks themselves are read (given[index]) only when their frame comes
        if first_mask is not None:
            if 0 in indices:
                raise ValueError("frame 0's mask given twice (first_mask and masks[0]); give one")
            indices.add(0)
        if not indices:
            raise ValueError("no mask given: pass first_mask or masks={frame index: mask}")
        if min(indices) < 0:
            raise ValueError(f"mask frame indices must be >= 0, got {sorted(indices)}")
        session: VOSSession | None = None
        count = 0
        for index, frame in enumerate(frames):
            count = index + 1
            mask = None
            if index in indices:
                mask = first_mask if index == 0 and first_mask is not None else given[index]
            if session is None:
                if mask is None:  # no object yet
                    size = tuple(frame.shape[:2] if isinstance(frame, np.ndarray) else frame.shape[-2:])
                    yield index, (), np.zeros(size, np.uint8)
                    continue
                session = self.start(frame, mask, frame_index=index)
                yield index, session.object_ids, _as_label_tensor(mask).numpy().astype(np.uint8)
                continue
            if mask is not None:
                labels = _as_label_tensor(mask).clone()  # never edit the caller's tensor
                for obj in session.object_ids:
                    labels[labels == obj] = 0  # tracked since an earlier frame: not re-given
                if _object_ids(labels):
                    out = session.add_objects(frame, labels)
                    yield index, session.object_ids, out
                    continue
            yield index, session.object_ids, session.step(frame)
        if count == 0:
            raise ValueError("no frames to segment (the video is empty)")
        beyond = sorted(k for k in indices if k >= count)
        if beyond:
            raise DataError(f"masks were given for frame(s) {beyond} but the video has {count} frames")

    def predict_sequence(self, images: torch.Tensor, first_mask: torch.Tensor | None = None, *,
                         masks: Mapping[int, torch.Tensor] | None = None) -> torch.Tensor:
        """(T, 3, H, W) uint8 frames + the first mask (or ``masks`` as in :meth:`track`) -> (T, H, W) int64
        labels (used in validation)."""
        first = first_mask.cpu() if first_mask is not None else None
        given = {k: v.cpu() for k, v in masks.items()} if masks is not None else None
        out = [torch.from_numpy(mask.astype(np.int64)) for _, _, mask in self.track(images, first, masks=given)]
        return torch.stack(out)

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

Backends: the session runs the per-frame network step through a :class:`FrameStep`, PyTorch
(:class:`TorchFrameStep`, eager or compiled) or ONNX Runtime on an exported folder
(:class:`vidseg.onnx.feelvos.OnnxFrameStep`, ``VOSPredictor.from_checkpoint(<onnx folder>)``); everything else
(padding, object ids, the reference and previous-frame state, objects added later) is this one session's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from vidseg.constants import IGNORE_LABEL, IMAGENET_MEAN_UINT8
from vidseg.errors import DataError
from vidseg.inference.checkpoint import CheckpointError, load_model_state, read_checkpoint
from vidseg.models.feelvos.model import FEELVOS, downsample_labels, inference_copy, track_step
from vidseg.pretrained import PretrainedPredictorMixin
from vidseg.utils.device import autocast_dtype
from vidseg.utils.padding import pad_to_multiple, padded_size

Frame = np.ndarray | torch.Tensor


def _padded_frame(frame: Frame, device: torch.device, divisor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """A frame padded (bottom/right, ImageNet mean colour) to multiples of ``divisor`` on ``device``, and its
    unpadded (H, W).

    The result is (1, 3, Hp, Wp) with channels_last strides. A host frame is padded on the host, in a pinned
    buffer when ``device`` is CUDA, and uploaded with ``non_blocking``: a pageable upload would wait for the
    GPU to finish the previous frame (a host sync). A frame already on a device is padded there.
    """
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3) RGB arrays, got shape {frame.shape}")
        hwc = torch.from_numpy(np.ascontiguousarray(frame))
    else:
        if frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"frame tensors must be (3, H, W), got shape {tuple(frame.shape)}")
        hwc = frame.permute(1, 2, 0)
    height, width = hwc.shape[:2]
    if hwc.device.type != "cpu":
        chw = pad_to_multiple(hwc.permute(2, 0, 1), divisor, value=IMAGENET_MEAN_UINT8)
        return chw[None].to(device), (height, width)
    pin = device.type == "cuda" and torch.cuda.is_available()
    buffer = torch.empty((*padded_size(height, width, divisor), 3), dtype=hwc.dtype, pin_memory=pin)
    if tuple(buffer.shape[:2]) != (height, width):
        fill = torch.tensor(IMAGENET_MEAN_UINT8, dtype=hwc.dtype)
        buffer[height:] = fill
        buffer[:height, width:] = fill
    buffer[:height, :width] = hwc
    # The caching host allocator keeps the pinned block until the asynchronous copy has read it.
    return buffer.to(device, non_blocking=pin).permute(2, 0, 1)[None], (height, width)


class PendingMask:
    """A frame's (H, W) uint8 mask on its way to the host: :meth:`result` waits for it (CUDA) and returns it.

    On CUDA the copy goes to a pinned buffer with ``non_blocking`` and an event marks its end, so the host can
    queue the next frame before waiting (:meth:`VOSSession.step_async`). On CPU it is ready at once.
    """

    def __init__(self, mask: torch.Tensor):
        self._event = None
        if mask.is_cuda:
            self._host = torch.empty(mask.shape, dtype=mask.dtype, pin_memory=True)
            self._host.copy_(mask, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = mask

    def result(self) -> np.ndarray:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return self._host.numpy()


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
    load_model_state(model, checkpoint)
    return model.eval()


def _as_label_tensor(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W) integer label map (numpy or tensor) -> (H, W) int64 CPU tensor."""
    if isinstance(mask, torch.Tensor):
        return mask.detach().cpu().long()
    return torch.from_numpy(np.asarray(mask).astype(np.int64))


def _object_ids(mask: torch.Tensor) -> list[int]:
    """The object ids of a label map: every value but 0 (background) and 255 (void), ascending."""
    return [int(i) for i in torch.unique(mask) if int(i) not in (0, IGNORE_LABEL)]


def _check_object_ids(ids: list[int], what: str) -> None:
    """Object ids are 1..254 (0 is background, 255 void, and output masks are uint8)."""
    bad = [i for i in ids if not 0 < i < IGNORE_LABEL]
    if bad:  # a DataError (a ValueError) so that the command line prints it as one line
        raise DataError(f"the {what} has object id(s) {bad}; object ids must be 1..{IGNORE_LABEL - 1} "
                         f"(0 = background, {IGNORE_LABEL} = void): renumber the objects")


class FrameStep:
    """The per-frame network step behind :class:`VOSSession`: the one thing a backend swaps.

    The session does everything else (padding, user ids, the reference and previous-frame state, new objects),
    so every backend runs the same inference path. Tensors cross this interface on ``device``.

    Attributes:
        device: where the session keeps its state tensors and pads frames.
        size_divisor: frames are padded (bottom/right, ImageNet mean colour) to multiples of it.
    """

    device: torch.device
    size_divisor: int

    def embed(self, padded: torch.Tensor) -> torch.Tensor:
        """(1, 3, Hp, Wp) uint8 padded frame -> its (1, E, h, w) embedding (a reference for matching)."""
        raise NotImplementedError

    def step(self, padded: torch.Tensor, size: tuple[int, int], ref_embedding: torch.Tensor,
             ref_labels: torch.Tensor, prev_embedding: torch.Tensor, prev_labels: torch.Tensor, num_objects: int,
             *, validate: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One frame, as :func:`vidseg.models.feelvos.model.track_step`: the padded frame, its (H, W) and the
        state -> (1, H, W) int64 internal labels, the (1, E, h, w) embedding and the (1, h, w) int64 labels at
        feature resolution (the next frame's ``prev_labels``). ``validate``: check the state's label values
        (raise ValueError naming a bad value)."""
        raise NotImplementedError


class TorchFrameStep(FrameStep):
    """The PyTorch backend: ``model`` (FEELVOS in eval mode, or any model with its inference contract: ``embed``,
    ``segment``, ``size_divisor``) run eagerly, or compiled (``compiled_step``); see :class:`VOSSession` for the
    options."""

    def __init__(self, model: FEELVOS, *, autocast_dtype: torch.dtype | None = None,
                 matching_dtype: torch.dtype | None = torch.float32, channels_last: bool = False,
                 compiled_step: Callable | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.size_divisor = model.size_divisor
        self.autocast_dtype = autocast_dtype
        self.matching_dtype = matching_dtype
        self.channels_last = channels_last
        self._compiled_step = compiled_step

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _layout(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def embed(self, padded: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            _, embedding = self.model.embed(self._layout(padded))
        return embedding if self.matching_dtype is None else embedding.to(self.matching_dtype)

    def step(self, padded, size, ref_embedding, ref_labels, prev_embedding, prev_labels, num_objects, *, validate):
        step = track_step
        compiled = self._compiled_step is not None and not validate
        if compiled:
            step = self._compiled_step
            if self.device.type == "cuda":  # CUDA-graph outputs live until the next replay
                torch.compiler.cudagraph_mark_step_begin()
        with self._autocast():
            labels, embedding, feature_labels = step(
                self.model, self._layout(padded), size, ref_embedding, ref_labels, prev_embedding, prev_labels,
                num_objects, validate=validate, matching_dtype=self.matching_dtype,
            )
        if compiled:  # kept across frames: copies, never the compiled function's own buffers
            embedding, feature_labels = embedding.clone(), feature_labels.clone()
        return labels, embedding, feature_labels


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
        model: the network: FEELVOS in eval mode (or any model with its inference contract: ``embed``,
            ``segment``, ``size_divisor``), run by a :class:`TorchFrameStep` with the options below; or a
            :class:`FrameStep` backend (e.g. :class:`vidseg.onnx.feelvos.OnnxFrameStep`), which takes no options.
        first_frame: (H, W, 3) uint8 RGB array or (3, H, W) uint8 tensor.
        first_mask: (H, W) integer label map of the first frame; 0 = background, other ids = objects
            (ids 1..254, not necessarily contiguous), 255 = void/unknown.
        autocast_dtype: e.g. torch.bfloat16 to run the network in mixed precision; None for fp32 or for a
            network whose weights were cast once (:func:`vidseg.models.feelvos.model.inference_copy`).
        frame_index: index of ``first_frame`` in the video (0 unless the first objects appear later).
        matching_dtype: dtype of the embeddings given to matching (and kept as reference/previous frame).
            float32 (default) matches in fp32 whatever the network's precision; None matches in the network's
            own dtype (bf16 under bf16 autocast or bf16 weights: half the bytes, tensor-core ranking; the
            arg-min pair's distance is still evaluated in fp32, so only near-ties may pick another pixel).
        channels_last: feed the network channels_last frames (for a channels_last network).
        compiled_step: a compiled :func:`vidseg.models.feelvos.model.track_step` (``torch.compile``) used for
            every frame but the ones that validate labels, which run eagerly.

    Labels are validated (values in [0, N) or 255, a device read) on the first frame segmented and after
    :meth:`add_objects`; the other frames' labels are the session's own, so they are not read back.

    Attributes:
        frame_index: index of the last frame segmented (or given).
        object_ids: the user ids tracked, in internal-label order.
        object_frames: user id -> index of the frame where its mask was given.
    """

    def __init__(self, model: FEELVOS | FrameStep, first_frame: Frame, first_mask: np.ndarray | torch.Tensor,
                 *, autocast_dtype: torch.dtype | None = None, frame_index: int = 0,
                 matching_dtype: torch.dtype | None = torch.float32, channels_last: bool = False,
                 compiled_step: Callable | None = None):
        self.model = model
        if isinstance(model, FrameStep):
            if autocast_dtype is not None or compiled_step is not None or channels_last:
                raise ValueError("autocast_dtype, channels_last and compiled_step are options of the PyTorch "
                                 "backend; a FrameStep backend takes none")
            self.backend = model
        else:
            self.backend = TorchFrameStep(model, autocast_dtype=autocast_dtype, matching_dtype=matching_dtype,
                                          channels_last=channels_last, compiled_step=compiled_step)
        self.device = self.backend.device
        self._validate = True  # the first frame segmented checks the session's labels once
        mask = _as_label_tensor(first_mask)
        frame, size = _padded_frame(first_frame, self.device, self.backend.size_divisor)
        if tuple(mask.shape) != size:
            what = "first mask" if frame_index == 0 else f"mask of frame {frame_index}"
            raise ValueError(f"{what} is {tuple(mask.shape)} but frames are {size} (H, W)")
        ids = _object_ids(mask)
        what = "first-frame mask" if frame_index == 0 else f"mask of frame {frame_index}"
        _check_object_ids(ids, what)
        if not ids:
            raise ValueError(f"the {what} contains no object (only background/void)")
        self.object_ids: tuple[int, ...] = tuple(ids)
        self.object_frames: dict[int, int] = {obj: int(frame_index) for obj in ids}
        # internal labels 0..n; the lookup table (on the device) maps them back to the user's ids
        self._to_user = torch.tensor([0, *ids], dtype=torch.uint8).to(self.device)
        internal = torch.full_like(mask, IGNORE_LABEL, dtype=torch.long)
        internal[mask == 0] = 0
        for k, obj in enumerate(ids, start=1):
            internal[mask == obj] = k
        self.num_objects = len(ids) + 1
        self.frame_index = int(frame_index)
        self.size = size

        with torch.inference_mode():  # no autograd graph may stay attached to the kept reference
            embedding = self.backend.embed(frame)
        labels = self._feature_labels(internal[None].to(self.device), embedding.shape[-2:])
        self.ref_embedding, self.ref_labels = embedding, labels
        self.prev_embedding, self.prev_labels = embedding, labels

    def _feature_labels(self, labels: torch.Tensor, size) -> torch.Tensor:
        padded = pad_to_multiple(labels, self.backend.size_divisor, value=IGNORE_LABEL)
        return downsample_labels(padded, tuple(size))

    def _segment(self, frame: Frame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next frame's (1, H, W) int64 internal labels, its (1, E, h, w) embedding and its labels at (h, w)."""
        padded, size = _padded_frame(frame, self.device, self.backend.size_divisor)
        if size != self.size:
            raise ValueError(f"frame {self.frame_index + 1} is {size}, expected {self.size}")
        out = self.backend.step(padded, size, self.ref_embedding, self.ref_labels, self.prev_embedding,
                                self.prev_labels, self.num_objects - 1, validate=self._validate)
        self._validate = False
        return out

    def _advance(self, labels_full: torch.Tensor, embedding: torch.Tensor,
                 feature_labels: torch.Tensor | None = None) -> PendingMask:
        # The next frame matches against labels made the way training makes them (nearest downsampling of
        # a full-resolution label map); the head also gets their one-hot, as in training.
        self.prev_embedding = embedding
        self.prev_labels = (feature_labels if feature_labels is not None
                            else self._feature_labels(labels_full, embedding.shape[-2:]))
        self.frame_index += 1
        return PendingMask(self._to_user[labels_full[0]])

    @torch.inference_mode()
    def step_async(self, frame: Frame) -> PendingMask:
        """:meth:`step` without waiting for the mask: on CUDA the frame's work and the mask's copy to the host
        are queued and ``.result()`` waits for them, so the next frame can be queued first."""
        return self._advance(*self._segment(frame))

    def step(self, frame: Frame) -> np.ndarray:
        """Segment the next frame: returns its (H, W) uint8 label map with the user's ids."""
        return self.step_async(frame).result()

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
            ValueError: a size other than the frames', no object in ``mask``, an id already tracked or an id
                outside 1..254.
        """
        return self.add_objects_async(frame, mask).result()

    @torch.inference_mode()
    def add_objects_async(self, frame: Frame, mask: np.ndarray | torch.Tensor) -> PendingMask:
        """:meth:`add_objects` without waiting for the mask (see :meth:`step_async`)."""
        given = _as_label_tensor(mask)
        new_ids = self._new_object_ids(given)
        labels_full, embedding, _ = self._segment(frame)
        added = self._add_reference(given, new_ids, embedding)
        merged = torch.where(added != IGNORE_LABEL, added, labels_full)
        return self._advance(merged, embedding)

    def _new_object_ids(self, given: torch.Tensor) -> list[int]:
        """The ids of ``given`` (the next frame's new objects), checked: none tracked already, at most 254."""
        if tuple(given.shape) != self.size:
            raise ValueError(f"mask of frame {self.frame_index + 1} is {tuple(given.shape)}, expected {self.size} "
                             "(H, W)")
        new_ids = _object_ids(given)
        _check_object_ids(new_ids, f"mask given at frame {self.frame_index + 1}")
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
        return new_ids

    def _add_reference(self, given: torch.Tensor, new_ids: list[int], embedding: torch.Tensor) -> torch.Tensor:
        """Register the new objects ``new_ids`` of ``given`` (next frame's (H, W) user ids) with ``embedding``
        (that frame's); returns their (1, H, W) internal labels, 255 elsewhere."""
        added = torch.full_like(given, IGNORE_LABEL)
        for k, obj in enumerate(new_ids, start=self.num_objects):
            added[given == obj] = k
        added = added[None].to(self.device)

        # Global-matching reference of the new objects: their pixels of this frame only (one (1, E, 1, K)
        # strip appended to the reference; the frame's other pixels say nothing about the new objects).
        feature_added = self._feature_labels(added, embedding.shape[-2:]).flatten(1)  # (1, h*w)
        keep = (feature_added[0] != IGNORE_LABEL).nonzero().squeeze(1)
        emb = embedding.flatten(2)[:, :, keep][:, :, None]  # (1, E, 1, K)
        self.ref_embedding = torch.cat([self.ref_embedding.flatten(2)[:, :, None], emb], dim=-1)
        self.ref_labels = torch.cat([self.ref_labels.flatten(1)[:, None], feature_added[:, keep][:, None]], dim=-1)

        self.object_ids = (*self.object_ids, *new_ids)
        self._to_user = torch.tensor([0, *self.object_ids], dtype=torch.uint8).to(self.device)
        self.num_objects += len(new_ids)
        self._validate = True  # new reference labels: checked once, on the next frame
        for obj in new_ids:
            self.object_frames[obj] = self.frame_index + 1
        return added

    @torch.inference_mode()
    def replay(self, frame: Frame, known: np.ndarray | torch.Tensor, *,
               new_objects: np.ndarray | torch.Tensor | None = None, as_previous: bool = True) -> None:
        """Advance past the next frame without segmenting it: its mask ``known`` is what this session (the
        same network, the same objects given at the same frames) yielded for it in an earlier run.

        This is how a run resumes at a later frame (e.g. after an object was added there): the earlier frames'
        masks are reused, and only what the state needs is recomputed: the embedding of a frame that gives
        new objects (``new_objects``, as :meth:`add_objects` takes them) and of the frame before the first
        one segmented again (``as_previous``). Frames with neither cost nothing. Stepping on from there gives
        the masks a run from the start gives (bit for bit on the same device with the eager network).

        Args:
            frame: the next frame, (H, W, 3) uint8 RGB or (3, H, W) uint8 tensor.
            known: (H, W) label map of the frame in user ids (only ids tracked after this frame, 0, 255).
            new_objects: the objects given at this frame, as for :meth:`add_objects`.
            as_previous: keep this frame as the previous frame of local matching (needed for the frame
                after it only: False skips its embedding unless it gives new objects).
        Raises:
            ValueError: as :meth:`add_objects`, or ``known`` holds an id the session does not track.
        """
        given = None if new_objects is None else _as_label_tensor(new_objects)
        new_ids = self._new_object_ids(given) if given is not None else []
        if not new_ids and not as_previous:
            self.frame_index += 1
            return
        padded, size = _padded_frame(frame, self.device, self.backend.size_divisor)
        if size != self.size:
            raise ValueError(f"frame {self.frame_index + 1} is {size}, expected {self.size}")
        embedding = self.backend.embed(padded)
        if new_ids:
            self._add_reference(given, new_ids, embedding)
        known = _as_label_tensor(known)
        if known.numel() and (int(known.min()) < 0 or int(known.max()) > 255):
            raise ValueError(f"the known mask of frame {self.frame_index + 1} has values outside 0..255")
        lookup = torch.full((256,), -1, dtype=torch.long)
        lookup[0], lookup[IGNORE_LABEL] = 0, IGNORE_LABEL
        for k, obj in enumerate(self.object_ids, start=1):
            lookup[obj] = k
        internal = lookup[known.long()]
        if bool((internal < 0).any()):
            strays = sorted(set(known[internal < 0].unique().tolist()))
            raise ValueError(f"the known mask of frame {self.frame_index + 1} has id(s) {strays} that this session "
                             f"does not track (tracked: {list(self.object_ids)}): it is not this session's output")
        self._advance(internal[None].to(self.device), embedding)


def _untracked(mask: np.ndarray | torch.Tensor, tracked: tuple[int, ...]) -> torch.Tensor | None:
    """``mask`` without the ids already ``tracked`` (set to 0: not re-given), or None when no object is left."""
    labels = _as_label_tensor(mask).clone()  # never edit the caller's tensor
    for obj in tracked:
        labels[labels == obj] = 0
    return labels if _object_ids(labels) else None


def _resolved(item: tuple) -> tuple[int, tuple[int, ...], np.ndarray]:
    index, ids, mask = item
    return index, ids, mask.result() if isinstance(mask, PendingMask) else mask


class VOSPredictor(PretrainedPredictorMixin):
    """Semi-supervised VOS with a trained FEELVOS: give frames and a first-frame mask, get masks.

    Args:
        model: FEELVOS at its training stride (moved to ``device``). The predictor runs
            ``model.for_inference()``: the same weights at ``model.inference_output_stride``, in eval mode.
            Or a :class:`FrameStep` backend, e.g. an exported ONNX folder run by ONNX Runtime
            (``VOSPredictor(OnnxFrameStep.from_folder(dir))``, or :meth:`from_checkpoint` on the folder); it runs
            as it is: ``device``, ``precision``, ``fast`` and ``compile`` are the PyTorch backend's options.
        device: "cpu", "cuda", ...
        precision: "32" or "bf16-mixed"/"16-mixed".
        fast: run an inference copy of the network tuned for the hardware; ``model`` is left unchanged.
            Masks may differ from ``fast=False`` where logits nearly tie (tests/models/test_feelvos_fast_path.py
            states the tolerances). What it does:

            - BatchNorms folded into the convs before them (equal up to float rounding);
            - weights and frames in channels_last (the layout of tensor-core convolutions);
            - under a mixed precision, the weights cast once to bf16/fp16 instead of autocast every frame
              (pixel normalisation and logits stay fp32);
            - matching in the network's precision: bf16 embeddings reach the matching ops (half the bytes,
              bf16 tensor-core ranking), the arg-min pair's distance is still evaluated in fp32;
            - on CUDA, ``torch.backends.cudnn.benchmark = True`` (process-wide: every frame of a video has one
              size, so cuDNN picks its fastest algorithm once per size).

            With ``fast=False`` the network runs as trained, under autocast for a mixed precision, and
            matching is fp32.
        compile: ``torch.compile`` the per-frame step (:func:`vidseg.models.feelvos.model.track_step`:
            embedding, matching as opaque custom ops, head, upsampling, arg-max) in one graph, with CUDA graphs
            (``mode="reduce-overhead"``) on CUDA. Compiles on a video's second frame (and again for a new frame
            size or object count); the first frame runs eagerly.
        compile_backend: torch.compile backend ("inductor"; "aot_eager"/"eager" to check the plumbing).
        pipelined: :meth:`track` yields frame t's mask once frame t+1 has been read and queued, so on CUDA the
            mask's copy to the host overlaps the next frame's work (the last frame is yielded at the end).
            Order and values are unchanged, but a consumer that pairs a mask with the frame it last handed
            to the iterator would be one frame off: keep frames by index then.

    Every path validates a video's labels once (first frame and after new objects), uploads frames from
    pinned memory without blocking, and gives the network Python object counts: no host synchronisation
    per frame but the mask's copy back.
    """

    task_module = "VOSTask"  # PretrainedPredictorMixin: what to save instead when there is no checkpoint

    def __init__(self, model: FEELVOS | FrameStep, *, device: str | torch.device | None = None,
                 precision: str = "32", fast: bool = False, compile: bool = False, compile_backend: str = "inductor",
                 pipelined: bool = False):
        self.pipelined = bool(pipelined)
        self._compiled_step = None
        if isinstance(model, FrameStep):
            if device is not None or autocast_dtype(precision) is not None or fast or compile:
                raise ValueError("device, precision, fast and compile are options of the PyTorch backend; a "
                                 f"{type(model).__name__} runs as it was built")
            self.model, self.fast = model, False
            self.autocast_dtype, self.matching_dtype = None, torch.float32
            return
        if device is not None:
            model = model.to(device)
        # for_inference shares parameters with model; .to() moves its non-persistent buffers along.
        self.model = model.for_inference().eval()
        if device is not None:
            self.model = self.model.to(device)
        self.autocast_dtype = autocast_dtype(precision)
        self.fast = bool(fast)
        self.matching_dtype: torch.dtype | None = torch.float32
        if self.fast:
            self.model = inference_copy(self.model, fold_bn=True, channels_last=True, dtype=self.autocast_dtype)
            self.autocast_dtype, self.matching_dtype = None, None
            if next(self.model.parameters()).is_cuda:
                torch.backends.cudnn.benchmark = True
        if compile:
            cuda = next(self.model.parameters()).is_cuda
            self._compiled_step = torch.compile(track_step, fullgraph=True, dynamic=False, backend=compile_backend,
                                                mode="reduce-overhead" if cuda and compile_backend == "inductor"
                                                else None)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu", precision: str = "32",
                        inference_output_stride: int | None = None, backend: str | None = None, **options):
        """Load a checkpoint (see :func:`load_vos_model`) and run it at its inference output stride.

        ``backend``: "torch" (a checkpoint or pretrained folder), "onnx" (a folder written by
        ``python -m vidseg.export format=onnx``, run by ONNX Runtime on ``device``'s execution provider:
        :class:`vidseg.onnx.feelvos.OnnxFrameStep`), or None: "onnx" for an ONNX folder, "torch" otherwise.
        ``options``: ``fast``, ``compile``, ``compile_backend`` (PyTorch only), ``pipelined`` (see the class).
        Raises:
            DataError: a backend that does not fit ``path`` (one line naming the fix).
        """
        from vidseg.onnx.folder import resolve_backend

        if resolve_backend(backend, path) == "onnx":
            from vidseg.onnx.feelvos import OnnxFrameStep

            if precision != "32" or inference_output_stride is not None:
                raise DataError(f"{path}: an ONNX export runs in fp32 at the output stride it was exported at; "
                                "drop precision= and inference_output_stride=")
            return cls(OnnxFrameStep.from_folder(path, device=device), **options)
        predictor = cls(load_vos_model(path, inference_output_stride=inference_output_stride), device=device,
                        precision=precision, **options)
        predictor.checkpoint_path = path
        return predictor

    def start(self, first_frame: Frame, first_mask, *, frame_index: int = 0) -> VOSSession:
        """Open a session for one video (see :class:`VOSSession`)."""
        return VOSSession(self.model, first_frame, first_mask, autocast_dtype=self.autocast_dtype,
                          frame_index=frame_index, matching_dtype=self.matching_dtype, channels_last=self.fast,
                          compiled_step=self._compiled_step)

    def track(self, frames: Iterable[Frame], first_mask=None, *,
              masks: Mapping[int, np.ndarray | torch.Tensor] | None = None,
              known: Mapping[int, np.ndarray] | None = None, known_until: int = 0,
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
            known, known_until: resume a run: ``known[i]`` for every frame ``i < known_until`` is the mask an
                earlier run of this predictor yielded for it, with the same ``masks`` before ``known_until``
                (e.g. before an object was added at ``known_until``). Those frames yield their known masks
                and are not segmented (:meth:`VOSSession.replay`: only frames that give objects and the frame
                before ``known_until`` are embedded); from ``known_until`` on the run is the one a run from
                the start gives. Each known mask is read only when its frame comes.
        Raises:
            ValueError: no mask, an empty video, or the session's errors (sizes, no object in the first
                given mask); DataError (a ValueError) after the last frame: masks for frames the video does
                not have.
        """
        given: Mapping[int, np.ndarray | torch.Tensor] = masks if masks is not None else {}
        if known_until > 0 and known is None:
            raise ValueError("known_until > 0 needs the known masks (known={frame index: mask})")
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
        pending = None  # the frame queued but not yielded yet (pipelined)
        for index, frame in enumerate(frames):
            count = index + 1
            mask = None
            if index in indices:
                mask = first_mask if index == 0 and first_mask is not None else given[index]
            out = None
            if session is not None and index < known_until:  # resuming: this frame's mask is known
                known_mask = np.asarray(known[index], dtype=np.uint8)
                new = _untracked(mask, session.object_ids) if mask is not None else None
                session.replay(frame, known_mask, new_objects=new, as_previous=index == known_until - 1)
                out = index, session.object_ids, known_mask
            elif session is None:
                if mask is None:  # no object yet
                    size = tuple(frame.shape[:2] if isinstance(frame, np.ndarray) else frame.shape[-2:])
                    out = index, (), np.zeros(size, np.uint8)
                else:
                    session = self.start(frame, mask, frame_index=index)
                    out = index, session.object_ids, _as_label_tensor(mask).numpy().astype(np.uint8)
            elif mask is not None:
                labels = _untracked(mask, session.object_ids)
                if labels is not None:
                    result = session.add_objects_async(frame, labels)
                    out = index, session.object_ids, result
            if out is None:
                out = index, session.object_ids, session.step_async(frame)
            if pending is not None:
                yield _resolved(pending)
            pending = out
            if not self.pipelined:
                yield _resolved(pending)
                pending = None
        if pending is not None:  # the last frame
            yield _resolved(pending)
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

"""FEELVOS's per-frame step as an ONNX graph, and the ONNX Runtime step that runs it.

The graph (``step.onnx``) is one frame of :class:`vidseg.inference.vos.VOSSession` with the session's state as
explicit tensors (``?`` = dynamic; Hp, Wp = the frame padded to ``size_divisor``; h, w = Hp / 4, Wp / 4;
E = the embedding size; N = background + objects):

    inputs   frame            (1, 3, Hp, Wp) uint8 RGB, padded at the bottom/right with the ImageNet mean colour
             image_size       (2,) int64: the frame's (H, W) before padding
             ref_embedding    (1, E, Hr, Wr) float32 global-matching reference (any spatial shape, e.g. (1, E, 1, K))
             ref_labels       (1, Hr, Wr) int64 its labels in [0, N) or 255 (ignored)
             prev_embedding   (1, E, h, w) float32 the previous frame's embedding
             prev_labels      (1, h, w) int64 the previous frame's labels in [0, N) or 255
             object_slots     (N,) int64: only its length is read (N is a shape, so the graph has no
                              data-dependent sizes); the session passes 0..N-1
    outputs  labels           (1, Hp, Wp) int64 internal labels (arg-max over N), 255 in the padding
             logits           (1, N, h, w) float32 per-object logits at feature resolution
             embedding        (1, E, h, w) float32 this frame's embedding: the next prev_embedding
             feature_labels   (1, h, w) int64 ``labels`` nearest-downsampled: the next prev_labels

Inside the graph: pixel normalisation, the DeepLabv3+ feature extractor and embedding head (at the model's
inference output stride), global and local matching (:mod:`vidseg.onnx.matching`, pure tensor ops), the
dynamic segmentation head over the N slots, bilinear upsampling, the arg-max and the next state's labels.
Outside, in the one session shared with the PyTorch backend (:mod:`vidseg.inference.vos`): frame decoding,
padding to ``size_divisor``, cropping the labels to (H, W), user object ids <-> internal labels, and the state
bookkeeping (the first frame's reference, objects added later appended to the reference, label validation).
The first frame's embedding is the ``embedding`` output of a step with an empty state (one slot, no reference
pixel): it does not depend on the state, and one graph keeps one copy of the weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidseg.constants import IGNORE_LABEL, IMAGENET_MEAN, IMAGENET_MEAN_UINT8, IMAGENET_STD
from vidseg.data.names import checked_join
from vidseg.inference.vos import FrameStep, load_vos_model
from vidseg.models.feelvos.model import FEELVOS, downsample_labels
from vidseg.onnx import matching as tensor_matching
from vidseg.onnx.folder import OPSET, read_onnx_config, write_onnx_folder
from vidseg.onnx.runtime import OnnxSession

STEP_FILE = "step.onnx"
INPUTS = ("frame", "image_size", "ref_embedding", "ref_labels", "prev_embedding", "prev_labels", "object_slots")
OUTPUTS = ("labels", "logits", "embedding", "feature_labels")
# Stride of FEELVOS's decoder features and embedding (DeepLabv3+ decodes at stride 4).
FEATURE_STRIDE = 4


def _matching(model: FEELVOS):
    """FEELVOS.segment's ``matching`` argument: the traceable matching with the model's window."""

    def match(embedding, ref_embedding, ref_labels, prev_embedding, prev_labels, n):
        return (tensor_matching.global_matching(embedding, ref_embedding, ref_labels, n),
                tensor_matching.local_matching(embedding, prev_embedding, prev_labels, n,
                                               model.local_max_distance, model.local_dilation))

    return match


class FEELVOSStep(nn.Module):
    """One inference frame of ``model`` with the state as tensors (the graph ``step.onnx``, see the module).

    The same computation as :func:`vidseg.models.feelvos.model.track_step` (``FEELVOS.embed`` and
    ``FEELVOS.segment``, with the traceable matching), except that labels come back at the padded size with
    255 in the padding, so the graph needs no data-dependent crop.
    """

    def __init__(self, model: FEELVOS):
        super().__init__()
        self.model = model.for_inference().eval()
        self._match = _matching(self.model)
        self.eval()

    def forward(self, frame: torch.Tensor, image_size: torch.Tensor, ref_embedding: torch.Tensor,
                ref_labels: torch.Tensor, prev_embedding: torch.Tensor, prev_labels: torch.Tensor,
                object_slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = object_slots.shape[0]
        features, embedding = self.model.embed(frame)
        embedding = embedding.float()
        logits = self.model.segment(features, embedding, ref_embedding, ref_labels, prev_embedding, prev_labels,
                                    n - 1, validate=False, matching=self._match).float()
        height, width = frame.shape[-2:]
        full = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        inside = ((torch.arange(height, device=frame.device) < image_size[0])[:, None]
                  & (torch.arange(width, device=frame.device) < image_size[1])[None, :])
        labels = full.argmax(1).masked_fill(~inside, IGNORE_LABEL)
        return labels, logits, embedding, downsample_labels(labels, tuple(embedding.shape[-2:]))


def example_inputs(model: FEELVOS, height: int, width: int, num_objects: int = 2) -> tuple[torch.Tensor, ...]:
    """Step inputs for an (H, W) frame padded to ``model.size_divisor`` with ``num_objects`` objects (tracing and
    tests): a random frame, random embeddings and labels, a reference of another size than the frame's features
    (as after objects were added)."""
    from vidseg.utils.padding import padded_size

    g = torch.Generator().manual_seed(0)
    hp, wp = padded_size(height, width, model.size_divisor)
    h, w = hp // FEATURE_STRIDE, wp // FEATURE_STRIDE
    dim = model.embedding_head.pointwise.out_channels
    n = num_objects + 1
    return (torch.randint(0, 256, (1, 3, hp, wp), dtype=torch.uint8, generator=g),
            torch.tensor([height, width]),
            torch.rand(1, dim, h - 1, w + 3, generator=g), torch.randint(0, n, (1, h - 1, w + 3), generator=g),
            torch.rand(1, dim, h, w, generator=g), torch.randint(0, n, (1, h, w), generator=g),
            torch.arange(n))


def export_step(model: FEELVOS, path: str | Path, *, opset: int = OPSET) -> Path:
    """Export ``model``'s per-frame step to ``path`` (dynamic H, W, reference size and N) and check the graph."""
    import onnx

    step = FEELVOSStep(model)
    # Example sizes away from the network's minimums, all different, so that no dimension is specialised.
    divisor = step.model.size_divisor
    args = example_inputs(step.model, 3 * divisor + 1, 5 * divisor + 3, num_objects=2)
    # Dim.AUTO: the exporter derives how the sizes relate (h = Hp / 4 ...) instead of being told.
    auto = torch.export.Dim.AUTO
    dynamic = {
        "frame": {2: auto, 3: auto}, "image_size": None,
        "ref_embedding": {2: auto, 3: auto}, "ref_labels": {1: auto, 2: auto},
        "prev_embedding": {2: auto, 3: auto}, "prev_labels": {1: auto, 2: auto},
        "object_slots": {0: auto},
    }
    path = Path(path)
    with torch.no_grad():
        program = torch.onnx.export(step, args, dynamo=True, opset_version=opset, input_names=list(INPUTS),
                                    output_names=list(OUTPUTS), dynamic_shapes=dynamic, external_data=False,
                                    optimize=True)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def export_feelvos(checkpoint: str | os.PathLike, folder: str | os.PathLike, *, opset: int = OPSET) -> Path:
    """Export a VOS checkpoint (a ``.ckpt`` or pretrained folder) as an ONNX folder (:mod:`vidseg.onnx.folder`)
    holding ``step.onnx``, checked by ``onnx.checker``; returns the folder.

    The network is exported at its inference output stride (as :class:`vidseg.inference.vos.VOSPredictor`
    runs it), in fp32.
    """
    from vidseg.inference.checkpoint import read_checkpoint
    from vidseg.pretrained import vidseg_version

    source = read_checkpoint(checkpoint, task="vos")
    model = load_vos_model(checkpoint)
    network = model.for_inference()
    config = {
        "task": "vos", "model": "FEELVOS", "graphs": {"step": STEP_FILE}, "opset": opset,
        "exporter": f"torch.onnx.export(dynamo=True) of torch {torch.__version__}",
        "inputs": {"step": list(INPUTS)}, "outputs": {"step": list(OUTPUTS)},
        "normalisation": {"inside_graph": True, "input": "RGB uint8", "mean": [m * 255 for m in IMAGENET_MEAN],
                          "std": [s * 255 for s in IMAGENET_STD], "pad_value": list(IMAGENET_MEAN_UINT8)},
        "classes": None,  # VOS objects are given by the user's first-frame mask
        "model_config": {"size_divisor": network.size_divisor, "feature_stride": FEATURE_STRIDE,
                         "embedding_dim": network.embedding_head.pointwise.out_channels,
                         "output_stride": network.output_stride, "local_max_distance": network.local_max_distance,
                         "local_dilation": network.local_dilation},
        "hyper_parameters": source.hyper_parameters, "vidseg_version": vidseg_version(),
        "torch_version": torch.__version__,
    }
    return write_onnx_folder(folder, config, {STEP_FILE: lambda path: export_step(model, path, opset=opset)})


class OnnxFrameStep(FrameStep):
    """FEELVOS's per-frame step run by ONNX Runtime from an exported folder: the ONNX backend of
    :class:`vidseg.inference.vos.VOSSession` (state tensors on the CPU; the graph on ``device``'s provider).

    Build it with :meth:`from_folder`; ``VOSPredictor(OnnxFrameStep.from_folder(dir))`` or
    ``VOSPredictor.from_checkpoint(dir)`` track videos with it.
    """

    def __init__(self, session: OnnxSession, model_config: dict[str, Any]):
        self.session = session
        self.device = torch.device("cpu")
        self.size_divisor = int(model_config["size_divisor"])
        self.feature_stride = int(model_config["feature_stride"])
        self.embedding_dim = int(model_config["embedding_dim"])

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, device: str | torch.device = "cpu",
                    threads: int | None = None) -> OnnxFrameStep:
        """Load ``folder`` (config.json and step.onnx: JSON and ONNX only, no pickle)."""
        config = read_onnx_config(folder, task="vos", model="FEELVOS")
        step = checked_join(folder, str(config["graphs"]["step"]), source=Path(folder) / "config.json",
                            what="graph file name")
        return cls(OnnxSession(step, device=device, threads=threads),
                   config["model_config"])

    def _run(self, padded: torch.Tensor, size: tuple[int, int], ref_embedding: torch.Tensor, ref_labels: torch.Tensor,
             prev_embedding: torch.Tensor, prev_labels: torch.Tensor, slots: int) -> dict[str, np.ndarray]:
        as_array = lambda t, dtype: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)  # noqa: E731
        return self.session.run(
            frame=as_array(padded, np.uint8), image_size=np.array(size, dtype=np.int64),
            ref_embedding=as_array(ref_embedding, np.float32), ref_labels=as_array(ref_labels, np.int64),
            prev_embedding=as_array(prev_embedding, np.float32), prev_labels=as_array(prev_labels, np.int64),
            object_slots=np.arange(slots, dtype=np.int64))

    def embed(self, padded: torch.Tensor) -> torch.Tensor:
        # a step with an empty state: one slot, no reference pixel; only its embedding output is used
        height, width = (-(-int(s) // self.feature_stride) for s in padded.shape[-2:])
        no_pixel = torch.full((1, 1, 1), IGNORE_LABEL, dtype=torch.long)
        out = self._run(padded, tuple(padded.shape[-2:]), torch.zeros(1, self.embedding_dim, 1, 1), no_pixel,
                        torch.zeros(1, self.embedding_dim, height, width),
                        torch.full((1, height, width), IGNORE_LABEL, dtype=torch.long), 1)
        return torch.from_numpy(out["embedding"])

    def step(self, padded, size, ref_embedding, ref_labels, prev_embedding, prev_labels, num_objects, *, validate):
        if validate:  # as the PyTorch backend's matching ops check them
            from vidseg.ops._common import check_labels

            check_labels(ref_labels, num_objects + 1)
            check_labels(prev_labels, num_objects + 1)
        out = self._run(padded, size, ref_embedding, ref_labels, prev_embedding, prev_labels, num_objects + 1)
        labels = torch.from_numpy(out["labels"])[:, : size[0], : size[1]]
        return labels, torch.from_numpy(out["embedding"]), torch.from_numpy(out["feature_labels"])

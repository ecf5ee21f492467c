"""VPSNet's per-frame network as ONNX graphs, and the ONNX Runtime backend that runs them.

One inference frame of :meth:`vidseg.models.vpsnet.VPSNet.infer_frame` is a learned part
(:meth:`VPSNet.run_network`) and a parameter-free rest. The learned part is four graphs (``?`` = dynamic;
Hp, Wp = the frame padded to ``size_divisibility``; p2..p6 = FPN levels at strides 4..64, C channels):

    backbone.onnx   image (1, 3, Hp, Wp) uint8 RGB [+ ref_image (1, 3, Hp, Wp) uint8: the previous padded frame,
                    fuse variants] -> p2..p6 (1, C, h_l, w_l) float32 [+ flow (1, 2, Hp/4, Wp/4): the initial flow
                    network image -> ref_image]. Inside: normalisation, backbone, FPN, flow network.
    heads.onnx      p2..p6 [+ flow, ref_p2..ref_p6: the previous frame's p-levels, fuse variants] ->
                    semantic_logits (1, K, Hp/4, Wp/4), objectness_0..4 (1, A, h_l, w_l), box_deltas_0..4
                    (1, 4A, h_l, w_l) [+ fused_p2..fused_p5, fuse variants]. Inside: Fuse module (flow refinement,
                    correlation, warping, attention), semantic head (deformable convs), RPN head.
    box_head.onnx   p2..p5 (fused with a Fuse module), rois_p2..rois_p5 (R_l, 4) float32 xyxy: the proposals that
                    RoIAlign pools from each level -> class_logits (R, T + 1), box_regression (R, 4 (T + 1)), rows
                    in level order (R = sum R_l). Inside: RoIAlign 7x7, box head and predictor.
    instance_head.onnx  p2..p5, rois_p2..rois_p5 (N_l, 4): the detections by level, labels (N,) int64 in 1..T
                    (level order) -> mask_logits (N, 28, 28) of each box's class [+ embeddings (N, D): track head,
                    track variants]. Inside: RoIAlign 14x14 and 7x7, mask head, track head.

Outside the graphs, in the one implementation the PyTorch predictor runs too (``VPSNet.infer_frame`` with
``network=``): padding, anchors, proposal decoding, top-k and NMS (:meth:`MaskRCNNDetector.proposals`),
detection scoring, thresholds and class-agnostic NMS (:meth:`PanopticRoIHeads.select_detections`), track
association and the track memory, mask pasting, the panoptic head, overlap removal and panoptic merging; and, for
the ONNX backend only, the RoI level of each box (torchvision's LevelMapper, :func:`rois_by_level`), so that the
graphs pool each box once with no data-dependent sizes inside them (pooling every box from every level and
selecting made the paper network's box head 4x slower). The
temporal state (previous padded frame, its p-levels, the track memory) is what :class:`VPSState` holds; the
graphs get it as explicit inputs. For the first frame of a video the frame is its own reference (as in PyTorch).

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export): its symbolic shapes keep H and W dynamic through
the Python shape arithmetic of the model (flow normalisation in ``flow_warp``, resize targets, adaptive pooling
windows), and it has translations for torchvision's ``roi_align`` (ONNX RoiAlign, ``output_half_pixel`` =
``aligned=False``) and ``deform_conv2d`` (ONNX DeformConv, opset 19, hence :data:`VPSNET_OPSET`). vidseg's
correlation op is translated here (:func:`correlation_onnx`). The TorchScript exporter would bake the sizes
seen while tracing into the Python arithmetic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import roi_align
from torchvision.ops.poolers import LevelMapper, MultiScaleRoIAlign

from vidseg.constants import IMAGENET_MEAN, IMAGENET_MEAN_UINT8, IMAGENET_STD
from vidseg.data.names import checked_join
from vidseg.models.vpsnet import VPSNet, VPSState, build_vpsnet
from vidseg.models.vpsnet.detector import ROI_LEVELS, RPN_LEVELS
from vidseg.models.vpsnet.model import VPSNetworkOutput
from vidseg.onnx.folder import read_onnx_config, write_onnx_folder
from vidseg.onnx.runtime import OnnxSession

# DeformConv (the semantic head's deformable convolutions) is in the ONNX standard from opset 19.
VPSNET_OPSET = 19
GRAPHS = {"backbone": "backbone.onnx", "heads": "heads.onnx", "box_head": "box_head.onnx",
          "instance_head": "instance_head.onnx"}
ROI_STRIDES = (4, 8, 16, 32)  # p2..p5


def _names(prefix: str, levels: Sequence[str]) -> list[str]:
    return [f"{prefix}{level}" for level in levels]


def graph_io(variant: str) -> dict[str, dict[str, list[str]]]:
    """Input and output names of each graph for a VPSNet ``variant`` ({"inputs": {graph: names}, "outputs": ...})."""
    fuse, track = variant in ("fuse", "fusetrack"), variant in ("track", "fusetrack")
    levels, roi = list(RPN_LEVELS), list(ROI_LEVELS)
    rpn = _names("objectness_", [str(i) for i in range(len(levels))]) + _names("box_deltas_",
                                                                               [str(i) for i in range(len(levels))])
    return {
        "inputs": {
            "backbone": ["image", "ref_image"] if fuse else ["image"],
            "heads": levels + (["flow"] + _names("ref_", levels) if fuse else []),
            "box_head": roi + _names("rois_", roi),
            "instance_head": roi + _names("rois_", roi) + ["labels"],
        },
        "outputs": {
            "backbone": levels + (["flow"] if fuse else []),
            "heads": ["semantic_logits"] + rpn + (_names("fused_", roi) if fuse else []),
            "box_head": ["class_logits", "box_regression"],
            "instance_head": ["mask_logits"] + (["embeddings"] if track else []),
        },
    }


# ----------------------------------------------------------------------------------------------------------
# What the graphs contain (modules traced by the exporter)
# ----------------------------------------------------------------------------------------------------------


def correlation_onnx(x1, x2, max_displacement: int, normalize: bool = True, impl: str = "auto"):
    """ONNX translation of ``vidseg::correlation`` (:func:`vidseg.ops.correlation`): per displacement (row-major
    (dy, dx) from (-r, -r)), a slice of the zero-padded ``x2`` times ``x1``, summed over channels. ``impl`` only
    chooses a PyTorch kernel."""
    from onnxscript import opset19 as op

    r = max_displacement
    padded = op.Pad(x2, op.Constant(value_ints=[0, 0, r, r, 0, 0, r, r]))
    shape = op.Shape(x1)
    size = op.Slice(shape, op.Constant(value_ints=[2]), op.Constant(value_ints=[4]))  # [H, W]
    axes = op.Constant(value_ints=[2, 3])
    costs = []
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            starts = op.Constant(value_ints=[dy, dx])
            shifted = op.Slice(padded, starts, op.Add(size, starts), axes)
            costs.append(op.ReduceSum(op.Mul(x1, shifted), op.Constant(value_ints=[1]), keepdims=1))
    out = op.Concat(*costs, axis=1)
    if normalize:
        channels = op.CastLike(op.Slice(shape, op.Constant(value_ints=[1]), op.Constant(value_ints=[2])), x1)
        out = op.Div(out, channels)
    return out


def rois_by_level(pooler: MultiScaleRoIAlign, boxes: Tensor) -> tuple[list[Tensor], Tensor]:
    """Split one image's boxes (N, 4) by the FPN level (p2..p5) ``pooler`` pools each from (torchvision's
    LevelMapper with the levels' exact strides, :func:`torchvision_roi_scales`): (per level (N_l, 4), order (N,)
    int64 = the boxes' indices in level order, stable). ``rows[order.argsort()]`` puts rows computed in level
    order back in box order."""
    mapper = LevelMapper(2, 5, canonical_scale=pooler.canonical_scale, canonical_level=pooler.canonical_level)
    levels = mapper([boxes])
    order = torch.argsort(levels, stable=True)
    return [boxes[levels == k] for k in range(len(ROI_STRIDES))], order


def pool_levels(pooler: MultiScaleRoIAlign, features: Sequence[Tensor], rois: Sequence[Tensor]) -> Tensor:
    """RoIAlign of each level's boxes from its level, concatenated in level order: features p2..p5
    (1, C, h_l, w_l), rois p2..p5 (N_l, 4) float in padded-frame pixels -> (sum N_l, C, S, S), the values
    ``pooler`` gives these boxes (torchvision's per-level loop with the same RoIAlign)."""
    pooled = []
    for feature, boxes, stride in zip(features, rois, ROI_STRIDES, strict=True):
        indexed = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)  # image 0; len() would fix N_l
        pooled.append(roi_align(feature, indexed, pooler.output_size, spatial_scale=1.0 / stride,
                                sampling_ratio=pooler.sampling_ratio, aligned=False))
    return torch.cat(pooled)


def torchvision_roi_scales(height: int, padded_height: int) -> list[float]:
    """The p2..p5 scales torchvision's MultiScaleRoIAlign infers (``_infer_scale``: 2^round(log2(h_l / H)) from
    the level's height h_l and the unpadded frame height H) for a frame of ``height`` padded to ``padded_height``."""
    return [2 ** float(torch.tensor(float(padded_height // stride) / float(height)).log2().round())
            for stride in ROI_STRIDES]


class BackboneGraph(nn.Module):
    """backbone.onnx: normalisation, backbone, FPN [and the initial flow image -> ref_image]."""

    def __init__(self, net: VPSNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor, ref_image: Tensor | None = None) -> tuple[Tensor, ...]:
        features = self.net.extract(self.net.normalize(image))
        levels = tuple(features[name] for name in RPN_LEVELS)
        if self.net.fuse is None:
            return levels
        # the reference encoding is computed again (RAFT: exact, see RAFTFlow.forward), so no encoding state
        flow, _ = self.net.initial_flow(image, ref_image, tuple(levels[0].shape[-2:]))
        return (*levels, flow)


class HeadsGraph(nn.Module):
    """heads.onnx: [Fuse module,] semantic head and RPN head."""

    def __init__(self, net: VPSNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor, p6: Tensor, flow: Tensor | None = None,
                ref_p2: Tensor | None = None, ref_p3: Tensor | None = None, ref_p4: Tensor | None = None,
                ref_p5: Tensor | None = None, ref_p6: Tensor | None = None) -> tuple[Tensor, ...]:
        features = dict(zip(RPN_LEVELS, (p2, p3, p4, p5, p6), strict=True))
        fused: tuple[Tensor, ...] = ()
        if self.net.fuse is not None:
            reference = dict(zip(RPN_LEVELS, (ref_p2, ref_p3, ref_p4, ref_p5, ref_p6), strict=True))
            features = self.net.fuse(features, reference, flow)
            fused = tuple(features[name] for name in ROI_LEVELS)
        semantic_logits = self.net.semantic_head(features)
        objectness, box_deltas = self.net.detector.rpn.head([features[name] for name in RPN_LEVELS])
        return (semantic_logits, *objectness, *box_deltas, *fused)


class BoxHeadGraph(nn.Module):
    """box_head.onnx: RoIAlign 7x7 of the proposals, box head, box predictor."""

    def __init__(self, net: VPSNet) -> None:
        super().__init__()
        self.roi_heads = net.detector.roi_heads

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor, rois_p2: Tensor, rois_p3: Tensor,
                rois_p4: Tensor, rois_p5: Tensor) -> tuple[Tensor, Tensor]:
        pooled = pool_levels(self.roi_heads.box_roi_pool, (p2, p3, p4, p5), (rois_p2, rois_p3, rois_p4, rois_p5))
        return self.roi_heads.box_predictor(self.roi_heads.box_head(pooled))


class InstanceHeadGraph(nn.Module):
    """instance_head.onnx: mask logits of each detection's class [and its track-head embedding]."""

    def __init__(self, net: VPSNet) -> None:
        super().__init__()
        self.roi_heads = net.detector.roi_heads
        self.track_head = net.track_head

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor, rois_p2: Tensor, rois_p3: Tensor,
                rois_p4: Tensor, rois_p5: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        features, rois = (p2, p3, p4, p5), (rois_p2, rois_p3, rois_p4, rois_p5)
        heads = self.roi_heads
        # the 14x14 mask pooler maps boxes to levels as the 7x7 one does (same canonical scale and level)
        mask_logits = heads.mask_predictor(heads.mask_head(pool_levels(heads.mask_roi_pool, features, rois)))
        own = torch.gather(mask_logits, 1, labels[:, None, None, None].expand(-1, 1, *mask_logits.shape[-2:]))[:, 0]
        if self.track_head is None:
            return (own,)
        return own, self.track_head.embed(pool_levels(heads.box_roi_pool, features, rois))


# ----------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------


def _example_inputs(net: VPSNet) -> dict[str, dict[str, Tensor]]:
    """Example inputs of every graph, from a random frame through the model itself. The sizes are all different
    (and not 0 or 1), so that the exporter specialises none of them."""
    g = torch.Generator().manual_seed(0)
    s = net.size_divisibility
    hp, wp = 5 * s, 7 * s
    image = torch.randint(0, 256, (1, 3, hp, wp), dtype=torch.uint8, generator=g)
    ref_image = torch.randint(0, 256, (1, 3, hp, wp), dtype=torch.uint8, generator=g)
    io = graph_io(net.variant)
    with torch.no_grad():
        backbone = BackboneGraph(net)(image, ref_image)
        ref_levels = BackboneGraph(net)(ref_image, image)[: len(RPN_LEVELS)]
        heads_in = (*backbone, *ref_levels)
        heads = HeadsGraph(net)(*heads_in)
    roi_features = heads[-len(ROI_LEVELS):] if net.fuse is not None else backbone[: len(ROI_LEVELS)]
    # boxes per level: all counts different and > 1 (no dimension specialised)
    scale = torch.tensor([wp / 2, hp / 2, wp / 2, hp / 2])
    rois = [torch.tensor([[x, y, x + size, y + size] for x, y in torch.rand(count, 2, generator=g).tolist()]) * scale
            for count, size in zip((11, 9, 7, 5), (0.1, 0.3, 0.6, 1.0), strict=True)]
    roi_in = {**dict(zip(ROI_LEVELS, roi_features, strict=True)), **dict(zip(_names("rois_", ROI_LEVELS), rois,
                                                                            strict=True))}
    inputs = {
        "backbone": dict(zip(io["inputs"]["backbone"], (image, ref_image), strict=False)),
        "heads": dict(zip(io["inputs"]["heads"], heads_in, strict=False)),
        "box_head": roi_in,
        "instance_head": {**roi_in, "labels": torch.randint(1, net.num_things + 1, (sum(map(len, rois)),),
                                                            generator=g)},
    }
    return inputs


_GRAPH_MODULES = {"backbone": BackboneGraph, "heads": HeadsGraph, "box_head": BoxHeadGraph,
                  "instance_head": InstanceHeadGraph}


def export_graph(net: VPSNet, name: str, path: str | Path, *, opset: int = VPSNET_OPSET,
                 optimize: bool = True) -> Path:
    """Export graph ``name`` ("backbone" | "heads" | "box_head" | "instance_head") of ``net`` (eval mode) to
    ``path`` with dynamic sizes, and check it with ``onnx.checker``. ``optimize``: run the exporter's graph
    optimiser (constant folding; ONNX Runtime optimises again at load time; off halves the export time)."""
    import onnx

    io = graph_io(net.variant)
    inputs = _example_inputs(net)[name]
    auto = torch.export.Dim.AUTO
    dynamic = {key: {i: auto for i in range(value.dim()) if not (value.dim() == 4 and i < 2)
                     and not (key.startswith("rois_") and i == 1)}
               for key, value in inputs.items()}
    path = Path(path)
    with torch.no_grad():
        program = torch.onnx.export(
            _GRAPH_MODULES[name](net).eval(), tuple(inputs.values()), dynamo=True, opset_version=opset,
            input_names=list(inputs), output_names=io["outputs"][name], dynamic_shapes=tuple(dynamic.values()),
            custom_translation_table={torch.ops.vidseg.correlation.default: correlation_onnx},
            external_data=False, optimize=optimize)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def export_vpsnet_model(net: VPSNet, folder: str | os.PathLike, *, net_config: Mapping[str, Any],
                        hyper_parameters: Mapping[str, Any] | None = None, opset: int = VPSNET_OPSET,
                        optimize: bool = True) -> Path:
    """Export ``net`` (built by ``build_vpsnet(**net_config)``, weights loaded) as an ONNX folder
    (:mod:`vidseg.onnx.folder`) of the four graphs; returns the folder. ``net_config`` rebuilds the parameter-free
    rest at load time (no weights: they are in the graphs)."""
    from vidseg.pretrained import vidseg_version

    net = net.eval()
    hyper_parameters = dict(hyper_parameters or {})
    hyper_parameters["net"] = dict(net_config)
    io = graph_io(net.variant)
    config = {
        "task": "vps", "model": "VPSNet", "graphs": dict(GRAPHS), "opset": opset,
        "exporter": f"torch.onnx.export(dynamo=True) of torch {torch.__version__}",
        "inputs": io["inputs"], "outputs": io["outputs"],
        "normalisation": {"inside_graph": True, "input": "RGB uint8", "mean": [m * 255 for m in IMAGENET_MEAN],
                          "std": [s * 255 for s in IMAGENET_STD], "pad_value": list(IMAGENET_MEAN_UINT8)},
        "classes": hyper_parameters.get("categories"),
        "model_config": {"variant": net.variant, "size_divisibility": net.size_divisibility,
                         "num_stuff": net.num_stuff, "num_things": net.num_things,
                         "mask_size": 2 * net.detector.roi_heads.mask_roi_pool.output_size[0],
                         "embedding_dim": net.track_head.fc2.out_features if net.track_head is not None else None},
        "hyper_parameters": hyper_parameters, "vidseg_version": vidseg_version(),
        "torch_version": torch.__version__,
    }
    writers = {file: (lambda path, name=name: export_graph(net, name, path, opset=opset, optimize=optimize))
               for name, file in GRAPHS.items()}
    return write_onnx_folder(folder, _plain(config), writers)


def _plain(value: Any) -> Any:
    """JSON-ready copy (tuples -> lists, OmegaConf containers -> dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def export_vpsnet(checkpoint: str | os.PathLike, folder: str | os.PathLike, *, opset: int = VPSNET_OPSET,
                  optimize: bool = True) -> Path:
    """Export a VPS checkpoint (a ``.ckpt`` or pretrained folder) as an ONNX folder; returns the folder.
    The network is exported in fp32, as :class:`vidseg.inference.vps.VPSPredictor` runs it by default."""
    from vidseg.inference.vps import load_vps_model

    model, hyper_parameters = load_vps_model(checkpoint)
    return export_vpsnet_model(model, folder, net_config=hyper_parameters["net"],
                               hyper_parameters=hyper_parameters, opset=opset, optimize=optimize)


# ----------------------------------------------------------------------------------------------------------
# ONNX Runtime backend
# ----------------------------------------------------------------------------------------------------------


class _InGraph(nn.Module):
    """Stands for a learned module of the skeleton: it runs inside an ONNX graph, never here."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("this part of VPSNet runs in the exported ONNX graphs")


def skeleton_vpsnet(net_config: Mapping[str, Any]) -> VPSNet:
    """VPSNet from ``net_config`` without its learned layers (each replaced by :class:`_InGraph`): what the
    ONNX backend runs in PyTorch (anchors, proposal and detection selection, association, post-processing)."""
    from vidseg.inference.vps import vpsnet_config

    net = build_vpsnet(**vpsnet_config(net_config)).eval()
    net.backbone, net.fpn, net.semantic_head = _InGraph(), _InGraph(), _InGraph()
    if net.fuse is not None:
        net.fuse = _InGraph()
    if net.flow is not None:
        net.flow = _InGraph()
    net.detector.rpn.head = _InGraph()
    heads = net.detector.roi_heads
    heads.box_head, heads.box_predictor, heads.mask_head, heads.mask_predictor = (_InGraph() for _ in range(4))
    if net.track_head is not None:
        net.track_head.fc1, net.track_head.fc2 = _InGraph(), _InGraph()
    return net


def _numpy(tensor: Tensor, dtype=np.float32) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=dtype)


class OnnxVPSNet:
    """VPSNet's inference with the learned part run by ONNX Runtime from an exported folder: the ONNX backend
    of :class:`vidseg.inference.vps.VPSSession` (``infer_frame`` as :meth:`VPSNet.infer_frame`, which runs the
    rest, in PyTorch on the CPU). Build it with :meth:`from_folder`.
    """

    training = False

    def __init__(self, sessions: Mapping[str, OnnxSession], skeleton: VPSNet, model_config: Mapping[str, Any], *,
                 categories: Sequence[Mapping[str, Any]] | None = None):
        self.sessions = dict(sessions)
        self.categories = [dict(c) for c in categories] if categories else None  # from the checkpoint, if named
        self.skeleton = skeleton
        self.pixel_mean = skeleton.pixel_mean  # VPSSession reads the device from it: tensors stay on the CPU
        self.num_stuff, self.num_things = skeleton.num_stuff, skeleton.num_things
        self.variant = skeleton.variant
        self.mask_size = int(model_config["mask_size"])
        self.embedding_dim = model_config.get("embedding_dim")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, device: str | torch.device = "cpu",
                    threads: int | None = None) -> OnnxVPSNet:
        """Load ``folder`` (config.json and the graphs: JSON and ONNX only, no pickle, no weights in PyTorch)."""
        config = read_onnx_config(folder, task="vps", model="VPSNet")
        sessions = {name: OnnxSession(checked_join(folder, str(file), source=Path(folder) / "config.json",
                                                   what="graph file name"), device=device, threads=threads)
                    for name, file in config["graphs"].items()}
        return cls(sessions, skeleton_vpsnet(config["hyper_parameters"]["net"]), config["model_config"],
                   categories=config.get("classes"))

    def eval(self) -> OnnxVPSNet:
        return self

    def to(self, device: str | torch.device) -> OnnxVPSNet:
        """The graphs run on the provider chosen in :meth:`from_folder`; tensors come back on the CPU."""
        return self

    def infer_frame(self, image: Tensor, state: VPSState | None = None):
        """As :meth:`VPSNet.infer_frame` (the same code), with :meth:`run_network` computing the learned part."""
        return self.skeleton.infer_frame(image, state, network=self.run_network)

    @staticmethod
    def _rois(rois: Sequence[Tensor]) -> dict[str, np.ndarray]:
        return {f"rois_{level}": _numpy(boxes).reshape(-1, 4) for level, boxes in zip(ROI_LEVELS, rois, strict=True)}

    def run_network(self, padded: Tensor, state: VPSState, size: tuple[int, int]) -> VPSNetworkOutput:
        """:meth:`VPSNet.run_network` with the graphs."""
        if torchvision_roi_scales(size[0], padded.shape[-2]) != [1.0 / stride for stride in ROI_STRIDES]:
            raise ValueError(f"frames {size[0]} px high are padded to {padded.shape[-2]}: PyTorch's RoIAlign would "
                             "pool them at other feature strides than the exported graphs (torchvision infers the "
                             "strides from the unpadded height); crop or resize the frames to a height closer to a "
                             f"multiple of {self.skeleton.size_divisibility}")
        fuse = self.variant in ("fuse", "fusetrack")
        first = state.features is None
        image = _numpy(padded, np.uint8)
        if fuse:
            ref_image = image if first else _numpy(state.image, np.uint8)
            out = self.sessions["backbone"].run(image=image, ref_image=ref_image)
        else:
            out = self.sessions["backbone"].run(image=image)
        levels = {name: out[name] for name in RPN_LEVELS}
        heads_in = dict(levels)
        if fuse:
            reference = levels if first else {name: _numpy(v) for name, v in state.features.items()}
            heads_in.update(flow=out["flow"], **{f"ref_{name}": reference[name] for name in RPN_LEVELS})
        heads = self.sessions["heads"].run(**heads_in)
        roi_in = {name: heads[f"fused_{name}"] if fuse else levels[name] for name in ROI_LEVELS}
        n = len(RPN_LEVELS)
        detector = self.skeleton.detector
        proposals = detector.proposals([torch.from_numpy(heads[f"objectness_{i}"]) for i in range(n)],
                                       [torch.from_numpy(heads[f"box_deltas_{i}"]) for i in range(n)], padded, [size])
        num_classes = self.num_things + 1
        heads_pool = detector.roi_heads.box_roi_pool
        if len(proposals[0]):
            rois, order = rois_by_level(heads_pool, proposals[0])
            box_out = self.sessions["box_head"].run(**roi_in, **self._rois(rois))
            back = order.argsort()  # level order -> proposal order
            class_logits = torch.from_numpy(box_out["class_logits"])[back]
            box_regression = torch.from_numpy(box_out["box_regression"])[back]
        else:
            class_logits, box_regression = torch.zeros(0, num_classes), torch.zeros(0, 4 * num_classes)
        det = detector.roi_heads.select_detections(class_logits, box_regression, proposals, [size])[0]
        embeddings = None
        if len(det["boxes"]):
            rois, order = rois_by_level(heads_pool, det["boxes"])
            inst = self.sessions["instance_head"].run(**roi_in, **self._rois(rois),
                                                      labels=_numpy(det["labels"][order], np.int64))
            back = order.argsort()
            mask_logits = torch.from_numpy(inst["mask_logits"])[back]
            if "embeddings" in inst:
                embeddings = torch.from_numpy(inst["embeddings"])[back]
        else:
            mask_logits = torch.zeros(0, self.mask_size, self.mask_size)
        if embeddings is None and self.embedding_dim is not None:
            embeddings = torch.zeros(0, int(self.embedding_dim))
        features = {name: torch.from_numpy(v) for name, v in levels.items()} if fuse else {}
        return VPSNetworkOutput(features=features, flow_encoding=None,
                                semantic_logits=torch.from_numpy(heads["semantic_logits"]), boxes=det["boxes"],
                                scores=det["scores"], labels=det["labels"], mask_logits=mask_logits,
                                embeddings=embeddings)

"""VPSNet exported to ONNX (vidseg.onnx.vpsnet) and run by ONNX Runtime gives the PyTorch predictor's panoptic
ids over whole toy videos; the graphs pass onnx.checker and keep H and W dynamic; the exact-by-construction
pieces (correlation translation, adaptive max pooling, RoI pooling) match PyTorch."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidseg.data.io import read_image
from vidseg.data.panoptic import read_panoptic_png
from vidseg.errors import DataError
from vidseg.inference.checkpoint import build_checkpoint
from vidseg.inference.vps import VPSPredictor
from vidseg.metrics.vpq import summarize_vpq, video_pq_counts
from vidseg.metrics.vps_eval import load_ground_truth
from vidseg.models.vpsnet import TINY, build_vpsnet
from vidseg.models.vpsnet.fuse import adaptive_max_pool2d
from vidseg.onnx.vpsnet import GRAPHS, OnnxVPSNet, export_vpsnet, pool_levels, rois_by_level, torchvision_roi_scales

pytest.importorskip("onnxruntime")


def tiny_config(variant: str, flow: dict | None = None) -> dict:
    """A tiny VPSNet with the toy set's classes (Cityscapes trainIds: 11 stuff, 8 things) whose random detector
    keeps its best instances (no score threshold, at most 8), so tracks and VPQ's thing tubes exist."""
    detector = {**TINY["detector"], "anchor_sizes": [8, 16, 32, 64, 128], "score_thresh": 0.0,
                "detections_per_img": 8}
    flow = (flow or {"name": "tiny", "channels": 8}) if "fuse" in variant else None
    return dict(variant=variant, backbone={"name": "resnet18"}, flow=flow,
                **{**TINY, "detector": detector, "stuff_area_limit": 16})


def tiny_checkpoint(variant: str, path, flow: dict | None = None):
    """A VPS checkpoint file of a seeded tiny VPSNet in vidseg's layout (what vidseg.train writes)."""
    torch.manual_seed(0)
    config = tiny_config(variant, flow)
    net = build_vpsnet(**config)
    torch.save(build_checkpoint("vps", {"net": config}, net.state_dict(), global_step=2), path)
    return path


def export_tiny(variant: str, folder, *, optimize: bool = True, flow: dict | None = None):
    """(PyTorch predictor from a tiny checkpoint, its ONNX folder written by export_vpsnet)."""
    ckpt = tiny_checkpoint(variant, folder.parent / f"{variant}.ckpt", flow)
    return VPSPredictor.from_checkpoint(ckpt), export_vpsnet(ckpt, folder, optimize=optimize)


def toy_video(root, video: int = 0) -> tuple[list[str], list[np.ndarray]]:
    """File names and frames (every frame, annotated or not) of the toy set's ``video``-th validation video."""
    paths = sorted((root / "val" / "img_all").glob("*.png"))
    names = sorted({p.name.split("_")[0] for p in paths})
    paths = [p for p in paths if p.name.split("_")[0] == names[video]]
    return [p.name for p in paths], [read_image(p) for p in paths]


def _segments(result) -> list[dict]:
    return [{"id": s["id"], "category_id": s["category_id"], "iscrowd": 0, "area": s["area"]} for s in result.segments]


def video_vpq(root, names: list[str], results, reference=None) -> float:
    """VPQ (all classes, fraction) of one predicted toy video against its ground truth (its annotated frames), or
    against ``reference`` (another prediction of every frame, as ground truth)."""
    gt = load_ground_truth("cityscapes_vps", root, "val")
    if reference is None:
        video = next(v for v in gt.videos if v.frames[0].file_name in names)
        results = [results[names.index(frame.file_name)] for frame in video.frames]
        gt_ids = [read_panoptic_png(f.png_path) for f in video.frames]
        gt_segments = [f.segments_info for f in video.frames]
    else:
        gt_ids, gt_segments = [r.panoptic for r in reference], [_segments(r) for r in reference]
    counts = video_pq_counts(gt_ids, gt_segments, [r.panoptic for r in results], [_segments(r) for r in results],
                             gt.categories, "cityscapes_vps")
    return summarize_vpq(counts, gt.categories, "cityscapes_vps")["vpq"]["all"]


def compare(torch_predictor, folder, frames) -> tuple[float, list, list]:
    """Fraction of equal panoptic ids over ``frames`` (PyTorch vs ONNX Runtime) and both results."""
    torch_results = list(torch_predictor.track(frames))
    onnx_results = list(VPSPredictor.from_checkpoint(folder).track(frames))
    equal = np.mean([np.mean(a.panoptic == b.panoptic) for a, b in zip(torch_results, onnx_results, strict=True)])
    return float(equal), torch_results, onnx_results


@pytest.fixture(scope="module")
def track_export(tmp_path_factory):
    # the track variant exports in ~15 s (fusetrack ~50 s on 2 cores: the slow test below); optimize=False halves
    # the export time (ONNX Runtime optimises the graphs again when it loads them)
    return export_tiny("track", tmp_path_factory.mktemp("vps_onnx") / "track", optimize=False)


def check_whole_video(torch_predictor, folder, root) -> None:
    names, frames = toy_video(root)
    assert len(frames) >= 10
    equal, torch_results, onnx_results = compare(torch_predictor, folder, frames)
    assert equal >= 0.999
    things = [sorted(s["id"] for s in r.segments if s["isthing"]) for r in torch_results]
    assert sum(map(len, things)) >= 10  # instances exist, with track ids
    assert things == [sorted(s["id"] for s in r.segments if s["isthing"]) for r in onnx_results]
    # VPQ against the ground truth within 0.1 point (a random network scores ~0 there), and VPQ of the ONNX video
    # with the PyTorch video as ground truth: every tube of every window (all 4 window sizes) must match
    assert abs(video_vpq(root, names, torch_results) - video_vpq(root, names, onnx_results)) <= 0.001
    assert video_vpq(root, names, onnx_results, reference=torch_results) >= 0.999
    # another frame size, in the same exported graphs (dynamic H and W), starting a new video's state
    equal, _, _ = compare(torch_predictor, folder, [f[:48, :96] for f in frames[:3]])
    assert equal >= 0.999


def test_track_onnx_matches_pytorch_over_a_whole_toy_video(track_export, toy_cityscapes_vps_root):
    check_whole_video(*track_export, toy_cityscapes_vps_root)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fusetrack", "fuse", "image"])
def test_every_variant_matches_pytorch_over_a_whole_toy_video(variant, tmp_path, toy_cityscapes_vps_root):
    check_whole_video(*export_tiny(variant, tmp_path / variant), toy_cityscapes_vps_root)


@pytest.mark.slow
def test_raft_flow_exports_for_frames_below_and_above_its_minimum_size(tmp_path, toy_cityscapes_vps_root):
    """The paper's flow network (RAFT-small, random weights, 3 updates): exported from a frame that RAFT need not
    pad, run on the toy video's 64x128 frames, which it pads to 128 px; the graph recomputes the previous frame's
    encoding that PyTorch keeps in the state (exact: RAFT's encoder normalises each frame on its own)."""
    predictor, folder = export_tiny("fusetrack", tmp_path / "raft", optimize=False,
                                    flow={"name": "raft_small", "weights": None, "num_flow_updates": 3})
    frames = toy_video(toy_cityscapes_vps_root)[1][:6]
    equal, _, _ = compare(predictor, folder, frames)
    assert equal >= 0.999
    equal, _, _ = compare(predictor, folder, [np.concatenate([f, f, f], axis=0)[:160] for f in frames[:3]])
    assert equal >= 0.999


def test_the_folder_says_what_is_in_it_and_loads_without_torch_weights(track_export):
    import onnx

    _, folder = track_export
    config = json.loads((folder / "config.json").read_text())
    assert config["task"] == "vps" and config["model"] == "VPSNet" and config["graphs"] == GRAPHS
    assert config["opset"] == 19 and config["model_config"]["variant"] == "track"
    for name, file in GRAPHS.items():
        model = onnx.load(str(folder / file))
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == config["inputs"][name]
        image_like = model.graph.input[0].type.tensor_type.shape.dim
        assert image_like[2].dim_param and image_like[3].dim_param  # H and W are dynamic, not fixed numbers
    backend = OnnxVPSNet.from_folder(folder)
    with pytest.raises(RuntimeError, match="ONNX graphs"):  # the PyTorch side has no learned layer to run
        backend.skeleton.backbone(torch.zeros(1))


def test_backend_choice_and_errors(track_export, tmp_path):
    _, folder = track_export
    assert isinstance(VPSPredictor.from_checkpoint(folder).model, OnnxVPSNet)
    with pytest.raises(DataError, match="fp32"):
        VPSPredictor.from_checkpoint(folder, precision="bf16-mixed")
    with pytest.raises(DataError, match="backend=onnx"):
        VPSPredictor.from_checkpoint(folder, backend="torch")
    with pytest.raises(DataError, match="not one"):
        VPSPredictor.from_checkpoint(tmp_path, backend="onnx")


# ----------------------------------------------------------------------------------------------------------
# The pieces written for the export, against PyTorch
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, out", [((16, 32), (8, 16)), ((16, 32), (1, 1)), ((12, 20), (2, 3)), ((17, 9), (5, 4))])
def test_exported_adaptive_max_pool_is_pytorchs(size, out):
    x = torch.randn(2, 3, *size)
    assert torch.equal(adaptive_max_pool2d(x, out), F.adaptive_max_pool2d(x, out))
    with mock.patch("torch.compiler.is_exporting", return_value=True):  # the gather path the graph contains
        assert torch.equal(adaptive_max_pool2d(x, out), F.adaptive_max_pool2d(x, out))


def test_pooling_by_level_is_torchvisions():
    torch.manual_seed(0)
    net = build_vpsnet(**tiny_config("image")).eval()
    pooler = net.detector.roi_heads.box_roi_pool
    features = {f"p{k}": torch.randn(1, 4, 64 // 2**k, 128 // 2**k) for k in range(2, 6)}
    corners = torch.rand(40, 2) * torch.tensor([100.0, 50.0])
    boxes = torch.cat([corners, corners + 2 + torch.rand(40, 2) ** 2 * 900], 1)  # small to large: every level
    rois, order = rois_by_level(pooler, boxes)
    assert all(len(r) for r in rois) and sorted(order.tolist()) == list(range(40))
    expected = pooler(features, [boxes], [(64, 128)])
    assert torch.equal(pool_levels(pooler, list(features.values()), rois)[order.argsort()], expected)


def test_frames_torchvision_would_pool_at_other_strides_are_refused(track_export):
    strides = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    assert torchvision_roi_scales(64, 64) == torchvision_roi_scales(46, 64) == strides
    assert torchvision_roi_scales(45, 64) == [1 / 2, 1 / 4, 1 / 8, 1 / 16]  # padded by 19 px of 64: rounds up
    session = VPSPredictor.from_checkpoint(track_export[1]).start()
    with pytest.raises(ValueError, match="other feature strides"):
        session.step(np.zeros((45, 64, 3), np.uint8))


def test_correlation_translation_matches_the_op(tmp_path):
    import onnxruntime as ort

    from vidseg.onnx.vpsnet import correlation_onnx
    from vidseg.ops import correlation

    class Corr(torch.nn.Module):
        def forward(self, a, b):
            return correlation(a, b, 2)

    a, b = torch.randn(1, 5, 6, 9), torch.randn(1, 5, 6, 9)
    auto = torch.export.Dim.AUTO
    program = torch.onnx.export(Corr(), (a, b), dynamo=True, opset_version=19,
                                dynamic_shapes=({2: auto, 3: auto}, {2: auto, 3: auto}),
                                custom_translation_table={torch.ops.vidseg.correlation.default: correlation_onnx})
    path = tmp_path / "corr.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, 5, 6, 9), (1, 5, 11, 7)):  # the example size and another one
        a, b = torch.randn(shape), torch.randn(shape)
        got = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), (a, b), strict=True)})[0]
        np.testing.assert_allclose(got, correlation(a, b, 2).numpy(), rtol=1e-5, atol=1e-6)

"""VPSPredictor / VPSSession: built from a checkpoint, frames one by one, constant state, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.vps_training import train_tiny_vps
from vidseg.data.io import read_image
from vidseg.inference.checkpoint import CheckpointError
from vidseg.inference.vps import VPSPredictor, VPSSession
from vidseg.models.vpsnet import VPSState


@pytest.fixture(scope="module")
def vps_checkpoint(toy_cityscapes_vps_root, tmp_path_factory):
    # a low detection threshold so the randomly initialised detector yields instances to track
    result = train_tiny_vps(toy_cityscapes_vps_root, tmp_path_factory.mktemp("vps_ckpt"), variant="fusetrack",
                            extra=["model.net.detector.score_thresh=0.0", "model.net.detector.detections_per_img=4"])
    return result["last_checkpoint"]


def _frames(root, n):
    return [read_image(p) for p in sorted((root / "val" / "img_all").glob("*.png"))[:n]]


def _state_sizes(state: VPSState) -> dict:
    sizes = {k: tuple(v.shape) for k, v in (state.features or {}).items()}
    sizes["image"] = tuple(state.image.shape)
    return sizes


def test_session_yields_frames_in_order_with_constant_state(vps_checkpoint, toy_cityscapes_vps_root):
    predictor = VPSPredictor.from_checkpoint(vps_checkpoint)
    assert not predictor.model.training and predictor.model.variant == "fusetrack"
    assert predictor.categories[13]["name"] == "car"
    frames = _frames(toy_cityscapes_vps_root, 6)
    session = predictor.start()
    sizes, track_counts = [], []
    for k, frame in enumerate(frames + frames[:1]):
        index, panoptic, segments = session.step(frame)
        assert index == k and panoptic.shape == frame.shape[:2] and panoptic.dtype == np.int64
        assert {s["id"] for s in segments} == set(np.unique(panoptic).tolist()) - {0}
        for s in segments:
            assert s["area"] == int((panoptic == s["id"]).sum())
            assert s["isthing"] == (s["track_id"] is not None) == (s["id"] >= 1000)
        sizes.append(_state_sizes(session.state))
        track_counts.append(len(session.state.tracks))
    assert all(s == sizes[0] for s in sizes)  # only the previous frame is kept
    assert track_counts[-1] <= 4 * len(frames)  # at most the detections seen; nothing per frame
    assert session.state.frame_index == len(frames) + 1
    # track() is the same loop over any iterable, consumed lazily; tensors (3, H, W) work too
    results = list(predictor.track(iter(torch.from_numpy(f).permute(2, 0, 1) for f in frames[:2])))
    assert [r.frame_index for r in results] == [0, 1]


def test_session_errors(vps_checkpoint, toy_cityscapes_vps_root):
    predictor = VPSPredictor.from_checkpoint(vps_checkpoint)
    session = predictor.start()
    frame = _frames(toy_cityscapes_vps_root, 1)[0]
    session.step(frame)
    with pytest.raises(ValueError, match="start a new session"):
        session.step(frame[:32])
    with pytest.raises(ValueError, match="uint8"):
        session.step(frame.astype(np.float32))
    with pytest.raises(ValueError, match="RGB"):
        session.step(frame[..., 0])
    with pytest.raises(ValueError, match="eval mode"):
        VPSSession(predictor.model.train())


def test_a_vos_checkpoint_is_refused(tmp_path):
    path = tmp_path / "vos.ckpt"
    torch.save({"vidseg_task": "vos", "hyper_parameters": {"net": {}}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="'vos' checkpoint but task=vps"):
        VPSPredictor.from_checkpoint(path)


def test_precision_from_the_checkpoint_loader_is_applied(vps_checkpoint, toy_cityscapes_vps_root):
    """bf16-mixed on CPU: the network's convolutions really run in bfloat16, the outputs keep their types."""
    frame = _frames(toy_cityscapes_vps_root, 1)[0]
    dtypes = {}
    for precision in ("32", "bf16-mixed"):
        predictor = VPSPredictor.from_checkpoint(vps_checkpoint, precision=precision)
        seen = []
        hook = predictor.model.backbone.conv1.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.dtype))
        index, panoptic, segments = predictor.start().step(frame)
        hook.remove()
        assert index == 0 and panoptic.dtype == np.int64 and panoptic.shape == frame.shape[:2]
        dtypes[precision] = (predictor.autocast_dtype, seen)
    assert dtypes == {"32": (None, [torch.float32]), "bf16-mixed": (torch.bfloat16, [torch.bfloat16])}

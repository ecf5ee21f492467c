"""The VPS streaming session's contract: track ids follow objects from frame to frame (whatever the order of
the detections), new objects get new ids, the Fuse module sees the previous frame, and the session hands
each frame's state to the next.

The tracking tests run the real VPSNet inference (post-processing, association, state) with its detector and
semantic head replaced by scripted outputs, so which object is where is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.stub_models import StubVPSNet, stub_thing_id
from vidseg.constants import PANOPTIC_LABEL_DIVISOR
from vidseg.inference.vps import VPSPredictor, VPSSession
from vidseg.models.vpsnet import TINY, build_vpsnet

H, W = 64, 128
NUM_STUFF, NUM_THINGS = 3, 2  # stuff 0..2, things 3..4

# Per frame: (object name, class, box xyxy, score), detections in decreasing score order as the detector
# gives them. B comes first in frame 1; C appears in frame 2; B is missing in frame 2 and back in frame 3.
# In frame 1 "dup" is a second, weaker detection of A: the overlap rule drops it, so the instances after it
# (D) are no longer at their detection index.
SCRIPT = [
    [("A", 3, (8, 8, 40, 40), 0.9), ("B", 4, (72, 12, 112, 52), 0.8)],
    [("B", 4, (74, 12, 114, 52), 0.9), ("A", 3, (10, 8, 42, 40), 0.85), ("dup", 3, (6, 8, 38, 40), 0.3),
     ("D", 4, (90, 54, 110, 64), 0.2)],
    [("A", 3, (12, 8, 44, 40), 0.9), ("C", 3, (48, 40, 68, 60), 0.7), ("D", 4, (92, 54, 112, 64), 0.6)],
    [("A", 3, (14, 8, 46, 40), 0.9), ("B", 4, (74, 12, 114, 52), 0.85), ("C", 3, (50, 40, 70, 60), 0.7),
     ("D", 4, (92, 54, 112, 64), 0.6)],
]


def tiny_vpsnet(variant: str):
    torch.manual_seed(0)
    flow = {"name": "tiny", "channels": 8} if "fuse" in variant else None
    return build_vpsnet(variant=variant, backbone={"name": "resnet18"}, num_stuff=NUM_STUFF,
                        num_things=NUM_THINGS, flow=flow, **{**TINY, "stuff_area_limit": 16}).eval()


def script_model(model, monkeypatch) -> None:
    """Replace the semantic head and the detector by the outputs of SCRIPT, frame after frame."""
    frame = {"index": -1}

    def semantic(features):
        frame["index"] += 1  # the semantic head runs once per frame, before the detector
        h, w = features["p2"].shape[-2:]
        logits = torch.zeros(1, NUM_STUFF + NUM_THINGS, h, w)
        logits[0, 0] = 1.0  # stuff class 0 everywhere else
        for _, cls, (x0, y0, x1, y1), _ in SCRIPT[frame["index"]]:
            logits[0, cls, y0 // 4: y1 // 4, x0 // 4: x1 // 4] = 5.0
        return logits

    def detect(features, images, image_sizes):
        dets = SCRIPT[frame["index"]]
        g = torch.Generator().manual_seed(frame["index"])
        return [{
            "boxes": torch.tensor([d[2] for d in dets], dtype=torch.float32),
            "scores": torch.tensor([d[3] for d in dets]),
            "labels": torch.tensor([d[1] - NUM_STUFF + 1 for d in dets]),  # the detector's 1..num_things
            "mask_logits": torch.full((len(dets), 28, 28), 20.0),  # the whole box
            "roi_features": torch.rand(len(dets), TINY["fpn_channels"], 7, 7, generator=g),
        }]

    monkeypatch.setattr(model.semantic_head, "forward", semantic)
    monkeypatch.setattr(model.detector, "detect", detect)


def segment_ids_by_object(results) -> list[dict[str, int]]:
    """Per frame: object name -> the segment id at the centre of its box."""
    out = []
    for result, dets in zip(results, SCRIPT, strict=True):
        ids = {}
        for name, cls, (x0, y0, x1, y1), _ in dets:
            if name == "dup":  # removed: its pixels are A's
                continue
            ids[name] = int(result.panoptic[(y0 + y1) // 2, (x0 + x1) // 2])
            assert ids[name] % PANOPTIC_LABEL_DIVISOR == cls  # a thing of its class
            segment = next(s for s in result.segments if s["id"] == ids[name])
            assert segment["isthing"] and segment["id"] == (segment["track_id"] + 1) * PANOPTIC_LABEL_DIVISOR + cls
        out.append(ids)
    return out


@pytest.mark.parametrize("variant", ["image", "track", "fusetrack"])
def test_track_ids_follow_the_objects(variant, monkeypatch):
    model = tiny_vpsnet(variant)
    script_model(model, monkeypatch)
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (len(SCRIPT), 3, H, W), dtype=torch.uint8, generator=g)
    ids = segment_ids_by_object(list(VPSPredictor(model).track(frames)))
    a, b, c, d = ids[0]["A"], ids[0]["B"], ids[2]["C"], ids[1]["D"]
    assert len({a, b, c, d}) == 4  # four objects, four ids (new objects never reuse an id)
    assert [f["A"] for f in ids] == [a] * 4
    assert ids[1]["B"] == b  # detected first in frame 1: its id follows the object, not the order
    assert ids[2]["D"] == ids[3]["D"] == d  # frame 1 showed D with its own track, not the dropped detection's
    assert ids[3]["C"] == c
    if variant == "image":  # mask-IoU association looks one frame back: B, missed in frame 2, is new again
        assert ids[3]["B"] not in {a, b, c, d}
    else:  # learned association keeps every track for the whole video
        assert ids[3]["B"] == b


def test_fuse_module_sees_the_previous_frame(monkeypatch):
    """Frame t is fused with frame t-1's (unfused) FPN features and flow is computed against frame t-1's image;
    frame 0 is its own reference."""
    model = tiny_vpsnet("fuse")
    raw, fused_with, flow_between = [], [], []
    real_extract, real_flow = model.extract, model.initial_flow
    monkeypatch.setattr(model, "extract", lambda x: raw.append(real_extract(x)) or raw[-1])
    monkeypatch.setattr(model, "initial_flow",
                        lambda target, ref, size: flow_between.append((target, ref)) or real_flow(target, ref, size))
    hook = model.fuse.register_forward_pre_hook(lambda module, args: fused_with.append(args[1]))
    frames = torch.randint(0, 256, (3, 3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    list(VPSPredictor(model).track(frames))
    hook.remove()
    assert len(raw) == len(fused_with) == len(flow_between) == 3
    for t in range(3):
        ref = max(t - 1, 0)
        for level, value in raw[ref].items():
            assert torch.equal(fused_with[t][level], value), (t, level)
        target, ref_image = flow_between[t]
        assert torch.equal(target[0, :, :H, :W], frames[t]) and torch.equal(ref_image[0, :, :H, :W], frames[ref])


def test_session_hands_each_frames_state_to_the_next():
    """A stand-in network whose thing id is the state's frame index: a session that drops the returned
    state, or a track() that restarts, shows up as a repeated id."""
    model = StubVPSNet()
    frames = [np.full((8, 12, 3), 10 * t, np.uint8) for t in range(4)]
    results = list(VPSPredictor(model).track(iter(frames)))
    assert [r.frame_index for r in results] == [0, 1, 2, 3]
    for t, result in enumerate(results):
        assert stub_thing_id(t) in set(np.unique(result.panoptic).tolist())
        assert [s["id"] for s in result.segments] == [1, stub_thing_id(t)]
    # the network got each frame once, in order, as (3, H, W) uint8 (numpy (H, W, 3) input transposed)
    assert [torch.equal(got, torch.from_numpy(f).permute(2, 0, 1)) for got, f in zip(model.frames, frames,
                                                                                    strict=True)] == [True] * 4
    session = VPSPredictor(model).start()
    assert session.step(frames[0]).frame_index == 0 and session.frame_index == 1
    assert VPSPredictor(model).start().step(frames[0]).frame_index == 0  # a new session starts a new video


def test_predictor_runs_the_network_in_eval_mode():
    model = tiny_vpsnet("image").train()
    predictor = VPSPredictor(model)
    assert not predictor.model.training
    VPSSession(predictor.model)  # raises for a model in training mode

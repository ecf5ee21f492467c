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


def tiny_vpsnet(variant: str, **options):
    torch.manual_seed(0)
    flow = {"name": "tiny", "channels": 8} if "fuse" in variant else None
    return build_vpsnet(variant=variant, backbone={"name": "resnet18"}, num_stuff=NUM_STUFF,
                        num_things=NUM_THINGS, flow=flow, **{**TINY, "stuff_area_limit": 16, **options}).eval()


def script_model(model, monkeypatch, script=SCRIPT) -> None:
    """Replace the semantic head and the detector by the outputs of ``script``, frame after frame."""
    frame = {"index": -1}

    def semantic(features):
        frame["index"] += 1  # the semantic head runs once per frame, before the detector
        h, w = features["p2"].shape[-2:]
        logits = torch.zeros(1, NUM_STUFF + NUM_THINGS, h, w)
        logits[0, 0] = 1.0  # stuff class 0 everywhere else
        for _, cls, (x0, y0, x1, y1), _ in script[frame["index"]]:
            logits[0, cls, y0 // 4: y1 // 4, x0 // 4: x1 // 4] = 5.0
        return logits

    def detect(features, images, image_sizes):
        dets = script[frame["index"]]
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
    # without a track head: the mask-IoU association option (the official default follows the rank, below)
    model = tiny_vpsnet(variant, **({"associate_without_track_head": "mask_iou"} if variant == "image" else {}))
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


@pytest.mark.parametrize("variant", ["image", "fuse"])
def test_without_track_head_ids_follow_class_and_rank_by_default(variant, monkeypatch):
    """Official (get_unified_pan_result without obj_ids): an instance's id is its panoptic channel, i.e. its rank
    among the kept detections, one colour per (class, id): an object keeps its id while it keeps its rank."""
    model = tiny_vpsnet(variant)
    script_model(model, monkeypatch)
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (len(SCRIPT), 3, H, W), dtype=torch.uint8, generator=g)
    ids = segment_ids_by_object(list(VPSPredictor(model).track(frames)))

    def rank_id(rank, cls):
        return (rank * NUM_THINGS + cls - NUM_STUFF + 1) * PANOPTIC_LABEL_DIVISOR + cls

    assert ids[0] == {"A": rank_id(0, 3), "B": rank_id(1, 4)}
    assert ids[1] == {"B": rank_id(0, 4), "A": rank_id(1, 3), "D": rank_id(2, 4)}  # "dup" removed: D ranks third
    assert ids[2] == {"A": rank_id(0, 3), "C": rank_id(1, 3), "D": rank_id(2, 4)}
    assert ids[3] == {"A": rank_id(0, 3), "B": rank_id(1, 4), "C": rank_id(2, 3), "D": rank_id(3, 4)}


def test_fuse_module_sees_the_previous_frame(monkeypatch):
    """Frame t is fused with frame t-1's (unfused) FPN features and flow is computed against frame t-1's image;
    frame 0 is its own reference."""
    model = tiny_vpsnet("fuse")
    raw, fused_with, flow_between = [], [], []
    real_extract, real_flow = model.extract, model.initial_flow
    monkeypatch.setattr(model, "extract", lambda x: raw.append(real_extract(x)) or raw[-1])
    monkeypatch.setattr(model, "initial_flow", lambda target, ref, size, *encoding: flow_between.append((target, ref))
                        or real_flow(target, ref, size, *encoding))
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


# ----------------------------------------------------------------------------------------------------------
# Options that are off by default, end to end through a session (scripted detections, exact track ids)
# ----------------------------------------------------------------------------------------------------------


def run_script(model, monkeypatch, script) -> list:
    """Each frame's VPSFrameOutput of a session over ``script`` (random frames)."""
    script_model(model, monkeypatch, script)
    session = VPSPredictor(model).start()
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (len(script), 3, H, W), dtype=torch.uint8, generator=g)
    return [session.step_raw(frame) for frame in frames], session


# B (class 4) is missing from frame 1, where C (class 3) appears; B is back in frame 2.
FORGET_SCRIPT = [
    [("A", 3, (8, 8, 40, 40), 0.9), ("B", 4, (72, 12, 112, 52), 0.8)],
    [("A", 3, (10, 8, 42, 40), 0.9), ("C", 3, (48, 40, 68, 60), 0.7)],
    [("A", 3, (12, 8, 44, 40), 0.9), ("B", 4, (74, 12, 114, 52), 0.8)],
]


def test_max_tracks_forgets_the_oldest_track_and_new_ids_never_reuse_a_forgotten_one(monkeypatch):
    outputs, session = run_script(tiny_vpsnet("track", max_tracks=2), monkeypatch, FORGET_SCRIPT)
    # frame 1 keeps A (0) and C (2) and forgets B (1, seen at frame 0); B's return is a new track: 3, not 1 or 2
    assert [out.track_ids.tolist() for out in outputs] == [[0, 1], [0, 2], [0, 3]]
    assert session.state.tracks.ids.tolist() == [0, 3] and session.state.tracks.next_id == 4
    assert session.state.tracks.last_seen.tolist() == [2, 2]
    thing_ids = sorted(s["id"] for s in outputs[2].segments_info if s["isthing"])
    assert thing_ids == [1 * 1000 + 3, 4 * 1000 + 4]
    # without the option (the paper) every track is kept: B gets its id back
    outputs, session = run_script(tiny_vpsnet("track"), monkeypatch, FORGET_SCRIPT)
    assert [out.track_ids.tolist() for out in outputs] == [[0, 1], [0, 2], [0, 1]]
    assert session.state.tracks.ids.tolist() == [0, 1, 2]


def test_mask_iou_threshold_option_reaches_the_image_variant(monkeypatch):
    script = [[("A", 3, (8, 8, 40, 40), 0.9)], [("A", 3, (10, 8, 42, 40), 0.9)]]  # mask IoU 30/34 = 0.88
    outputs, _ = run_script(tiny_vpsnet("image", associate_without_track_head="mask_iou"), monkeypatch, script)
    assert [out.track_ids.tolist() for out in outputs] == [[0], [0]]
    outputs, session = run_script(tiny_vpsnet("image", associate_without_track_head="mask_iou", mask_iou_threshold=0.9),
                                  monkeypatch, script)
    assert [out.track_ids.tolist() for out in outputs] == [[0], [1]]
    assert session.state.mask_tracks.next_id == 2


def test_track_coefficients_option_reaches_the_association(monkeypatch):
    # the same box in frame 1, detected as the other thing class: the class bonus (10) beats the box IoU (2 x 1)
    script = [[("A", 3, (8, 8, 40, 40), 0.9)], [("A", 4, (8, 8, 40, 40), 0.9)]]
    outputs, _ = run_script(tiny_vpsnet("track"), monkeypatch, script)
    assert [out.track_ids.tolist() for out in outputs] == [[0], [1]]
    # with a box-IoU weight of 100 the box wins: the track continues (its id, the new class)
    outputs, _ = run_script(tiny_vpsnet("track", track_coefficients=(1.0, 100.0, 10.0)), monkeypatch, script)
    assert [out.track_ids.tolist() for out in outputs] == [[0], [0]]
    assert [s["id"] for s in outputs[1].segments_info if s["isthing"]] == [1 * 1000 + 4]


def test_overlap_options_reach_the_mask_removal(monkeypatch):
    # "half": 50 % of its box under A (same class): dropped at the default 0.3, kept at 0.6.
    # "other": inside A, another class: kept per class (official), dropped by the class-agnostic option
    script = [[("A", 3, (8, 8, 40, 40), 0.9), ("half", 3, (8, 24, 40, 56), 0.8),
               ("other", 4, (16, 16, 32, 32), 0.7)]]
    kept = {}
    for name, options in (("default", {}), ("overlap 0.6", {"overlap_threshold": 0.6}),
                          ("class-agnostic", {"per_class_overlap": False})):
        outputs, _ = run_script(tiny_vpsnet("image", **options), monkeypatch, script)
        kept[name] = [round(score, 3) for score in outputs[0].scores.tolist()]
    assert kept == {"default": [0.9, 0.7], "overlap 0.6": [0.9, 0.8, 0.7], "class-agnostic": [0.9]}


class AutocastRecordingStub(StubVPSNet):
    """StubVPSNet that records, per frame, whether CPU autocast is on and its dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.autocast: list[tuple[bool, torch.dtype | None]] = []

    def infer_frame(self, image, state=None):
        enabled = torch.is_autocast_enabled("cpu")
        self.autocast.append((enabled, torch.get_autocast_dtype("cpu") if enabled else None))
        return super().infer_frame(image, state)


@pytest.mark.parametrize("precision, expected", [("32", (False, None)), ("bf16-mixed", (True, torch.bfloat16)),
                                                 ("16-mixed", (True, torch.float16))])
def test_precision_option_runs_the_network_under_autocast(precision, expected):
    model = AutocastRecordingStub()
    frames = [np.zeros((8, 12, 3), np.uint8)] * 2
    results = list(VPSPredictor(model, precision=precision).track(frames))
    assert [r.frame_index for r in results] == [0, 1]
    assert model.autocast == [expected, expected]
    assert not torch.is_autocast_enabled("cpu")  # only around the network

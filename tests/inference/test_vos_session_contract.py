"""The VOS streaming session's contract, checked with a stand-in network whose output is known exactly
(tests/helpers/stub_models.py): each frame continues from the previous frame's prediction, matching sees the
first frame and the previous frame, user ids come back unchanged, logits are resampled to the frame exactly
(pad, upsample, crop), void and padding reach matching as ignored.

Frames are 48 x 52: the width is not a multiple of the stub's stride 16, so every frame is padded. Objects
are full-height stripes on the 4-pixel feature grid, so bilinear upsampling + argmax reproduces them exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.feelvos import TINY_FEELVOS
from tests.helpers.stub_models import ShiftPreviousFEELVOS
from vidseg.constants import IGNORE_LABEL
from vidseg.inference.vos import VOSPredictor
from vidseg.models.feelvos import FEELVOS

H, W = 48, 52
NUM_FRAMES = 5
STEP_PX = 4  # the stub moves labels one feature cell (4 px) per frame


def frame_value(t: int) -> int:
    return 20 + 30 * t  # a uniform frame per time step: its embedding says which frame it is


def make_frames(n: int = NUM_FRAMES) -> list[np.ndarray]:
    return [np.full((H, W, 3), frame_value(t), np.uint8) for t in range(n)]


def first_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[:, 4:12] = 3
    mask[:, 16:28] = 7
    mask[:, 32:36] = IGNORE_LABEL  # void: never an object, never background evidence
    return mask


def shifted(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` moved right by ``px`` (background enters from the left); void becomes background, as the
    stub predicts it."""
    clean = np.where(mask == IGNORE_LABEL, 0, mask).astype(np.uint8)
    out = np.zeros_like(clean)
    out[:, px:] = clean[:, : W - px] if px else clean
    return out


def cells(labels_px: np.ndarray) -> torch.Tensor:
    """A full-resolution internal label map -> the (1, 12, 16) map matching should see: padded with void to
    48 x 64, then the top-left pixel of each 4 x 4 cell (nearest downsampling)."""
    padded = np.full((H, 64), IGNORE_LABEL, np.int64)
    padded[:, :W] = labels_px
    return torch.from_numpy(padded[::4, ::4].copy())[None]


def to_internal(mask: np.ndarray) -> np.ndarray:
    lut = np.full(256, IGNORE_LABEL, np.int64)
    lut[0], lut[3], lut[7] = 0, 1, 2
    return lut[mask]


@pytest.fixture
def stub():
    return ShiftPreviousFEELVOS(shift=1)


def test_each_frame_continues_from_the_previous_prediction(stub):
    """Frame t is the first mask moved by 4t px, with the user's ids: the session feeds every prediction
    back as the next frame's previous labels, maps ids both ways and resamples logits exactly."""
    out = list(VOSPredictor(stub).track(make_frames(), first_mask()))
    assert [t for t, _, _ in out] == list(range(NUM_FRAMES))
    assert all(ids == (3, 7) for _, ids, _ in out)
    assert np.array_equal(out[0][2], first_mask())  # frame 0 is the given mask, void included
    for t, _, mask in out[1:]:
        assert mask.dtype == np.uint8 and mask.shape == (H, W)
        np.testing.assert_array_equal(mask, shifted(first_mask(), STEP_PX * t), err_msg=f"frame {t}")


def test_session_matches_against_the_first_frame_and_the_previous_frame(stub):
    list(VOSPredictor(stub).track(make_frames(), first_mask()))
    assert len(stub.calls) == NUM_FRAMES - 1  # one network call per new frame
    first_cells = cells(to_internal(first_mask()))
    for t, call in enumerate(stub.calls, start=1):
        assert call["embedding"][0, 0, 0, 0] == frame_value(t)
        assert call["ref_embedding"][0, 0, 0, 0] == frame_value(0), f"frame {t}: reference is not frame 0"
        assert call["prev_embedding"][0, 0, 0, 0] == frame_value(t - 1), f"frame {t}: previous is not t-1"
        assert torch.equal(call["ref_labels"], first_cells)
        # the previous labels are frame t-1's prediction (frame 0: the given mask), void/pad 255
        expected = first_cells if t == 1 else cells(to_internal(shifted(first_mask(), STEP_PX * (t - 1))))
        assert torch.equal(call["prev_labels"], expected), f"frame {t}"
        assert call["num_objects"].tolist() == [2]  # foreground objects, background not counted


def test_void_and_padding_reach_matching_as_ignored(stub):
    list(VOSPredictor(stub).track(make_frames(2), first_mask()))
    ref = stub.calls[0]["ref_labels"][0]
    assert (ref[:, 8] == IGNORE_LABEL).all()      # void stripe (px 32..35)
    assert (ref[:, 13:] == IGNORE_LABEL).all()    # pad columns (px 52..63)
    assert (ref[:, 0] == 0).all() and (ref[:, 1:3] == 1).all() and (ref[:, 4:7] == 2).all()


def test_start_and_step_track_the_frame_index(stub):
    frames = make_frames()
    session = VOSPredictor(stub).start(torch.from_numpy(frames[0]).permute(2, 0, 1), torch.from_numpy(first_mask()))
    assert session.object_ids == (3, 7) and session.frame_index == 0
    for t in range(1, NUM_FRAMES):
        mask = session.step(frames[t])
        assert session.frame_index == t
        np.testing.assert_array_equal(mask, shifted(first_mask(), STEP_PX * t))


def test_any_user_ids_come_back_where_they_were():
    """Ids neither sorted in space nor contiguous, one of them 254 (the largest storable id besides void)."""
    mask = np.zeros((H, W), np.uint8)
    mask[:, 0:8] = 200
    mask[:, 12:20] = 5
    mask[:, 24:32] = 254
    mask[:, 40:44] = 1
    out = list(VOSPredictor(ShiftPreviousFEELVOS(shift=0)).track(make_frames(3), mask))
    assert out[0][1] == (1, 5, 200, 254)
    for _, _, predicted in out[1:]:
        np.testing.assert_array_equal(predicted, mask)


def test_predictor_runs_the_network_in_eval_mode():
    torch.manual_seed(0)
    model = FEELVOS(**TINY_FEELVOS).train()  # e.g. validation during training
    assert VOSPredictor(model).model.training is False
    model = FEELVOS(**{**TINY_FEELVOS, "inference_output_stride": 8}).train()
    assert VOSPredictor(model).model.training is False


def test_objects_given_later_continue_from_the_frame_where_they_were_given(stub):
    """Object 9 is given at frame 2: that frame shows it as given (over the tracked objects' prediction), the
    next frames move it with the others, and its id is reported from frame 2 on."""
    new = np.zeros((H, W), np.uint8)
    new[:, 40:44] = 9
    out = list(VOSPredictor(stub).track(make_frames(), masks={0: first_mask(), 2: new}))
    assert [ids for _, ids, _ in out] == [(3, 7), (3, 7), (3, 7, 9), (3, 7, 9), (3, 7, 9)]
    for t, _, mask in out[1:]:
        expected = shifted(first_mask(), STEP_PX * t)
        if t >= 2:
            expected[:, 40 + STEP_PX * (t - 2): 44 + STEP_PX * (t - 2)] = 9
        np.testing.assert_array_equal(mask, expected, err_msg=f"frame {t}")
    assert stub.calls[-1]["num_objects"].tolist() == [3]


def test_254_objects_is_the_most_a_session_tracks():
    """Ids are 1..254: a session with 253 objects takes a 254th (the limit is inclusive)."""
    size = 64  # 16 x 16 feature cells of 4 x 4 px, one object per cell
    cell_ids = np.zeros(256, np.int64)
    cell_ids[:253] = np.arange(1, 254)
    first = np.kron(cell_ids.reshape(16, 16), np.ones((4, 4), np.int64))
    frames = [np.full((size, size, 3), 50 * t, np.uint8) for t in range(3)]
    session = VOSPredictor(ShiftPreviousFEELVOS(shift=0)).start(frames[0], first)
    assert len(session.object_ids) == 253
    added = np.zeros((size, size), np.int64)
    added[60:64, 60:64] = 254  # the last cell
    out = session.add_objects(frames[1], added)
    assert len(session.object_ids) == 254 and session.object_ids[-1] == 254
    assert np.array_equal(out, (first + added).astype(np.uint8))
    assert np.array_equal(session.step(frames[2]), out)  # the stub keeps the previous labels


class AutocastRecordingFEELVOS(ShiftPreviousFEELVOS):
    """Records whether CPU autocast is on (and its dtype) in every embed and segment call."""

    def __init__(self) -> None:
        super().__init__(shift=0)
        self.autocast: list[tuple[str, bool, torch.dtype | None]] = []

    def _record(self, what: str) -> None:
        enabled = torch.is_autocast_enabled("cpu")
        self.autocast.append((what, enabled, torch.get_autocast_dtype("cpu") if enabled else None))

    def embed(self, images):
        self._record("embed")
        return super().embed(images)

    def segment(self, *args, **kwargs):
        self._record("segment")
        return super().segment(*args, **kwargs)


@pytest.mark.parametrize("precision, on, dtype", [("32", False, None), ("bf16-mixed", True, torch.bfloat16),
                                                  ("16-mixed", True, torch.float16)])
def test_precision_option_runs_the_network_under_autocast(precision, on, dtype):
    model = AutocastRecordingFEELVOS()
    out = list(VOSPredictor(model, precision=precision).track(make_frames(3), first_mask()))
    assert [index for index, _, _ in out] == [0, 1, 2]
    assert model.autocast == [("embed", on, dtype)] + [("embed", on, dtype), ("segment", on, dtype)] * 2
    assert not torch.is_autocast_enabled("cpu")

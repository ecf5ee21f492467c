"""Resuming a run at a later frame (VOSSession.replay, track(known=, known_until=)): what the web app does when
an object is added at a later frame. The resumed run must give the masks of a run from the start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.feelvos import TINY_NET
from tests.inference.test_vos_add_objects import H, W, _first_mask, _new_mask, _spy, _video
from vidseg.inference.vos import VOSPredictor
from vidseg.models.feelvos import FEELVOS


@pytest.fixture(params=[False, True], ids=["plain", "pipelined"])
def predictor(request):
    torch.manual_seed(0)
    return VOSPredictor(FEELVOS(**TINY_NET), pipelined=request.param)


def _run(predictor, frames, masks, **kwargs):
    return [(index, ids, mask) for index, ids, mask in predictor.track(frames, masks=masks, **kwargs)]


def _later_mask():
    mask = np.zeros((H, W), np.uint8)
    mask[2:10, 30:50] = 12
    return mask


@pytest.mark.parametrize("resume_at", [1, 3, 4, 7])
def test_resumed_run_equals_a_run_from_the_start(predictor, resume_at):
    """Run 1 tracks objects 3 (frame 0) and 9 (frame 3); object 12 is then added at frame 7. Resuming at any
    frame up to 7 with run 1's masks gives exactly the masks of a full second run."""
    frames = _video(10)
    first = _run(predictor, frames, {0: _first_mask(), 3: _new_mask()})
    masks = {0: _first_mask(), 3: _new_mask(), 7: _later_mask()}
    full = _run(predictor, frames, masks)
    known = {index: mask for index, _, mask in first if index < resume_at}
    resumed = _run(predictor, frames, masks, known=known, known_until=resume_at)
    assert [(i, ids) for i, ids, _ in resumed] == [(i, ids) for i, ids, _ in full]
    assert (full[7][1]) == (3, 9, 12)
    for (index, _, got), (_, _, want) in zip(resumed, full, strict=True):
        assert np.array_equal(got, want), f"frame {index} differs"
    # the full run's frames 8, 9 really depend on the state (a stale state would change them)
    assert any(np.any(mask == 9) for _, _, mask in full[4:])


def test_resumed_run_segments_only_from_the_resume_frame(predictor, monkeypatch):
    frames = _video(10)
    first = _run(predictor, frames, {0: _first_mask(), 3: _new_mask()})
    calls, embeddings = _spy(predictor.model, monkeypatch)
    known = {index: mask for index, _, mask in first if index < 7}
    _run(predictor, frames, {0: _first_mask(), 3: _new_mask(), 7: _later_mask()}, known=known, known_until=7)
    assert len(calls) == 3  # frames 7, 8, 9 are segmented
    # embedded: frame 0 (start), 3 (gives object 9), 6 (the previous frame of 7), then 7, 8, 9
    assert len(embeddings) == 6
    assert calls[0]["num_objects"] == 2  # frame 7 is segmented with objects 3 and 9, then 12 is added


def test_known_masks_must_be_the_sessions_own(predictor):
    frames = _video(6)
    known = {i: np.full((H, W), 5, np.uint8) for i in range(4)}  # id 5 is never given
    with pytest.raises(ValueError, match=r"id\(s\) \[5\].*not this session's output"):
        _run(predictor, frames, {0: _first_mask()}, known=known, known_until=4)
    with pytest.raises(ValueError, match="known_until > 0 needs the known masks"):
        _run(predictor, frames, {0: _first_mask()}, known_until=4)

"""Objects that appear later (issue 8, point 9): session.add_objects and track(frames, masks={index: mask})."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.feelvos import TINY_NET
from vidseg.errors import DataError
from vidseg.inference.vos import VOSPredictor
from vidseg.models.feelvos import FEELVOS

H, W = 40, 52  # padded to 48x64 (stride 16): features 12x16 at stride 4


@pytest.fixture()
def predictor():
    torch.manual_seed(0)
    return VOSPredictor(FEELVOS(**TINY_NET))


def _video(num_frames):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(num_frames)]


def _first_mask():
    mask = np.zeros((H, W), np.uint8)
    mask[4:16, 4:20] = 3
    return mask


def _new_mask(obj=9):
    mask = np.zeros((H, W), np.uint8)
    mask[20:36, 28:48] = obj
    return mask


def _spy(model, monkeypatch):
    """Record every segment() call's reference / previous inputs and every embed() call's embedding."""
    calls, embeddings = [], []
    real_segment, real_embed = model.segment, model.embed

    def segment(features, embedding, ref_embedding, ref_labels, prev_embedding, prev_labels, num_objects, **kwargs):
        count = num_objects if isinstance(num_objects, int) else int(num_objects[0])  # inference passes an int
        calls.append({"ref_embedding": ref_embedding.clone(), "ref_labels": ref_labels.clone(),
                      "prev_labels": prev_labels.clone(), "num_objects": count})
        return real_segment(features, embedding, ref_embedding, ref_labels, prev_embedding, prev_labels, num_objects,
                            **kwargs)

    def embed(images):
        features, embedding = real_embed(images)
        embeddings.append(embedding.float().clone())
        return features, embedding

    monkeypatch.setattr(model, "segment", segment)
    monkeypatch.setattr(model, "embed", embed)
    return calls, embeddings


def _stride4(mask: np.ndarray, pad: int = 0) -> np.ndarray:
    """A mask at feature resolution, computed independently: pad to 48x64, keep every 4th pixel."""
    padded = np.full((48, 64), pad, mask.dtype)
    padded[:H, :W] = mask
    return padded[::4, ::4]


def test_new_object_is_matched_globally_against_the_frame_where_it_was_given(predictor, monkeypatch):
    calls, embeddings = _spy(predictor.model, monkeypatch)
    frames = _video(7)
    out = list(predictor.track(frames, masks={0: _first_mask(), 3: _new_mask()}))
    assert [ids for _, ids, _ in out] == [(3,)] * 3 + [(3, 9)] * 4

    first_pixels = 12 * 16
    before, after = calls[2], calls[3]  # segment() of frames 3 (before adding) and 4 (after)
    assert before["ref_embedding"].shape[-2:] == (12, 16) and before["num_objects"] == 1
    # After: the first frame's reference, then the new object's pixels of frame 3 (internal label 2) only.
    new_pixels = np.flatnonzero(_stride4(_new_mask()) == 9)
    ref_labels, ref_embedding = after["ref_labels"], after["ref_embedding"]
    assert ref_labels.shape == (1, 1, first_pixels + len(new_pixels)) and after["num_objects"] == 2
    assert torch.equal(ref_labels[0, 0, :first_pixels], before["ref_labels"].flatten())
    assert (ref_labels[0, 0, first_pixels:] == 2).all()
    frame3 = embeddings[3]  # embed() calls: frame 0 (start), 1, 2, 3, ...
    assert torch.equal(ref_embedding[0, :, 0, first_pixels:], frame3.flatten(2)[0][:, torch.from_numpy(new_pixels)])
    assert torch.equal(ref_embedding[0, :, 0, :first_pixels], embeddings[0].flatten(2)[0])


def test_previous_frame_labels_after_adding_are_the_given_mask_over_the_prediction(predictor, monkeypatch):
    calls, _ = _spy(predictor.model, monkeypatch)
    out = list(predictor.track(_video(6), masks={0: _first_mask(), 2: _new_mask()}))
    frame2 = out[2][2]
    given = _new_mask()
    assert np.array_equal(frame2[given == 9], given[given == 9])  # the new object's pixels are as given
    assert set(np.unique(frame2[given != 9])) <= {0, 3}  # elsewhere the prediction of the tracked object
    prev = calls[2]["prev_labels"][0].numpy()  # what frame 3 matches locally against: frame 2's labels
    expected = np.vectorize({0: 0, 3: 1, 9: 2, 255: 255}.get)(_stride4(frame2, pad=255))  # padding: unknown
    assert np.array_equal(prev, expected)
    assert all(set(np.unique(m)) <= {0, 3, 9} for _, _, m in out)


def test_add_objects_on_a_session_and_memory_stays_constant(predictor):
    frames = _video(16)
    session = predictor.start(frames[0], _first_mask())
    out = session.add_objects(frames[1], _new_mask(obj=5))
    assert session.object_ids == (3, 5) and session.object_frames == {3: 0, 5: 1} and session.frame_index == 1
    assert out.dtype == np.uint8 and (out[_new_mask(obj=5) == 5] == 5).all()
    sizes = []
    for frame in frames[2:]:
        mask = session.step(frame)
        assert set(np.unique(mask)) <= {0, 3, 5}
        sizes.append(sum(v.numel() for v in vars(session).values() if isinstance(v, torch.Tensor)))
    assert len(set(sizes)) == 1 and session.frame_index == 15
    # a second addition stores only the new object's pixels of its frame
    ref_before = session.ref_labels.numel()
    extra = np.zeros((H, W), np.uint8)
    extra[0:8, 40:52] = 7
    session.add_objects(frames[0], extra)
    assert session.ref_labels.numel() - ref_before == int((_stride4(extra) == 7).sum())
    assert session.object_ids == (3, 5, 7)


def test_objects_before_the_first_given_mask_and_late_start(predictor):
    frames = _video(6)
    out = list(predictor.track(frames, masks={2: _first_mask()}))
    assert [(i, ids) for i, ids, _ in out[:3]] == [(0, ()), (1, ()), (2, (3,))]
    assert not out[0][2].any() and not out[1][2].any() and out[0][2].shape == (H, W)
    assert np.array_equal(out[2][2], _first_mask())
    session = predictor.start(frames[2], _first_mask(), frame_index=2)
    assert session.frame_index == 2 and session.object_frames == {3: 2}


def test_first_mask_api_equals_masks_at_frame_zero(predictor):
    frames = _video(4)
    a = [m for _, _, m in predictor.track(frames, _first_mask())]
    b = [m for _, _, m in predictor.track(frames, masks={0: _first_mask()})]
    c = [m for _, _, m in predictor.track(frames, _first_mask(), masks={})]
    assert all(np.array_equal(x, y) and np.array_equal(x, z) for x, y, z in zip(a, b, c, strict=True))


def test_tracked_ids_in_later_masks_are_not_re_given(predictor):
    """Passing every frame's full annotation adds only the ids that are new at each frame."""
    frames = _video(5)
    full = _first_mask() | _new_mask()  # object 3 (again) and the new object 9
    a = [m for _, _, m in predictor.track(frames, masks={0: _first_mask(), 2: full, 3: full})]
    b = [m for _, _, m in predictor.track(frames, masks={0: _first_mask(), 2: _new_mask()})]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    tensor_mask = torch.from_numpy(full.astype(np.int64))
    kept = tensor_mask.clone()
    list(predictor.track(frames, masks={0: _first_mask(), 2: tensor_mask}))
    assert torch.equal(tensor_mask, kept)  # the caller's tensor is left as it was


def test_bad_additions(predictor):
    frames = _video(3)
    session = predictor.start(frames[0], _first_mask())
    with pytest.raises(ValueError, match="already tracked"):
        session.add_objects(frames[1], _first_mask())
    with pytest.raises(ValueError, match="no object"):
        session.add_objects(frames[1], np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="expected"):
        session.add_objects(frames[1], np.zeros((8, 8), np.uint8))
    assert session.frame_index == 0 and session.object_ids == (3,)  # refused additions change nothing
    with pytest.raises(DataError, match=r"frame\(s\) \[7\]"):
        list(predictor.track(frames, masks={0: _first_mask(), 7: _new_mask()}))
    with pytest.raises(ValueError, match="twice"):
        list(predictor.track(frames, _first_mask(), masks={0: _first_mask()}))
    with pytest.raises(ValueError, match="no mask"):
        list(predictor.track(frames))


def test_a_mask_for_the_last_frame_is_used_and_one_just_past_the_end_is_reported(predictor):
    frames = _video(3)
    out = list(predictor.track(frames, masks={0: _first_mask(), 2: _new_mask()}))  # 2 = the last frame
    assert [(i, ids) for i, ids, _ in out] == [(0, (3,)), (1, (3,)), (2, (3, 9))]
    assert (out[2][2][_new_mask() == 9] == 9).all()
    # frame 3 does not exist: every frame is still yielded, then the unused mask is an error (not dropped)
    seen = []
    with pytest.raises(DataError, match=r"frame\(s\) \[3\] but the video has 3 frames"):
        for index, _, _ in predictor.track(frames, masks={0: _first_mask(), 3: _new_mask()}):
            seen.append(index)
    assert seen == [0, 1, 2]
    # the same for the only mask of the video (no session ever started)
    with pytest.raises(DataError, match=r"frame\(s\) \[3\]"):
        list(predictor.track(frames, masks={3: _first_mask()}))


def test_objects_given_at_frame_zero_and_later_record_their_frames(predictor):
    frames = _video(4)
    session = predictor.start(frames[0], _first_mask())
    assert session.frame_index == 0 and session.object_frames == {3: 0} and session.object_ids == (3,)
    session.step(frames[1])
    out = session.add_objects(frames[2], _new_mask())
    assert session.frame_index == 2 and session.object_frames == {3: 0, 9: 2} and session.object_ids == (3, 9)
    assert (out[_new_mask() == 9] == 9).all()
    assert set(np.unique(session.step(frames[3])).tolist()) <= {0, 3, 9}
    # a session that starts late counts from its first frame
    late = predictor.start(frames[1], _first_mask(), frame_index=1)
    late.add_objects(frames[2], _new_mask())
    assert late.object_frames == {3: 1, 9: 2} and late.frame_index == 2


def test_add_objects_refuses_a_mask_with_a_tracked_id_even_beside_a_new_one(predictor):
    frames = _video(2)
    session = predictor.start(frames[0], _first_mask())
    both = _first_mask() | _new_mask()  # 3 (tracked) and 9 (new)
    with pytest.raises(ValueError, match=r"object id\(s\) \[3\] given at frame 1 are already tracked"):
        session.add_objects(frames[1], both)
    assert session.frame_index == 0 and session.object_ids == (3,) and session.object_frames == {3: 0}


@pytest.mark.parametrize("bad", [-1, 256, 300])
def test_object_ids_outside_1_to_254_are_refused(predictor, bad):
    frames = _video(2)
    mask = _first_mask().astype(np.int64)
    mask[0:2, 0:2] = bad
    with pytest.raises(ValueError, match=r"object ids must be 1\.\.254"):
        list(predictor.track(frames, mask))
    session = predictor.start(frames[0], _first_mask())
    with pytest.raises(ValueError, match=rf"\[{bad}\].*1\.\.254"):
        session.add_objects(frames[1], torch.from_numpy(mask))
    assert session.object_ids == (3,)


def test_first_mask_and_later_masks_together(predictor):
    frames = _video(4)
    out = list(predictor.track(frames, _first_mask(), masks={2: _new_mask()}))
    assert [(i, ids) for i, ids, _ in out] == [(0, (3,)), (1, (3,)), (2, (3, 9)), (3, (3, 9))]
    assert np.array_equal(out[0][2], _first_mask()) and (out[2][2][_new_mask() == 9] == 9).all()
    same = list(predictor.track(frames, masks={0: _first_mask(), 2: _new_mask()}))
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(out, same, strict=True))


@pytest.mark.parametrize("index", [-1, -2])
def test_negative_mask_indices_are_refused(predictor, index):
    with pytest.raises(ValueError, match=r"mask frame indices must be >= 0"):
        list(predictor.track(_video(2), masks={0: _first_mask(), index: _new_mask()}))

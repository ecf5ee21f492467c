import numpy as np
import pytest
import torch

from vidseg.inference.vos import VOSPredictor, load_vos_model
from vidseg.models.feelvos import FEELVOS

from ..models.test_feelvos import TINY_NET


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return VOSPredictor(FEELVOS(**TINY_NET))


def _video(num_frames, height=40, width=52):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(num_frames)]


def test_track_yields_every_frame_with_the_user_ids(predictor):
    frames = _video(5)
    first = np.zeros((40, 52), np.uint8)
    first[5:15, 5:20] = 3
    first[20:35, 30:50] = 7  # non-contiguous ids are kept as given
    out = list(predictor.track(frames, first))
    assert [idx for idx, _, _ in out] == list(range(5))
    assert all(ids == (3, 7) for _, ids, _ in out)
    assert np.array_equal(out[0][2], first)
    for _, _, mask in out[1:]:
        assert mask.shape == (40, 52) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 3, 7}


def test_track_is_lazy_and_memory_is_constant(predictor):
    pulled = []

    def frames():
        for i, frame in enumerate(_video(12)):
            pulled.append(i)
            yield frame

    first = np.zeros((40, 52), np.uint8)
    first[10:30, 10:30] = 1
    session_sizes = []
    for idx, _, _ in predictor.track(frames(), first):
        assert pulled[-1] == idx  # one frame decoded per output, never read ahead
    session = predictor.start(_video(1)[0], first)
    for frame in _video(10):
        session.step(frame)
        session_sizes.append(sum(v.numel() for v in vars(session).values() if isinstance(v, torch.Tensor)))
    assert len(set(session_sizes)) == 1  # the session holds the same tensors whatever the video length


def test_bad_inputs(predictor):
    frames = _video(2)
    with pytest.raises(ValueError, match="no object"):
        list(predictor.track(frames, np.zeros((40, 52), np.uint8)))
    with pytest.raises(ValueError, match="first mask"):
        list(predictor.track(frames, np.ones((20, 20), np.uint8)))
    with pytest.raises(ValueError, match="empty"):
        list(predictor.track([], np.ones((40, 52), np.uint8)))
    mixed = [frames[0], np.zeros((30, 30, 3), np.uint8)]
    with pytest.raises(ValueError, match="expected"):
        list(predictor.track(mixed, np.ones((40, 52), np.uint8)))


def test_checkpoint_round_trip(tmp_path, predictor):
    path = tmp_path / "model.ckpt"
    state = {f"model.{k}": v for k, v in predictor.model.state_dict().items()}
    torch.save({"hyper_parameters": {"net": TINY_NET}, "state_dict": state}, path)
    model = load_vos_model(path)
    for (k, a), b in zip(predictor.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_vos_model(tmp_path / "missing.ckpt")


def test_session_keeps_no_autograd_graph(predictor):
    first = np.zeros((40, 52), np.uint8)
    first[10:30, 10:30] = 1
    session = predictor.start(_video(1)[0], first)
    session.step(_video(1)[0])
    kept = [v for v in vars(session).values() if isinstance(v, torch.Tensor)]
    assert kept and not any(t.requires_grad or t.grad_fn is not None for t in kept)

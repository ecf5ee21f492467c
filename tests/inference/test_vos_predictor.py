import numpy as np
import pytest
import torch

from tests.helpers.feelvos import TINY_NET
from vidseg.constants import IMAGENET_MEAN_UINT8
from vidseg.inference.checkpoint import CheckpointError
from vidseg.inference.vos import VOSPredictor, load_vos_model
from vidseg.models.feelvos import FEELVOS
from vidseg.models.feelvos.model import one_hot_probabilities


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


def _spy_session_inputs(model, monkeypatch):
    """Record, for every head call, the previous-frame labels segment matched against and the feedback
    channel the head received (channel Cd + 1 of its input)."""
    records = []
    real_segment = model.segment

    def segment(*args, **kwargs):
        records.append({"prev_labels": args[5].clone()})
        return real_segment(*args, **kwargs)

    def head_hook(module, args, out):
        records[-1]["feedback"] = args[0][:, TINY_NET["decoder"]["decoder_channels"] + 1].clone()

    monkeypatch.setattr(model, "segment", segment)
    return model.head.register_forward_hook(head_hook), records


def test_session_feedback_is_the_one_hot_of_the_labels_it_matches(monkeypatch):
    """Issue 8 point 1: at inference the head gets the one-hot of the previous frame's predicted labels (the
    labels local matching uses), as in training; never a soft-max."""
    torch.manual_seed(0)
    predictor = VOSPredictor(FEELVOS(**TINY_NET))
    hook, records = _spy_session_inputs(predictor.model, monkeypatch)
    first = np.zeros((40, 52), np.uint8)
    first[5:20, 5:25] = 1
    first[22:38, 28:50] = 2
    first[0:3, :] = 255
    list(predictor.track(_video(5), first))
    hook.remove()
    assert len(records) == 4
    for record in records:
        labels = record["prev_labels"]  # (1, h, w) internal labels 0..2 or 255
        assert torch.equal(record["feedback"], one_hot_probabilities(labels, 3)[0])


def test_session_pads_frames_with_the_imagenet_mean(monkeypatch):
    """Issue 8 point 5: frames are padded to the network stride with the training crops' pad colour."""
    torch.manual_seed(0)
    predictor = VOSPredictor(FEELVOS(**TINY_NET))
    seen = []
    real_embed = predictor.model.embed
    monkeypatch.setattr(predictor.model, "embed", lambda images: seen.append(images.clone()) or real_embed(images))
    first = np.zeros((40, 52), np.uint8)
    first[10:30, 10:30] = 1
    list(predictor.track(_video(2), first))
    padded = seen[-1][0]  # (3, 48, 64): 40x52 padded to multiples of 16
    assert padded.shape == (3, 48, 64)
    mean = torch.tensor(IMAGENET_MEAN_UINT8, dtype=padded.dtype).view(3, 1, 1)
    assert (padded[:, 40:, :] == mean).all() and (padded[:, :, 52:] == mean).all()
    assert torch.equal(padded[:, :40, :52], torch.from_numpy(_video(2)[1]).permute(2, 0, 1))


def test_predictor_runs_at_the_inference_output_stride(tmp_path):
    """Issue 8 point 3: the API and checkpoints run the re-dilated network (paper: train 16, infer 8)."""
    torch.manual_seed(0)
    net = {**TINY_NET, "inference_output_stride": 8}
    model = FEELVOS(**net)
    predictor = VOSPredictor(model)
    assert predictor.model.output_stride == 8 and predictor.model.feature_extractor.decoder.atrous_rates == (12, 24, 36)
    assert model.output_stride == 16  # the training network is left as it is
    path = tmp_path / "model.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": {"net": net}, "state_dict": state}, path)
    loaded = VOSPredictor.from_checkpoint(path)
    assert loaded.model.output_stride == 8
    assert VOSPredictor.from_checkpoint(path, inference_output_stride=16).model.output_stride == 16
    first = np.zeros((40, 52), np.uint8)
    first[10:30, 10:30] = 1
    a = [m for _, _, m in predictor.track(_video(3), first)]
    b = [m for _, _, m in loaded.track(_video(3), first)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_checkpoints_with_the_former_heads_are_refused_with_the_fix(tmp_path, predictor):
    state = {f"model.{k}": v for k, v in predictor.model.state_dict().items() if k != "embedding_head.depthwise.bias"}
    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"net": TINY_NET}, "state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"old\.ckpt.*retrain"):
        load_vos_model(path)

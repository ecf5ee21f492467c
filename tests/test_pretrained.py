"""Pretrained folders (model.safetensors + config.json): round trip, same predictions, no pickle, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tests.helpers.feelvos import TINY_NET
from vidseg.errors import DataError
from vidseg.export import main as export_main
from vidseg.inference.checkpoint import CheckpointError, build_checkpoint, read_checkpoint
from vidseg.inference.vos import VOSPredictor
from vidseg.models.feelvos import FEELVOS
from vidseg.pretrained import CONFIG_FILE, WEIGHTS_FILE, is_pretrained_folder, read_pretrained, save_pretrained

HPARAMS = {"net": TINY_NET, "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.01}, "val_precision": "32"}


@pytest.fixture(scope="module")
def vos_ckpt(tmp_path_factory):
    """A tiny VOS checkpoint in vidseg's layout (random FEELVOS weights, BatchNorm statistics made non-trivial)."""
    torch.manual_seed(0)
    model = FEELVOS(**TINY_NET)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("vos_ckpt") / "last.ckpt"
    torch.save(build_checkpoint("vos", HPARAMS, model.state_dict(), global_step=2), path)
    return path


@pytest.fixture(scope="module")
def vos_folder(vos_ckpt, tmp_path_factory):
    return save_pretrained(vos_ckpt, tmp_path_factory.mktemp("pretrained") / "feelvos")


def test_round_trip_keeps_tensors_and_hyper_parameters(vos_ckpt, vos_folder):
    assert is_pretrained_folder(vos_folder) and not is_pretrained_folder(vos_ckpt)
    assert sorted(p.name for p in vos_folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    original, loaded = read_checkpoint(vos_ckpt), read_pretrained(vos_folder)
    assert loaded.task == "vos" and loaded.path == vos_folder
    assert loaded.hyper_parameters == original.hyper_parameters
    assert loaded.model_state.keys() == original.model_state.keys()
    for key, tensor in original.model_state.items():
        assert loaded.model_state[key].dtype == tensor.dtype and torch.equal(loaded.model_state[key], tensor), key
    # read_checkpoint takes the folder too, and checks its task
    assert read_checkpoint(vos_folder, task="vos").model_state.keys() == original.model_state.keys()
    config = json.loads((vos_folder / CONFIG_FILE).read_text())
    assert config["format_version"] == 1 and config["task"] == "vos" and config["vidseg_version"]


def test_predictor_from_the_folder_predicts_as_the_checkpoint(vos_ckpt, vos_folder):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(3)]
    mask = np.zeros((40, 52), np.uint8)
    mask[10:25, 12:30] = 1
    mask[28:36, 35:48] = 2
    from_ckpt = list(VOSPredictor.from_checkpoint(vos_ckpt).track(frames, mask))
    from_folder = list(VOSPredictor.from_checkpoint(vos_folder).track(frames, mask))
    assert len(from_ckpt) == len(from_folder) == 3
    for (i, ids, a), (j, ids_b, b) in zip(from_ckpt, from_folder, strict=True):
        assert (i, ids) == (j, ids_b) and np.array_equal(a, b)


def test_loading_runs_no_pickle_and_no_hydra(vos_folder):
    script = textwrap.dedent(f"""
        import pickle, sys, torch

        def refuse(*args, **kwargs):
            raise AssertionError("unpickling called")

        torch.load = pickle.load = pickle.loads = refuse
        from vidseg.inference.vos import VOSPredictor

        predictor = VOSPredictor.from_checkpoint({str(vos_folder)!r})
        assert sum(p.numel() for p in predictor.model.parameters()) > 0
        assert "hydra" not in sys.modules, "hydra imported"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_errors_are_one_line_and_say_what_is_wrong(vos_ckpt, vos_folder, tmp_path):
    broken = save_pretrained(read_pretrained(vos_folder), tmp_path / "broken")
    (broken / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"no {WEIGHTS_FILE} in the pretrained folder"):
        read_pretrained(broken)
    assert not is_pretrained_folder(broken)

    with pytest.raises(CheckpointError, match="this is a 'vos' model but task=vps"):
        read_checkpoint(vos_folder, task="vps")

    bad_json = save_pretrained(vos_folder, tmp_path / "bad_json")
    (bad_json / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_pretrained(bad_json)
    (bad_json / CONFIG_FILE).write_text(json.dumps({"format": "vidseg-pretrained", "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_pretrained(bad_json)

    truncated = save_pretrained(vos_folder, tmp_path / "truncated")
    data = (truncated / WEIGHTS_FILE).read_bytes()
    (truncated / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read the weights"):
        read_pretrained(truncated)

    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"holds other files \(notes.txt\)"):
        save_pretrained(vos_ckpt, crowded)
    assert sorted(p.name for p in crowded.iterdir()) == ["notes.txt"]

    own_readme = tmp_path / "own_readme"  # a name vidseg writes, but not written by vidseg: never replaced
    own_readme.mkdir()
    (own_readme / "README.md").write_text("my notes")
    with pytest.raises(DataError, match="not a vidseg pretrained folder"):
        save_pretrained(vos_ckpt, own_readme, card=True)
    assert (own_readme / "README.md").read_text() == "my notes"
    assert save_pretrained(vos_ckpt, broken) == broken  # a folder vidseg wrote is replaced (its config is there)


def test_missing_or_unexpected_tensors_are_refused_by_the_strict_load(vos_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    edited = save_pretrained(vos_folder, tmp_path / "edited")
    state = load_file(edited / WEIGHTS_FILE)
    state.pop(next(k for k in state if k.endswith(".weight")))
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(edited / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="1 weights missing .*1 unexpected weights"):
        VOSPredictor.from_checkpoint(edited)


def test_export_command_writes_the_folder_and_refuses_a_wrong_task(vos_ckpt, tmp_path, capsys):
    out = tmp_path / "exported"
    export_main(["format=pretrained", f"ckpt={vos_ckpt}", f"output={out}"])
    assert is_pretrained_folder(out) and "task=vos" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "FEELVOS" in card and "resnet18" in card and "python -m vidseg.evaluate" in card
    assert torch.equal(read_pretrained(out).model_state["embedding_head.depthwise.bias"],
                       read_checkpoint(vos_ckpt).model_state["embedding_head.depthwise.bias"])

    with pytest.raises(SystemExit) as stop:  # the checkpoint's task is vos: task=vps is refused before any work
        export_main(["task=vps", "format=onnx", f"ckpt={vos_ckpt}", f"output={tmp_path / 'onnx'}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and not (tmp_path / "onnx").exists()
    with pytest.raises(SystemExit) as stop:
        export_main(["format=pretrained", f"ckpt={tmp_path / 'missing.ckpt'}", f"output={tmp_path / 'x'}"])
    assert stop.value.code == 2 and "checkpoint not found" in capsys.readouterr().err


def test_vps_predictor_from_the_folder_predicts_as_the_checkpoint(tmp_path):
    from vidseg.inference.vps import VPSPredictor
    from vidseg.models.vpsnet import TINY, build_vpsnet

    # a low detection threshold so the random detector yields instances (tracking runs too)
    net = {"variant": "fusetrack", "backbone": {"name": "resnet18"}, "num_stuff": 3, "num_things": 2,
           "flow": {"name": "tiny", "channels": 8}, **TINY,
           "detector": {**TINY["detector"], "score_thresh": 0.0, "detections_per_img": 4}}
    torch.manual_seed(0)
    model = build_vpsnet(**net)
    ckpt = tmp_path / "vps.ckpt"
    torch.save(build_checkpoint("vps", json.loads(json.dumps({"net": net})), model.state_dict()), ckpt)
    folder = save_pretrained(ckpt, tmp_path / "vpsnet")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(2)]
    a = list(VPSPredictor.from_checkpoint(ckpt).track(frames))
    b = list(VPSPredictor.from_checkpoint(folder).track(frames))
    saved = VPSPredictor.from_checkpoint(ckpt).save_pretrained(tmp_path / "saved")
    c = list(VPSPredictor.from_pretrained(saved).track(frames))
    for x, y, z in zip(a, b, c, strict=True):
        assert x.frame_index == y.frame_index == z.frame_index
        assert np.array_equal(x.panoptic, y.panoptic) and np.array_equal(x.panoptic, z.panoptic)
        assert x.segments == y.segments == z.segments
    assert any(s["isthing"] for r in a for s in r.segments)


def test_predict_command_takes_the_folder_as_ckpt(vos_ckpt, vos_folder, toy_davis_root, toy_video_path, tmp_path):
    from tests.helpers.configs import compose_config
    from vidseg.data.davis import list_sequences, sequence_paths
    from vidseg.data.io import read_mask
    from vidseg.predict import predict

    _, masks = sequence_paths(toy_davis_root, list_sequences(toy_davis_root, split="val")[0])
    written = {}
    for name, ckpt in (("ckpt", vos_ckpt), ("folder", vos_folder)):
        cfg = compose_config("predict", tmp_path / name, ["task=vos", f"ckpt={ckpt}", f"input={toy_video_path}",
                                                          f"mask={masks[0]}", f"output={tmp_path / name / 'pred'}"])
        predict(cfg)
        written[name] = sorted((tmp_path / name / "pred" / "masks").glob("*.png"))
    assert len(written["ckpt"]) == len(written["folder"]) > 0
    for a, b in zip(written["ckpt"], written["folder"], strict=True):
        assert np.array_equal(read_mask(a), read_mask(b)), b.name

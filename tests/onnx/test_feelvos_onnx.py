"""FEELVOS ONNX export: the graph, the ONNX Runtime backend against the PyTorch predictor, folders and errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from vidseg.data.toy import render_toy_sequence
from vidseg.errors import DataError
from vidseg.export import main as export_main
from vidseg.inference.vos import VOSPredictor, load_vos_model
from vidseg.metrics.j_and_f import evaluate_sequence
from vidseg.models.feelvos.model import track_step
from vidseg.onnx.feelvos import INPUTS, OUTPUTS, STEP_FILE, FEELVOSStep, OnnxFrameStep, example_inputs
from vidseg.onnx.folder import OPSET, is_onnx_folder, resolve_backend


def _jf(gt: np.ndarray, pred: np.ndarray, num_objects: int) -> float:
    scores = evaluate_sequence(gt, pred, num_objects)
    return 100 * (float(np.mean(scores["J"])) + float(np.mean(scores["F"]))) / 2


def test_export_writes_a_checked_graph_with_dynamic_sizes(onnx_folder):
    import onnx

    assert is_onnx_folder(onnx_folder)
    config = json.loads((onnx_folder / "config.json").read_text())
    assert config["format"] == "vidseg-onnx" and config["task"] == "vos" and config["opset"] == OPSET == 18
    assert config["graphs"] == {"step": STEP_FILE} and config["inputs"]["step"] == list(INPUTS)
    assert config["model_config"]["size_divisor"] == 8  # exported at the inference output stride, not 16
    assert config["normalisation"]["inside_graph"] is True
    card = (onnx_folder / "README.md").read_text()  # the model card every export carries
    assert "FEELVOS" in card and "backend=onnx" in card and "Not measured at export" in card
    model = onnx.load(str(onnx_folder / STEP_FILE))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain == ""] == [OPSET]
    assert {n.domain for n in model.graph.node} == {""}  # standard operators only: no custom op left
    assert "Scan" in {n.op_type for n in model.graph.node}  # global matching's chunk loop
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert [i.name for i in model.graph.input] == list(INPUTS)
    assert [o.name for o in model.graph.output] == list(OUTPUTS)
    symbolic = lambda shape: [isinstance(d, str) for d in shape]  # noqa: E731
    assert symbolic(dims["frame"]) == [False, False, True, True]
    assert symbolic(dims["ref_embedding"]) == symbolic(dims["prev_embedding"]) == [False, False, True, True]
    assert symbolic(dims["object_slots"]) == [True]


def test_onnx_step_equals_the_torch_step_at_other_sizes_and_object_counts(vos_ckpt, onnx_folder):
    model = load_vos_model(vos_ckpt)
    step, backend = FEELVOSStep(model), OnnxFrameStep.from_folder(onnx_folder)
    for height, width, objects in ((35, 50, 1), (64, 24, 4)):  # neither is the export's example size
        args = example_inputs(step.model, height, width, objects)
        out = backend._run(args[0], (height, width), *args[2:6], objects + 1)
        with torch.no_grad():
            expected = step(*args)
            # the exported module computes what the PyTorch session's step computes
            labels, embedding, feature_labels = track_step(step.model, args[0], (height, width), *args[2:6], objects)
        assert torch.equal(expected[0][:, :height, :width], labels) and torch.equal(expected[3], feature_labels)
        assert (expected[0][:, height:] == 255).all() and (expected[0][:, :, width:] == 255).all()
        torch.testing.assert_close(expected[2], embedding)
        for name, value in zip(OUTPUTS, expected, strict=True):
            got = torch.from_numpy(out[name])
            assert got.shape == value.shape, name
            if value.dtype.is_floating_point:
                torch.testing.assert_close(got, value, rtol=1e-4, atol=1e-4)
            else:
                assert (got == value).float().mean() >= 0.999, name


@pytest.mark.parametrize("video", [0, 1])
def test_onnx_predictor_matches_the_torch_predictor_over_toy_videos(vos_ckpt, onnx_folder, video):
    """Whole toy videos (not a multiple of the stride, so padding is exercised); video 1 adds an object at a
    later frame. Masks equal on >= 99.9% of pixels, J&F within 0.1 point, the same object ids at every frame."""
    images, gt = render_toy_sequence(seed=11, split="val", index=video, frames=10, height=60, width=90,
                                     max_objects=3)
    num_objects = int(gt.max())
    masks = {0: gt[0]}
    if video == 1:  # the last object is given at frame 4
        first, late = gt[0].copy(), gt[4].copy()
        first[first == num_objects] = 0
        late[late != num_objects] = 0
        masks = {0: first, 4: late}
    frames = list(images)
    results = {}
    for name, predictor in (("torch", VOSPredictor.from_checkpoint(vos_ckpt)),
                            ("onnx", VOSPredictor.from_checkpoint(onnx_folder))):
        results[name] = list(predictor.track(frames, masks=masks))
    assert isinstance(VOSPredictor.from_checkpoint(onnx_folder).model, OnnxFrameStep)
    assert [(i, ids) for i, ids, _ in results["torch"]] == [(i, ids) for i, ids, _ in results["onnx"]]
    if video == 1:
        assert results["onnx"][3][1] == tuple(range(1, num_objects)) and results["onnx"][4][1][-1] == num_objects
    torch_masks = np.stack([m for _, _, m in results["torch"]])
    onnx_masks = np.stack([m for _, _, m in results["onnx"]])
    assert (torch_masks == onnx_masks).mean() >= 0.999
    assert abs(_jf(gt, torch_masks, num_objects) - _jf(gt, onnx_masks, num_objects)) <= 0.1


def test_the_onnx_backend_validates_the_session_labels(onnx_folder):
    images, gt = render_toy_sequence(seed=11, split="val", index=0, frames=3, height=40, width=56, max_objects=2)
    session = VOSPredictor.from_checkpoint(onnx_folder).start(images[0], gt[0])
    session.ref_labels = session.ref_labels.clone()
    session.ref_labels[0, 0, 0] = 7  # not a slot of this session, nor 255
    with pytest.raises(ValueError, match="label value 7"):
        session.step(images[1])


def test_loading_runs_no_pickle_and_no_torch_load(onnx_folder):
    script = textwrap.dedent(f"""
        import pickle, sys, torch

        def refuse(*args, **kwargs):
            raise AssertionError("unpickling called")

        torch.load = pickle.load = pickle.loads = refuse
        from vidseg.inference.vos import VOSPredictor

        predictor = VOSPredictor.from_checkpoint({str(onnx_folder)!r})
        assert type(predictor.model).__name__ == "OnnxFrameStep"
        assert "hydra" not in sys.modules, "hydra imported"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_backend_must_fit_the_checkpoint(vos_ckpt, onnx_folder):
    assert resolve_backend(None, vos_ckpt) == "torch" and resolve_backend(None, onnx_folder) == "onnx"
    with pytest.raises(DataError, match="format=onnx"):
        VOSPredictor.from_checkpoint(vos_ckpt, backend="onnx")
    with pytest.raises(DataError, match="backend=onnx"):
        VOSPredictor.from_checkpoint(onnx_folder, backend="torch")
    with pytest.raises(DataError, match="unknown backend"):
        resolve_backend("tensorrt", vos_ckpt)
    with pytest.raises(DataError, match="fp32"):
        VOSPredictor.from_checkpoint(onnx_folder, precision="bf16-mixed")
    with pytest.raises(ValueError, match="options of the PyTorch backend"):
        VOSPredictor(OnnxFrameStep.from_folder(onnx_folder), fast=True)


@pytest.mark.parametrize(("args", "message"), [
    (["task=vos", "format=tflite"], "format=tflite: unknown export format"),
    (["task=vis", "format=onnx"], "task=vis: unknown task"),
    (["task=vps", "format=onnx"], "this is a 'vos' checkpoint but task=vps"),
])
def test_export_refuses_unknown_task_or_format_in_one_line(vos_ckpt, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        export_main([*args, f"ckpt={vos_ckpt}", f"output={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_export_never_overwrites_what_it_did_not_write(vos_ckpt, tmp_path, capsys):
    from vidseg.onnx.folder import write_onnx_folder

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit) as stop:
        export_main(["format=onnx", f"ckpt={vos_ckpt}", f"output={foreign}"])
    assert stop.value.code == 2 and "not a vidseg ONNX export" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "keep"
    # a previous export is replaced; its graph files are the ones config.json names
    ours = tmp_path / "ours"
    config = {"task": "vos", "model": "FEELVOS", "graphs": {"step": "step.onnx"}}
    write_onnx_folder(ours, config, {"step.onnx": lambda path: path.write_bytes(b"old")})
    write_onnx_folder(ours, config, {"step.onnx": lambda path: path.write_bytes(b"new")})
    assert (ours / "step.onnx").read_bytes() == b"new" and sorted(p.name for p in ours.iterdir()) == [
        "config.json", "step.onnx"]


def test_predict_command_runs_the_onnx_folder(vos_ckpt, onnx_folder, toy_davis_root, toy_video_path, tmp_path):
    from tests.helpers.configs import compose_config
    from vidseg.data.davis import list_sequences, sequence_paths
    from vidseg.data.io import read_mask
    from vidseg.predict import predict

    _, masks = sequence_paths(toy_davis_root, list_sequences(toy_davis_root, split="val")[0])
    written = {}
    for name, ckpt, backend in (("torch", vos_ckpt, "torch"), ("onnx", onnx_folder, "onnx")):
        cfg = compose_config("predict", tmp_path / name, ["task=vos", f"ckpt={ckpt}", f"backend={backend}",
                                                          f"input={toy_video_path}", f"mask={masks[0]}",
                                                          f"output={tmp_path / name / 'pred'}", "overlay=false"])
        predict(cfg)
        written[name] = np.stack([read_mask(p) for p in sorted((tmp_path / name / "pred" / "masks").glob("*.png"))])
    assert written["torch"].shape == written["onnx"].shape and written["torch"].shape[0] == 8
    assert (written["torch"] == written["onnx"]).mean() >= 0.999
    cfg = compose_config("predict", tmp_path / "wrong", ["task=vos", f"ckpt={onnx_folder}", f"input={toy_video_path}",
                                                         f"mask={masks[0]}", f"output={tmp_path / 'wrong' / 'pred'}"])
    with pytest.raises(DataError, match="run it with backend=onnx"):
        predict(cfg)  # backend=torch (the default) for an ONNX folder

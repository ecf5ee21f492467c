"""`python -m vidseg.convert vpsnet-official`: the official VPSNet checkpoint -> a vidseg VPS checkpoint.

No official file can be downloaded here: the official parameter list (tests/helpers/official_vpsnet.py, derived
from the official code) gives synthetic checkpoints. Fast tests use meta tensors (names and shapes, no data);
the slow test converts real random weights and runs vidseg.predict with them."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers.official_vpsnet import (
    flownet2_shapes,
    official_checkpoint,
    official_fusetrack_shapes,
    synthetic_state,
)
from vidseg.convert import convert_vpsnet_official, main
from vidseg.inference.checkpoint import read_checkpoint, state_mismatch
from vidseg.models.vpsnet import build_vpsnet
from vidseg.models.vpsnet.official_keys import (
    OFFICIAL_NET,
    OfficialCheckpointError,
    convert_official_state,
    vidseg_key,
)


class PickledConfig:
    """Stands for a Python object (mmcv's Config) pickled in a checkpoint's meta."""


@pytest.fixture(scope="module")
def meta_model():
    with torch.device("meta"):
        return build_vpsnet(**copy.deepcopy(OFFICIAL_NET))


def meta_official_state(**kwargs) -> dict[str, torch.Tensor]:
    return synthetic_state(official_fusetrack_shapes(**kwargs), device="meta")


def run_convert(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "vidseg.convert", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidseg: error:"), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in stderr


# --------------------------------------------------------------------------------------------------------
# The key map (in process, meta tensors)
# --------------------------------------------------------------------------------------------------------


def test_every_official_key_finds_its_place_and_the_result_loads_strictly(meta_model):
    official = meta_official_state()
    # a few real tensors among the meta ones: the converter must pass them through untouched
    real = {"backbone.layer3.5.conv2.weight", "rpn_head.rpn_reg.bias", "bbox_head.fc_cls.weight",
            "panopticFPN.deform_convs.0.3.conv_offset.weight", "extra_neck.tcea_fusion.sAtt_add_2.bias",
            "track_head.fcs.1.weight", "flownet2.flownets_d.inter_conv2.0.weight"}
    for name in real:
        official[name] = torch.randn(official[name].shape)
    converted = convert_official_state(official, meta_model.state_dict(), source="latest.pth")
    assert set(converted) == set(meta_model.state_dict())
    for name in real:
        assert converted[vidseg_key(name)] is official[name]
    assert converted["detector.roi_heads.box_predictor.cls_score.weight"] is official["bbox_head.fc_cls.weight"]
    meta_model.load_state_dict(converted, strict=True, assign=True)


def test_the_official_parameter_list_is_the_official_network():
    shapes = official_fusetrack_shapes()
    flow = flownet2_shapes()
    assert sum(torch.Size(s).numel() for s in flow.values()) == 162_518_834  # flownet2-pytorch's count
    counters = [k for k in shapes if k.endswith("num_batches_tracked")]
    assert len(counters) == 53 and all(vidseg_key(k) is None for k in counters)  # ResNet-50 BNs, dropped


def test_a_separate_flownet2_checkpoint_replaces_the_official_files_flow(meta_model):
    official = meta_official_state(with_flownet2=False)
    with pytest.raises(OfficialCheckpointError, match="give --flownet2"):
        convert_official_state(official, meta_model.state_dict(), source="latest.pth")
    flow = synthetic_state(flownet2_shapes(prefix=""), device="meta")
    converted = convert_official_state(official, meta_model.state_dict(), source="latest.pth", flownet2=flow)
    assert converted["flow.flownet2.flownetc.conv1.0.weight"] is flow["flownetc.conv1.0.weight"]


def test_unknown_missing_and_misshapen_keys_are_named(meta_model):
    expected = meta_model.state_dict()
    extra = {**meta_official_state(), "neck.fpn_convs.4.conv.weight": torch.empty(256, 256, 3, 3, device="meta"),
             "semantic_head.foo": torch.empty(1, device="meta")}
    with pytest.raises(OfficialCheckpointError, match=r"2 official key\(s\) left over.*neck\.fpn_convs\.4"):
        convert_official_state(extra, expected, source="latest.pth")
    short = meta_official_state()
    del short["mask_head.conv_logits.bias"]
    with pytest.raises(OfficialCheckpointError,
                       match=r"1 vidseg key\(s\) missing.*detector\.roi_heads\.mask_predictor\.mask_fcn_logits\.bias"):
        convert_official_state(short, expected, source="latest.pth")
    wide = meta_official_state()
    wide["bbox_head.fc_cls.weight"] = torch.empty(81, 1024, device="meta")  # a COCO head
    with pytest.raises(OfficialCheckpointError, match=r"shape mismatch.*bbox_head\.fc_cls\.weight \(81, 1024\)") as err:
        convert_official_state(wide, expected, source="latest.pth")
    assert "missing" not in str(err.value)  # reported once, as a shape problem


# --------------------------------------------------------------------------------------------------------
# The command line (meta tensors: files of a few hundred kB with the official names and shapes)
# --------------------------------------------------------------------------------------------------------


def test_cli_converts_to_a_checkpoint_that_evaluate_and_predict_read(tmp_path, meta_model):
    official = tmp_path / "latest.pth"
    torch.save(official_checkpoint(meta_official_state()), official)
    out = tmp_path / "vpsnet_official.ckpt"
    proc = run_convert("vpsnet-official", official, out)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "53 BatchNorm counters dropped" in proc.stdout
    checkpoint = read_checkpoint(out, task="vps")  # weights_only=True, as evaluate and predict read it
    net = checkpoint.hyper_parameters["net"]
    assert net["variant"] == "fusetrack" and net["flow"]["name"] == "flownet2"
    assert [c["name"] for c in checkpoint.hyper_parameters["categories"]][11:] == [
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    from vidseg.inference.vps import vpsnet_config

    with torch.device("meta"):  # the network predict builds from the checkpoint's own hyper-parameters
        rebuilt = build_vpsnet(**vpsnet_config(net))
    assert state_mismatch(rebuilt.state_dict(), checkpoint.model_state) == ""
    # an existing output is kept unless --overwrite
    again = run_convert("vpsnet-official", official, out)
    assert again.returncode == 2
    assert_one_line_error(again.stderr, str(out), "--overwrite")


def test_cli_names_a_leftover_key_in_one_line_and_exits_2(tmp_path):
    official = tmp_path / "latest.pth"
    state = {**meta_official_state(), "neck.extra_conv.weight": torch.empty(3, device="meta")}
    torch.save(official_checkpoint(state), official)
    proc = run_convert("vpsnet-official", official, tmp_path / "out.ckpt")
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "left over", "neck.extra_conv.weight", str(official))
    assert not (tmp_path / "out.ckpt").exists()


def test_cli_names_a_missing_key_and_a_shape_mismatch_in_one_line(tmp_path, capsys):
    official = tmp_path / "latest.pth"
    state = meta_official_state()
    del state["track_head.fcs.1.bias"]
    torch.save(official_checkpoint(state), official)
    with pytest.raises(SystemExit) as stop:
        main(["vpsnet-official", str(official), str(tmp_path / "out.ckpt")])
    assert stop.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "missing", "track_head.fc2.bias")

    state = meta_official_state()
    state["panopticFPN.conv_pred.conv.weight"] = torch.empty(23, 512, 1, 1, device="meta")  # VIPER's 23 classes
    torch.save(official_checkpoint(state), official)
    with pytest.raises(SystemExit) as stop:
        main(["vpsnet-official", str(official), str(tmp_path / "out.ckpt")])
    assert stop.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "shape mismatch",
                          "panopticFPN.conv_pred.conv.weight (23, 512, 1, 1)")
    assert not (tmp_path / "out.ckpt").exists()


def test_cli_refuses_unreadable_inputs_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["vpsnet-official", str(tmp_path / "absent.pth"), str(tmp_path / "out.ckpt")])
    assert stop.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "absent.pth")
    garbage = tmp_path / "latest.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        main(["vpsnet-official", str(garbage), str(tmp_path / "out.ckpt")])
    assert_one_line_error(capsys.readouterr().err, "cannot load the official VPSNet checkpoint")

    # an object pickled in the meta: refused unread, unless the user trusts the file
    torch.save({**official_checkpoint(meta_official_state()), "meta": {"config": PickledConfig()}}, garbage)
    with pytest.raises(SystemExit):
        main(["vpsnet-official", str(garbage), str(tmp_path / "out.ckpt")])
    assert_one_line_error(capsys.readouterr().err, "--trust-pickle")
    convert_vpsnet_official(garbage, tmp_path / "out.ckpt", trust_pickle=True)
    assert (tmp_path / "out.ckpt").is_file()


# --------------------------------------------------------------------------------------------------------
# Real weights end to end: the paper-size network (ResNet-50-FPN + FlowNet2, ~210 M parameters, ~0.85 GB)
# --------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_converted_random_official_weights_predict_a_tiny_video(tmp_path):
    from tests.helpers.configs import compose_config
    from vidseg.data.video import write_video
    from vidseg.inference.vps import load_vps_model
    from vidseg.predict import predict

    official = tmp_path / "latest.pth"
    state = synthetic_state(official_fusetrack_shapes(), seed=0)
    torch.save(official_checkpoint(state), official)
    out = tmp_path / "vpsnet_official.ckpt"
    proc = run_convert("vpsnet-official", official, out)
    assert proc.returncode == 0, proc.stderr
    model, _ = load_vps_model(out)  # strict load into the network the checkpoint describes
    own = model.state_dict()
    for name in ("backbone.layer4.2.conv3.weight", "bbox_head.fc_reg.bias", "flownet2.flownetfusion.conv0.0.weight",
                 "extra_neck.liteflownet.flow_estimator.convs.3.weight"):
        torch.testing.assert_close(own[vidseg_key(name)], state[name], rtol=0, atol=0)
    del model, own, state

    gen = torch.Generator().manual_seed(0)
    frames = [torch.randint(0, 256, (64, 128, 3), generator=gen, dtype=torch.uint8).numpy() for _ in range(3)]
    video = write_video(tmp_path / "tiny.mp4", frames, fps=10)
    result = tmp_path / "pred"
    cfg = compose_config("predict", tmp_path / "run", ["task=vps", f"ckpt={out}", f"input={video}",
                                                      f"output={result}", "device=cpu"])
    summary = predict(cfg)
    assert summary["frames"] == 3
    assert len(list((result / "panoptic").glob("*.png"))) == 3

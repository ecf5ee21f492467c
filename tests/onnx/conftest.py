"""Fixtures of the ONNX tests: a tiny seeded FEELVOS checkpoint and its ONNX export, made once per module."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.feelvos import TINY_NET
from vidseg.inference.checkpoint import build_checkpoint
from vidseg.models.feelvos import FEELVOS

HPARAMS = {"net": TINY_NET, "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.01}, "val_precision": "32"}


@pytest.fixture(scope="module")
def vos_ckpt(tmp_path_factory):
    """A tiny VOS checkpoint in vidseg's layout (seeded FEELVOS weights, BatchNorm statistics made non-trivial),
    at output stride 16 with inference at 8, as the paper config: the export must use the inference stride."""
    torch.manual_seed(0)
    net = {**TINY_NET, "inference_output_stride": 8}
    model = FEELVOS(**net)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("vos_ckpt") / "last.ckpt"
    torch.save(build_checkpoint("vos", {**HPARAMS, "net": net}, model.state_dict(), global_step=2), path)
    return path


@pytest.fixture(scope="module")
def onnx_folder(vos_ckpt, tmp_path_factory):
    """``python -m vidseg.export task=vos format=onnx`` of ``vos_ckpt``."""
    from vidseg.export import main as export_main

    out = tmp_path_factory.mktemp("onnx") / "feelvos"
    export_main(["task=vos", "format=onnx", f"ckpt={vos_ckpt}", f"output={out}"])
    return out

"""Reading checkpoints: weights_only, task check, clear errors for truncated or foreign files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidseg.inference.checkpoint import TASK_KEY, CheckpointError, checkpoint_fingerprint, read_checkpoint
from vidseg.inference.vos import feelvos_config


def save(path: Path, **content) -> Path:
    torch.save(content, path)
    return path


def test_reads_task_hyper_parameters_and_model_state(tmp_path):
    path = save(tmp_path / "a.ckpt", **{TASK_KEY: "vps", "hyper_parameters": {"x": 1},
                                        "state_dict": {"model.w": torch.ones(2), "other.v": torch.zeros(1)}})
    ckpt = read_checkpoint(path, task="vps")
    assert ckpt.task == "vps" and ckpt.hyper_parameters == {"x": 1}
    assert list(ckpt.model_state) == ["w"]


def test_checkpoint_of_the_other_task_is_refused_with_the_fix(tmp_path):
    path = save(tmp_path / "a.ckpt", **{TASK_KEY: "vps", "hyper_parameters": {}, "state_dict": {}})
    with pytest.raises(CheckpointError, match=r"a\.ckpt.*'vps' checkpoint but task=vos.*task=vps"):
        read_checkpoint(path, task="vos")


def test_old_feelvos_checkpoints_without_the_task_key_are_vos(tmp_path):
    path = save(tmp_path / "old.ckpt", hyper_parameters={"net": {"embedding_dim": 8, "backbone": {}}}, state_dict={})
    assert read_checkpoint(path, task="vos").task == "vos"


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
def test_truncated_checkpoint_names_the_file(tmp_path, cut):
    good = save(tmp_path / "good.ckpt", **{TASK_KEY: "vos", "hyper_parameters": {}, "state_dict":
                                           {"model.w": torch.randn(1000)}})
    data = good.read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError, match=r"bad\.ckpt.*truncated"):
        read_checkpoint(bad)


def test_foreign_files_are_not_vidseg_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not a vidseg checkpoint"):
        read_checkpoint(save(tmp_path / "weights.pth", conv=torch.ones(1)))
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_fingerprint_changes_with_the_file(tmp_path):
    path = save(tmp_path / "a.ckpt", x=1)
    first = checkpoint_fingerprint(path)
    save(path, x=torch.ones(10))
    assert checkpoint_fingerprint(path) != first


def test_feelvos_config_moves_decoder_keys_out_of_old_backbone_configs():
    old = {"embedding_dim": 8, "backbone": {"name": "resnet18", "output_stride": 16, "weights": "x.pth",
                                            "decoder_channels": 16, "aspp_channels": 12}}
    new = feelvos_config(old)
    assert new["backbone"] == {"name": "resnet18", "output_stride": 16, "weights": None}
    assert new["decoder"] == {"decoder_channels": 16, "aspp_channels": 12}

"""Persistent workers, pinned memory and prefetching in every datamodule's loaders (vidseg.data.loading)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from tests.helpers.configs import compose_config
from vidseg.data.loading import loader_options, resolve_pin_memory


def _trainer_on(device: str) -> SimpleNamespace:
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))


def test_loader_options_with_and_without_workers():
    with_workers = loader_options(None, num_workers=3, pin_memory=False, prefetch_factor=4)
    assert with_workers == {"num_workers": 3, "pin_memory": False, "persistent_workers": True, "prefetch_factor": 4}
    # PyTorch refuses persistent_workers and prefetch_factor without workers: they are not passed at all.
    assert loader_options(None, num_workers=0, pin_memory=False, prefetch_factor=4) == {"num_workers": 0,
                                                                                        "pin_memory": False}
    assert "prefetch_factor" not in loader_options(None, num_workers=2, pin_memory=False, prefetch_factor=None)


def test_pin_memory_auto_follows_the_trainer_device():
    assert resolve_pin_memory("auto", _trainer_on("cuda")) is True
    assert resolve_pin_memory(None, _trainer_on("cuda")) is True
    assert resolve_pin_memory("auto", _trainer_on("cpu")) is False
    assert resolve_pin_memory("auto", None) is False  # outside Lightning
    assert resolve_pin_memory(True, _trainer_on("cpu")) is True
    assert resolve_pin_memory(False, _trainer_on("cuda")) is False
    with pytest.raises(ValueError, match="data.pin_memory"):
        resolve_pin_memory("yes")


@pytest.mark.parametrize("settings, match", [({"prefetch_factor": 0}, "data.prefetch_factor"),
                                             ({"num_workers": -1}, "data.num_workers"),
                                             ({"pin_memory": "always"}, "data.pin_memory")])
def test_datamodules_refuse_bad_loader_settings(toy_davis_root, settings, match):
    from vidseg.data.davis import DavisDataModule

    with pytest.raises(ValueError, match=match):
        DavisDataModule(toy_davis_root, **settings)


def _datamodule(tmp_path, overrides):
    cfg = compose_config("train", tmp_path / "run", overrides)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule


@pytest.mark.parametrize("task, fixture", [("vos", "toy_davis_root"), ("vps", "toy_cityscapes_vps_root")])
def test_configured_train_and_val_loaders(task, fixture, request, tmp_path):
    root = request.getfixturevalue(fixture)
    base = [f"task={task}", f"data.root={root}", "data.crop_size=[32,64]"]
    workers = _datamodule(tmp_path, [*base, "data.num_workers=2"])
    for loader in (workers.train_dataloader(), workers.val_dataloader()):
        assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 2
        assert loader.pin_memory is False  # data.pin_memory=auto without a CUDA trainer
    workers.trainer = _trainer_on("cuda")  # train_sampler reads the world from a trainer: check val only
    assert workers.val_dataloader().pin_memory is True
    no_workers = _datamodule(tmp_path, [*base, "data.num_workers=0", "data.prefetch_factor=8"])
    for loader in (no_workers.train_dataloader(), no_workers.val_dataloader()):
        assert loader.num_workers == 0 and not loader.persistent_workers and loader.prefetch_factor is None

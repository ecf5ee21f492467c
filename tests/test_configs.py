"""Every task composes with every entry point's config; its datamodule and task build on tiny generated data."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from tests.helpers.configs import ENTRY_POINTS, TINY_FEELVOS, compose_config
from vidseg.tasks import get_task, list_tasks
from vidseg.train import build_task

# task -> (extra overrides, fixture giving data.root)
CASES = {
    "vos": ([], "toy_davis_root"),
    "vps": ([], "toy_cityscapes_vps_root"),
    "vps-viper": (["data=viper"], "toy_viper_root"),
    "vps-vipseg": (["data=vipseg"], "toy_vipseg_root"),
}


def test_every_registered_task_has_a_case():
    assert {name.split("-")[0] for name in CASES} == set(list_tasks())


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_compose_and_instantiate(case, entry_point, request, tmp_path):
    task_name = case.split("-")[0]
    extra, root_fixture = CASES[case]
    root = request.getfixturevalue(root_fixture)
    overrides = [f"task={task_name}", *extra, f"data.root={root}", "data.num_workers=0"]
    if task_name == "vos":
        overrides += TINY_FEELVOS
    if entry_point == "predict":
        overrides += ["ckpt=unused.ckpt", "input=unused.mp4"]
    cfg = compose_config(entry_point, tmp_path, overrides)
    assert cfg.task_name == task_name
    spec = get_task(cfg.task_name)
    assert callable(spec.load("evaluate")) and callable(spec.load("predict"))

    # The datamodule of every entry point's config reads the tiny set.
    datamodule = instantiate(cfg.data)
    datamodule.setup("validate")
    assert len(datamodule.val_dataloader()) > 0
    if entry_point == "train":
        datamodule.setup("fit")
        assert next(iter(datamodule.train_dataloader()))["images"].dtype.is_floating_point is False
        assert cfg.callbacks.model_checkpoint.monitor == cfg.monitor.metric
        if spec.module is not None:
            module = build_task(cfg.model)
            assert type(module) is spec.load("module")
        else:
            assert cfg.get("model") is None


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_a_gpu_is_used_by_default_when_present(entry_point, tmp_path, monkeypatch):
    import torch

    from vidseg.train import build_trainer
    from vidseg.utils.device import resolve_device

    cfg = compose_config(entry_point, tmp_path, ["task=vos"])
    if entry_point == "train":
        assert cfg.trainer.accelerator == "auto" and cfg.trainer.devices == 1
        trainer = build_trainer(cfg)
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        assert trainer.strategy.root_device.type == expected
        forced = compose_config(entry_point, tmp_path / "cpu", ["task=vos", "trainer=cpu"])
        assert forced.trainer.accelerator == "cpu"
    else:
        assert cfg.device == "auto"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert resolve_device(cfg.device).type == "cuda"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert resolve_device(cfg.device).type == "cpu"


@pytest.mark.parametrize("overrides", [["task=vos"], ["task=vps"], ["task=vps", "data=viper"],
                                       ["task=vos", "data=youtube_vos"], ["task=vos", "data=davis_youtube_vos"]])
def test_no_config_sets_hydra_mode(overrides, tmp_path):
    # vidseg.evaluate skips Hydra's mode probe on plain command lines (utils.cli.skip_hydra_mode_probe): that is
    # right only while no config file of ours sets hydra.mode (experiment= turns the shortcut off)
    for entry_point in ENTRY_POINTS:
        cfg = compose_config(entry_point, tmp_path, overrides)
        assert cfg.hydra.mode is None, (entry_point, overrides)

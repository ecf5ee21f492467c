"""Composing the real Hydra configs in tests, as ``python -m vidseg.<entry point>`` would."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ENTRY_POINTS = ("train", "evaluate", "predict")

# A FEELVOS small enough to train a few steps in seconds on CPU.
TINY_FEELVOS = [
    "backbone=resnet18",
    "model.net.decoder.decoder_channels=16",
    "model.net.decoder.aspp_channels=16",
    "model.net.embedding_dim=8",
    "model.net.head_channels=16",
    "model.net.head_kernel=3",
    "model.net.head_layers=1",
    "model.net.local_max_distance=3",
    "model.net.max_reference_per_object=64",
]


def compose_config(name: str, output_dir: Path, overrides: list[str]) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with ``overrides``; its Hydra run directory is ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_module("vidseg.conf", version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg

"""Training a tiny VPSNet through the real configs (``task=vps experiment=toy_vps``) in seconds, for tests."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.configs import compose_config

# The toy experiment at the tiny test size: 2 steps of batch 2 at 64x128, validation on one clip.
TINY_VPS = [
    "task=vps",
    "experiment=toy_vps",
    "data.crop_size=[64,128]",
    "data.batch_size=2",
    "data.repeat=1",
    "data.val_max_videos=1",
    "trainer.max_steps=2",
    "trainer.log_every_n_steps=1",
]


def train_tiny_vps(root: Path, run_dir: Path, *, variant: str = "fusetrack", extra: list[str] | None = None) -> dict:
    """``python -m vidseg.train task=vps experiment=toy_vps model.variant=<variant>`` on ``root`` for 2 steps;
    returns train()'s result (metrics, checkpoint paths)."""
    from vidseg.train import train

    cfg = compose_config("train", run_dir, [*TINY_VPS, f"data.root={root}", f"model.variant={variant}",
                                            *(extra or [])])
    return train(cfg)

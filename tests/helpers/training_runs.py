"""Training runs as subprocesses (``python -m vidseg.train``), for the kill / resume / signal tests."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers.configs import TINY_FEELVOS

# 8 samples of batch 2: 4 steps per epoch, so 10 steps cross two epoch boundaries and a resume lands
# mid-epoch. No validation (it would only cost time); per-step losses go to csv/metrics.csv at once.
TINY_VOS_RUN = [
    "task=vos", *TINY_FEELVOS, "data.crop_size=[64,112]", "data.batch_size=2", "data.samples_per_epoch=8",
    "data.num_workers=0", "data.val_max_frames=3", "data.val_max_sequences=1", "trainer.check_val_every_n_epoch=1000",
    "trainer.log_every_n_steps=1", "+logger.csv.flush_logs_every_n_steps=1", "trainer.deterministic=true",
    "callbacks.last_checkpoint.every_minutes=0",
]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    env.pop("VIDSEG_DEBUG", None)
    return env


def train_argv(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    """``python -m vidseg.train`` on the toy DAVIS set with the tiny FEELVOS, writing to ``run_dir``."""
    return [sys.executable, "-m", "vidseg.train", f"data.root={data_root}", *TINY_VOS_RUN,
            f"hydra.run.dir={run_dir}", *extra]


def start(argv: list[str], log: Path) -> subprocess.Popen:
    handle = log.open("wb")
    return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=subprocess_env())


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    """Poll until ``condition()``; fail with the run's log if it ends first or takes too long."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before the condition:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for the condition:\n{log.read_text()}")
        time.sleep(0.05)


def logged_losses(run_dir: Path) -> dict[int, float]:
    """``{step: train/loss}`` from the run's ``csv/metrics.csv`` (empty if nothing was logged yet)."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}

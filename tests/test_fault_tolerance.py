"""Training survives kills: periodic and signal-time last.ckpt, atomic saves, and exact resume (subprocesses)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.training_runs import logged_losses, start, subprocess_env, train_argv, wait_for
from vidseg.inference.checkpoint import read_checkpoint


def _step_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.fixture(scope="module")
def uninterrupted_losses(toy_davis_root: Path, tmp_path_factory) -> dict[int, float]:
    run_dir = tmp_path_factory.mktemp("full")
    full = subprocess.run(train_argv(toy_davis_root, run_dir, "trainer.max_steps=10"),
                          capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert full.returncode == 0, full.stdout + full.stderr
    losses = logged_losses(run_dir)
    assert len(losses) == 10
    return losses


# Saves every 3 steps resume mid-epoch (4 steps per epoch); every 4 steps, at an epoch boundary.
@pytest.mark.parametrize("every", [3, 4])
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(toy_davis_root: Path, tmp_path: Path, every: int,
                                                              uninterrupted_losses: dict[int, float]) -> None:
    reference = uninterrupted_losses

    # The same run, killed with SIGKILL as soon as its first periodic last.ckpt exists (no validation ran).
    killed_dir, log = tmp_path / "killed", tmp_path / "killed.log"
    last = killed_dir / "checkpoints" / "last.ckpt"
    proc = start(train_argv(toy_davis_root, killed_dir, "trainer.max_steps=10",
                            f"callbacks.last_checkpoint.every_n_steps={every}"), log)
    wait_for(last.is_file, proc, log)
    proc.kill()
    proc.wait(timeout=60)
    saved_step = _step_of(last)
    assert saved_step % every == 0 and 0 < saved_step < 10

    resumed = subprocess.run(train_argv(toy_davis_root, tmp_path / "resumed", "trainer.max_steps=10",
                                        f"ckpt_path={last}"), capture_output=True, text=True,
                             env=subprocess_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = logged_losses(tmp_path / "resumed")
    assert sorted(after) == sorted(s for s in reference if s >= saved_step)  # continues at the saved step
    for step, loss in after.items():  # the same data, augmentation and in-step randomness, step for step
        assert loss == pytest.approx(reference[step], rel=1e-6, abs=1e-6), (step, loss, reference[step])
    assert _step_of(tmp_path / "resumed" / "checkpoints" / "last.ckpt") == 10


# A subprocess that trains 3 steps saving last.ckpt after each, and kills itself with SIGKILL during the
# second save at one point of the atomic write.
_KILL_DURING_SAVE = r"""
import io, os, signal, sys
import torch
import vidseg.training.checkpointing as checkpointing

point = sys.argv.pop(1)
saves = {"n": 0}
real_save, real_replace = torch.save, os.replace

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def save(obj, f, *args, **kwargs):
    saves["n"] += 1
    if saves["n"] == 2 and point == "mid-write":
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        die()
    return real_save(obj, f, *args, **kwargs)

def replace(src, dst):
    if saves["n"] == 2 and point == "before-rename":
        die()
    real_replace(src, dst)
    if saves["n"] == 2 and point == "after-rename":
        die()

checkpointing.torch.save = save
checkpointing.os.replace = replace
from vidseg.train import main
sys.argv[0] = "vidseg.train"
main()
"""


@pytest.mark.parametrize("point, expected_step", [("mid-write", 1), ("before-rename", 1), ("after-rename", 2)])
def test_a_kill_during_a_save_leaves_a_loadable_last_ckpt(toy_davis_root, tmp_path, point, expected_step) -> None:
    run_dir = tmp_path / "run"
    argv = train_argv(toy_davis_root, run_dir, "trainer.max_steps=3", "callbacks.last_checkpoint.every_n_steps=1")
    proc = subprocess.run([sys.executable, "-c", _KILL_DURING_SAVE, point, *argv[3:]], capture_output=True,
                          text=True, env=subprocess_env(), timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    last = run_dir / "checkpoints" / "last.ckpt"
    read_checkpoint(last, task="vos")  # loads with weights_only: complete, not truncated
    assert _step_of(last) == expected_step


@pytest.mark.parametrize("signum, exit_status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_training_after_writing_last_ckpt(toy_davis_root, tmp_path, signum, exit_status) -> None:
    # No periodic saves: a last.ckpt can only come from the signal.
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    proc = start(train_argv(toy_davis_root, run_dir, "trainer.max_steps=100000",
                            "callbacks.last_checkpoint.every_n_steps=0"), log)
    wait_for(lambda: len(logged_losses(run_dir)) >= 2, proc, log)
    proc.send_signal(signum)
    proc.wait(timeout=120)
    output = log.read_text()
    assert proc.returncode == exit_status, output
    last = run_dir / "checkpoints" / "last.ckpt"
    step = _step_of(last)
    assert step >= 2
    assert f"vidseg: training stopped by {signal.Signals(signum).name} at step {step}; resume with ckpt_path=" in output
    assert "Traceback" not in output

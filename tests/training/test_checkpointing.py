"""AtomicCheckpointIO, LastCheckpoint and the sampler in-process (kills and signals: tests/test_fault_tolerance.py)."""

from __future__ import annotations

import errno
import os

import pytest
import torch

import vidseg.training.checkpointing as checkpointing
from vidseg.data.sampling import EpochSampler, batches_done_in_epoch, train_sampler
from vidseg.training import AtomicCheckpointIO, LastCheckpoint, StepSeed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_save_replaces_the_file_with_normal_permissions(tmp_path):
    path = tmp_path / "ckpts" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)
    io.save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 2
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary left behind


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpointing.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_last_checkpoint_refuses_negative_intervals(tmp_path):
    with pytest.raises(ValueError, match="0 turns a trigger off"):
        LastCheckpoint(tmp_path, every_n_steps=-1)


class _Trainer:
    def __init__(self, global_step: int, current_epoch: int, accumulate: int = 1) -> None:
        self.global_step, self.current_epoch, self.accumulate_grad_batches = global_step, current_epoch, accumulate


@pytest.mark.parametrize("step, epoch, accumulate, expected", [
    (0, 0, 1, 0),    # fresh start
    (3, 0, 1, 3),    # mid-epoch 0
    (6, 1, 1, 2),    # mid-epoch 1 (4 batches per epoch)
    (4, 1, 1, 0),    # at an epoch boundary
    (4, 0, 1, 0),    # saved on the last batch of epoch 0, epoch not yet counted
    (3, 1, 2, 2),    # gradient accumulation: 3 steps x 2 batches - 4
])
def test_batches_done_in_epoch(step, epoch, accumulate, expected):
    assert batches_done_in_epoch(_Trainer(step, epoch, accumulate), batches_per_epoch=4) == expected


def test_skipped_pass_is_the_tail_of_the_full_pass_and_only_once():
    sampler = EpochSampler(12, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.skip_batches(2, 2, batch_size=3)
    assert list(sampler) == full[6:]
    assert list(sampler) == full  # the next pass over the same epoch is whole again
    assert all(e == 2 for e, _ in full) and sorted(i for _, i in full) == list(range(12))


class _SavingTrainer:
    """What LastCheckpoint reads of a one-process Trainer; ``save_checkpoint`` records the steps saved."""

    sanity_checking = fast_dev_run = False
    world_size, global_rank = 1, 0

    def __init__(self) -> None:
        self.global_step, self.saved = 0, []

    def save_checkpoint(self, path) -> None:
        self.saved.append((self.global_step, os.path.basename(path)))


def _run_steps(callback: LastCheckpoint, trainer: _SavingTrainer, steps: int, clock: list[float]) -> None:
    for _ in range(steps):
        trainer.global_step += 1
        clock[0] += 30.0  # each step takes 30 s
        callback.on_train_batch_end(trainer, None, None, None, 0)


def test_last_checkpoint_saves_every_n_steps_and_every_m_minutes(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(checkpointing.time, "monotonic", lambda: clock[0])
    by_steps, trainer = LastCheckpoint(tmp_path, every_n_steps=3, every_minutes=0), _SavingTrainer()
    by_steps.on_fit_start(trainer, None)
    _run_steps(by_steps, trainer, 7, clock)
    assert trainer.saved == [(3, "last.ckpt"), (6, "last.ckpt")]
    by_steps.on_train_end(trainer, None)  # the end is always saved, once
    by_steps.on_train_end(trainer, None)
    assert [s for s, _ in trainer.saved] == [3, 6, 7]
    by_steps.teardown(trainer, None, "fit")

    by_time, trainer = LastCheckpoint(tmp_path, every_n_steps=0, every_minutes=2), _SavingTrainer()
    by_time.on_fit_start(trainer, None)
    _run_steps(by_time, trainer, 9, clock)  # 2 minutes = 4 steps of 30 s
    assert [s for s, _ in trainer.saved] == [4, 8]
    by_time.teardown(trainer, None, "fit")


def test_ctrl_c_stops_after_the_step_with_a_checkpoint(tmp_path):
    from vidseg.errors import TrainingStopped

    callback, trainer = LastCheckpoint(tmp_path, every_n_steps=0, every_minutes=0), _SavingTrainer()
    callback.on_fit_start(trainer, None)
    try:
        _run_steps(callback, trainer, 2, [0.0])
        callback._on_sigint(2, None)  # what the installed SIGINT handler does
        with pytest.raises(TrainingStopped, match="SIGINT at step 3"):
            _run_steps(callback, trainer, 1, [0.0])
        assert [s for s, _ in trainer.saved] == [3]
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C aborts at once
            callback._on_sigint(2, None)
    finally:
        callback.teardown(trainer, None, "fit")


def test_step_seed_depends_on_seed_step_and_rank():
    def draw(seed: int, step: int, rank: int = 0) -> float:
        trainer = _SavingTrainer()
        trainer.global_step, trainer.global_rank = step, rank
        StepSeed(seed).on_train_batch_start(trainer, None, None, 0)
        return float(torch.rand(()))

    assert draw(0, 5) == draw(0, 5)
    assert len({draw(0, 5), draw(0, 6), draw(1, 5), draw(0, 5, rank=1)}) == 4


def _cross_device_replace(real_replace):
    """os.replace as between two file systems: a rename across folders fails with EXDEV (what the kernel does
    when the system temp folder and the checkpoint folder are on different devices)."""

    def replace(src, dst, *args, **kwargs):
        if os.path.dirname(os.path.abspath(src)) != os.path.dirname(os.path.abspath(dst)):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        return real_replace(src, dst, *args, **kwargs)

    return replace


def test_atomic_save_renames_within_the_checkpoint_folder(tmp_path, monkeypatch):
    """The temporary file lives next to the checkpoint, so the final rename never crosses file systems."""
    monkeypatch.setattr(checkpointing.os, "replace", _cross_device_replace(os.replace))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)
    io.save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_a_rename_that_fails_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)

    def failing_replace(src, dst, *args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(checkpointing.os, "replace", failing_replace)
    with pytest.raises(OSError, match="cross-device"):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_atomic_save_syncs_the_data_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")) else "file"))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", os.path.basename(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(checkpointing.os, "fsync", fsync)
    monkeypatch.setattr(checkpointing.os, "replace", replace)
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "last.ckpt")
    assert events == [("fsync", "file"), ("replace", "last.ckpt"), ("fsync", "dir")]


def test_a_resumed_run_does_not_rewrite_the_checkpoint_it_loaded(tmp_path):
    callback, trainer = LastCheckpoint(tmp_path, every_n_steps=5, every_minutes=0), _SavingTrainer()
    trainer.global_step = 10  # restored from last.ckpt written at step 10
    callback.on_fit_start(trainer, None)
    try:
        callback.on_train_end(trainer, None)  # e.g. max_steps was already reached
        assert trainer.saved == []
        _run_steps(callback, trainer, 5, [0.0])
        assert [s for s, _ in trainer.saved] == [15]
    finally:
        callback.teardown(trainer, None, "fit")


def test_sigterm_saves_and_other_exceptions_do_not(tmp_path):
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    callback, trainer = LastCheckpoint(tmp_path, every_n_steps=0, every_minutes=0), _SavingTrainer()
    callback.on_fit_start(trainer, None)
    try:
        _run_steps(callback, trainer, 2, [0.0])
        callback.on_exception(trainer, None, RuntimeError("a bug"))
        callback.on_exception(trainer, None, KeyboardInterrupt())
        assert trainer.saved == []
        callback.on_exception(trainer, None, SIGTERMException())
        assert trainer.saved == [(2, "last.ckpt")]
    finally:
        callback.teardown(trainer, None, "fit")


def test_time_trigger_fires_at_exactly_every_minutes(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(checkpointing.time, "monotonic", lambda: clock[0])
    callback, trainer = LastCheckpoint(tmp_path, every_n_steps=0, every_minutes=1), _SavingTrainer()
    callback.on_fit_start(trainer, None)
    try:
        _run_steps(callback, trainer, 2, clock)  # 30 s per step: 60 s at step 2 exactly
        assert [s for s, _ in trainer.saved] == [2]
    finally:
        callback.teardown(trainer, None, "fit")


class _ResumedTrainer:
    """What train_sampler reads of a trainer restored from a checkpoint."""

    def __init__(self, global_step: int, current_epoch: int, *, world_size: int = 1, global_rank: int = 0,
                 accumulate: int = 1) -> None:
        self.global_step, self.current_epoch = global_step, current_epoch
        self.world_size, self.global_rank, self.accumulate_grad_batches = world_size, global_rank, accumulate


def test_train_sampler_resumes_after_the_batches_already_trained():
    full = EpochSampler(12, seed=5)
    full.set_epoch(1)
    order = list(full)
    # 4 batches of 3 per epoch; killed after step 6 = epoch 1, batch 2: the resumed pass starts at item 6
    sampler = train_sampler(_ResumedTrainer(6, 1), 12, 3, seed=5)
    sampler.set_epoch(1)
    assert list(sampler) == order[6:]
    assert list(sampler) == order  # the next pass is whole
    # at an epoch boundary and for a fresh run nothing is skipped
    for trainer in (_ResumedTrainer(8, 2), None):
        sampler = train_sampler(trainer, 12, 3, seed=5)
        sampler.set_epoch(1)
        assert list(sampler) == order
    # two ranks: each skips its own first batches (6 items per rank, 2 batches of 3)
    shares = []
    for rank in range(2):
        sampler = train_sampler(_ResumedTrainer(1, 0, world_size=2, global_rank=rank), 12, 3, seed=5)
        sampler.set_epoch(0)
        shares.append(list(sampler))
    whole = EpochSampler(12, seed=5).order(0)
    assert [i for _, i in shares[0]] == whole[0::2][3:].tolist()
    assert [i for _, i in shares[1]] == whole[1::2][3:].tolist()


def test_epoch_sampler_drops_the_remainder_evenly_across_ranks():
    shares = [list(EpochSampler(10, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    order = EpochSampler(10, seed=3).order(0)
    assert [[i for _, i in share] for share in shares] == [order[r:9:3].tolist() for r in range(3)]
    assert all(len(EpochSampler(10, num_replicas=3, rank=r)) == 3 for r in range(3))
    unshuffled = EpochSampler(5, shuffle=False)
    unshuffled.set_epoch(7)
    assert list(unshuffled) == [(7, i) for i in range(5)]
    with pytest.raises(ValueError, match="rank 3"):
        EpochSampler(10, num_replicas=3, rank=3)


def test_step_seed_is_mix_seed_of_seed_step_rank_in_that_order():
    from vidseg.utils.seeding import mix_seed

    trainer = _SavingTrainer()
    trainer.global_step, trainer.global_rank = 5, 1
    StepSeed(3).on_train_batch_start(trainer, None, None, 0)
    assert torch.initial_seed() == mix_seed(3, 5, 1)
    assert mix_seed(3, 5, 1) != mix_seed(3, 1, 5)  # the order matters (a resumed run must redraw the same)

"""Training plumbing shared by both tasks: atomic checkpoints, periodic ``last.ckpt``, graceful stops, and
per-step seeding that makes a resumed run reproduce the uninterrupted one."""

from vidseg.errors import TrainingStopped
from vidseg.training.checkpointing import AtomicCheckpointIO, LastCheckpoint, StepSeed

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "StepSeed", "TrainingStopped"]

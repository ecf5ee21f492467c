"""Training plumbing shared by both tasks: atomic checkpoints, periodic ``last.ckpt``, graceful stops, and
per-step seeding that makes a resumed run reproduce the uninterrupted one, and throughput written as training goes."""

from vidseg.errors import TrainingStopped
from vidseg.training.checkpointing import AtomicCheckpointIO, LastCheckpoint, StepSeed
from vidseg.training.throughput import Throughput

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "StepSeed", "Throughput", "TrainingStopped"]

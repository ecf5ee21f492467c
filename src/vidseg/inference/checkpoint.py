"""Reading vidseg checkpoints: the only code that knows their layout.

A vidseg checkpoint is a Lightning checkpoint whose contents are plain containers and tensors, so it loads
with ``torch.load(..., weights_only=True)``:

    {"vidseg_task": "vos" | "vps",            # written by the task's LightningModule.on_save_checkpoint
     "hyper_parameters": {...},               # the LightningModule's arguments (plain dicts)
     "state_dict": {"model.<name>": Tensor},  # the network's weights under the "model." prefix
     "global_step": int, ...}                 # Lightning's training state (optimizer, schedulers, loops)

Checkpoints written before the task key existed are recognised as VOS by their FEELVOS hyper-parameters.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vidseg.errors import DataError

TASK_KEY = "vidseg_task"
MODEL_PREFIX = "model."


class CheckpointError(DataError):
    """A checkpoint that is missing, truncated, foreign or of another task."""


@dataclass
class VidsegCheckpoint:
    """What a vidseg checkpoint holds.

    Attributes:
        path: the file it was read from.
        task: "vos" or "vps".
        hyper_parameters: the task module's arguments (plain containers).
        model_state: the network's state dict, ``"model."`` prefix removed.
    """

    path: Path
    task: str
    hyper_parameters: dict[str, Any]
    model_state: dict[str, torch.Tensor]


def _infer_task(checkpoint: dict[str, Any]) -> str | None:
    if TASK_KEY in checkpoint:
        return str(checkpoint[TASK_KEY])
    net = (checkpoint.get("hyper_parameters") or {}).get("net")
    if isinstance(net, dict) and "embedding_dim" in net:  # FEELVOS checkpoints from before the task key
        return "vos"
    return None


def read_checkpoint(path: str | os.PathLike, *, task: str | None = None,
                    map_location: str | torch.device = "cpu") -> VidsegCheckpoint:
    """Load a vidseg checkpoint with ``weights_only=True`` and check it belongs to ``task``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated/corrupt file, not a vidseg checkpoint, or a checkpoint of another task.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; pass ckpt=<path to a .ckpt written by vidseg.train>")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"{path}: cannot load the checkpoint ({str(err).splitlines()[0][:200]}); the file is truncated, "
            "corrupt or not a vidseg checkpoint (vidseg.train writes them under <run>/checkpoints/): use another "
            "checkpoint, e.g. last.ckpt of the run"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise CheckpointError(f"{path}: not a vidseg checkpoint (expected a Lightning checkpoint with "
                              "'hyper_parameters' and 'state_dict' written by vidseg.train)")
    found = _infer_task(checkpoint)
    if found is None:
        raise CheckpointError(f"{path}: not a vidseg checkpoint (no {TASK_KEY!r} key and no known hyper-parameters)")
    if task is not None and found != task:
        raise CheckpointError(f"{path}: this is a {found!r} checkpoint but task={task}; run with task={found} "
                              f"or give a checkpoint trained with task={task}")
    state = {k.removeprefix(MODEL_PREFIX): v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    return VidsegCheckpoint(path=path, task=found, hyper_parameters=dict(checkpoint["hyper_parameters"]),
                            model_state=state)


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """Identifies one version of a checkpoint file: predictions made with another one are never reused."""
    path = Path(path)
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"

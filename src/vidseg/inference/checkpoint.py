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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vidseg.errors import DataError
from vidseg.utils.torch_files import load_failure_reason

TASK_KEY = "vidseg_task"
PROVENANCE_KEY = "vidseg_provenance"  # what the model was trained on and by which vidseg (see vidseg.pretrained)
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
        provenance: {"data": {"dataset", "folder", "train_split", "val_split", "toy"}, "vidseg_version", "git_commit",
            "global_step"} as recorded by vidseg.train (:func:`vidseg.pretrained.training_provenance`); empty
            for checkpoints written before it was recorded, or converted from other code.
    """

    path: Path
    task: str
    hyper_parameters: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    provenance: dict[str, Any] = field(default_factory=dict)


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

    ``path`` may also be a pretrained folder (model.safetensors + config.json, :mod:`vidseg.pretrained`): it is
    read without pickle; ``hf://<owner>/<name>[@<revision>]`` is such a folder on the Hugging Face Hub (fetched
    into the hub's cache, or found there offline).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated/corrupt file, not a vidseg checkpoint, or a checkpoint of another task.
    """
    if str(path).startswith("hf://"):
        from vidseg.pretrained import resolve_pretrained

        path = resolve_pretrained(str(path))
    path = Path(path)
    if path.is_dir():
        from vidseg.pretrained import is_pretrained_folder, read_pretrained

        if is_pretrained_folder(path):
            return read_pretrained(path, task=task, map_location=map_location)
    if not path.is_file():
        what = _what_is_there(path)
        if what == "does not exist":
            raise FileNotFoundError(f"checkpoint not found: {path}; pass ckpt=<path to a .ckpt written by "
                                    "vidseg.train>, e.g. <run>/checkpoints/last.ckpt")
        raise CheckpointError(f"checkpoint {path} {what}; pass ckpt=<path to a .ckpt written by vidseg.train>, "
                              "e.g. <run>/checkpoints/last.ckpt")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"{path}: cannot load the checkpoint ({load_failure_reason(err)}); the file is truncated, "
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
    provenance = checkpoint.get(PROVENANCE_KEY)
    return VidsegCheckpoint(path=path, task=found, hyper_parameters=dict(checkpoint["hyper_parameters"]),
                            model_state=state, provenance=dict(provenance) if isinstance(provenance, dict) else {})


def _what_is_there(path: Path) -> str:
    """Why ``path`` is not a checkpoint file: a folder, a symbolic link loop, nothing."""
    from vidseg.utils.config_check import describe_missing_path

    if path.is_dir():
        return "is a folder, not a checkpoint file"
    return describe_missing_path(path) or "is not a regular file"


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any], *, prefix: str = "model.",
                       limit: int = 4) -> list[str]:
    """``"<key>: checkpoint <a>, now <b>"`` for the first ``limit`` keys whose values differ (dotted keys).

    Keys that are null or absent in ``current`` are left out: the task fills them (classes from the data,
    defaults) and stores the filled value, so they differ without the user having changed anything.
    """
    old, new = _flatten(saved), _flatten({k: v for k, v in current.items() if k != "_target_"})

    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    keys = [k for k in sorted(new) if new[k] is not None and (k not in old or old[k] != new[k])]
    shown = [f"{prefix}{k}: checkpoint {short(old[k]) if k in old else '(absent)'}, now {short(new[k])}"
             for k in keys[:limit]]
    return shown + ([f"and {len(keys) - limit} more"] if len(keys) > limit else [])


def state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], *, limit: int = 3) -> str:
    """A short description of how ``found`` (a checkpoint's state) differs from ``expected`` (the model's);
    "" when every key is there with its shape."""
    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
              if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    parts = [f"{len(keys)} {label} (e.g. {', '.join(keys[:limit])})"
             for label, keys in (("weights missing", missing), ("unexpected weights", unexpected),
                                 ("weights of another shape", shapes)) if keys]
    return "; ".join(parts)


def check_resume_fits(checkpoint: VidsegCheckpoint, model: torch.nn.Module, model_config: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint whose weights do not fit ``model`` (built from ``model_config``),
    naming the config keys that differ between the checkpoint's run and this one."""
    mismatch = state_mismatch(model.state_dict(), checkpoint.model_state)
    if not mismatch:
        return
    differences = config_differences(checkpoint.hyper_parameters, model_config)
    if differences:
        raise CheckpointError(
            f"{checkpoint.path}: written by a run of another configuration, its weights do not fit this model; "
            f"config keys that differ: {'; '.join(differences)}. Resume with the checkpoint's values "
            "(e.g. the same model.*/backbone=), or start a new run without ckpt_path=")
    raise CheckpointError(f"{checkpoint.path}: its weights do not fit this model ({mismatch}); resume with the "
                          "vidseg version and config that wrote it, or start a new run without ckpt_path=")


def load_model_state(model: torch.nn.Module, checkpoint: VidsegCheckpoint) -> None:
    """Strictly load ``checkpoint``'s network weights into ``model`` (built from its own hyper-parameters);
    a checkpoint whose weights do not fit (edited, or from another vidseg version) is refused in one line."""
    mismatch = state_mismatch(model.state_dict(), checkpoint.model_state)
    if mismatch:
        raise CheckpointError(f"{checkpoint.path}: its weights do not fit the network its own hyper-parameters "
                              f"describe ({mismatch}); the file was edited or written by another vidseg version: "
                              "use a checkpoint written by this version's vidseg.train")
    model.load_state_dict(checkpoint.model_state)


def build_checkpoint(task: str, hyper_parameters: dict[str, Any], model_state: dict[str, torch.Tensor],
                     **extra: Any) -> dict[str, Any]:
    """A checkpoint dict in the layout :func:`read_checkpoint` reads, for code that writes one without Lightning
    (e.g. ``vidseg.convert``): ``hyper_parameters`` plain containers, ``model_state`` the network's state dict
    (keys without the LightningModule's ``model.`` prefix), ``extra`` further top-level keys (provenance)."""
    return {TASK_KEY: task, "hyper_parameters": hyper_parameters,
            "state_dict": {MODEL_PREFIX + k: v.detach().contiguous() for k, v in model_state.items()}, **extra}


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """Identifies one version of a checkpoint file: predictions made with another one are never reused."""
    path = Path(path)
    # a pretrained folder: its weights file; an ONNX folder: its config.json, written last (both replaced
    # atomically on re-export, so their mtime changes)
    if path.is_dir():
        stat = ((path / "model.safetensors") if (path / "model.safetensors").is_file() else path / "config.json").stat()
    else:
        stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"

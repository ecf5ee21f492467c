"""Pretrained folders: a vidseg network without pickle, Lightning or Hydra.

A pretrained folder holds

    model.safetensors   the network's state dict (keys without the LightningModule's ``model.`` prefix)
    config.json         {"format": "vidseg-pretrained", "format_version": 1, "task": "vos" | "vps",
                         "hyper_parameters": {...} (as stored in the checkpoint), "vidseg_version": "x.y.z"}
    README.md           a model card (optional, written by ``python -m vidseg.export``)

:func:`read_pretrained` returns the same :class:`~vidseg.inference.checkpoint.VidsegCheckpoint` as
:func:`~vidseg.inference.checkpoint.read_checkpoint`, which accepts such a folder too: ``vidseg.predict``,
``vidseg.evaluate`` and the predictors' ``from_checkpoint`` take it like a ``.ckpt``. Reading it parses JSON and
safetensors only (no ``torch.load``, no unpickling), so a folder from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vidseg.errors import DataError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT = "vidseg-pretrained"
FORMAT_VERSION = 1
TASKS = ("vos", "vps")


def vidseg_version() -> str:
    """The installed vidseg version ("unknown" when run from a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vidseg")
    except PackageNotFoundError:
        return "unknown"


def is_pretrained_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding config.json and model.safetensors (their contents are not checked)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def save_pretrained(checkpoint: Any, folder: str | os.PathLike, *, card: bool = False) -> Path:
    """Write ``checkpoint``'s network as a pretrained folder; returns the folder.

    Args:
        checkpoint: a path to a vidseg ``.ckpt`` (or a pretrained folder), or a ``VidsegCheckpoint``.
        folder: created if missing; it may exist only when empty or holding nothing but a previous pretrained
            folder's files (those are replaced).
        card: also write a README.md model card.
    Raises:
        DataError: ``folder`` holds other files, or the hyper-parameters are not JSON (not a vidseg checkpoint).
        CheckpointError / FileNotFoundError: as :func:`~vidseg.inference.checkpoint.read_checkpoint`.
    """
    from vidseg.data.io import atomic_path, write_json_atomic, write_text_atomic
    from vidseg.inference.checkpoint import VidsegCheckpoint, read_checkpoint

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} is a file; give a folder for the pretrained model, e.g. output=pretrained/<name>")
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if p.name not in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE))
        if others:  # never mix the model with files we did not write, nor delete them
            raise DataError(f"{folder} holds other files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
                            "; give an empty or new folder for the pretrained model")
        if any(folder.iterdir()) and not _written_by_vidseg(folder):  # e.g. the user's own README.md
            raise DataError(f"{folder} holds files that are not a vidseg pretrained folder (no valid {CONFIG_FILE}); "
                            "give an empty or new folder for the pretrained model")
    if not isinstance(checkpoint, VidsegCheckpoint):
        checkpoint = read_checkpoint(checkpoint)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": checkpoint.task,
              "hyper_parameters": checkpoint.hyper_parameters, "vidseg_version": vidseg_version()}
    try:
        json.dumps(config)  # before writing anything
    except (TypeError, ValueError) as err:
        raise DataError(f"{checkpoint.path}: its hyper-parameters are not plain JSON values ({err}); export a "
                        "checkpoint written by vidseg.train") from err
    # clone: safetensors refuses tensors sharing storage, and keeps only contiguous ones
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in checkpoint.model_state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    # weights first, config last: a folder whose config.json is there is complete
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "task": checkpoint.task})
    write_json_atomic(folder / CONFIG_FILE, config)
    if card:
        write_text_atomic(folder / CARD_FILE, model_card(config))
    return folder


def _written_by_vidseg(folder: Path) -> bool:
    """Whether ``folder`` holds a pretrained folder vidseg wrote (its config.json says so): only then are its files
    replaced."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def model_card(config: dict[str, Any]) -> str:
    """A short README.md for a pretrained folder from its config.json contents (no invented metrics)."""
    hparams = config.get("hyper_parameters") or {}
    net = hparams.get("net") or {}
    backbone = net.get("backbone") if isinstance(net.get("backbone"), dict) else {}
    model = {"vos": "FEELVOS", "vps": "VPSNet"}.get(config["task"], config["task"])
    variant = hparams.get("variant") or net.get("variant")
    lines = [
        f"# vidseg {model} ({config['task'].upper()})", "",
        f"- task: {config['task']}",
        f"- model: {model}" + (f", variant {variant}" if variant else ""),
        f"- backbone: {backbone.get('name', 'unknown')}",
        f"- trained by vidseg {config.get('vidseg_version', 'unknown')}", "",
        "Metrics: to be filled from `python -m vidseg.evaluate task=" + config["task"] + " ckpt=<this folder>`.", "",
        "Use: `python -m vidseg.predict task=" + config["task"] + " ckpt=<this folder> input=<video> output=<dir>`; "
        "loading reads model.safetensors and config.json only (no pickle, no Hydra).", "",
    ]
    return "\n".join(lines)


def read_pretrained(folder: str | os.PathLike, *, task: str | None = None,
                    map_location: str | torch.device = "cpu") -> Any:
    """Read a pretrained folder as a :class:`~vidseg.inference.checkpoint.VidsegCheckpoint` (path = the folder).

    Returns the state as stored: whether it fits the network is checked by the strict load
    (:func:`~vidseg.inference.checkpoint.load_model_state`), as for a ``.ckpt``.
    Raises:
        FileNotFoundError: no such folder.
        CheckpointError: a file missing, config.json not JSON or of an unknown format version, a task other than
            ``task``, or a model.safetensors that cannot be read.
    """
    from vidseg.inference.checkpoint import CheckpointError, VidsegCheckpoint

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"pretrained folder not found: {folder}; give a folder written by "
                                "python -m vidseg.export format=pretrained")
    for path in (folder / CONFIG_FILE, folder / WEIGHTS_FILE):
        if not path.is_file():
            raise CheckpointError(f"{folder}: no {path.name} in the pretrained folder (expected {CONFIG_FILE} and "
                                  f"{WEIGHTS_FILE}); export it again with python -m vidseg.export format=pretrained")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: not valid JSON ({err}); export the folder again with "
                              "python -m vidseg.export format=pretrained") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{folder / CONFIG_FILE}: not a vidseg pretrained config (expected "
                              f"\"format\": \"{FORMAT}\"); export it with python -m vidseg.export format=pretrained")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{folder / CONFIG_FILE}: format_version {config.get('format_version')!r}, this vidseg "
                              f"reads version {FORMAT_VERSION}; use the vidseg version that wrote it "
                              f"({config.get('vidseg_version', 'unknown')})")
    found = config.get("task")
    if found not in TASKS or not isinstance(config.get("hyper_parameters"), dict):
        raise CheckpointError(f"{folder / CONFIG_FILE}: expected \"task\" one of {list(TASKS)} and a "
                              f"\"hyper_parameters\" object, found task {found!r}")
    if task is not None and found != task:
        raise CheckpointError(f"{folder}: this is a {found!r} model but task={task}; run with task={found} "
                              f"or give a model trained with task={task}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(folder / WEIGHTS_FILE, device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: cannot read the weights ({reason}); the file is truncated "
                              "or not safetensors: export the folder again") from err
    return VidsegCheckpoint(path=folder, task=found, hyper_parameters=config["hyper_parameters"], model_state=state)

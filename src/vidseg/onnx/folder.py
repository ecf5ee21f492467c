"""ONNX export folders: a vidseg model as ONNX graphs + config.json, loaded without torch.load or pickle.

An ONNX folder holds

    config.json   {"format": "vidseg-onnx", "format_version": 1, "task": "vos" | "vps", "model": "FEELVOS",
                   "graphs": {"<name>": "<file>.onnx"}, "opset": 18, "exporter": "...",
                   "inputs" / "outputs": {"<graph>": [names]}, "normalisation": {...}, "classes": [...] | null,
                   "model_config": {...} (what the runtime needs: strides, sizes), "hyper_parameters": {...},
                   "vidseg_version": "x.y.z", "torch_version": "..."}
    <name>.onnx   the graphs (weights inside; no external data files)

like a pretrained folder (:mod:`vidseg.pretrained`: model.safetensors + config.json). The task's module writes the
graphs (:func:`vidseg.onnx.feelvos.export_feelvos`) and reads them back (its ``from_folder``); this module owns
the layout: writing safely, reading and checking config.json, and choosing the backend for a ``ckpt=`` path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidseg.data.names import checked_join
from vidseg.errors import DataError

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"  # the model card vidseg.export writes beside the graphs (vidseg.pretrained.model_card)
FORMAT = "vidseg-onnx"
FORMAT_VERSION = 1
BACKENDS = ("torch", "onnx")
# ONNX opset of the FEELVOS export: the lowest that torch's dynamo exporter translates to natively (older ones go
# through a version converter), read by ONNX Runtime >= 1.14 and TensorRT >= 8.6. VPSNet needs 19 (DeformConv);
# each folder's config.json records its own "opset".
OPSET = 18


def is_onnx_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder whose config.json says it is a vidseg ONNX export (files not checked)."""
    return _read_config(Path(path)) is not None


def _read_config(folder: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return config if isinstance(config, dict) and config.get("format") == FORMAT else None


def resolve_backend(backend: str | None, ckpt: str | os.PathLike) -> str:
    """The backend that runs ``ckpt``: ``backend`` checked against it ("torch" | "onnx"), or, for None, "onnx"
    for an ONNX folder and "torch" for anything else.

    Raises:
        DataError (one line): an unknown backend, backend=onnx for a checkpoint, backend=torch for an ONNX folder.
    """
    if backend is not None and backend not in BACKENDS:
        raise DataError(f"backend={backend}: unknown backend; give backend=torch or backend=onnx")
    onnx = is_onnx_folder(ckpt)
    if backend == "onnx" and not onnx:
        raise DataError(f"backend=onnx runs a folder written by python -m vidseg.export format=onnx, and {ckpt} is "
                        f"not one; export it first (python -m vidseg.export task=<task> format=onnx ckpt={ckpt} "
                        "output=<dir>) or give backend=torch")
    if backend == "torch" and onnx:
        raise DataError(f"{ckpt} is an ONNX export folder; run it with backend=onnx (or give a checkpoint or "
                        "pretrained folder for backend=torch)")
    return backend or ("onnx" if onnx else "torch")


def write_onnx_folder(folder: str | os.PathLike, config: dict[str, Any],
                      graphs: dict[str, Callable[[Path], None]]) -> Path:
    """Write an ONNX folder: each ``graphs[file](path)`` writes its graph to ``path`` (a temporary file moved into
    place once it is complete), then config.json, last: a folder with a config.json is complete.

    ``folder`` is created if missing; it may exist only when empty or holding a previous vidseg ONNX export
    (whose files are replaced); anything else is refused before a file is written.

    Args:
        config: the task's entries (task, model, graphs, inputs/outputs, normalisation, ...); "format" and
            "format_version" are added here.
        graphs: file name -> writer.
    Raises:
        DataError: ``folder`` is a file or holds files vidseg did not write there.
    """
    from vidseg.data.io import atomic_path, write_json_atomic

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} is a file; give a folder for the ONNX export, e.g. output=onnx/<name>")
    if folder.is_dir() and any(folder.iterdir()):
        previous = _read_config(folder)
        ours = {CONFIG_FILE, CARD_FILE, *(previous or {}).get("graphs", {}).values()} if previous else set()
        others = sorted(p.name for p in folder.iterdir() if p.name not in ours)
        if previous is None or others:  # never mix the export with files we did not write, nor delete them
            listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise DataError(f"{folder} holds files that are not a vidseg ONNX export ({listed}); give an empty or "
                            "new folder for the export")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **config}
    json.dumps(config)  # plain JSON values, checked before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).unlink(missing_ok=True)  # a previous export is incomplete until the new config is in
    for name, write in graphs.items():
        with atomic_path(checked_join(folder, name, source="the exporter", what="graph file name")) as tmp:
            write(tmp)
    write_json_atomic(folder / CONFIG_FILE, config)
    return folder


def read_onnx_config(folder: str | os.PathLike, *, task: str, model: str) -> dict[str, Any]:
    """Read and check an ONNX folder's config.json (JSON only, no pickle) for ``task`` / ``model``; the graphs it
    names must be there.

    Raises:
        FileNotFoundError: no such folder. DataError: not a vidseg ONNX folder, another format version, task or
        model, or a graph file missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"ONNX folder not found: {folder}; give a folder written by python -m vidseg.export "
                                "format=onnx")
    config = _read_config(folder)
    if config is None:
        raise DataError(f"{folder / CONFIG_FILE}: missing or not a vidseg ONNX config (expected \"format\": "
                        f"\"{FORMAT}\"); export the folder with python -m vidseg.export format=onnx")
    if config.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{folder / CONFIG_FILE}: format_version {config.get('format_version')!r}, this vidseg reads "
                        f"version {FORMAT_VERSION}; export it again with this vidseg")
    if config.get("task") != task or config.get("model") != model:
        raise DataError(f"{folder}: an ONNX export of {config.get('model')!r} for task {config.get('task')!r}, "
                        f"expected {model} for task={task}; give a folder exported from a task={task} checkpoint")
    graphs = config.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        raise DataError(f"{folder / CONFIG_FILE}: no \"graphs\" entry; export the folder again")
    for file in graphs.values():  # names from a file: checked to stay inside the folder
        if not checked_join(folder, str(file), source=folder / CONFIG_FILE, what="graph file name").is_file():
            raise DataError(f"{folder}: {file} is missing (config.json names it); export the folder again")
    return config

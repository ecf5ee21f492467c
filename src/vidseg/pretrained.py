"""Pretrained folders: a vidseg network without pickle, Lightning or Hydra.

A pretrained folder holds

    model.safetensors   the network's state dict (keys without the LightningModule's ``model.`` prefix)
    config.json         {"format": "vidseg-pretrained", "format_version": 1, "task": "vos" | "vps",
                         "hyper_parameters": {...} (as stored in the checkpoint), "vidseg_version": "x.y.z",
                         "provenance": {...} (what it was trained on, by which vidseg commit; may be empty),
                         "metrics": {...} (optional: a ``vidseg.evaluate`` results file's headline numbers)}
    README.md           a model card (optional, written by ``python -m vidseg.export``)

:func:`read_pretrained` returns the same :class:`~vidseg.inference.checkpoint.VidsegCheckpoint` as
:func:`~vidseg.inference.checkpoint.read_checkpoint`, which accepts such a folder too: ``vidseg.predict``,
``vidseg.evaluate`` and the predictors' ``from_checkpoint`` take it like a ``.ckpt``. Reading it parses JSON and
safetensors only (no ``torch.load``, no unpickling), so a folder from an untrusted source cannot run code.

A folder on the Hugging Face Hub is named ``hf://<owner>/<name>[@<revision>]`` wherever a checkpoint path is taken
(``ckpt=``), or ``<owner>/<name>`` in ``from_pretrained``: :func:`resolve_pretrained` fetches only the three files
above into the hub's cache (or finds them there with ``HF_HUB_OFFLINE=1``). huggingface_hub's
``PyTorchModelHubMixin`` is not used: its config.json holds a module's constructor arguments, while a vidseg
folder must say its task and format version so that a folder of another task or version is refused.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
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
HUB_PREFIX = "hf://"
# <owner>/<name>[@<revision>], as the Hub names repositories (letters, digits, "-", "_", ".")
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(@(?P<revision>[\w./-]+))?$")
# The terms that come with a model trained on a dataset (by datamodule class): only those vidseg is sure of.
DATA_TERMS = {
    "CityscapesVPSDataModule": "Cityscapes terms of use: non-commercial purposes only",
    "VIPSegDataModule": "VIPSeg: released for non-commercial research purposes only",
}


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


def git_commit() -> str | None:
    """``git describe --always --dirty`` of the source tree vidseg runs from; None when it is not a git checkout
    (an installed wheel) or git is missing. The repository must track vidseg's own files: an installed vidseg in a
    virtual environment inside the user's project would otherwise report the project's commit."""
    here = Path(__file__).parent
    try:
        subprocess.run(["git", "ls-files", "--error-unmatch", Path(__file__).name], cwd=here, capture_output=True,
                       timeout=10, check=True)
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=here,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def training_provenance(data_config: dict[str, Any]) -> dict[str, Any]:
    """What vidseg.train records in each checkpoint (``vidseg_provenance``) for the model card.

    Args:
        data_config: the run's ``data`` config as a plain dict ({"_target_", "root", "split", ...}).
    Returns:
        {"data": {"dataset": datamodule class name, "folder": the data root's last folder name (not the full path:
        a shared model should not carry the trainer's directories), "train_split", "val_split", "toy": whether
        vidseg's toy generator wrote the data}, "vidseg_version", "git_commit"}.
    """
    from vidseg.data.toy import META_FILE as TOY_VOS_META
    from vidseg.data.toy_vps import META_FILE as TOY_VPS_META

    root = Path(str(data_config.get("root") or ""))
    toy = bool(str(root)) and ((root / TOY_VOS_META).is_file() or (root / TOY_VPS_META).is_file())
    # every datamodule trains on its train split ("train_split" where configurable); "split" is the validation one
    data = {"dataset": str(data_config.get("_target_", "")).rsplit(".", 1)[-1] or None,
            "folder": root.name or None, "train_split": data_config.get("train_split", "train"),
            "val_split": data_config.get("split"), "toy": toy}
    return {"data": data, "vidseg_version": vidseg_version(), "git_commit": git_commit()}


def headline_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers a model card quotes from a ``vidseg.evaluate`` results file (results-<split>.json):
    VOS {"J&F-Mean", "J-Mean", "F-Mean"}, VPS {"VPQ", "VPQ-thing", "VPQ-stuff", "STQ", "AQ", "SQ"}; with
    "split", "protocol", "units". Raises DataError for a file that is neither."""
    if isinstance(results.get("global"), dict) and "J&F-Mean" in results["global"]:
        numbers = {k: results["global"][k] for k in ("J&F-Mean", "J-Mean", "F-Mean") if k in results["global"]}
    elif isinstance(results.get("vpq"), dict) and "all" in results["vpq"]:
        vpq, stq = results["vpq"], results.get("stq") or {}
        numbers = {"VPQ": vpq["all"], "VPQ-thing": vpq.get("thing"), "VPQ-stuff": vpq.get("stuff"),
                   **{k: stq[k] for k in ("STQ", "AQ", "SQ") if k in stq}}
    else:
        raise DataError("the results file is not a vidseg.evaluate results-<split>.json (no global J&F-Mean, no "
                        "vpq.all); give the file vidseg.evaluate wrote, e.g. <output_dir>/results-val.json")
    return {"split": results.get("split"), "protocol": results.get("protocol"),
            "units": "fractions in [0, 1]", **{k: float(v) for k, v in numbers.items() if v is not None}}


def save_pretrained(checkpoint: Any, folder: str | os.PathLike, *, card: bool = False,
                    results: str | os.PathLike | None = None) -> Path:
    """Write ``checkpoint``'s network as a pretrained folder; returns the folder.

    Args:
        checkpoint: a path to a vidseg ``.ckpt`` (or a pretrained folder), or a ``VidsegCheckpoint``.
        folder: created if missing; it may exist only when empty or holding nothing but a previous pretrained
            folder's files (those are replaced).
        card: also write a README.md model card.
        results: a results-<split>.json written by ``vidseg.evaluate`` for this model: its headline numbers go
            into config.json's "metrics" and the card (vidseg cannot tell which model a results file scored:
            the card says the numbers were given at export).
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
    metrics = None
    if results is not None:
        from vidseg.data.panoptic import read_json

        metrics = headline_metrics(read_json(Path(results)))
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": checkpoint.task,
              "hyper_parameters": checkpoint.hyper_parameters, "vidseg_version": vidseg_version(),
              "provenance": checkpoint.provenance}
    if metrics is not None:
        config["metrics"] = metrics
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
    """A README.md for a pretrained folder from its config.json contents: what the model is, what it was trained
    on (as recorded at training), measured metrics only when given at export, the terms, the vidseg commit."""
    hparams = config.get("hyper_parameters") or {}
    net = hparams.get("net") or {}
    backbone = net.get("backbone") if isinstance(net.get("backbone"), dict) else {}
    model = {"vos": "FEELVOS", "vps": "VPSNet"}.get(config["task"], config["task"])
    variant = hparams.get("variant") or net.get("variant")
    provenance = config.get("provenance") or {}
    data = provenance.get("data") or {}
    if data:
        trained_on = (f"{data.get('dataset')} (folder {data.get('folder')}, split {data.get('train_split')}, "
                      f"validated on {data.get('val_split')})")
        if data.get("toy"):
            trained_on += ", a toy set generated by vidseg"
        if provenance.get("global_step") is not None:
            trained_on += f", {provenance['global_step']} steps"
    else:
        trained_on = "not recorded (a checkpoint written before vidseg recorded it, or converted from other code)"
    if data.get("toy"):
        terms = "trained on generated data only: Apache-2.0, as vidseg"
    else:
        terms = DATA_TERMS.get(data.get("dataset"), "those of its training data (see the dataset's licence)")
    lines = [
        f"# vidseg {model} ({config['task'].upper()})", "",
        f"- task: {config['task']}",
        f"- model: {model}" + (f", variant {variant}" if variant else ""),
        f"- backbone: {backbone.get('name', 'unknown')}",
        f"- training data: {trained_on}",
        f"- written by vidseg {config.get('vidseg_version', 'unknown')}, trained by vidseg "
        f"{provenance.get('vidseg_version', 'unknown')} at commit {provenance.get('git_commit') or 'unknown'}",
        f"- terms of use of the weights: {terms}", "",
        "## Metrics", "",
    ]
    metrics = config.get("metrics")
    if metrics:
        lines += [f"Measured by `python -m vidseg.evaluate` on split {metrics.get('split')}"
                  + (f" ({metrics['protocol']} protocol)" if metrics.get("protocol") else "")
                  + ", as given at export (`results=`):", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {100 * v:.2f} |" for k, v in metrics.items() if isinstance(v, float)]
        lines += ["", "Values in %."]
    else:
        lines += ["Not measured at export. Score it with `python -m vidseg.evaluate task=" + config["task"]
                  + " ckpt=<this folder> data.root=<data>` and export again with `results=<results-val.json>`."]
    if config.get("format") == "vidseg-onnx":  # an ONNX export (vidseg.onnx) reuses this card
        use = (f"`python -m vidseg.predict task={config['task']} ckpt=<this folder> backend=onnx input=<video> "
               "output=<dir>`; ONNX Runtime runs the graphs named in config.json (no pickle, no torch.load).")
    else:
        use = (f"`python -m vidseg.predict task={config['task']} ckpt=<this folder> input=<video> output=<dir>`; "
               "loading reads model.safetensors and config.json only (no pickle, no Hydra).")
    lines += ["", "## Use", "", use, ""]
    return "\n".join(lines)


def resolve_pretrained(source: str | os.PathLike, *, bare_hub_id: bool = True) -> Path:
    """The local folder of a pretrained model named by ``source``.

    Args:
        source: a local folder; ``hf://<owner>/<name>[@<revision>]``; or, with ``bare_hub_id`` and when no such
            local path exists, ``<owner>/<name>[@<revision>]``.
    Returns:
        the folder (a Hub model: its snapshot in the hub cache; only config.json, model.safetensors and
        README.md are fetched).
    Raises:
        DataError: a Hub id that cannot be fetched (offline and not cached, unknown repository, no network).
    """
    text = str(source)
    if not text.startswith(HUB_PREFIX) and (not bare_hub_id or Path(text).exists() or not _HUB_ID.match(text)):
        return Path(text)
    match = _HUB_ID.match(text.removeprefix(HUB_PREFIX))
    if match is None:
        raise DataError(f"{text}: not a Hugging Face Hub model id; write hf://<owner>/<name>[@<revision>]")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(match["repo"], revision=match["revision"],
                                   allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE])
    except (LocalEntryNotFoundError, HfHubHTTPError, HFValidationError, OSError) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise DataError(f"{text}: cannot get this model from the Hugging Face Hub ({reason}); check the id and the "
                        "network, or download the folder and give its path") from err
    return Path(folder)


class PretrainedTaskMixin:
    """``save_pretrained`` / ``from_pretrained`` for the task LightningModules (VOSTask, VPSTask).

    The class sets ``task_name`` ("vos" | "vps"); its network is ``self.model`` and its constructor takes the
    stored hyper-parameters (as Lightning's ``load_from_checkpoint`` does).
    """

    task_name: str

    def save_pretrained(self, folder: str | os.PathLike, *, card: bool = True) -> Path:
        """Write this module's network and hyper-parameters as a pretrained folder (see :func:`save_pretrained`)."""
        from vidseg.inference.checkpoint import VidsegCheckpoint

        if getattr(self, "model", None) is None:
            raise DataError("the network is not built yet (its classes come from the data in setup()); "
                            "save after training or give model.net.num_stuff / num_things")
        provenance = dict(getattr(self, "provenance", None) or {})
        if getattr(self, "_trainer", None) is not None:
            provenance["global_step"] = int(self.global_step)
        checkpoint = VidsegCheckpoint(path=Path("<in memory>"), task=self.task_name,
                                      hyper_parameters=_plain(dict(self.hparams)),
                                      model_state=self.model.state_dict(), provenance=provenance)
        return save_pretrained(checkpoint, folder, card=card)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, *, map_location: str | torch.device = "cpu"):
        """Build the module from a pretrained folder or Hub id (see :func:`resolve_pretrained`), weights loaded
        strictly; no pickle, no Hydra."""
        from vidseg.inference.checkpoint import load_model_state

        checkpoint = read_pretrained(resolve_pretrained(source), task=cls.task_name, map_location=map_location)
        module = cls(**checkpoint.hyper_parameters)
        module.provenance = checkpoint.provenance
        load_model_state(module.model, checkpoint)
        return module


class PretrainedPredictorMixin:
    """``from_pretrained`` / ``save_pretrained`` for the predictors (VOSPredictor, VPSPredictor).

    The class has a ``from_checkpoint(path, **kwargs)`` that sets ``checkpoint_path`` on what it returns (None for
    a predictor built from a network, or running an ONNX export); ``task_module`` names its training module for
    the error message.
    """

    checkpoint_path: str | Path | None = None
    task_module: str

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **kwargs):
        """Load a pretrained folder (or an ONNX folder) by path, or by Hugging Face Hub id ``<owner>/<name>[@rev]``
        (:func:`resolve_pretrained`; no pickle either way); ``kwargs`` as the class's ``from_checkpoint``."""
        return cls.from_checkpoint(resolve_pretrained(source), **kwargs)

    def save_pretrained(self, folder: str | os.PathLike, *, card: bool = True) -> Path:
        """Write the checkpoint this predictor was loaded from as a pretrained folder (:func:`save_pretrained`):
        the stored weights, not the inference copy (VOS ``fast`` folds BatchNorm into the convolutions)."""
        if self.checkpoint_path is None:
            raise DataError("this predictor was not loaded with from_checkpoint/from_pretrained (or runs an ONNX "
                            f"export): save the training module ({self.task_module}.save_pretrained) or the "
                            "checkpoint (vidseg.pretrained.save_pretrained) instead")
        return save_pretrained(self.checkpoint_path, folder, card=card)


def _plain(value: Any) -> Any:
    """Lightning's AttributeDict / OmegaConf containers -> dicts and lists (JSON-able as config.json needs)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency; the loader path never needs it
        pass
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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
    provenance = config.get("provenance")
    return VidsegCheckpoint(path=folder, task=found, hyper_parameters=config["hyper_parameters"], model_state=state,
                            provenance=provenance if isinstance(provenance, dict) else {})

"""Checking a composed config before any work: one line naming the key, the value and the fix.

Every entry point (train, evaluate, predict) calls :func:`check_config` first, for every task. The rules are
keyed by config key, not by task: a rule applies wherever its key exists (``data.crop_size`` in every data
config, ``fps`` in predict's, ``trainer.*`` in train's), so a task that adds a key gets its check by naming
it here, and no entry point branches on the task name.

    vidseg: error: fps=-5 is out of range: the overlay's frames per second must be > 0; give e.g. fps=25,
    or fps=null for the input video's own rate

Nothing here imports torch unless the config names a GPU (``device=cuda``, ``trainer.accelerator=gpu``),
so scoring a results folder stays quick.
"""

from __future__ import annotations

import errno
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from vidseg.errors import DataError
from vidseg.utils.device import PRECISIONS


class ConfigError(DataError):
    """A config value (from the command line or a config file) that vidseg cannot run with."""


# ----------------------------------------------------------------------------------------------------------
# Value rules: (key, check, fix). A check returns None when the value is fine, else what is wrong with it.
# ----------------------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _int_at_least(low: int, *, nullable: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not _is_int(value):
            return f"expected an integer >= {low}{' or null' if nullable else ''}, found {type(value).__name__}"
        return None if value >= low else f"out of range: must be >= {low}{' or null' if nullable else ''}"
    return check


def _positive_number(*, nullable: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not _is_number(value):
            return f"expected a finite number > 0{' or null' if nullable else ''}, found {type(value).__name__}"
        return None if value > 0 else f"out of range: must be > 0{' or null' if nullable else ''}"
    return check


def _non_negative_number(*, nullable: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not _is_number(value):
            return f"expected a finite number >= 0{' or null' if nullable else ''}, found {type(value).__name__}"
        return None if value >= 0 else f"out of range: must be >= 0{' or null' if nullable else ''}"
    return check


def _pair(item: Callable[[Any], str | None], what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            return f"expected two {what} [height, width], found {value!r}"
        return next((f"{problem} ({v!r})" for v in value if (problem := item(v))), None)
    return check


def _range_pair(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_number(v) and v > 0 for v in value):
        return f"expected two numbers > 0 [low, high], found {value!r}"
    return None if value[0] <= value[1] else "low is larger than high"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, found {type(value).__name__}"


def _precision(value: Any) -> str | None:
    return None if str(value) in PRECISIONS else f"unknown precision (known: {', '.join(PRECISIONS)})"


def _max_steps(value: Any) -> str | None:
    if not _is_int(value):
        return f"expected an integer >= 1 (or -1 for no limit), found {type(value).__name__}"
    return "out of range: must be >= 1 (or -1 for no limit)" if value == 0 or value < -1 else None


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _device_name(value: Any) -> str | None:
    return None if _DEVICE.match(str(value)) else "not a device name"


@dataclass(frozen=True)
class Rule:
    key: str
    check: Callable[[Any], str | None]
    fix: str


RULES = (
    Rule("fps", _positive_number(nullable=True),
         "the overlay's frames per second: give e.g. fps=25, or fps=null for the input video's own rate"),
    Rule("precision", _precision, "give precision=32 (default), precision=bf16-mixed or precision=16-mixed"),
    Rule("device", _device_name, "give device=auto, cpu, cuda, cuda:<index> or mps"),
    Rule("workers", _int_at_least(1, nullable=True),
         "the number of scoring processes: give e.g. workers=2, or workers=null for one per usable core"),
    Rule("overlay", _boolean, "give overlay=true or overlay=false"),
    Rule("plots", _boolean, "give plots=true or plots=false"),
    Rule("overwrite", _boolean, "give overwrite=true (replace files vidseg did not write) or overwrite=false"),
    Rule("seed", _int_at_least(0), "give an integer, e.g. seed=0"),
    Rule("data.batch_size", _int_at_least(1), "give e.g. data.batch_size=2"),
    Rule("data.num_workers", _int_at_least(0),
         "the data-loading processes: give e.g. data.num_workers=2, or 0 to load in the main process"),
    Rule("data.crop_size", _pair(_int_at_least(1), "integers >= 1"), "give e.g. data.crop_size=[465,465]"),
    Rule("data.scale", _range_pair, "the random resize range: give e.g. data.scale=[1.0,1.3]"),
    Rule("data.samples_per_epoch", _int_at_least(1), "give e.g. data.samples_per_epoch=3000"),
    Rule("data.repeat", _int_at_least(1), "give e.g. data.repeat=1"),
    Rule("data.max_frame_gap", _int_at_least(1), "give e.g. data.max_frame_gap=1"),
    Rule("data.min_object_pixels", _int_at_least(0), "give e.g. data.min_object_pixels=10"),
    Rule("data.min_object_stride", _int_at_least(1), "give e.g. data.min_object_stride=4"),
    Rule("data.min_instance_area", _int_at_least(0), "give e.g. data.min_instance_area=16"),
    Rule("data.val_max_frames", _int_at_least(1, nullable=True), "give e.g. data.val_max_frames=10, or null for all"),
    Rule("data.val_max_sequences", _int_at_least(1, nullable=True),
         "give e.g. data.val_max_sequences=5, or null for all"),
    Rule("data.val_max_videos", _int_at_least(1, nullable=True), "give e.g. data.val_max_videos=5, or null for all"),
    Rule("trainer.max_steps", _max_steps, "give e.g. trainer.max_steps=1000"),
    Rule("trainer.max_epochs", _int_at_least(-1, nullable=True), "give e.g. trainer.max_epochs=10, or null"),
    Rule("trainer.precision", _precision,
         "give trainer.precision=32 (default), trainer.precision=bf16-mixed or trainer.precision=16-mixed"),
    Rule("trainer.devices", lambda v: None if v == "auto" or v == -1 or (_is_int(v) and v >= 1) or (
        isinstance(v, (list, tuple)) and v and all(_is_int(i) and i >= 0 for i in v)) else "out of range",
         "give trainer.devices=1, a number of devices, -1 for all, or a list of device indices"),
    Rule("trainer.log_every_n_steps", _int_at_least(1), "give e.g. trainer.log_every_n_steps=10"),
    Rule("trainer.check_val_every_n_epoch", _int_at_least(1, nullable=True),
         "give e.g. trainer.check_val_every_n_epoch=1, or null"),
    Rule("trainer.gradient_clip_val", _non_negative_number(nullable=True),
         "give e.g. trainer.gradient_clip_val=5, or null for no clipping"),
    Rule("trainer.accumulate_grad_batches", _int_at_least(1), "give e.g. trainer.accumulate_grad_batches=1"),
    Rule("callbacks.last_checkpoint.every_n_steps", _int_at_least(0, nullable=True),
         "give e.g. callbacks.last_checkpoint.every_n_steps=1000, or 0 for never"),
    Rule("callbacks.last_checkpoint.every_minutes", _non_negative_number(nullable=True),
         "give e.g. callbacks.last_checkpoint.every_minutes=10, or 0 for never"),
    Rule("model.optimizer.lr", _positive_number(), "give e.g. model.optimizer.lr=0.001"),
    Rule("model.optimizer.weight_decay", _non_negative_number(), "give e.g. model.optimizer.weight_decay=1e-4"),
)


# ----------------------------------------------------------------------------------------------------------
# Paths given on the command line: say what is there when it is not what the key needs.
# ----------------------------------------------------------------------------------------------------------

FILE, FOLDER, EITHER = "file", "folder", "file or folder"

# key -> (what it must be, whether it must exist now, what it is for)
PATH_KEYS = {
    "ckpt": (FILE, True, "a checkpoint written by vidseg.train, e.g. ckpt=<run>/checkpoints/last.ckpt, a "
                         "pretrained folder (python -m vidseg.export format=pretrained), an ONNX folder "
                         "(format=onnx, with backend=onnx) or hf://<owner>/<name>"),
    "ckpt_path": (FILE, True, "the checkpoint to resume, e.g. ckpt_path=<run>/checkpoints/last.ckpt"),
    "input": (EITHER, True, "a video file or a folder of frames, e.g. input=clip.mp4"),
    "mask": (EITHER, True, "the first frame's indexed PNG or a folder of per-frame PNGs, e.g. mask=00000.png"),
    "predictions": (FOLDER, True, "the results folder to score, e.g. predictions=<method>/results"),
    "data.root": (FOLDER, False, "the dataset folder, e.g. data.root=/datasets/DAVIS"),
    "data.youtube_vos_root": (FOLDER, False, "the YouTube-VOS folder, e.g. data.youtube_vos_root=/datasets/YTVOS"),
    "data.gt_annotations": (FOLDER, True, "a folder <video>/<frame>.png with every frame annotated"),
}
OUTPUT_KEYS = {"output": "a folder for the outputs, e.g. output=results/clip",
               "output_dir": "a folder for the results, e.g. output_dir=results/davis-val"}


def describe_missing_path(path: Path) -> str:
    """What is at ``path`` when it cannot be used: "does not exist", "is a symbolic link loop", ... """
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link loop (the link points back to itself)"
        if err.errno == errno.EACCES:
            return "cannot be reached (permission denied on a parent folder)"
        if err.errno == errno.ENOTDIR:
            return "does not exist (a part of the path is a file, not a folder)"
        if err.errno == errno.ENAMETOOLONG:
            return "is too long a path name"
        if os.path.islink(path):
            return f"is a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return "does not exist"
    return ""


def _is_pretrained_folder(path: Path) -> bool:
    """A folder ``ckpt=`` takes: a pretrained folder (vidseg.export format=pretrained) or an ONNX export."""
    from vidseg.onnx.folder import is_onnx_folder
    from vidseg.pretrained import is_pretrained_folder

    return is_pretrained_folder(path) or is_onnx_folder(path)


def _check_input_path(key: str, value: Any) -> None:
    kind, must_exist, example = PATH_KEYS[key]
    if key == "ckpt" and str(value).startswith("hf://"):
        return  # a Hugging Face Hub id, resolved (and checked) by vidseg.pretrained.resolve_pretrained
    path = Path(str(value))
    problem = describe_missing_path(path)
    if problem:
        if must_exist or "loop" in problem or "broken" in problem or "permission" in problem:
            raise ConfigError(f"{key}={value}: the {kind} {problem}; give {example}")
        return  # the dataset's own message says where to get it
    if kind == FILE and path.is_dir() and not (key == "ckpt" and _is_pretrained_folder(path)):
        hint = ""
        for guess in ("checkpoints/last.ckpt", "last.ckpt"):
            if (path / guess).is_file():
                hint = f" (did you mean {key}={path / guess}?)"
                break
        raise ConfigError(f"{key}={value}: is a folder, not a file{hint}; give {example}")
    if kind == FOLDER and not path.is_dir():
        raise ConfigError(f"{key}={value}: is a file, not a folder; give {example}")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise ConfigError(f"{key}={value}: the {kind} cannot be read (permission denied); make it readable "
                          f"(chmod u+r) or give {example}")


def _check_output_path(key: str, value: Any) -> None:
    path = Path(str(value))
    problem = describe_missing_path(path)
    if not problem:
        if not path.is_dir():
            raise ConfigError(f"{key}={value}: is an existing file, not a folder; vidseg writes several files "
                              f"into it: give {OUTPUT_KEYS[key]}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{key}={value}: the folder is not writable (permission denied); make it writable "
                              f"(chmod u+w) or give another folder, {OUTPUT_KEYS[key]}")
        return
    if "loop" in problem or "broken" in problem or "a part of the path" in problem:
        raise ConfigError(f"{key}={value}: {problem}; give {OUTPUT_KEYS[key]}")
    # A new folder: its nearest existing parent must be a writable folder.
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={value}: cannot be created, {parent} is not a writable folder; "
                          f"give {OUTPUT_KEYS[key]}")


# ----------------------------------------------------------------------------------------------------------
# Devices: refused before any work when the machine does not have them.
# ----------------------------------------------------------------------------------------------------------


def _check_device(key: str, value: Any) -> None:
    name = str(value)
    if name in ("auto", "cpu"):
        return
    import torch

    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if count == 0:
            raise ConfigError(f"{key}={name}: this machine has no CUDA GPU that PyTorch can use "
                              f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'not built in'}); "
                              f"give {key}=cpu or {key}=auto")
        if index >= count:
            raise ConfigError(f"{key}={name}: there is no GPU {index}, this machine has {count} "
                              f"(cuda:0{f' .. cuda:{count - 1}' if count > 1 else ''}); give {key}=cuda:0 or "
                              f"{key}=auto")
    elif name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{key}=mps: Apple's MPS is not available on this machine; give {key}=cpu or {key}=auto")


def _check_accelerator(cfg: DictConfig) -> None:
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    if accelerator in ("auto", "cpu"):
        return
    if accelerator in ("gpu", "cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = OmegaConf.select(cfg, "trainer.devices", default=1)
        if count == 0:
            raise ConfigError(f"trainer.accelerator={accelerator}: this machine has no CUDA GPU that PyTorch can use; "
                              "give trainer=cpu (or trainer.accelerator=auto)")
        wanted = len(devices) if isinstance(devices, (list, ListConfig)) else devices
        if _is_int(wanted) and wanted > count:
            raise ConfigError(f"trainer.devices={devices}: this machine has {count} GPU(s); give "
                              f"trainer.devices={count} or trainer.devices=-1 for all")
    elif accelerator == "mps":
        _check_device("trainer.accelerator", "mps")
    elif accelerator not in ("tpu", "hpu", "ipu"):
        raise ConfigError(f"trainer.accelerator={accelerator}: not an accelerator Lightning knows; give "
                          "trainer.accelerator=auto, cpu or gpu (or trainer=cpu / trainer=gpu)")


# ----------------------------------------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------------------------------------


def _missing_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    missing = []
    for key in cfg.keys():
        if not prefix and key == "hydra":
            continue
        if OmegaConf.is_missing(cfg, key):
            missing.append(f"{prefix}{key}")
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_interpolation() and not node._is_none():
            missing.extend(_missing_keys(node, f"{prefix}{key}."))
    return missing


def _resolve_all(cfg: DictConfig, sections: tuple[str, ...] | None) -> None:
    """Resolve the values the command reads once, so a bad interpolation is reported here, naming its key.

    ``sections``: the config groups the command reads besides its top-level values (None: all). evaluate and
    predict build the model from the checkpoint, and their ``model`` group refers to ``trainer``, which only
    train has: it is not theirs to resolve.
    """
    for key in cfg.keys():
        if key == "hydra" or (sections is not None and key not in sections
                              and isinstance(cfg._get_node(key), (DictConfig, ListConfig))):
            continue
        try:
            node = cfg[key]
            if isinstance(node, (DictConfig, ListConfig)):
                OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as err:
            raise ConfigError(f"{err.full_key or key}: no value given; give {err.full_key or key}=<value>") from err
        except OmegaConfBaseException as err:
            where = getattr(err, "full_key", None) or key
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"{where}: cannot be resolved ({message}); check the value given on the command line "
                              "or in the config file") from err


def check_config(cfg: DictConfig, *, command: str, example: str) -> None:
    """Refuse, with one line naming the key, a config that ``python -m vidseg.<command>`` cannot run.

    Args:
        cfg: the composed config.
        command: "train", "evaluate" or "predict", for the messages.
        example: a complete example command line, quoted when a mandatory value is missing.

    Raises:
        ConfigError: a mandatory value is missing, a value does not resolve, a value is out of its range,
            a path is not what its key needs, or a device is not on this machine.
    """
    missing = _missing_keys(cfg)
    if missing:
        keys = ", ".join(f"{k}=" for k in missing)
        raise ConfigError(f"python -m vidseg.{command} needs {keys} (no value given): e.g. {example}")
    _resolve_all(cfg, None if command == "train" else ("data",))
    for rule in RULES:
        parent, _, leaf = rule.key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf not in node:
            continue
        value = node[leaf]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        problem = rule.check(value)
        if problem:
            shown = str(value).replace(" ", "") if isinstance(value, (list, tuple)) else value
            raise ConfigError(f"{rule.key}={shown}: {problem}; {rule.fix}")
    if "device" in cfg:
        _check_device("device", cfg.device)
    if "trainer" in cfg:
        _check_accelerator(cfg)
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            _check_input_path(key, value)
    for key, _ in OUTPUT_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            _check_output_path(key, value)


def user_paths(cfg: DictConfig) -> list[str]:
    """The paths the user gave (inputs, checkpoints, dataset roots, outputs): an OSError on one of them, or
    inside one, is the user's to fix (:func:`vidseg.utils.cli.run_cli`)."""
    paths = []
    for key in (*PATH_KEYS, *OUTPUT_KEYS, "backbone.weights"):
        try:
            value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        except OmegaConfBaseException:
            continue
        if isinstance(value, (str, os.PathLike)) and str(value) not in ("", "???"):
            paths.append(str(value))
    return paths

"""Convert released checkpoints of other code bases to vidseg checkpoints.

    python -m vidseg.convert vpsnet-official latest.pth vpsnet_official.ckpt [--flownet2 FlowNet2_checkpoint.pth.tar]

``vpsnet-official``: the authors' VPSNet (mcahny/vps, mmdetection v1) Cityscapes-VPS fusetrack checkpoint ->
a vidseg VPS checkpoint of the same network (ResNet-50-FPN, FlowNet2 initial flow in plain PyTorch), which
``python -m vidseg.evaluate task=vps ckpt=...`` and ``python -m vidseg.predict task=vps ckpt=...`` take. The key
map and its checks live beside the model (:mod:`vidseg.models.vpsnet.official_keys`); every official key must
find its place and every vidseg weight must be filled, else the command stops with one line naming the keys.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, nothing that runs
code. mmcv's checkpoints ({"meta", "state_dict", "optimizer"}) normally pass; a file whose "meta" pickled other
Python objects is refused unread, and ``--trust-pickle`` loads it fully (only for a file from a source you trust).
"""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from vidseg.errors import DataError
from vidseg.utils.cli import run_cli

USAGE_EXAMPLE = ("python -m vidseg.convert vpsnet-official work_dirs/cityscapes_vps/fusetrack_vpct/latest.pth "
                 "vpsnet_official.ckpt")
CONVERTED_FROM_KEY = "vidseg_converted_from"
OFFICIAL_OPTIMIZER = {"_target_": "torch.optim.SGD", "lr": 0.005, "momentum": 0.9, "weight_decay": 1.0e-4}


def _load(path: Path, *, what: str, trust_pickle: bool) -> Any:
    from vidseg.utils.torch_files import load_failure_reason

    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}" if not path.exists() else f"{what} {path} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError,
            TypeError, ModuleNotFoundError) as err:
        hint = ("" if trust_pickle else "; if the file is from a source you trust and its 'meta' holds other Python "
                "objects, add --trust-pickle to load it fully")
        raise DataError(f"{path}: cannot load the {what} ({load_failure_reason(err)}); expected a PyTorch checkpoint "
                        f"file{hint}") from err


def _state_dict(raw: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of an mmcv / flownet2-pytorch checkpoint ({"state_dict": ...}) or of a bare state dict;
    a DataParallel "module." prefix on every key is removed."""
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: the {what} holds no state dict of tensors (expected {{'state_dict': {{name: "
                        "tensor}}, ...}} as mmcv and flownet2-pytorch save it)")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def convert_vpsnet_official(official: str | os.PathLike, output: str | os.PathLike, *,
                            flownet2: str | os.PathLike | None = None, trust_pickle: bool = False,
                            overwrite: bool = False) -> dict[str, Any]:
    """Write a vidseg VPS checkpoint of the official VPSNet weights (see the module docstring).

    Args:
        official: the official checkpoint (latest.pth of configs/cityscapes/fusetrack.py).
        output: the vidseg checkpoint to write (atomically).
        flownet2: FlowNet2_checkpoint.pth.tar (flownet2-pytorch); needed only when the official file lacks the
            ``flownet2.*`` weights; when given, it replaces them.
        trust_pickle: load the inputs with ``weights_only=False`` (only for files you trust).
        overwrite: replace ``output`` if it exists.
    Returns:
        {"output": path, "tensors": converted count, "dropped": official keys dropped on purpose}.
    Raises:
        DataError (one line on the command line): unreadable input, or keys/shapes that do not fit.
    """
    from vidseg.data.cityscapes_vps import CITYSCAPES_VPS_CATEGORIES
    from vidseg.data.io import atomic_path
    from vidseg.inference.checkpoint import build_checkpoint
    from vidseg.models.vpsnet import build_vpsnet
    from vidseg.models.vpsnet.official_keys import DROPPED, OFFICIAL_NET, convert_official_state
    from vidseg.tasks.vps import DEFAULT_SCHEDULER

    official, output = Path(official), Path(output)
    if output.exists() and not overwrite:
        raise DataError(f"{output} exists; give another output path or add --overwrite to replace it")
    inputs = [official] + ([Path(flownet2)] if flownet2 is not None else [])
    if any(output.resolve() == p.resolve() for p in inputs if p.exists()):
        raise DataError(f"{output} is an input of the conversion; give another output path")
    state = _state_dict(_load(official, what="official VPSNet checkpoint", trust_pickle=trust_pickle), official,
                        "official VPSNet checkpoint")
    flow_state = None
    if flownet2 is not None:
        path = Path(flownet2)
        flow_state = _state_dict(_load(path, what="FlowNet2 checkpoint", trust_pickle=trust_pickle), path,
                                 "FlowNet2 checkpoint")
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        expected = build_vpsnet(**copy.deepcopy(OFFICIAL_NET)).state_dict()
    converted = convert_official_state(state, expected, source=str(official), flownet2=flow_state,
                                       flownet2_source=str(flownet2) if flownet2 is not None else None)
    dropped = [k for k in state if DROPPED.fullmatch(k)]
    hyper_parameters = {
        "net": copy.deepcopy(OFFICIAL_NET), "variant": OFFICIAL_NET["variant"],
        "optimizer": dict(OFFICIAL_OPTIMIZER), "scheduler": dict(DEFAULT_SCHEDULER), "grad_clip_norm": 35.0,
        "lr_reference_batch": 8, "categories": [dict(c, color=list(c["color"])) for c in CITYSCAPES_VPS_CATEGORIES],
        "val_precision": "32",
    }
    provenance = {"format": "vpsnet-official", "file": official.name,
                  "flownet2": Path(flownet2).name if flownet2 is not None else None}
    checkpoint = build_checkpoint("vps", hyper_parameters, converted, **{CONVERTED_FROM_KEY: provenance})
    with atomic_path(output) as tmp:
        torch.save(checkpoint, tmp)
    return {"output": str(output), "tensors": len(converted), "dropped": dropped}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vidseg.convert",
                                     description="Convert released checkpoints to vidseg checkpoints.",
                                     epilog=f"Example: {USAGE_EXAMPLE}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{vpsnet-official}")
    official = commands.add_parser(
        "vpsnet-official", help="the authors' VPSNet Cityscapes-VPS fusetrack checkpoint (mcahny/vps, mmdetection v1)",
        description="Map every weight of the official VPSNet (configs/cityscapes/fusetrack.py) onto vidseg's VPSNet "
                    "with FlowNet2 in plain PyTorch; the result works with vidseg.evaluate / vidseg.predict task=vps.")
    official.add_argument("official", help="the official checkpoint, e.g. work_dirs/cityscapes_vps/fusetrack_vpct/"
                                           "latest.pth")
    official.add_argument("output", help="the vidseg checkpoint to write, e.g. vpsnet_official.ckpt")
    official.add_argument("--flownet2", metavar="FILE",
                          help="FlowNet2_checkpoint.pth.tar (flownet2-pytorch): needed only if the official file lacks "
                               "the flownet2.* weights; replaces them when given")
    official.add_argument("--trust-pickle", action="store_true",
                          help="load the inputs with weights_only=False (runs pickled code: only for trusted files)")
    official.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    return parser


def main(argv: list[str] | None = None) -> None:
    """``python -m vidseg.convert``."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    paths = [p for p in (args.official, args.output, args.flownet2) if p]

    def work() -> None:
        summary = convert_vpsnet_official(args.official, args.output, flownet2=args.flownet2,
                                          trust_pickle=args.trust_pickle, overwrite=args.overwrite)
        print(f"vidseg: wrote {summary['output']}: {summary['tensors']} tensors of the official VPSNet "
              f"({len(summary['dropped'])} BatchNorm counters dropped). Use it with: python -m vidseg.predict "
              f"task=vps ckpt={summary['output']} input=<video> output=<dir>")

    run_cli(work, user_paths=lambda: paths)


if __name__ == "__main__":
    main()

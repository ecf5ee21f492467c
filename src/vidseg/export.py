"""Export a trained model: ``python -m vidseg.export format=pretrained|onnx ckpt=<ckpt> output=<dir>``.

``format=pretrained``: a pretrained folder (model.safetensors + config.json + a README.md model card, see
:mod:`vidseg.pretrained`) that ``vidseg.predict``, ``vidseg.evaluate`` and the predictors' ``from_checkpoint``
take as ``ckpt=``, and that loads without pickle or Hydra.

``format=onnx``: an ONNX folder (config.json + the per-frame graphs, see :mod:`vidseg.onnx`) that
``vidseg.predict backend=onnx`` and the predictors' ``from_checkpoint`` run with ONNX Runtime: task=vos, FEELVOS's
step (opset 18, :mod:`vidseg.onnx.feelvos`); task=vps, VPSNet's backbone/heads/box_head/instance_head graphs
(opset 19, :mod:`vidseg.onnx.vpsnet`). Each module says what is inside its graphs and what is not.

``task=`` is optional: the checkpoint says its task, and a ``task=`` that differs is refused. Arguments are
``key=value`` like the other commands, but parsed here without Hydra (nothing else to configure).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vidseg.errors import DataError
from vidseg.utils.cli import run_cli

USAGE = """usage: python -m vidseg.export [task=vos|vps] format=pretrained|onnx ckpt=<file.ckpt | folder> output=<dir>

  format=pretrained   model.safetensors + config.json + README.md (loads with no pickle, no Hydra)
  format=onnx         config.json + the per-frame network as ONNX graphs, run by python -m vidseg.predict
                      backend=onnx: FEELVOS's step.onnx (opset 18) or VPSNet's four graphs (opset 19)
  task=vos|vps        optional: the checkpoint's task (checked)
  ckpt=<file>         a checkpoint written by vidseg.train, e.g. <run>/checkpoints/last.ckpt (or a pretrained folder)
  output=<dir>        the folder to write (new, empty, or a previous export of the same format)
  results=<json>      optional: the results-<split>.json vidseg.evaluate wrote for this model; its numbers go
                      into the model card (README.md, written into every export)

Examples:
  python -m vidseg.export format=pretrained ckpt=runs/feelvos/checkpoints/last.ckpt output=pretrained/feelvos
  python -m vidseg.export task=vos format=onnx ckpt=runs/feelvos/checkpoints/last.ckpt output=onnx/feelvos
"""
KEYS = ("task", "format", "ckpt", "output", "results")
REQUIRED = ("format", "ckpt", "output")
FORMATS = ("pretrained", "onnx")
TASKS = ("vos", "vps")
# Tasks with an ONNX exporter: task -> "module:function" (function(checkpoint, folder) -> folder).
ONNX_EXPORTERS = {"vos": "vidseg.onnx.feelvos:export_feelvos", "vps": "vidseg.onnx.vpsnet:export_vpsnet"}
EXAMPLE = "python -m vidseg.export format=pretrained ckpt=<run>/checkpoints/last.ckpt output=<dir>"


def parse_args(argv: list[str]) -> dict[str, str]:
    """``["format=pretrained", "ckpt=a.ckpt", "output=d"]`` -> {"format": ..., "ckpt": ..., "output": ...};
    raises DataError (one line) for an argument that is not ``key=value``, an unknown or missing key, an unknown
    format or task, or format=onnx for a task without an ONNX exporter."""
    args: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS or not value:
            raise DataError(f"unexpected argument {arg!r}; expected [task=<vos|vps>] "
                            f"{' '.join(k + '=<...>' for k in REQUIRED)}, e.g. {EXAMPLE}")
        args[key] = value
    if args.get("format") not in (None, *FORMATS):
        raise DataError(f"format={args['format']}: unknown export format; give format=pretrained or format=onnx")
    if args.get("task") not in (None, *TASKS):
        raise DataError(f"task={args['task']}: unknown task; give task=vos or task=vps (or leave it out: the "
                        "checkpoint says its task)")
    if args.get("format") == "onnx" and args.get("task") not in (None, *ONNX_EXPORTERS):
        # before asking for the rest: nothing would be written anyway
        raise DataError(f"format=onnx: ONNX export of task={args['task']} is not built yet (built: "
                        f"{', '.join(ONNX_EXPORTERS)}); use format=pretrained (safetensors + config.json)")
    missing = [k for k in REQUIRED if k not in args]
    if missing:
        raise DataError(f"missing {', '.join(k + '=' for k in missing)}; e.g. {EXAMPLE}")
    return args


def export(args: dict[str, str]) -> Path:
    """Write the export ``args`` describe (see :func:`parse_args`); returns the folder written."""
    import importlib

    from vidseg.data.io import write_text_atomic
    from vidseg.data.panoptic import read_json
    from vidseg.inference.checkpoint import read_checkpoint
    from vidseg.pretrained import CARD_FILE, headline_metrics, model_card, save_pretrained, vidseg_version

    checkpoint = read_checkpoint(args["ckpt"], task=args.get("task"))
    if args["format"] == "pretrained":  # reads results= itself, before writing anything
        return save_pretrained(checkpoint, args["output"], card=True, results=args.get("results"))
    # read before the exporter writes: a wrong results file leaves no half-made export
    metrics = headline_metrics(read_json(Path(args["results"]))) if args.get("results") else None
    if checkpoint.task not in ONNX_EXPORTERS:
        raise DataError(f"{args['ckpt']}: a task={checkpoint.task} checkpoint; ONNX export of task={checkpoint.task} "
                        f"is not built yet (built: {', '.join(ONNX_EXPORTERS)}); use format=pretrained")
    module, _, function = ONNX_EXPORTERS[checkpoint.task].partition(":")
    folder = Path(getattr(importlib.import_module(module), function)(args["ckpt"], args["output"]))
    card = {"format": "vidseg-onnx", "task": checkpoint.task, "hyper_parameters": checkpoint.hyper_parameters,
            "vidseg_version": vidseg_version(), "provenance": checkpoint.provenance,
            **({"metrics": metrics} if metrics else {})}
    write_text_atomic(folder / CARD_FILE, model_card(card))
    return folder


def main(argv: list[str] | None = None) -> None:
    """``python -m vidseg.export``: one line on stderr and exit status 2 for a user error."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--help" in argv or "-h" in argv:
        print(USAGE, end="")
        return

    def work() -> None:
        args = parse_args(argv)
        folder = export(args)
        config = json.loads((folder / "config.json").read_text())
        files = ", ".join(sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")))
        backend = " backend=onnx" if args["format"] == "onnx" else ""
        print(f"vidseg: wrote {folder}/ ({files}). Use it with: python -m vidseg.predict task={config['task']} "
              f"ckpt={folder}{backend} input=<video> output=<dir>")

    run_cli(work, user_paths=lambda: [a.partition("=")[2] for a in argv if a.startswith(("ckpt=", "output="))])


if __name__ == "__main__":
    main()

"""Export a trained model: ``python -m vidseg.export format=pretrained ckpt=<file.ckpt> output=<dir>``.

``format=pretrained``: a pretrained folder (model.safetensors + config.json + a README.md model card, see
:mod:`vidseg.pretrained`) that ``vidseg.predict``, ``vidseg.evaluate`` and the predictors' ``from_checkpoint``
take as ``ckpt=``, and that loads without pickle or Hydra. ``format=onnx`` is not built yet.

Arguments are ``key=value`` like the other commands, but parsed here without Hydra (nothing else to configure).
"""

from __future__ import annotations

import json
import sys

from vidseg.errors import DataError
from vidseg.utils.cli import run_cli

USAGE = """usage: python -m vidseg.export format=pretrained ckpt=<file.ckpt> output=<dir>

  format=pretrained   model.safetensors + config.json + README.md (loads with no pickle, no Hydra)
  format=onnx         not built yet
  ckpt=<file>         a checkpoint written by vidseg.train, e.g. <run>/checkpoints/last.ckpt
  output=<dir>        the folder to write (new, empty, or a previous export of the same name)

Example: python -m vidseg.export format=pretrained ckpt=runs/feelvos/checkpoints/last.ckpt output=pretrained/feelvos
"""
KEYS = ("format", "ckpt", "output")
FORMATS = ("pretrained", "onnx")


def parse_args(argv: list[str]) -> dict[str, str]:
    """``["format=pretrained", "ckpt=a.ckpt", "output=d"]`` -> {"format": ..., "ckpt": ..., "output": ...};
    raises DataError (one line) for an argument that is not ``key=value``, an unknown or missing key."""
    args: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS or not value:
            raise DataError(f"unexpected argument {arg!r}; expected {' '.join(k + '=<...>' for k in KEYS)}, e.g. "
                            "python -m vidseg.export format=pretrained ckpt=<run>/checkpoints/last.ckpt output=<dir>")
        args[key] = value
    missing = [k for k in KEYS if k not in args]
    if args.get("format") not in (None, *FORMATS):
        raise DataError(f"format={args['format']}: unknown export format; give format=pretrained")
    if args.get("format") == "onnx":  # before asking for the rest: nothing would be written anyway
        raise DataError("format=onnx: ONNX export is not built yet; use format=pretrained (safetensors + config.json)")
    if missing:
        raise DataError(f"missing {', '.join(k + '=' for k in missing)}; e.g. python -m vidseg.export "
                        "format=pretrained ckpt=<run>/checkpoints/last.ckpt output=<dir>")
    return args


def main(argv: list[str] | None = None) -> None:
    """``python -m vidseg.export``: one line on stderr and exit status 2 for a user error."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--help" in argv or "-h" in argv:
        print(USAGE, end="")
        return

    def work() -> None:
        from vidseg.pretrained import CONFIG_FILE, save_pretrained

        args = parse_args(argv)
        folder = save_pretrained(args["ckpt"], args["output"], card=True)
        task = json.loads((folder / CONFIG_FILE).read_text())["task"]
        print(f"vidseg: wrote {folder}/ (model.safetensors, config.json, README.md). Use it with: "
              f"python -m vidseg.predict task={task} ckpt={folder} input=<video> output=<dir>")

    run_cli(work, user_paths=lambda: [a.partition("=")[2] for a in argv if a.startswith(("ckpt=", "output="))])


if __name__ == "__main__":
    main()

"""Shared helpers: padding, device/precision resolution and the entry points' error handling."""

from __future__ import annotations

import pytest
import torch

from vidseg.errors import DataError
from vidseg.utils.cli import run_cli
from vidseg.utils.device import autocast_dtype, resolve_device
from vidseg.utils.padding import pad_to_multiple, padded_size


def test_pad_to_multiple_pads_bottom_right_only():
    x = torch.ones(1, 5, 7)
    padded = pad_to_multiple(x, 4, value=255)
    assert padded.shape == (1, 8, 8) and padded_size(5, 7, 4) == (8, 8)
    assert (padded[:, :5, :7] == 1).all() and (padded[:, 5:] == 255).all() and (padded[:, :, 7:] == 255).all()
    assert pad_to_multiple(x, 1) is x


def test_device_and_precision():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert autocast_dtype("32") is None and autocast_dtype("bf16-mixed") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        autocast_dtype("fp8")


def test_user_errors_print_one_line_and_exit_2(capsys):
    def bad():
        raise DataError("x.png: expected RGB,\n  found palette; convert it")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(bad)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "vidseg: error: x.png: expected RGB, found palette; convert it\n"
    assert run_cli(lambda: 3) == 3


def test_debug_env_keeps_the_traceback(monkeypatch):
    monkeypatch.setenv("VIDSEG_DEBUG", "1")
    with pytest.raises(DataError):
        run_cli(lambda: (_ for _ in ()).throw(DataError("bad")))


def test_bugs_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 / 0)

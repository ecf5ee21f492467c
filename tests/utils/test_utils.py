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


def test_run_cli_turns_the_garbage_collector_back_on():
    import gc

    gc.disable()  # what vidseg.evaluate does while Hydra composes
    try:
        assert run_cli(gc.isenabled) is True
    finally:
        gc.enable()


def test_exit_now_flushes_output_and_logs_then_exits_with_the_status(tmp_path):
    import os
    import subprocess
    import sys

    log = tmp_path / "run.log"
    code = (
        "import logging, sys\n"
        "from vidseg.utils.cli import exit_now\n"
        f"logging.basicConfig(filename={str(log)!r}, level=logging.INFO)\n"
        "logging.info('logged line')\n"
        "sys.stdout.write('no newline at the end')\n"
        "sys.stderr.write('to stderr')\n"
        "exit_now(3)\n"
        "print('never')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as in most shells
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 3
    assert proc.stdout == "no newline at the end" and proc.stderr == "to stderr"
    assert "logged line" in log.read_text()


@pytest.mark.parametrize(("argv", "skipped"), [
    (["task=vos", "data.root=/d", "predictions=/p"], True),
    ([], True),
    (["task=vos", "-m", "workers=1,2"], False),
    (["--multirun", "task=vos"], False),
    (["task=vos", "hydra.mode=MULTIRUN"], False),
    (["task=vos", "+hydra.mode=MULTIRUN"], False),
    (["experiment=toy_vos"], False),
    (["+experiment=mine"], False),
    (["--config-dir", "/my/conf"], False),
    (["--config-dir=/my/conf"], False),
    (["-cd", "/my/conf"], False),
    (["hydra/launcher=joblib"], False),
    (["hydra.searchpath=[file:///x]"], False),
    (["--cfg", "job"], False),
])
def test_hydra_mode_probe_is_skipped_only_when_the_command_line_cannot_ask_for_a_multirun(
        monkeypatch, argv, skipped):
    from hydra._internal.hydra import Hydra

    from vidseg.utils.cli import skip_hydra_mode_probe

    original = Hydra.get_mode
    monkeypatch.setattr(Hydra, "get_mode", original)  # restored after the test, whatever happens
    assert skip_hydra_mode_probe(argv) is skipped
    assert (Hydra.get_mode is original) is not skipped
    if skipped:
        assert Hydra.get_mode(object(), "evaluate", list(argv)) is None  # Hydra's answer when no config sets it

"""The command line's own rules: config values checked before any work (each range at its exact boundary),
missing values and bad interpolations as one line, OSErrors on the user's paths as one line (and vidseg's own
as tracebacks), ``--help`` with the options that matter first, ``VIDSEG_DEBUG=1``, and the one-line message
for resuming a checkpoint of another configuration."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers.bad_files import make_symlink_loop, read_only_folder
from tests.helpers.training_runs import subprocess_env
from vidseg.inference.checkpoint import CheckpointError, VidsegCheckpoint, check_resume_fits, config_differences
from vidseg.utils.cli import run_cli
from vidseg.utils.config_check import ConfigError, check_config, describe_missing_path, user_paths

EXAMPLE = "python -m vidseg.predict task=vos ckpt=a.ckpt input=clip.mp4"


def _check(values: dict, command: str = "predict") -> None:
    check_config(OmegaConf.create(values), command=command, example=EXAMPLE)


# ------------------------------------------------------------------------ value ranges, at their boundaries


@pytest.mark.parametrize("key, good, bad", [
    ("fps", [None, 0.001, 25], [0, -5, "fast", float("nan"), True]),
    ("workers", [None, 1, 8], [0, -1, 1.5]),
    ("precision", ["32", 32, "32-true", "bf16-mixed", "16-mixed", "bf16", 16], ["fp8", "64", "16-true", 8]),
    ("device", ["auto", "cpu"], ["gpu", "cuda:x", "cuda:-1", "tpu"]),
    ("overlay", [True, False], ["maybe", 1]),
    ("overwrite", [True, False], ["yes", 0]),
    ("data.batch_size", [1, 4], [0, -1, 2.5, "two"]),
    ("data.num_workers", [0, 3], [-1, None]),
    ("data.crop_size", [[1, 1], [465, 465]], [[0, 1], [64], [64, 64, 64], [64, 64.5], 64]),
    ("data.scale", [[1.0, 1.0], [0.8, 1.5]], [[1.3, 1.0], [0, 1.0], [1.0]]),
    ("data.val_max_frames", [None, 1], [0]),
    ("trainer.max_steps", [-1, 1], [0, -2, "abc"]),
    ("trainer.max_epochs", [None, -1, 3], [-2]),
    ("trainer.precision", ["32", "bf16-mixed", "16-mixed"], ["fp8", "transformer-engine"]),
    ("trainer.devices", [1, -1, "auto", [0, 1]], [0, -2, []]),
    ("trainer.log_every_n_steps", [1], [0]),
    ("trainer.gradient_clip_val", [None, 0, 5.0], [-1]),
    ("model.optimizer.lr", [1e-6], [0, -0.1]),
])
def test_every_range_is_checked_at_its_boundary(key, good, bad):
    def config(value):
        tree: dict = {}
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        return tree

    for value in good:
        _check(config(value))
    for value in bad:
        with pytest.raises(ConfigError) as err:
            _check(config(value))
        message = str(err.value)
        assert message.startswith(f"{key}="), message  # the key, the value found ...
        assert "give" in message, message               # ... and the fix


def test_a_missing_mandatory_value_names_every_missing_key_and_an_example():
    with pytest.raises(ConfigError) as err:
        _check({"ckpt": "???", "input": "???", "mask": None})
    assert "ckpt=, input=" in str(err.value) and EXAMPLE in str(err.value)


def test_an_interpolation_that_does_not_resolve_names_its_key():
    with pytest.raises(ConfigError, match=r"^fps: cannot be resolved .*nowhere"):
        _check({"fps": "${nowhere}"})
    with pytest.raises(ConfigError, match=r"^data\.batch_size: cannot be resolved"):
        _check({"data": {"batch_size": "${nowhere}"}})


def test_only_train_resolves_the_model_group():
    # evaluate/predict build the model from the checkpoint; their model group refers to trainer.*, absent there
    _check({"model": {"val_precision": "${trainer.precision}"}}, command="predict")
    with pytest.raises(ConfigError, match="model.val_precision"):
        _check({"model": {"val_precision": "${trainer.precision}"}}, command="train")


# ------------------------------------------------------------------------------------------------ devices


def test_a_gpu_the_machine_does_not_have_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match=r"^device=cuda: this machine has no CUDA GPU.*device=cpu"):
        _check({"device": "cuda"})
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu: .*no CUDA GPU.*trainer=cpu"):
        _check({"trainer": {"accelerator": "gpu", "devices": 1}}, command="train")


def test_a_gpu_index_past_the_last_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _check({"device": "cuda:0"})
    _check({"device": "cuda"})
    with pytest.raises(ConfigError, match=r"^device=cuda:1: there is no GPU 1, this machine has 1"):
        _check({"device": "cuda:1"})
    _check({"trainer": {"accelerator": "gpu", "devices": 1}}, command="train")
    with pytest.raises(ConfigError, match=r"^trainer.devices=2: this machine has 1 GPU"):
        _check({"trainer": {"accelerator": "gpu", "devices": 2}}, command="train")


# -------------------------------------------------------------------------------------------------- paths


def test_what_is_at_a_path_is_said_not_just_not_found(tmp_path):
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    assert describe_missing_path(tmp_path / "nothing") == "does not exist"
    assert "symbolic link loop" in describe_missing_path(make_symlink_loop(tmp_path / "loop"))
    assert "broken symbolic link" in describe_missing_path(tmp_path / "dangling")
    assert "a part of the path is a file" in describe_missing_path(tmp_path / "file" / "below")
    assert describe_missing_path(tmp_path / "file") == ""


def test_input_paths_must_be_what_their_key_needs(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"ckpt=.*: is a folder, not a file \(did you mean ckpt=.*last.ckpt\?\)"):
        _check({"ckpt": str(run)})
    with pytest.raises(ConfigError, match=r"ckpt=.*loop.ckpt: the file is a symbolic link loop"):
        _check({"ckpt": str(make_symlink_loop(tmp_path / "loop.ckpt"))})
    with pytest.raises(ConfigError, match=r"input=.*none.mp4: the file or folder does not exist"):
        _check({"input": str(tmp_path / "none.mp4")})
    with pytest.raises(ConfigError, match=r"predictions=.*last.ckpt: is a file, not a folder"):
        _check({"predictions": str(run / "checkpoints" / "last.ckpt")})
    _check({"data": {"root": str(tmp_path / "not_yet")}})  # the dataset's own message says where to get it


def test_output_must_be_a_writable_folder(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(ConfigError, match=r"^output=.*notes.txt: is an existing file, not a folder"):
        _check({"output": str(notes)})
    with pytest.raises(ConfigError, match=r"^output_dir=.*notes.txt/new: cannot be created|a part of the path"):
        _check({"output_dir": str(notes / "new")})
    _check({"output": str(tmp_path / "new" / "deeper")})  # created by the command
    with read_only_folder(tmp_path / "locked") as locked:
        with pytest.raises(ConfigError, match=r"^output=.*locked: the folder is not writable"):
            _check({"output": str(locked)})
        with pytest.raises(ConfigError, match=r"^output=.*locked/new: cannot be created"):
            _check({"output": str(locked / "new")})


# ---------------------------------------------------------------------------------------------- run_cli


def test_a_missing_value_met_by_the_work_is_one_line(capsys):
    cfg = OmegaConf.create({"ckpt": "???"})
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: cfg.ckpt)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("vidseg: error: ckpt: Missing mandatory value") and "ckpt=<value>" in err


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC, errno.ELOOP])
def test_an_oserror_on_a_users_path_is_one_line_naming_it(capsys, tmp_path, code):
    target = tmp_path / "out" / "masks" / "00000.png"

    def work():
        raise OSError(code, os.strerror(code), str(target))

    with pytest.raises(SystemExit) as exit_info:
        run_cli(work, user_paths=lambda: [tmp_path / "out"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and f"vidseg: error: {target}: " in err


def test_a_full_disk_is_one_line_even_without_a_file_name(capsys):
    with pytest.raises(SystemExit):
        run_cli(lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    assert capsys.readouterr().err == ("vidseg: error: No space left on device while writing; free some space, "
                                       "or give a path on another disk\n")


def test_an_oserror_elsewhere_keeps_its_traceback(tmp_path):
    def work():
        raise PermissionError(errno.EACCES, "Permission denied", "/usr/lib/somewhere")

    with pytest.raises(PermissionError):
        run_cli(work, user_paths=lambda: [tmp_path / "out"])
    with pytest.raises(OSError):  # an errno that says nothing about the user's path: a bug, traceback kept
        run_cli(lambda: (_ for _ in ()).throw(OSError(errno.EBADF, "Bad file descriptor", str(tmp_path))),
                user_paths=lambda: [tmp_path])


def test_user_paths_are_the_command_lines_paths():
    cfg = OmegaConf.create({"ckpt": "a.ckpt", "input": "???", "output": "out", "data": {"root": "d"},
                            "backbone": {"weights": None}, "fps": 3})
    assert sorted(user_paths(cfg)) == ["a.ckpt", "d", "out"]


# --------------------------------------------------------------------------------------- resume mismatch


def test_config_differences_name_the_keys_and_both_values_but_not_filled_in_ones():
    saved = {"variant": "fusetrack", "net": {"num_stuff": 11, "fpn_channels": 32, "variant": "fusetrack"},
             "categories": [{"id": 0}]}
    current = {"_target_": "x", "variant": "image", "net": {"num_stuff": None, "fpn_channels": 64},
               "categories": None}
    assert config_differences(saved, current) == [
        "model.net.fpn_channels: checkpoint 32, now 64", "model.variant: checkpoint 'fusetrack', now 'image'"]


def test_resuming_weights_that_do_not_fit_is_one_line_with_the_keys():
    model = torch.nn.Linear(3, 4)
    checkpoint = VidsegCheckpoint(Path("run.ckpt"), "vos", {"net": {"width": 2}},
                                  {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)})
    with pytest.raises(CheckpointError) as err:
        check_resume_fits(checkpoint, model, {"net": {"width": 4}})
    assert "model.net.width: checkpoint 2, now 4" in str(err.value) and "\n" not in str(err.value)
    fitting = VidsegCheckpoint(Path("run.ckpt"), "vos", {}, model.state_dict())
    check_resume_fits(fitting, model, {"net": {"width": 4}})


# ------------------------------------------------------------------------------- the real command line


@pytest.mark.parametrize("entry, options", [
    ("predict", ["ckpt=<file>", "input=<video>", "mask=<PNG|folder>", "output=<folder>", "fps=<number>"]),
    ("evaluate", ["ckpt=<file>", "predictions=<folder>", "data.root=<folder>", "output_dir=<folder>"]),
    ("train", ["data.root=<folder>", "ckpt_path=<file>", "backbone.weights=", "trainer.max_steps="]),
])
def test_help_prints_the_options_that_matter_then_hydras(tmp_path, entry, options):
    proc = subprocess.run([sys.executable, "-m", f"vidseg.{entry}", "--help"], capture_output=True, text=True,
                          env=subprocess_env(), timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"python -m vidseg.{entry}: "), out[:200]
    hydra_part = out.index("== Config ==")
    assert out.index("Examples:") < hydra_part and f"  python -m vidseg.{entry} task=" in out[:hydra_part]
    for option in options:
        assert option in out[:hydra_part], option
    assert not (tmp_path / "outputs").exists()


def test_vidseg_debug_keeps_the_traceback(tmp_path):
    argv = [sys.executable, "-m", "vidseg.evaluate", "task=vos", f"predictions={tmp_path / 'none'}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    plain = subprocess.run(argv, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    debug = subprocess.run(argv, capture_output=True, text=True, env={**subprocess_env(), "VIDSEG_DEBUG": "1"},
                           timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr, plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr, debug.stderr


_SHIPPED = [["task=vos"], ["task=vps"], ["task=vps", "data=viper"], ["task=vos", "data=youtube_vos"]]
_EXPERIMENTS = [["task=vos", "experiment=toy_vos"], ["task=vps", "experiment=toy_vps"]]  # training recipes


@pytest.mark.parametrize("entry, overrides", [(entry, overrides) for entry in ("train", "evaluate", "predict")
                                              for overrides in _SHIPPED] + [("train", o) for o in _EXPERIMENTS])
def test_every_shipped_config_passes_the_check(tmp_path, entry, overrides):
    from tests.helpers.configs import compose_config

    ckpt, video = tmp_path / "a.ckpt", tmp_path / "clip.mp4"
    ckpt.write_bytes(b"x")
    video.write_bytes(b"x")
    given = {"predict": [f"ckpt={ckpt}", f"input={video}", f"mask={video}"], "evaluate": [f"ckpt={ckpt}"]}
    cfg = compose_config(entry, tmp_path / "run", [*overrides, *given.get(entry, [])])
    check_config(cfg, command=entry, example=EXAMPLE)


def test_a_pickle_that_would_run_code_is_refused_naming_what_it_would_build(tmp_path):
    from tests.helpers.bad_files import write_code_running_pickle
    from vidseg.backbones.base import WeightsFileError, read_state_dict
    from vidseg.inference.checkpoint import read_checkpoint

    evil = write_code_running_pickle(tmp_path / "evil.pth", tmp_path / "pwned")
    with pytest.raises(WeightsFileError) as weights_err:
        read_state_dict(evil, what="Backbone weights file", key="backbone.weights")
    with pytest.raises(CheckpointError) as ckpt_err:
        read_checkpoint(evil)
    for message in (str(weights_err.value), str(ckpt_err.value)):
        assert "evil.pth" in message and "makedirs" in message and "refused unread" in message, message
        assert "PyTorch 2.6" not in message  # torch's advisory is not the reason
    assert "backbone.weights=" in str(weights_err.value)
    assert not (tmp_path / "pwned").exists()

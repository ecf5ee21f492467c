"""vidseg.utils.outputs: the manifest (only vidseg's own outputs are replaced), inputs kept apart, stale outputs
removed, the folder lock, staging clean-up, and Hydra's run files kept out of the working directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.training_runs import subprocess_env
from vidseg.errors import DataError
from vidseg.utils.outputs import (
    MANIFEST_NAME,
    STAGING_PREFIX,
    NoHydraRunFilesWithOutput,
    NotWrittenByVidsegError,
    OutputBusyError,
    OutputOverlapsInputError,
    check_apart,
    move_into_place,
    open_output_folder,
)


def _write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_once(out: Path, files: dict[str, str], *, key: str = "predict", overwrite: bool = False,
              inputs: dict | None = None) -> None:
    """One run that claims and writes ``files`` (name -> text; a name ending in / is a folder with one file)."""
    with open_output_folder(out, key=key, overwrite=overwrite, inputs=inputs or {}) as folder:
        folder.claim([n.rstrip("/") for n in files])
        for name, text in files.items():
            if name.endswith("/"):
                _write(out / name / "inside.txt", text)
            else:
                _write(out / name, text)
        folder.record([n.rstrip("/") for n in files])
        folder.retire([n.rstrip("/") for n in files])


# ---------------------------------------------------------------------------------------------- the manifest


def test_a_file_vidseg_did_not_write_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    users = _write(out / "masks" / "00000.png", "the user's own annotation")
    with pytest.raises(NotWrittenByVidsegError) as err:
        _run_once(out, {"masks": "new"})
    message = str(err.value)
    assert str(out / "masks") in message and "not written by vidseg" in message and "overwrite=true" in message
    assert users.read_text() == "the user's own annotation"
    assert not (out / MANIFEST_NAME).exists()  # a refused run leaves no trace
    _run_once(out, {"masks/": "new"}, overwrite=True)
    assert (out / "masks" / "inside.txt").read_text() == "new"


def test_what_vidseg_wrote_is_replaced_on_a_rerun_without_overwrite(tmp_path):
    out = tmp_path / "out"
    _run_once(out, {"overlay.mp4": "first"})
    _run_once(out, {"overlay.mp4": "second"})
    assert (out / "overlay.mp4").read_text() == "second"
    entries = json.loads((out / MANIFEST_NAME).read_text())["entries"]
    assert entries["overlay.mp4"]["run"] == "predict" and entries["overlay.mp4"]["id"] is not None


def test_a_folder_the_user_put_in_place_of_vidsegs_is_not_taken_for_vidsegs(tmp_path):
    # Same name as in the manifest, but another folder (another inode): the user's, refused.
    out = tmp_path / "out"
    _run_once(out, {"masks/": "vidseg's"})
    _write(tmp_path / "users_masks" / "notes.txt", "the user's")  # made while vidseg's exists: another inode
    shutil.rmtree(out / "masks")
    (tmp_path / "users_masks").rename(out / "masks")
    with pytest.raises(NotWrittenByVidsegError, match="masks"):
        _run_once(out, {"masks/": "new"})
    assert (out / "masks" / "notes.txt").read_text() == "the user's"


def test_a_file_copied_over_vidsegs_is_the_users_but_a_record_removed_from_its_folder_changes_nothing(tmp_path):
    out = tmp_path / "out"
    _run_once(out, {"overlay.mp4": "vidseg's", "clips/": "record"})
    with (out / "overlay.mp4").open("w") as same_inode:  # what cp their.mp4 out/overlay.mp4 does
        same_inode.write("the user's")
    os.utime(out / "overlay.mp4", ns=(0, 0))  # its modification time changed, without waiting for the clock
    (out / "clips" / "inside.txt").unlink()  # a resume record removed by hand: the folder stays vidseg's
    with pytest.raises(NotWrittenByVidsegError) as err:
        _run_once(out, {"overlay.mp4": "new", "clips/": "new"})
    assert "overlay.mp4" in str(err.value) and "clips" not in str(err.value)


def test_an_unreadable_manifest_trusts_nothing(tmp_path):
    out = tmp_path / "out"
    _run_once(out, {"pred.json": "vidseg's"})
    (out / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(NotWrittenByVidsegError, match="pred.json"):
        _run_once(out, {"pred.json": "new"})


def test_a_crafted_manifest_cannot_make_vidseg_remove_a_file_outside_the_folder(tmp_path):
    out, victim = tmp_path / "out", _write(tmp_path / "victim.txt", "keep me")
    _write(out / MANIFEST_NAME, json.dumps({"entries": {"../victim.txt": {"run": "predict", "id": None},
                                                         "masks": {"run": "predict", "id": "not an identity"}}}))
    _write(out / "masks" / "mine.png", "the user's")
    with pytest.raises(NotWrittenByVidsegError, match="masks"):
        _run_once(out, {"masks/": "new"})
    _run_once(out, {"overlay.mp4": "new"})  # retires predict's earlier names: none valid
    assert victim.read_text() == "keep me" and (out / "masks" / "mine.png").is_file()


def test_a_failed_run_leaves_files_and_manifest_as_it_found_them(tmp_path):
    out = tmp_path / "out"
    _run_once(out, {"results-val.json": "1", "evaluation.json": "2"}, key="evaluate val")
    before = _snapshot(out)
    with pytest.raises(RuntimeError):
        with open_output_folder(out, key="evaluate val") as folder:
            folder.claim(["results-val.json", "evaluation.json", "results-val-jf.png"])
            raise RuntimeError("scoring failed")
    assert _snapshot(out) == before


def test_a_failed_overwrite_run_does_not_adopt_the_users_file(tmp_path):
    out = tmp_path / "out"
    users = _write(out / "overlay.mp4", "the user's")
    with pytest.raises(RuntimeError):
        with open_output_folder(out, key="predict", overwrite=True) as folder:
            folder.claim(["overlay.mp4"])
            raise RuntimeError("the model did not load")
    assert users.read_text() == "the user's"
    with pytest.raises(NotWrittenByVidsegError):  # still the user's: a later run without overwrite is refused
        _run_once(out, {"overlay.mp4": "new"})


def test_a_claimed_file_the_run_did_not_write_is_not_removed_as_stale_when_it_was_the_users(tmp_path):
    # overwrite=true lets a run replace the user's results-val-jf.png; a run that then writes no plot keeps it.
    out = tmp_path / "out"
    users = _write(out / "results-val-jf.png", "the user's plot")
    with open_output_folder(out, key="evaluate val", overwrite=True) as folder:
        folder.claim(["results-val.json", "results-val-jf.png"])
        _write(out / "results-val.json", "{}")
        folder.record(["results-val.json"])
        assert folder.retire(["results-val.json"]) == []
    assert users.read_text() == "the user's plot"
    assert list(json.loads((out / MANIFEST_NAME).read_text())["entries"]) == ["results-val.json"]


def test_a_run_killed_between_writing_and_recording_still_owns_its_output(tmp_path):
    out = tmp_path / "out"
    _run_once(out, {"evaluation.json": "old"})
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from vidseg.utils.outputs import open_output_folder
        with open_output_folder({str(out)!r}, key="predict") as folder:
            folder.claim(["evaluation.json"])
            (Path({str(out)!r}) / "new.tmp").write_text("new, not recorded yet")
            os.replace(Path({str(out)!r}) / "new.tmp", Path({str(out)!r}) / "evaluation.json")  # another inode
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env(),
                            timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _run_once(out, {"evaluation.json": "rerun"})  # not refused: the claim says vidseg was writing it
    assert (out / "evaluation.json").read_text() == "rerun"


# ------------------------------------------------------------------------------------------------ stale files


def test_outputs_an_earlier_run_of_the_same_key_wrote_and_this_one_does_not_are_removed(tmp_path):
    out = tmp_path / "out"
    _run_once(out, {"masks/": "a", "overlay.mp4": "b", "prediction.json": "c"})
    _run_once(out, {"results-val.json": "d"}, key="evaluate val")
    _write(out / "notes.txt", "the user's")
    _run_once(out, {"masks/": "a2", "prediction.json": "c2"})  # overlay=false
    assert not (out / "overlay.mp4").exists()
    assert (out / "results-val.json").read_text() == "d"  # another command's output stays
    assert (out / "notes.txt").read_text() == "the user's"
    assert "overlay.mp4" not in json.loads((out / MANIFEST_NAME).read_text())["entries"]


def test_a_stale_output_that_is_this_runs_input_is_kept(tmp_path):
    # evaluate ckpt=... wrote pan_pred/; scoring that submission in place must not remove it as stale.
    out = tmp_path / "sub"
    _run_once(out, {"pan_pred/": "png", "pred.json": "json", "vpq-final.txt": "1"}, key="evaluate val")
    _run_once(out, {"vpq-final.txt": "2"}, key="evaluate val", inputs={"predictions": out})
    assert (out / "pan_pred" / "inside.txt").is_file() and (out / "pred.json").is_file()


# ---------------------------------------------------------------------------------------------- inputs apart


@pytest.mark.parametrize("output, input_, whole", [
    ("clip", "clip/masks", True),        # the output folder contains the mask folder
    ("clip", "clip", True),              # ... is the input folder
    ("clip/frames/out", "clip/frames", True),  # ... lies inside the input frame folder
    ("clip", "clip/masks", False),       # a written name equals the input
    ("clip", "clip/masks/00000.png", False),  # a written name contains the input
])
def test_writing_over_an_input_is_refused_naming_both_paths(tmp_path, output, input_, whole):
    out, source = tmp_path / output, tmp_path / input_
    with pytest.raises(OutputOverlapsInputError) as err:
        check_apart(out, {"mask": source}, names=["masks"], whole_folder=["mask"] if whole else [])
    assert str(out) in str(err.value) and str(source) in str(err.value)


def test_inputs_apart_from_the_outputs_pass_and_links_are_followed(tmp_path):
    check_apart(tmp_path / "out", {"input": tmp_path / "clip" / "video.mp4", "mask": None},
                names=["masks"], whole_folder=["input", "mask"])
    # evaluate: results written into the submission folder being scored are fine (no name replaces it)
    check_apart(tmp_path / "sub", {"predictions": tmp_path / "sub"}, names=["vpq-final.txt"])
    (tmp_path / "clip").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "clip")
    with pytest.raises(OutputOverlapsInputError):
        check_apart(tmp_path / "link", {"input": tmp_path / "clip"}, whole_folder=["input"])


def test_a_file_as_output_folder_is_one_line(tmp_path):
    target = _write(tmp_path / "file.txt")
    with pytest.raises(DataError, match="is a file, not a folder"):
        with open_output_folder(target, key="predict"):
            pass


def test_a_folder_made_for_a_run_that_failed_is_removed_again(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError):
        with open_output_folder(out, key="predict") as folder:
            folder.claim(["masks"])
            raise RuntimeError("the model did not load")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------- lock and staging


def test_a_second_run_into_a_locked_folder_is_refused_and_leaves_its_staging_folder(tmp_path):
    out = tmp_path / "out"
    with open_output_folder(out, key="predict") as first, first.staging() as staging:
        _write(staging / "masks" / "00000.png")
        with pytest.raises(OutputBusyError) as err:
            with open_output_folder(out, key="predict"):
                pass
        assert f"another vidseg run (pid {os.getpid()}) is writing here" in str(err.value)
        assert str(out) in str(err.value) and "output=" in str(err.value)
        assert (staging / "masks" / "00000.png").is_file()  # the refused run deleted nothing
    assert not list(out.glob(f"{STAGING_PREFIX}*"))


def _holder_script(out: Path, then: str) -> str:
    return textwrap.dedent(f"""
        import os, signal, sys, time
        from vidseg.utils.outputs import open_output_folder
        with open_output_folder({str(out)!r}, key="predict") as folder:
            staging_cm = folder.staging()  # kept referenced: a collected generator would clean up
            staging = staging_cm.__enter__()
            (staging / "masks").mkdir()
            print("locked", flush=True)
            {then}
    """)


def test_the_lock_names_the_pid_of_another_process_and_dies_with_it(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", _holder_script(out, "time.sleep(60)")],
                              stdout=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
            with open_output_folder(out, key="predict"):
                pass
        assert len(list(out.glob(f"{STAGING_PREFIX}*"))) == 1
    finally:
        holder.kill()
        holder.wait()
    # SIGKILLed: the kernel released the lock; the next run removes the dead run's staging folder.
    with open_output_folder(out, key="predict"):
        assert not list(out.glob(f"{STAGING_PREFIX}*"))


def test_a_run_killed_mid_write_leaves_a_staging_folder_the_next_run_cleans(tmp_path):
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", _holder_script(out, "os.kill(os.getpid(), signal.SIGKILL)")],
                            capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert len(list(out.glob(f"{STAGING_PREFIX}*"))) == 1
    _run_once(out, {"masks/": "rerun"})
    assert not list(out.glob(f"{STAGING_PREFIX}*")) and (out / "masks" / "inside.txt").read_text() == "rerun"


def test_move_into_place_replaces_and_leaves_nothing_beside(tmp_path):
    staging = tmp_path / "out" / f"{STAGING_PREFIX}x"
    _write(staging / "masks" / "new.png", "new")
    _write(tmp_path / "out" / "masks" / "old.png", "old")
    move_into_place(staging / "masks", tmp_path / "out" / "masks")
    assert [p.name for p in (tmp_path / "out" / "masks").iterdir()] == ["new.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{STAGING_PREFIX}x", "masks"]
    assert list(staging.iterdir()) == []


# -------------------------------------------------------------------------------------------- Hydra run files


def _predict_config(overrides: list[str]):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("vidseg.conf", version_base="1.3"):
        return compose("predict", overrides=overrides, return_hydra_config=True)


def test_hydra_writes_no_run_files_when_the_output_is_given():
    cfg = _predict_config(["task=vos", "ckpt=c", "input=i", "output=/somewhere/out"])
    assert cfg.hydra.callbacks.run_files.output_key == "output"
    NoHydraRunFilesWithOutput("output").on_run_start(config=cfg)
    assert cfg.hydra.run.dir == "." and cfg.hydra.output_subdir is None
    handlers = cfg.hydra.job_logging.handlers
    assert "console" in handlers and not any("filename" in h for h in handlers.values())
    assert all(h in handlers for h in cfg.hydra.job_logging.root.handlers)


def test_hydra_keeps_its_run_folder_when_it_is_the_output():
    cfg = _predict_config(["task=vos", "ckpt=c", "input=i"])
    run_dir = cfg.hydra.run.dir
    NoHydraRunFilesWithOutput("output").on_run_start(config=cfg)
    assert cfg.hydra.run.dir == run_dir and cfg.hydra.output_subdir == ".hydra"
    assert any("filename" in h for h in cfg.hydra.job_logging.handlers.values())

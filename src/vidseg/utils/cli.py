"""What every entry point does around its work: one clean line for the user's mistakes, exit status 2."""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from vidseg.errors import DataError, TrainingStopped

T = TypeVar("T")

# Errors caused by the user's data or arguments. Their messages name the file and the fix, so a traceback
# would only bury them; anything else is a bug in vidseg and keeps its traceback.
USER_ERRORS = (DataError, FileNotFoundError, NotADirectoryError, IsADirectoryError)

# A config value the user left out (``ckpt: ???``) or an interpolation that does not resolve, met while the
# work reads the config. vidseg.utils.config_check reports them first; these are what it cannot foresee.
CONFIG_ERRORS = (MissingMandatoryValue, InterpolationResolutionError)

# OSErrors that say something about a path the user gave (permissions, a full disk, a link loop), not about
# vidseg: one line when their file is one of the command line's paths or inside one of them.
_USER_PATH_ERRNOS = {  # errno -> the fix (the message already says what happened: the OS's own words)
    errno.EACCES: "make it readable/writable for you, or give another path",
    errno.EPERM: "the file or folder is protected (immutable, or another user's): give another path",
    errno.EROFS: "give a path on a writable disk",
    errno.ENOSPC: "free some space, or give a path on another disk",
    errno.EDQUOT: "free some space, or give a path on another disk",
    errno.ELOOP: "a symbolic link there points back to itself: fix the link or give another path",
    errno.ENAMETOOLONG: "give a shorter path",
}


def _is_inside(path: str | os.PathLike, roots: Iterable[Path]) -> bool:
    candidate = Path(os.path.abspath(path))
    return any(candidate == root or root in candidate.parents for root in roots)


def _user_path_error(err: OSError, user_paths: Iterable[str | os.PathLike]) -> str | None:
    """One line for an OSError on a path the user gave (or inside one); None for anything else."""
    fix = _USER_PATH_ERRNOS.get(err.errno)
    if fix is not None and err.errno in (errno.ENOSPC, errno.EDQUOT) and not err.filename:
        # a full disk is never a vidseg bug; a write on an open file does not say which file it was
        return f"{err.strerror or 'no space left on the device'} while writing; {fix}"
    if fix is None or not err.filename or not isinstance(err.filename, (str, os.PathLike)):
        return None
    roots = [Path(os.path.abspath(p)) for p in user_paths]
    if not _is_inside(err.filename, roots):
        return None
    return f"{err.filename}: {err.strerror or type(err).__name__}; {fix}"


def _print_error(message: str) -> None:
    message = " ".join(str(message).split())  # one line, whatever the message's formatting
    print(f"vidseg: error: {message}", file=sys.stderr)


def _debug() -> bool:
    return os.environ.get("VIDSEG_DEBUG", "") not in ("", "0")


def run_cli(work: Callable[[], T], *, user_paths: Callable[[], Iterable[str | os.PathLike]] | None = None) -> T:
    """Run ``work``; a user error prints ``vidseg: error: <message>`` on stderr and exits with status 2.

    User errors: :data:`USER_ERRORS`, a config value left out or not resolvable (:data:`CONFIG_ERRORS`), and an
    OSError such as a permission error on a path the user gave (``user_paths()``: the command line's paths,
    e.g. :func:`vidseg.utils.config_check.user_paths`). ``VIDSEG_DEBUG=1`` in the environment keeps the
    traceback of user errors too. The cyclic garbage collector is switched on here, for entry points that
    keep it off while they start.
    """
    gc.enable()
    try:
        return _run(work, user_paths)
    except SystemExit as stop:
        if stop.code == 2:  # refused: the empty run folder Hydra made for it goes again (vidseg.utils.outputs)
            from vidseg.utils.outputs import drop_unused_run_folder

            drop_unused_run_folder()
        raise


def _run(work: Callable[[], T], user_paths: Callable[[], Iterable[str | os.PathLike]] | None) -> T:
    try:
        return work()
    except TrainingStopped as stop:  # not an error: the run was asked to stop and saved its state
        print(f"vidseg: {stop}", file=sys.stderr)
        raise SystemExit(128 + stop.signal_number) from None
    except USER_ERRORS as err:
        if _debug():
            raise
        _print_error(str(err))
        raise SystemExit(2) from None
    except CONFIG_ERRORS as err:
        if _debug():
            raise
        key = getattr(err, "full_key", "") or "a config value"
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        _print_error(f"{key}: {first}; give {key}=<value> on the command line (python -m vidseg.<command> --help "
                     "lists the options)")
        raise SystemExit(2) from None
    except OSError as err:
        message = _user_path_error(err, user_paths() if user_paths is not None else ())
        if message is None or _debug():
            raise
        _print_error(message)
        raise SystemExit(2) from None


def print_usage_on_help(argv: Sequence[str], usage: str) -> None:
    """``--help``/``-h``: print the command's own usage (the options that matter, an example) before Hydra's
    full help, which follows as ``@hydra.main`` prints it."""
    if "--help" in argv or "-h" in argv:
        print(usage.strip("\n") + "\n\n" + "-" * 100 + "\nEvery config value (Hydra's help):\n", flush=True)


def exit_now(status: int = 0) -> None:
    """End a finished command at once: flush stdout, stderr and the logging handlers, then ``os._exit``.

    The interpreter's teardown (every module and object freed one by one) takes about 40 ms with Hydra and
    numpy loaded, a tenth of scoring a results folder. Everything the command wrote is closed by then (files
    are written atomically), and atexit handlers are skipped: call this only after the work has returned.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(status)


# Command-line words after which the config may come from somewhere else than vidseg's own files, or ask for
# several runs: Hydra's mode probe is then left alone.
_MODE_SOURCES = ("-m", "--multirun", "-cd", "--config-dir", "-cp", "--config-path", "-cn", "--config-name",
                 "--info", "--cfg", "-c", "--help", "-h", "--hydra-help", "--shell-completion", "-sc",
                 "--experimental-rerun")
_MODE_OVERRIDES = ("hydra.mode", "hydra.searchpath", "experiment", "hydra/")


def skip_hydra_mode_probe(argv: Sequence[str]) -> bool:
    """Let ``@hydra.main`` compose the config once instead of twice, when ``argv`` cannot ask for a multirun.

    Before every run Hydra 1.3 composes the whole config once only to read ``hydra.mode`` (which a config file
    may set to MULTIRUN), then composes it again to run: 50 ms each, a tenth of scoring a DAVIS results folder.
    vidseg's configs never set ``hydra.mode``. So when the command line has no ``-m``/``--multirun``, no
    ``hydra.mode`` or ``hydra.searchpath`` override, no ``experiment=`` and no other config source
    (``--config-dir``, ``--config-path``, ``--config-name``), the probe's answer is known, None, which Hydra
    turns into a single run; this returns that answer without composing. In every other case, or with a Hydra
    whose internals differ, nothing changes.

    Returns:
        Whether the probe is skipped.
    """
    for word in argv:
        name = word.lstrip("+~").split("=", 1)[0]
        if word in _MODE_SOURCES or word.split("=", 1)[0] in _MODE_SOURCES or name.startswith(_MODE_OVERRIDES):
            return False
    try:
        from hydra._internal.hydra import Hydra
    except ImportError:  # pragma: no cover - another Hydra layout: keep its behaviour
        return False
    if not callable(getattr(Hydra, "get_mode", None)):  # pragma: no cover
        return False

    def get_mode(self, config_name, overrides):  # what Hydra's own returns when no config sets hydra.mode
        return None

    Hydra.get_mode = get_mode
    return True

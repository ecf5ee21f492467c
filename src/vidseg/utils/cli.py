"""What every entry point does around its work: one clean line for the user's mistakes, exit status 2."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from vidseg.errors import DataError, TrainingStopped

T = TypeVar("T")

# Errors caused by the user's data or arguments. Their messages name the file and the fix, so a traceback
# would only bury them; anything else is a bug in vidseg and keeps its traceback.
USER_ERRORS = (DataError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def run_cli(work: Callable[[], T]) -> T:
    """Run ``work``; a user error prints ``vidseg: error: <message>`` on stderr and exits with status 2.

    ``VIDSEG_DEBUG=1`` in the environment keeps the traceback of user errors too. The cyclic garbage
    collector is switched on here, for entry points that keep it off while they start.
    """
    gc.enable()
    try:
        return work()
    except TrainingStopped as stop:  # not an error: the run was asked to stop and saved its state
        print(f"vidseg: {stop}", file=sys.stderr)
        raise SystemExit(128 + stop.signal_number) from None
    except USER_ERRORS as err:
        if os.environ.get("VIDSEG_DEBUG", "") not in ("", "0"):
            raise
        message = " ".join(str(err).split())  # one line, whatever the message's formatting
        print(f"vidseg: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


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

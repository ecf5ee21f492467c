"""What every entry point does around its work: one clean line for the user's mistakes, exit status 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from vidseg.errors import DataError, TrainingStopped

T = TypeVar("T")

# Errors caused by the user's data or arguments. Their messages name the file and the fix, so a traceback
# would only bury them; anything else is a bug in vidseg and keeps its traceback.
USER_ERRORS = (DataError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def run_cli(work: Callable[[], T]) -> T:
    """Run ``work``; a user error prints ``vidseg: error: <message>`` on stderr and exits with status 2.

    ``VIDSEG_DEBUG=1`` in the environment keeps the traceback of user errors too.
    """
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

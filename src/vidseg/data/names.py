"""Names that come from data files (sequence names, video ids, image ids, file names) before they become paths.

A dataset's split file or JSON is input, not code: a crafted entry such as ``../../escape`` or ``/etc`` must
never make vidseg read or write outside the folders it was given. Every such name becomes a path through
:func:`checked_join` (or :func:`check_name` where one component is the only valid form);
tests/data/test_containment.py scans src/vidseg for any other join of a non-literal name.
"""

from __future__ import annotations

import os
from pathlib import Path

from vidseg.errors import DatasetLayoutError


def check_name(name: str, *, source: object, what: str = "name") -> str:
    """Return ``name`` if it is a single path component; raise naming ``source`` otherwise.

    Args:
        name: the name as read from the file (a sequence name, video id, file name ...).
        source: the file it came from (for the message).
        what: what the name is, e.g. "sequence name" (for the message).

    Raises:
        DatasetLayoutError: empty, ".", "..", containing "/" or "\\" or a NUL byte, or starting with "~".
    """
    text = str(name)
    bad = (
        not text
        or text in (".", "..")
        or "/" in text
        or "\\" in text
        or "\x00" in text
        or text.startswith("~")
    )
    if bad:
        raise DatasetLayoutError(
            f"{source}: refusing {what} {text!r}: a {what} must be one folder or file name (no '/', '\\', "
            "'..' or leading '~'), so that it cannot point outside the dataset or output folder; fix the entry "
            "in that file"
        )
    return text


def check_relative_path(name: str, *, source: object, what: str = "file name") -> str:
    """Return ``name`` if it is a relative path inside its folder (VIPER's ``001/001_00000.jpg``); raise naming
    ``source`` if it is absolute or any component is empty, ``.``, ``..``, has a ``\\`` or starts with ``~``."""
    text = str(name)
    parts = text.split("/")
    for part in parts:
        try:
            check_name(part, source=source, what=what)
        except DatasetLayoutError:
            raise DatasetLayoutError(
                f"{source}: refusing {what} {text!r}: it must be a relative path inside its folder (no leading '/', "
                "no '..', '\\' or leading '~' in any part), so that it cannot point outside the dataset or output "
                "folder; fix the entry in that file"
            ) from None
    return text


def checked_join(folder: str | os.PathLike, *names: str, source: object, what: str = "file name") -> Path:
    """``folder / names...`` where each name came from a data file, a split file, an id or a config value.

    The one way vidseg turns such a name into a path: every name must be a relative path inside ``folder``
    (:func:`check_relative_path`: no absolute path, ``..``, ``\\``, NUL or leading ``~`` in any part), so the
    result is always inside ``folder``, whatever the file says.

    Args:
        folder: the folder the user gave (dataset root, submission folder, output folder) or one inside it.
        names: the names to join, as read (a sequence name, ``001/001_00000.jpg``, ``<image id>.png`` ...).
        source: the file or config key the names came from (for the message).
        what: what the names are, e.g. "panoptic PNG name" (for the message).

    Raises:
        DatasetLayoutError: a name that could point outside ``folder``.
    """
    path = Path(folder)
    for name in names:
        path = path / check_relative_path(name, source=source, what=what)
    return path

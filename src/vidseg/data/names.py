"""Names that come from data files (sequence names, video ids, image ids, file names) before they become paths.

A dataset's split file or JSON is input, not code: a crafted entry such as ``../../escape`` or ``/etc`` must
never make vidseg read or write outside the folders it was given. Every name that is joined to a path goes
through :func:`check_name` first.
"""

from __future__ import annotations

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
            f"{source}: refusing {what} {text!r}: a {what} must be a single folder or file name (no '/', '\\', "
            "'..' or leading '~'), so that it cannot point outside the dataset or output folder; fix the entry "
            "in that file"
        )
    return text

"""Errors caused by the user's data or arguments (not by a bug in vidseg).

Every message names the file, what was expected, what was found and the fix, so the entry points can print
it as one line instead of a traceback.
"""

from __future__ import annotations


class DataError(ValueError):
    """A file or argument given by the user is missing, unreadable or inconsistent."""


class DatasetLayoutError(DataError):
    """Dataset files are present but inconsistent: counts, names, keys or sizes disagree."""


class MaskFormatError(DataError):
    """A mask file that cannot be read as a label map (RGB, corrupt, wrong size...)."""


class SubmissionError(DataError):
    """A VPS submission (pan_pred PNGs + pred.json) that does not follow the COCO-panoptic format."""

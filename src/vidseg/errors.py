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


class CorruptFileError(DataError, OSError):
    """A file that exists but cannot be decoded (a truncated image, a file that is not an image...).

    Also an OSError, which is what reading a broken file raised before this class existed.
    """


class SubmissionError(DataError):
    """A VPS submission (pan_pred PNGs + pred.json) that does not follow the COCO-panoptic format."""


class TrainingStopped(Exception):
    """Training was stopped by a signal (SIGTERM, SIGINT) after ``last.ckpt`` was written.

    Not an error: the CLI prints how to resume and exits with 128 + the signal number, as the shell would.
    """

    def __init__(self, signal_name: str, step: int, checkpoint: str | None) -> None:
        import signal

        self.signal_name, self.step, self.checkpoint = signal_name, int(step), checkpoint
        self.signal_number = int(getattr(signal, signal_name))
        where = f"; resume with ckpt_path={checkpoint}" if checkpoint else ""
        super().__init__(f"training stopped by {signal_name} at step {step}{where}")


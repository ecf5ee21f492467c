"""Outputs of a long job that are never seen half-written, and a progress bar for it (shared by every task).

A predict run builds its outputs inside a hidden staging folder in the output folder and moves each finished
one over the previous run's when the whole run is done (:func:`staged_outputs`, :func:`move_into_place`): an
interrupted run leaves the previous complete outputs (or nothing) plus a hidden folder that the next run
removes, never a mask folder or video that looks complete but is not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

STAGING_PREFIX = ".predict-partial-"


def progress_bar(total: int | None, desc: str):
    """A tqdm bar over frames (count, frames/s, time left when ``total`` is known). Off when stderr is not a
    terminal (logs, CI), so logs get the per-video lines only; ``bar.write`` prints either way."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=None, dynamic_ncols=True, mininterval=0.5)


def frame_count_hint(input_path: Path) -> int | None:
    """The number of frames of a video or frame folder if it is cheap to know, else None (progress bars only)."""
    if input_path.is_dir():
        from vidseg.data.video import list_image_frames

        return len(list_image_frames(input_path))
    try:
        import av

        with av.open(str(input_path)) as container:
            frames = container.streams.video[0].frames if container.streams.video else 0
        return int(frames) or None
    except Exception:  # only a hint for the progress bar; reading reports real problems
        return None


def move_into_place(source: Path, target: Path) -> None:
    """Replace ``target`` (file or folder) by ``source``; the old one is removed only once the new is there."""
    if not target.exists():
        os.replace(source, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(source, target)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


@contextlib.contextmanager
def staged_outputs(output: Path) -> Iterator[Path]:
    """A fresh hidden staging folder inside ``output`` (stale ones of interrupted runs removed first).

    Write into it, then :func:`move_into_place` each finished output before the block ends; the folder and
    whatever is left in it are removed on exit, success or not.
    """
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)

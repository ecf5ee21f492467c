"""Output safety in one place: every command that writes into a folder the user names goes through here.

The rules (``predict output=...`` and ``evaluate output_dir=...`` alike):

- **Only vidseg's own files are replaced.** A hidden manifest, :data:`MANIFEST_NAME`, names the files and folders
  vidseg wrote in the folder, with their inode (and a file's modification time), so a folder the user put there
  later under the same name, or a file copied over vidseg's, is not taken for vidseg's. Before a run writes a
  name it claims it (:meth:`OutputFolder.claim`): a name that exists and is not in the manifest was not written
  by vidseg, and the run is refused (:class:`NotWrittenByVidsegError`) unless ``overwrite=true``. Claims are
  saved before anything is written, so a killed run's partial outputs are still known to be vidseg's and the
  next run resumes or replaces them.
- **Inputs are never written over.** A name the run writes may not equal or contain one of its inputs; for
  predict the whole output folder may not contain, equal or lie inside the input video/frames or the mask
  (:class:`OutputOverlapsInputError`). Paths are compared resolved (symbolic links followed).
- **Stale outputs go.** Every claim is tagged with the run's key (``predict``, ``evaluate <split>``); what the
  previous run of the same key wrote and this run does not write is removed (:meth:`OutputFolder.retire`), unless
  it is one of this run's inputs.
- **One run at a time.** The folder is locked (``flock`` on the folder itself, so no lock file is left; the
  kernel releases it when the process dies, even on SIGKILL). A second run gets :class:`OutputBusyError` naming
  the holder's pid. Staging folders of killed runs are removed only while holding the lock.
- **Nothing half-written.** Predict builds its outputs in a hidden staging folder (:meth:`OutputFolder.staging`)
  and moves each finished one over the previous run's (:func:`move_into_place`) when the whole video is done.

:class:`NoHydraRunFilesWithOutput` keeps Hydra's run files (``.hydra/``, ``<command>.log``, the
``outputs/<task>/<command>/<time>/`` folder) out of the working directory when the output folder is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from vidseg.errors import DataError

STAGING_PREFIX = ".predict-partial-"
MANIFEST_NAME = ".vidseg-outputs.json"
_MANIFEST_FORMAT = 1


class OutputError(DataError):
    """An output folder vidseg must not write into as asked (printed as one line, exit status 2)."""


class NotWrittenByVidsegError(OutputError):
    """A run would replace a file or folder that vidseg did not write."""


class OutputOverlapsInputError(OutputError):
    """A run would write over (or into) one of its own inputs."""


class OutputBusyError(OutputError):
    """Another vidseg run holds the output folder's lock."""


# ----------------------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Inputs apart from outputs
# ----------------------------------------------------------------------------------------------------------


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _within(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or lies inside it (both resolved)."""
    return inner == outer or outer in inner.parents


def check_apart(output: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None], *,
                names: Iterable[str] = (), whole_folder: Iterable[str] = (), option: str = "output") -> None:
    """Refuse to write where an input is.

    Args:
        output: the output folder.
        inputs: config key -> path the run reads (None: not given).
        names: what the run writes or removes in ``output``; none of them may equal or contain an input.
        whole_folder: keys of ``inputs`` that the output folder as a whole must keep apart from: it may not
            contain, equal or lie inside them (predict's input video/frames and mask).
        option: the config key of the output folder, for the message.

    Raises:
        OutputOverlapsInputError: naming both paths and the fix.
    """
    out = _resolved(output)
    whole = set(whole_folder)
    for key, given in inputs.items():
        if given is None:
            continue
        source = _resolved(given)
        if key in whole and (_within(source, out) or _within(out, source)):
            how = ("is" if source == out else "contains" if _within(source, out) else "lies inside")
            raise OutputOverlapsInputError(
                f"{option}={output}: the output folder {how} the input {key}={given} ({source}); vidseg would write "
                f"next to or over its own input; give another {option}=<folder> outside it")
        for name in names:
            target = _inside(out, name)
            if _within(source, target):
                raise OutputOverlapsInputError(
                    f"{target}: writing it would replace the input {key}={given} ({source}); give another "
                    f"{option}=<folder> (or move the input)")


# ----------------------------------------------------------------------------------------------------------
# The lock
# ----------------------------------------------------------------------------------------------------------


def _lock_holder(path: Path) -> str:
    """The pid holding a ``flock`` on the folder ``path``, read from /proc/locks (Linux); "unknown" elsewhere."""
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "unknown"
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    by_inode = []
    for line in lines:
        fields = line.split()
        if "FLOCK" not in fields or "->" in fields:  # "->": a waiter, not the holder
            continue
        for index, field in enumerate(fields[1:], start=1):
            if field == device:
                return fields[index - 1]
            if field.endswith(f":{st.st_ino}") and field.count(":") == 2:
                by_inode.append(fields[index - 1])
    # Some file systems (btrfs subvolumes, overlayfs) report another device number in stat than in /proc/locks.
    return by_inode[0] if len(set(by_inode)) == 1 else "unknown"


def _lock_folder(path: Path, option: str) -> int | None:
    """Lock ``path`` (a folder) for this process; returns the descriptor holding the lock (None where the
    platform has no ``flock``: Windows, which vidseg does not support for running, only for reading code)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return None

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputBusyError(f"{path}: another vidseg run (pid {_lock_holder(path)}) is writing here; wait for it "
                              f"or give another {option}=<folder>") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


# ----------------------------------------------------------------------------------------------------------
# The manifest
# ----------------------------------------------------------------------------------------------------------


def _identity(path: Path) -> list[int] | None:
    """[device, inode, mtime in ns] of ``path`` itself (a link is not followed), None if it does not exist.

    For a file the modification time tells apart vidseg's file from one copied over it later (``cp`` keeps the
    inode) or made in its place with a reused inode number. A folder's is 0: removing a file from vidseg's
    folder (a resume record, by hand) changes it and must not make the folder someone else's.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino, 0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _is_output_name(name: object) -> bool:
    try:
        return isinstance(name, str) and _check_output_name(name) == name
    except DataError:
        return False


def _check_output_name(name: str) -> str:
    from vidseg.data.names import check_name

    return check_name(name, source="the output folder", what="output name")  # one component: never outside it


def _inside(folder: Path, name: str) -> Path:
    """``folder / name`` for one output name (checked: a single component, so never outside ``folder``)."""
    from vidseg.data.names import checked_join

    return checked_join(folder, _check_output_name(name), source="the output folder", what="output name")


class OutputFolder:
    """An output folder locked by this run: claim names before writing them, record them once written.

    Made by :func:`open_output_folder`; ``entries`` is the manifest: name -> ``{"run": key, "id": identity}``
    (:func:`_identity`; None while the name is claimed but not yet recorded).
    """

    def __init__(self, path: Path, *, key: str, overwrite: bool, inputs: Mapping[str, Any], option: str):
        self.path, self.key, self.overwrite, self.option = path, key, overwrite, option
        self.inputs = {k: v for k, v in inputs.items() if v is not None}
        self.entries: dict[str, dict[str, Any]] = self._load()
        self._saved = json.dumps(self.entries, sort_keys=True)
        # name -> (its entry before this run claimed it, None if it had none or was not vidseg's; what was there)
        self._claimed: dict[str, tuple[dict[str, Any] | None, list[int] | None]] = {}

    # -- manifest file
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads((self.path / MANIFEST_NAME).read_text())
            entries = doc["entries"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # none, or unreadable: nothing here is known to be vidseg's
        if not isinstance(entries, dict):
            return {}
        # Only entries vidseg could have written: one name inside this folder (a crafted "../x" never reaches
        # a removal), a run key, and an identity of three integers or null.
        return {name: {"run": entry["run"], "id": entry.get("id")} for name, entry in entries.items()
                if _is_output_name(name) and isinstance(entry, dict) and isinstance(entry.get("run"), str)
                and (entry.get("id") is None or (isinstance(entry.get("id"), list) and len(entry["id"]) == 3
                                                 and all(type(v) is int for v in entry["id"])))}

    def _save(self) -> None:
        text = json.dumps(self.entries, sort_keys=True)
        if text == self._saved:
            return
        manifest = self.path / MANIFEST_NAME
        if not self.entries:
            manifest.unlink(missing_ok=True)
        else:
            from vidseg.data.io import write_json_atomic

            write_json_atomic(manifest, {
                "about": "files and folders vidseg wrote here; vidseg replaces only these (overwrite=true for others)",
                "format": _MANIFEST_FORMAT, "entries": dict(sorted(self.entries.items()))})
        self._saved = text

    # -- queries
    def written_by_vidseg(self, name: str) -> bool:
        """Whether ``name`` is absent or is the very file/folder vidseg wrote (or claimed and began to write)."""
        identity = _identity(_inside(self.path, name))
        if identity is None:
            return True
        entry = self.entries.get(name)
        return entry is not None and entry.get("id") in (None, identity)

    # -- the run's steps
    def claim(self, names: Iterable[str], *, fresh: Iterable[str] = ()) -> None:
        """Claim ``names`` (and ``fresh``) for this run, before writing any of them.

        ``fresh``: folders this run writes into piece by piece (evaluate's masks/, pan_pred/, clips/): kept for
        resume when they are vidseg's, emptied first when they are not and ``overwrite=true``. ``names`` are
        replaced whole when written, so nothing is removed here.

        Raises:
            OutputOverlapsInputError: a name equals or contains an input.
            NotWrittenByVidsegError: a name exists, vidseg did not write it, and overwrite is false.
        """
        names, fresh = [_check_output_name(n) for n in names], [_check_output_name(n) for n in fresh]
        check_apart(self.path, self.inputs, names=[*names, *fresh], option=self.option)
        foreign = [n for n in (*names, *fresh) if not self.written_by_vidseg(n)]
        if foreign and not self.overwrite:
            shown = _inside(self.path, foreign[0])
            more = f" (and {', '.join(foreign[1:4])}{' ...' if len(foreign) > 4 else ''})" if len(foreign) > 1 else ""
            raise NotWrittenByVidsegError(
                f"{shown}{more}: exists and was not written by vidseg; vidseg replaces only what it wrote there "
                f"(listed in {MANIFEST_NAME}): give another {self.option}=<folder> or overwrite=true")
        for name in fresh:
            if name in foreign:
                _remove(_inside(self.path, name))
        for name in (*names, *fresh):
            entry = self.entries.get(name)
            if name not in self._claimed:
                earlier = entry if entry is not None and name not in foreign else None
                self._claimed[name] = (earlier, _identity(_inside(self.path, name)))
            # id None until recorded: a run killed between writing and recording still owns what it wrote.
            self.entries[name] = {"run": self.key, "id": None}
        self._save()

    def record(self, names: Iterable[str]) -> None:
        """Note that ``names`` (claimed earlier) now hold what this run wrote."""
        for name in names:
            self.entries[_check_output_name(name)] = {"run": self.key, "id": _identity(_inside(self.path, name))}
            self._claimed.pop(name, None)
        self._save()

    def retire(self, written: Iterable[str]) -> list[str]:
        """Remove what an earlier run of this key wrote and this run did not (``written``); inputs stay.

        Returns:
            The names removed.
        """
        written = set(written)
        removed = []
        for name, entry in list(self.entries.items()):
            if entry.get("run") != self.key or name in written:
                continue
            target = _resolved(_inside(self.path, name))
            if any(_within(target, _resolved(p)) or _within(_resolved(p), target) for p in self.inputs.values()):
                continue  # this run reads it (scoring a submission in place): not stale
            earlier, at_claim = self._claimed.pop(name, (entry, None))
            foreign_untouched = earlier is None and at_claim is not None  # claimed with overwrite=true, not written
            if self.written_by_vidseg(name) and not foreign_untouched:
                _remove(_inside(self.path, name))
                removed.append(name)
            del self.entries[name]  # gone, or someone else's: not vidseg's either way
        self._save()
        return removed

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh hidden staging folder inside the output folder, removed on exit with whatever is left in it.

        Write into it, then :meth:`publish` the finished outputs before the block ends.
        """
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.path))
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def publish(self, staging: Path, names: Iterable[str]) -> None:
        """Move each of ``names`` from ``staging`` over the previous one (claimed before) and record it."""
        names = list(names)
        for name in names:
            move_into_place(_inside(staging, name), _inside(self.path, name))
        self.record(names)

    def _tidy(self) -> None:
        """At the end of a run: forget what is not there, and give claimed names this run did not record (it
        failed first) their earlier entry back when they are unchanged, so a failed run leaves the manifest as
        it found it."""
        for name, (earlier, at_claim) in self._claimed.items():
            now = _identity(_inside(self.path, name))
            if earlier is not None and earlier.get("id") == now:
                self.entries[name] = earlier  # vidseg's before, untouched: as it was
            elif earlier is None and now is not None and now == at_claim:
                self.entries.pop(name, None)  # not vidseg's before (overwrite=true), untouched: still not vidseg's
            # else: this run began writing it (a partial masks/ to resume): vidseg's, id unknown
        self._claimed.clear()
        for name in [n for n in self.entries if _identity(_inside(self.path, n)) is None]:
            del self.entries[name]
        self._save()


@contextlib.contextmanager
def open_output_folder(path: str | os.PathLike, *, key: str, overwrite: bool = False,
                       inputs: Mapping[str, str | os.PathLike | None] = {}, whole_folder: Iterable[str] = (),
                       option: str = "output") -> Iterator[OutputFolder]:
    """Create (if needed) and lock the output folder ``path`` for one run; yields its :class:`OutputFolder`.

    Staging folders of earlier runs that were killed are removed once the lock is held (no live run can own
    them then). On exit the lock is released, claims never written are dropped, and a folder this call created
    is removed again if the run left nothing in it.

    Args:
        key: the run's key for stale-output removal, e.g. "predict" or "evaluate val".
        overwrite: allow replacing files and folders vidseg did not write.
        inputs: config key -> path the run reads, kept apart from what it writes (:func:`check_apart`).
        whole_folder: keys of ``inputs`` the whole output folder must keep apart from.
        option: the config key that named the folder ("output" or "output_dir"), for messages.

    Raises:
        OutputOverlapsInputError, OutputBusyError; DataError if the path is not a folder that can be created.
    """
    path = Path(path)
    check_apart(path, inputs, whole_folder=whole_folder, option=option)
    created = []
    for folder in (path, *path.parents):
        if folder.exists() or folder == folder.parent:
            break
        created.append(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"{option}={path}: is a file, not a folder; vidseg writes several files into it: give "
                        f"another {option}=<folder>") from None
    except PermissionError:
        raise DataError(f"{option}={path}: cannot be created (permission denied); give a writable "
                        f"{option}=<folder>") from None
    fd = _lock_folder(path, option)
    folder = None
    try:
        for stale in path.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        folder = OutputFolder(path, key=key, overwrite=overwrite, inputs=inputs, option=option)
        yield folder
    finally:
        try:
            if folder is not None:
                folder._tidy()
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock
            for made in created:  # deepest first; only folders this run created and left empty
                with contextlib.suppress(OSError):
                    made.rmdir()


def overwrite_option(cfg) -> bool:
    """``cfg.overwrite`` (false when absent), refused unless a boolean: ``overwrite=no`` must not mean yes."""
    value = cfg.get("overwrite", False)
    if not isinstance(value, bool):
        raise DataError(f"overwrite={value}: expected true or false; give overwrite=true to let vidseg replace "
                        "files it did not write, or leave it out")
    return value


def open_evaluation_folder(cfg, split: str):
    """:func:`open_output_folder` for ``python -m vidseg.evaluate``: ``cfg.output_dir``, key ``evaluate <split>``;
    the data root, ``predictions``, ``ckpt`` and ``data.gt_annotations`` are the inputs kept apart."""
    from omegaconf import OmegaConf

    inputs = {key: OmegaConf.select(cfg, key, default=None)
              for key in ("data.root", "predictions", "ckpt", "data.gt_annotations")}
    return open_output_folder(Path(cfg.output_dir), key=f"evaluate {split}", option="output_dir", inputs=inputs,
                              overwrite=overwrite_option(cfg))


def finish_evaluation(folder: OutputFolder, written: Iterable[str | os.PathLike], summary: Mapping[str, Any]) -> Path:
    """The end of an evaluate run: record what it wrote (names or paths inside ``folder``), remove what its
    previous run of the same split wrote and it did not, then write ``evaluation.json`` (``summary``) last.

    Returns:
        The path of ``evaluation.json``.
    """
    from vidseg.data.io import write_json_atomic

    names = [Path(p).name for p in written]
    folder.record(names)
    folder.retire([*names, "evaluation.json"])
    path = folder.path / "evaluation.json"
    write_json_atomic(path, dict(summary))
    folder.record([path.name])
    return path


def move_into_place(source: Path, target: Path) -> None:
    """Replace ``target`` (file or folder) by ``source``; the old one is removed only once the new is there.

    The old one is first moved beside ``source`` (into the staging folder), so a kill between the two renames
    leaves it where the next run's staging clean-up removes it, never as litter in the output folder.
    """
    if not os.path.lexists(target):
        os.replace(source, target)
        return
    old = source.with_name(f".old-{target.name}")
    os.replace(target, old)
    os.replace(source, target)
    _remove(old)


# ----------------------------------------------------------------------------------------------------------
# Hydra's run files
# ----------------------------------------------------------------------------------------------------------


class NoHydraRunFilesWithOutput(Callback):
    """A Hydra callback: when the output folder is given on the command line, Hydra writes no run files.

    Hydra 1.3 makes ``hydra.run.dir`` (``outputs/<task>/<command>/<time>/`` in the caller's working directory)
    before the command starts, and puts ``.hydra/`` and ``<command>.log`` in it, even when the run fails. That
    folder is the command's output only while ``<output_key>`` keeps its default, ``${hydra:runtime.output_dir}``.
    Given another value, this sets ``hydra.run.dir`` to ``.`` (Hydra's mkdir is then a no-op),
    ``hydra.output_subdir`` to null (no ``.hydra/``) and drops the job log's file handlers (console logging stays),
    so nothing is written outside the output folder and nothing is written before vidseg's own checks. Multirun
    (``-m``) keeps its sweep folders: there the user asked for them.
    """

    def __init__(self, output_key: str) -> None:
        self.output_key = output_key

    def on_run_start(self, config, **kwargs: Any) -> None:
        from omegaconf import open_dict, read_write

        node = config._get_node(self.output_key)  # the raw value: resolving it would need the run dir
        raw = node._value() if node is not None else None
        if raw is None:
            return
        if "hydra:runtime.output_dir" in str(raw):
            # Hydra's run folder is the output: note which folders Hydra is about to make, so that a run refused
            # before writing anything can remove them again (drop_unused_run_folder).
            _HYDRA_MADE.clear()
            with contextlib.suppress(Exception):
                folder = Path(str(config.hydra.run.dir)).absolute()
                while not folder.exists() and folder != folder.parent:
                    _HYDRA_MADE.append(folder)
                    folder = folder.parent
            return
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.run.dir = "."
            config.hydra.output_subdir = None
            logging_cfg = config.hydra.job_logging
            if logging_cfg is None or "handlers" not in logging_cfg:
                return
            to_file = [name for name, handler in logging_cfg.handlers.items()
                       if handler is not None and "filename" in handler]
            for name in to_file:
                del logging_cfg.handlers[name]
            users = [logging_cfg.get("root")] + list((logging_cfg.get("loggers") or {}).values())
            for user in users:
                if user is not None and user.get("handlers") is not None:
                    user.handlers = [h for h in user.handlers if h not in to_file]


# Folders Hydra was about to make for this run (deepest first), when they are the command's default output.
_HYDRA_MADE: list[Path] = []


def drop_unused_run_folder() -> None:
    """After a command refused its input: remove the run folder Hydra made for it (``outputs/<task>/<command>/
    <time>/``, and the parents Hydra made with it) when it is the default output and holds only Hydra's own
    files (``.hydra/``, ``<command>.log``). A refused run then leaves nothing in the working directory, even
    without ``output=``; a folder that existed before, or holds anything else, is left alone."""
    made, _HYDRA_MADE[:] = list(_HYDRA_MADE), []
    if not made:
        return
    run_dir = made[0]
    with contextlib.suppress(OSError):
        if not all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
            return
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
        for log in run_dir.glob("*.log"):
            log.unlink()
    for folder in made:  # deepest first; rmdir refuses a folder that is not empty
        try:
            folder.rmdir()
        except OSError:
            return

"""Recording which paths a piece of code reads and writes, with Python's audit hooks (``sys.addaudithook``).

    with record_file_access() as accesses:
        run_the_command()
    assert not outside_allowed(accesses, read_roots=[dataset, ckpt], write_roots=[output])

Python raises an audit event for ``open`` (builtin and ``os.open``), ``os.listdir``, ``os.scandir``,
``glob.glob``, ``os.mkdir``, ``os.remove``, ``os.rename``/``os.replace``, ``os.rmdir``, ``shutil.rmtree``,
``shutil.copyfile``, ``shutil.move``, ``tempfile.mkstemp``/``mkdtemp`` and more: the hook notes their paths
while a recording is on. What it cannot see: ``os.stat``/``Path.exists`` (no event; they change nothing and read
no content), C libraries opening files themselves (ffmpeg, libpng through PIL do go through Python's ``open``
here), and child processes (the scoring pool: tests give ``workers=1``).

An audit hook cannot be removed: it is installed once per process and does nothing while no recording is on.
"""

from __future__ import annotations

import contextlib
import os
import site
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Access:
    event: str
    path: str  # absolute, not resolved (resolved when checked)
    write: bool


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# event -> (indices of its path arguments, whether it changes the file system)
_PATH_EVENTS = {
    "os.listdir": ((0,), False), "os.scandir": ((0,), False), "glob.glob": ((0,), False),
    "glob.glob/2": ((0,), False),
    "os.mkdir": ((0,), True), "os.remove": ((0,), True), "os.rmdir": ((0,), True), "os.rename": ((0, 1), True),
    "os.link": ((0, 1), True), "os.symlink": ((1,), True), "os.truncate": ((0,), True), "os.chmod": ((0,), True),
    "os.chown": ((0,), True), "os.utime": ((0,), True), "shutil.rmtree": ((0,), True),
    "shutil.copyfile": ((0, 1), True), "shutil.copymode": ((1,), True), "shutil.copystat": ((1,), True),
    "shutil.copytree": ((0, 1), True), "shutil.move": ((0, 1), True), "shutil.make_archive": ((0,), True),
    "tempfile.mkstemp": ((0,), True), "tempfile.mkdtemp": ((0,), True),
}
# events whose dir_fd argument (a path relative to an open folder: seen through the event that opened it)
_DIR_FD_INDEX = {"os.mkdir": 2, "os.remove": 1, "os.rmdir": 1, "os.rename": 2, "os.chmod": 2, "os.utime": 3}


class _Recorder:
    def __init__(self) -> None:
        self.accesses: list[Access] | None = None
        self.rmtree_root: str | None = None

    def hook(self, event: str, args: tuple) -> None:
        accesses = self.accesses
        if accesses is None:
            return
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            if mode is None and isinstance(path, str) and not os.path.isabs(path) and self.rmtree_root:
                # shutil.rmtree walks with os.open(name, dir_fd=...): the event has no dir_fd, so a bare name
                # is taken as inside the tree being removed (whose removal was recorded and is checked)
                path = os.path.join(self.rmtree_root, "...", path)
            if isinstance(mode, str):
                write = any(c in mode for c in "wax+")
            else:
                write = bool(isinstance(flags, int) and flags & _WRITE_FLAGS)
            self._note(accesses, event, path, write)
            return
        spec = _PATH_EVENTS.get(event)
        if spec is None:
            return
        if event == "shutil.rmtree" and isinstance(args[0], (str, os.PathLike)):
            self.rmtree_root = os.path.abspath(args[0])
        fd_index = _DIR_FD_INDEX.get(event)
        if fd_index is not None and len(args) > fd_index and args[fd_index] not in (None, -1):
            return
        indices, write = spec
        for index in indices:
            if index < len(args):
                self._note(accesses, event, args[index], write)

    @staticmethod
    def _note(accesses: list[Access], event: str, path, write: bool) -> None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        elif isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path:
            return  # a file descriptor: its opening was recorded
        accesses.append(Access(event, os.path.abspath(path), write))


_RECORDER: _Recorder | None = None


@contextlib.contextmanager
def record_file_access() -> Iterator[list[Access]]:
    """Record every audited file access of this process (all threads) while the block runs."""
    global _RECORDER
    if _RECORDER is None:
        _RECORDER = _Recorder()
        sys.addaudithook(_RECORDER.hook)
    accesses: list[Access] = []
    _RECORDER.rmtree_root = None
    _RECORDER.accesses = accesses
    try:
        yield accesses
    finally:
        _RECORDER.accesses = None


def library_roots() -> list[Path]:
    """Where Python, its packages (vidseg and its tests: warnings read their source lines), the system and the
    libraries' caches live: reading there is not reading the user's files, and libraries keep their caches
    (fonts, compiled kernels) there."""
    import tests
    import vidseg

    home = Path.home()
    roots = [sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages(),
             *sysconfig.get_paths().values(), Path(vidseg.__file__).parent,
             Path(tests.__file__).parent, "/usr", "/lib", "/lib64", "/etc",
             "/proc", "/sys", "/dev", "/opt", home / ".cache", home / ".config" / "matplotlib",
             os.environ.get("MPLCONFIGDIR", ""), os.environ.get("TORCH_HOME", ""),
             os.environ.get("TRITON_CACHE_DIR", "")]
    # /dev: /dev/null and the terminal are written to by design
    tmp = Path(tempfile.gettempdir())
    # compiled-kernel and font caches that libraries keep in the temporary folder
    roots += [p for p in tmp.glob("torchinductor_*")] + [p for p in tmp.glob("matplotlib-*")]
    return [Path(os.path.realpath(r)) for r in roots if str(r)]


def _listed_folder(access: Access) -> str:
    return os.path.dirname(access.path) if access.event.startswith("glob.glob") else access.path


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def outside_allowed(accesses: Iterable[Access], *, read_roots: Iterable[str | os.PathLike],
                    write_roots: Iterable[str | os.PathLike]) -> list[str]:
    """The accesses outside what a command may touch: reads outside ``read_roots``, ``write_roots`` and the
    library locations; writes outside ``write_roots`` and the libraries' caches. ``"<event> <path>"`` each."""
    writable = [Path(os.path.realpath(r)) for r in write_roots]
    readable = [Path(os.path.realpath(r)) for r in read_roots] + writable
    libraries = library_roots()
    caches = [Path("/dev")] + [r for r in libraries if not _inside(r, [Path(os.path.realpath(sys.prefix))])
                               and str(r).startswith((str(Path.home()), tempfile.gettempdir()))]
    problems = []
    for access in accesses:
        if not access.write and not os.path.lexists(_listed_folder(access)):
            continue  # a probe for something that is not there (torch looks for CUDA libraries): nothing read
        path = Path(os.path.realpath(access.path))
        if access.write:
            if not _inside(path, writable + caches):
                problems.append(f"{access.event} (write) {access.path}")
        elif not _inside(path, readable + libraries):
            problems.append(f"{access.event} {access.path}")
    return sorted(set(problems))

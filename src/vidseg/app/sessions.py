"""One temporary folder per browser session, under the server's own temporary root, removed when the session
ends (the tab closes: Gradio's unload event), when it has not been used for ``ttl_s`` seconds, and with the
whole root when the server stops.

Session keys come from Gradio (its session hash), never a path: a key is only ever a dictionary key, and the
folder's name is made here.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path


class SessionFolders:
    """Session key -> its folder under ``root`` (made on first use).

    Args:
        root: the server's temporary root (its parent must exist); removed by :meth:`close`.
        ttl_s: a folder not used for this long is removed by :meth:`expire` (a tab that never said goodbye).
    """

    def __init__(self, root: Path, ttl_s: float = 3600.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = float(ttl_s)
        self._folders: dict[str, Path] = {}
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def folder(self, key: str) -> Path:
        """The session's folder (created, empty, on first use); marks the session as used now."""
        with self._lock:
            if key not in self._folders:
                self._folders[key] = Path(tempfile.mkdtemp(prefix="session-", dir=self.root))
            self._used[key] = time.monotonic()
            return self._folders[key]

    def end(self, key: str) -> None:
        """Remove the session's folder (nothing if it has none)."""
        with self._lock:
            folder = self._folders.pop(key, None)
            self._used.pop(key, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def expire(self, now: float | None = None) -> list[str]:
        """End every session unused for ``ttl_s`` seconds; returns their keys."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [key for key, used in self._used.items() if now - used > self.ttl_s]
        for key in stale:
            self.end(key)
        return stale

    def __len__(self) -> int:
        return len(self._folders)

    def close(self) -> None:
        """End every session and remove the root."""
        for key in list(self._folders):
            self.end(key)
        shutil.rmtree(self.root, ignore_errors=True)

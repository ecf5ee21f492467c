"""Peak resident memory of a call (Linux): reset VmHWM through /proc/self/clear_refs, run, read it."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

import pytest


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_bytes("VmHWM")
    except (OSError, KeyError):
        return False
    return True


requires_peak_memory = pytest.mark.skipif(not _can_reset_peak(), reason="needs /proc/self/clear_refs (Linux)")


def _release_free_heap() -> None:
    """Return freed heap pages to the OS, so reusing them during ``fn`` counts as new memory."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_extra_bytes(fn: Callable[[], object]) -> int:
    """Peak resident memory during ``fn()`` minus resident memory before it (outputs included)."""
    _release_free_heap()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_bytes("VmRSS")
    fn()
    return _status_bytes("VmHWM") - before

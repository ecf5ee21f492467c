"""Crafted bad files for the bad-input tests: a pickle that runs code, PNGs that lie about their size or
bit depth, a symbolic link loop, a folder nobody may write into."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


class _RunsCode:
    """Unpickling this calls ``os.makedirs(marker)``: a loader that runs pickled code leaves the folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def write_code_running_pickle(path: Path, marker: Path) -> Path:
    """A ``torch.save`` file whose unpickling would create ``marker`` (refused by ``weights_only=True``)."""
    import torch

    torch.save({"conv1.weight": _RunsCode(marker)}, path)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(array: np.ndarray, *, bit_depth: int = 8) -> bytes:
    """A PNG of ``array``: (H, W) grey or (H, W, 3) RGB, 8 or 16 bits per channel (16: value * 257)."""
    height, width = array.shape[:2]
    colour_type = 2 if array.ndim == 3 else 0
    samples = array.astype(np.uint16) * 257 if bit_depth == 16 else array.astype(np.uint8)
    rows = samples.astype(">u2" if bit_depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def write_png(path: Path, array: np.ndarray, *, bit_depth: int = 8) -> Path:
    path.write_bytes(png_bytes(array, bit_depth=bit_depth))
    return path


def write_decompression_bomb(path: Path, *, side: int = 60000) -> Path:
    """A small PNG whose header claims ``side`` x ``side`` pixels (3.6 G at 60000): decoding it would need
    gigabytes; PIL refuses such images (DecompressionBombError) unless told otherwise."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def make_symlink_loop(path: Path) -> Path:
    """``path`` -> ``path``: every open of it fails with ELOOP."""
    os.symlink(path.name, path)
    return path


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """``path`` made unwritable for this process while the block runs.

    Mode bits do not bind root; there the folder is made immutable (``chattr +i``, ext4/xfs/btrfs). Skips
    the test where neither works.
    """
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder unwritable for root here (no chattr +i)")
    try:
        yield path
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)

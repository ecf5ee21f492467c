"""File I/O shared by every task: indexed (palette) masks, images, atomic writes.

Masks are ``(H, W) uint8`` label maps: 0 = background, 1..N = objects, 255 = void. They are stored as
indexed PNGs with the DAVIS palette, the format the DAVIS toolkit reads. RGB masks are rejected with an
error that says how to convert them, because reading them as labels silently gives wrong ids.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vidseg.errors import CorruptFileError, DataError, MaskFormatError  # noqa: F401  (re-exported)

_UMASK = os.umask(0)
os.umask(_UMASK)


def warn_user(message: str) -> None:
    """Print ``vidseg: warning: <message>`` on stderr: input that is scored as the official code scores it,
    but that is probably not what the user meant (the score is printed, the doubt is said)."""
    import sys

    print(f"vidseg: warning: {message}", file=sys.stderr, flush=True)


def davis_palette() -> list[int]:
    """The 256-colour DAVIS palette (the PASCAL VOC bit-interleaving colour map), flat [r0, g0, b0, ...]."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


DAVIS_PALETTE = davis_palette()


def chmod_like_open(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions a plain open() would (0666 minus the umask); mkstemp creates files 0600."""
    os.chmod(path, 0o666 & ~_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    Readers never see a half-written file and an interrupted run leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        chmod_like_open(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """``(width, height, bit depth, colour type, interlace)`` from a PNG's first 29 bytes; None if not a PNG.

    Colour types: 0 grayscale, 2 RGB, 3 palette, 4 grayscale + alpha, 6 RGBA. The bit depth is per channel:
    PIL reads a 16-bit RGB PNG as 8-bit "RGB" (the high bytes only), so the mode alone cannot tell it apart.
    """
    if len(data) < 29 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, colour, interlace


def read_png_header(path: str | os.PathLike) -> tuple[int, int, int, int, int] | None:
    """:func:`png_header` of the file ``path`` (reads 29 bytes); None if it is not a PNG or cannot be read."""
    try:
        with open(path, "rb") as f:
            return png_header(f.read(29))
    except OSError:
        return None


@contextlib.contextmanager
def decoding(path: str | os.PathLike, *, error: type[DataError] = MaskFormatError, what: str = "PNG",
             fix: str = "the file is corrupt or truncated, write or copy it again") -> Iterator[None]:
    """Turn every way PIL can fail on a file into one ``error`` naming ``path``.

    PIL raises OSError, SyntaxError, ValueError, EOFError or zlib/struct errors for truncated or odd files,
    and DecompressionBombError (not an OSError) for huge images; its DecompressionBombWarning (more than
    ``Image.MAX_IMAGE_PIXELS`` pixels) is made an error too: no mask or panoptic PNG is that large, and
    decoding it would take gigabytes. DataErrors raised inside the block pass through unchanged.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except DataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise error(f"{path}: refusing to decode this {what}: {err}; no label or panoptic PNG is that large, "
                        "so the file is damaged or crafted: replace it with the real file") from err
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                MemoryError) as err:
            raise error(f"{path}: cannot decode {what} ({type(err).__name__}: {err}); {fix}") from err


MASK_MODES = ("P", "L", "1", "I", "I;16")  # PIL modes whose pixel values are label ids


def check_mask_mode(path: str | os.PathLike, mode: str) -> None:
    """Raise MaskFormatError unless a PNG of PIL ``mode`` stores label ids (not colours); header-only check."""
    if mode in ("RGB", "RGBA"):
        raise MaskFormatError(
            f"{path}: mask is {mode}, expected an indexed (palette 'P') or grayscale PNG whose pixel "
            "values are object ids. Convert it, e.g. with vidseg.data.io.rgb_to_index_mask, or save "
            "it with PIL as Image.fromarray(ids.astype('uint8')).convert('P')."
        )
    if mode not in MASK_MODES:
        raise MaskFormatError(f"{path}: unsupported PNG mode {mode!r}; expected an indexed ('P') PNG")


def read_mask(path: str | os.PathLike, *, binary_255: bool = False) -> np.ndarray:
    """Read an indexed PNG as a ``(H, W) uint8`` label map.

    Args:
        path: palette ("P") or grayscale ("L") PNG.
        binary_255: DAVIS 2016 stores single-object masks as 0/255; with this flag every non-zero pixel
            becomes object 1 (there is no void in DAVIS 2016).

    Raises:
        FileNotFoundError: the file does not exist.
        MaskFormatError: corrupt file, or an RGB/RGBA mask (ids would be colours, not labels).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    with decoding(path, what="mask", fix="the file is corrupt or not a PNG"), Image.open(path) as img:
        check_mask_mode(path, img.mode)
        labels = np.array(img)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.ndim != 2:
        raise MaskFormatError(f"{path}: expected a single-channel mask, got shape {labels.shape}")
    if labels.max(initial=0) > 255:
        raise MaskFormatError(f"{path}: label ids above 255 cannot be stored in an indexed PNG")
    labels = labels.astype(np.uint8)
    if binary_255:
        labels = (labels > 0).astype(np.uint8)
    return labels


def rgb_to_index_mask(rgb: np.ndarray, palette: list[int] = DAVIS_PALETTE) -> np.ndarray:
    """Map an ``(H, W, 3) uint8`` colour mask back to ids using ``palette``; unknown colours are an error."""
    colours = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    key = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in reversed(list(enumerate(colours)))}
    uniq, inverse = np.unique(key, return_inverse=True)
    ids = np.empty(len(uniq), dtype=np.uint8)
    for k, colour in enumerate(uniq):
        if int(colour) not in table:
            raise MaskFormatError(f"colour #{int(colour):06x} is not in the palette")
        ids[k] = table[int(colour)]
    return ids[inverse].reshape(key.shape)


def write_mask(path: str | os.PathLike, labels: np.ndarray, palette: list[int] = DAVIS_PALETTE) -> None:
    """Write a ``(H, W)`` integer label map as an indexed PNG with ``palette``, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("labels must be in [0, 255] to be stored in an indexed PNG")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``(H, W, 3) uint8`` RGB; corrupt or truncated files raise an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with decoding(path, error=CorruptFileError, what="image",
                  fix="the file is corrupt, re-extract or re-download it"), Image.open(path) as img:
        img.load()  # decode now so truncated files fail here, not later
        return np.array(img.convert("RGB"))


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> None:
    """Write an ``(H, W, 3) uint8`` RGB image atomically (format from the suffix)."""
    with atomic_path(path) as tmp:
        fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
        kwargs = {"quality": quality} if fmt == "JPEG" else {}
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format=fmt, **kwargs)

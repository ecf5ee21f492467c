"""DAVIS file layout: split files, sequence folders and their frame/annotation paths (no torch).

    <root>/JPEGImages/<resolution>/<seq>/00000.jpg ...
    <root>/Annotations/<resolution>/<seq>/00000.png ...   indexed PNG ids; DAVIS 2016: 0/255 binary
    <root>/ImageSets/<year>/<split>.txt                    one sequence name per line

Kept free of torch and Lightning so that scoring a results folder imports only what it uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vidseg.data.io import check_mask_mode
from vidseg.data.names import check_name, checked_join
from vidseg.errors import CorruptFileError, DatasetLayoutError, MaskFormatError

DAVIS_URL = "https://davischallenge.org/davis2017/code.html"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")



def _missing_root_message(root: Path, looked_for: Path) -> str:
    return (
        f"DAVIS root not found: {root.resolve()} (looked for {looked_for}). Download DAVIS 2017 "
        f"(TrainVal, 480p) from {DAVIS_URL} and unzip it so that <root>/JPEGImages, <root>/Annotations and "
        "<root>/ImageSets exist, then set data.root=<that folder>. For a quick CPU run use the toy set: "
        "`python -m vidseg.data.toy --root data/toy_davis` and data.root=data/toy_davis."
    )


def _kind_dir(root: Path, kind: str, resolution: str) -> Path:
    """``<root>/<kind>/<resolution>``; YouTube-VOS reads through here with no resolution folder ("")."""
    return checked_join(root, kind, *([resolution] if resolution else []), source="data.resolution",
                        what="resolution folder")


def _listdir(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    # Hidden files are skipped: atomic writers leave ".name.xxx" temporaries while they run.
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith("."))


def _read_2016_image_set(path: Path) -> list[str]:
    """Sequence names from DAVIS 2016's own ImageSets/<res>/<split>.txt, which lists frame/mask pairs
    ("/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png")."""
    names: list[str] = []
    for line in path.read_text().splitlines():
        if line.strip():
            name = Path(line.split()[0]).parent.name
            if name not in names:
                names.append(name)
    return names


def list_sequences(
    root: str | os.PathLike, *, year: str = "2017", split: str = "val", resolution: str = "480p"
) -> list[str]:
    """Sequence names of ``split`` from ``ImageSets/<year>/<split>.txt``, checking their folders exist.

    DAVIS 2016's own layout (``ImageSets/<resolution>/<split>.txt`` with frame paths) is read too.

    Raises:
        FileNotFoundError: missing root (the message says how to get DAVIS or the toy set), missing split
            file (lists the available ones), or a listed sequence without its frame/annotation folder.
    """
    root = Path(root)
    year = str(year)
    split_file = checked_join(root, "ImageSets", year, f"{split}.txt", source="data.year / data.split",
                              what="split")
    if not root.is_dir():
        raise FileNotFoundError(_missing_root_message(root, split_file))
    legacy_2016 = checked_join(_kind_dir(root, "ImageSets", resolution), f"{split}.txt", source="data.split",
                               what="split")
    if split_file.is_file():
        lines = split_file.read_text().splitlines()
        names = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    elif year == "2016" and legacy_2016.is_file():
        split_file = legacy_2016
        names = _read_2016_image_set(legacy_2016)
    else:
        sets = root / "ImageSets"
        available = sorted(str(p.relative_to(sets)) for p in sets.glob("*/*.txt")) if sets.is_dir() else []
        hint = f"available: {', '.join(available)}" if available else f"{sets} has no split files"
        if not sets.is_dir() and not (root / "JPEGImages").is_dir():
            raise FileNotFoundError(_missing_root_message(root, split_file))
        raise FileNotFoundError(f"split file not found: {split_file} ({hint})")
    if not names:
        raise DatasetLayoutError(f"split file {split_file} lists no sequences")
    for name in names:
        check_name(name, source=split_file, what="sequence name")
    for kind in ("JPEGImages", "Annotations"):
        res_dir = _kind_dir(root, kind, resolution)
        if not res_dir.is_dir():
            have = sorted(p.name for p in (root / kind).iterdir()) if (root / kind).is_dir() else []
            raise FileNotFoundError(
                f"folder not found: {res_dir} (resolution {resolution!r}; found {have or 'nothing'} "
                f"in {root / kind})"
            )
        for name in names:
            seq_dir = checked_join(res_dir, name, source=split_file, what="sequence name")
            if not seq_dir.is_dir():
                raise FileNotFoundError(f"sequence {name!r} listed in {split_file} has no folder {seq_dir}")
    return names


def sequence_paths(
    root: str | os.PathLike, seq: str, *, resolution: str = "480p"
) -> tuple[list[Path], list[Path]]:
    """Sorted frame paths and annotation paths of one sequence.

    Annotations may cover only some frames (test-dev has frame 0 only); every annotation must have a frame.

    Raises:
        FileNotFoundError: missing folder or no frames in it.
        DatasetLayoutError: an annotation whose frame does not exist (names the files).
    """
    root = Path(root)
    check_name(seq, source=root, what="sequence name")
    img_dir = checked_join(_kind_dir(root, "JPEGImages", resolution), seq, source=root, what="sequence name")
    ann_dir = checked_join(_kind_dir(root, "Annotations", resolution), seq, source=root, what="sequence name")
    for folder in (img_dir, ann_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"sequence folder not found: {folder}")
    frames = _listdir(img_dir, FRAME_SUFFIXES)
    if not frames:
        raise FileNotFoundError(f"no frames ({'/'.join(FRAME_SUFFIXES)}) in {img_dir}")
    masks = _listdir(ann_dir, (".png",))
    stems = {p.stem for p in frames}
    orphans = [m for m in masks if m.stem not in stems]
    if orphans:
        shown = ", ".join(str(m) for m in orphans[:5])
        raise DatasetLayoutError(
            f"{len(orphans)} annotation(s) have no frame in {img_dir}: {shown}"
            f"{' ...' if len(orphans) > 5 else ''} (frame and annotation counts differ: "
            f"{len(frames)} frames, {len(masks)} annotations)"
        )
    return frames, masks


def _image_size(path: Path, *, mask: bool = False) -> tuple[int, int]:
    """(width, height) from the file header only (cheap); ``mask``: also check it stores label ids."""
    try:
        with Image.open(path) as img:
            if mask:
                check_mask_mode(path, img.mode)
            return img.size
    except MaskFormatError:
        raise
    except (UnidentifiedImageError, OSError) as err:
        raise CorruptFileError(f"{path}: cannot read image header ({err}); the file is corrupt, re-extract or "
                               "re-download it") from err


def check_sequence(
    root: str | os.PathLike, seq: str, *, resolution: str = "480p", require_all_masks: bool = False
) -> tuple[list[Path], list[Path]]:
    """``sequence_paths`` plus consistency checks that read only file headers.

    Checks that the first frame is annotated, that every frame is annotated when ``require_all_masks``
    (training), that all frames and annotations have the same size and that annotations store ids (not RGB).

    Raises:
        DatasetLayoutError: naming the offending files.
    """
    frames, masks = sequence_paths(root, seq, resolution=resolution)
    if not masks or masks[0].stem != frames[0].stem:
        masks_dir = checked_join(_kind_dir(Path(root), "Annotations", resolution), seq, source=root,
                                 what="sequence name")
        raise DatasetLayoutError(
            f"the first frame {frames[0]} has no annotation (expected "
            f"{masks_dir / f'{frames[0].stem}.png'})"
        )
    if require_all_masks and len(masks) != len(frames):
        have = {m.stem for m in masks}
        missing = [f.stem + ".png" for f in frames if f.stem not in have]
        raise DatasetLayoutError(
            f"{seq}: {len(frames)} frames but {len(masks)} annotations; training needs every frame annotated "
            f"(missing in {masks[0].parent}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})"
        )
    ref_size = _image_size(frames[0])
    for path, is_mask in [*((f, False) for f in frames[1:]), *((m, True) for m in masks)]:
        size = _image_size(path, mask=is_mask)
        if size != ref_size:
            raise DatasetLayoutError(
                f"size mismatch: {path} is {size[0]}x{size[1]} but {frames[0]} is {ref_size[0]}x{ref_size[1]}"
            )
    return frames, masks

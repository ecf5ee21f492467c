"""Names from data files are refused before they can point outside a folder."""

from pathlib import Path

import pytest

from vidseg.data.names import check_name, check_relative_path, checked_join
from vidseg.errors import DatasetLayoutError


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", "~root", "x\x00y"])
def test_check_name_refuses_anything_but_one_component(bad):
    with pytest.raises(DatasetLayoutError, match="split.txt: refusing sequence name"):
        check_name(bad, source="split.txt", what="sequence name")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.png", "001/../../x.png", "001//x.png", "001\\x.png", "~/x"])
def test_check_relative_path_refuses_escapes(bad):
    with pytest.raises(DatasetLayoutError, match="gt.json: refusing image file name"):
        check_relative_path(bad, source="gt.json", what="image file name")


def test_good_names_pass_unchanged():
    assert check_name("bike-packing", source="s") == "bike-packing"
    assert check_relative_path("001/001_00000.jpg", source="s") == "001/001_00000.jpg"


# ------------------------------------------------------------------------------------------------ checked_join

@pytest.mark.parametrize("names", [
    ("/etc/passwd",),                     # absolute: Path / "/etc" would drop the folder
    ("..",), ("../x.png",), ("a/../../x",), ("a", ".."), ("ok", "../x"),  # ".." in any part, any argument
    ("a\\..\\x",),                         # Windows separators
    ("x\x00.png",),                       # NUL: truncates the path in C
    ("~/x",), ("a", "~root"),             # home folders
    ("",), ("a", ""), ("a//b",), ("a/",),  # empty parts: "" would name the folder itself
    (".",), ("a/./b",),
])
def test_checked_join_refuses_every_way_out(names):
    with pytest.raises(DatasetLayoutError, match=r"^gt\.json: refusing panoptic PNG name") as err:
        checked_join("/data/root", *names, source="gt.json", what="panoptic PNG name")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("names,expected", [
    (("001/001_00000.jpg",), "001/001_00000.jpg"),  # VIPER's nested file names
    (("val", "panoptic_video", "0001_0001_x_final_mask.png"), "val/panoptic_video/0001_0001_x_final_mask.png"),
    (("bike-packing", "00000.png"), "bike-packing/00000.png"),
    (("..hidden.png",), "..hidden.png"),  # ".." inside a name is a name
    ((), ""),
])
def test_checked_join_keeps_names_inside_the_folder(names, expected):
    path = checked_join("/data/root", *names, source="s")
    assert path == Path("/data/root", expected) and isinstance(path, Path)
    assert path.resolve().is_relative_to(Path("/data/root").resolve())

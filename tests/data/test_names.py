"""Names from data files are refused before they can point outside a folder."""

import pytest

from vidseg.data.names import check_name, check_relative_path
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

"""The wheel must carry the Hydra configs, so `python -m vidseg.train` works without the source tree."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_configs(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    if build.returncode != 0:
        pytest.fail(f"wheel build failed:\n{build.stdout}\n{build.stderr}")
    (wheel,) = tmp_path.glob("vidseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src" / "vidseg" / "conf").rglob("*.yaml")]
    assert expected and "vidseg/conf/train.yaml" in expected
    missing = [name for name in expected if name not in names]
    assert not missing, f"configs missing from the wheel: {missing}"
    assert "vidseg/conf/__init__.py" in names

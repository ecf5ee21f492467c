"""bench/gpu_check.sh: the prepared GPU run, exercised on CPU in its --smoke mode (TRITON_INTERPRET=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {"tests", "ops", "feelvos", "train", "vpsnet", "compile", "sweep"}


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run(["bash", "bench/gpu_check.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_without_a_gpu_it_refuses_and_says_to_use_smoke(tmp_path):
    result = _run([str(tmp_path)], timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--smoke" in result.stdout + result.stderr


@pytest.mark.slow
def test_smoke_run_writes_every_section_and_prints_the_table_last(tmp_path):
    """The whole script on CPU at tiny sizes (~3-5 minutes on 2 cores): what a GPU run can only fail on is
    what a GPU reveals."""
    result = _run([str(tmp_path), "--smoke"], timeout=1800)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(report["sections"]) == SECTIONS
    assert all(s["status"] == "ok" for s in report["sections"].values()), report["sections"]
    checks = report["sections"]["tests"]["results"]["checks.json"]
    assert not checks["failures"]
    kernels, dtypes = ("global", "local_tc", "local_direct", "correlation"), ("float32", "bfloat16", "float16")
    assert {(r["check"], r["dtype"]) for r in checks["rows"]} >= {(k, d) for k in kernels for d in dtypes}
    ops = report["sections"]["ops"]["results"]["ops-cpu-smoke.json"]
    assert {r["op"] for r in ops["rows"]} == {"local", "global", "correlation", "flow_warp"}
    assert {"bfloat16", "float32"} <= {r["dtype"] for r in ops["rows"]}
    timed = [r for r in ops["rows"] if r["method"].startswith("vidseg (") and "backward" not in r["method"]]
    assert timed and all(r["runs"] == 2 and r["floor_s"] > 0 for r in timed)
    assert any("forward+backward" in r["method"] for r in ops["rows"])
    sweep = report["sections"]["sweep"]["results"]["ops-cpu-smoke-sweep.json"]
    assert {r["op"] for r in sweep["rows"]} == {"sweep local_tc", "sweep global", "sweep correlation"}
    train = report["sections"]["train"]["results"]["train/train.json"]
    assert train["steps"] == 4 and train["steps_per_s"] > 0 and "val/J&F" in train["metrics"]
    fps = report["sections"]["compile"]["results"]["feelvos-fps-compile.json"]["rows"]
    assert {r["precision"] for r in fps} == {"32", "bf16-mixed"} and all(r["compile"] for r in fps)
    # the table comes after every section's status line, and nothing is left for the lent machine to lose
    last_status = result.stdout.rindex("[gpu_check]")
    assert result.stdout.index("| section | status |") > last_status
    assert "Training:" in result.stdout[last_status:] and "VPSNet fusetrack" in result.stdout[last_status:]
    assert {p.name for p in tmp_path.iterdir()} <= {"gpu_check.json", "gpu_check.md", "gpu_check.log",
                                                     "kernels-ptx.txt"}

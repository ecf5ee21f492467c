"""bench/gpu_check.sh: the prepared GPU run, exercised on CPU in its --smoke mode (TRITON_INTERPRET=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {"env", "tests", "ops", "sweep", "feelvos", "compile", "vpsnet"}


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
    what a GPU reveals. Training is not a default section (diagnosis.md section 5)."""
    result = _run([str(tmp_path), "--smoke"], timeout=1800)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert_smoke_report(tmp_path, result.stdout)


def assert_smoke_report(out: Path, stdout: str) -> None:
    """What a passing smoke run leaves in ``out`` and prints (also usable on a run made by hand:
    ``bash bench/gpu_check.sh DIR --smoke > DIR.txt``)."""
    report = json.loads((out / "gpu_check.json").read_text())
    assert set(report["sections"]) == SECTIONS
    assert all(s["status"] == "ok" for s in report["sections"].values()), report["sections"]
    assert list(report["sections"]) == ["env", "tests", "ops", "sweep", "feelvos", "compile", "vpsnet"]
    checks = report["sections"]["tests"]["results"]["checks.json"]
    assert not checks["failures"] and not checks["inconclusive"]
    assert all(r["status"] == "ok" for r in checks["rows"])
    kernels, dtypes = ("global", "local_tc", "local_direct", "correlation"), ("float32", "bfloat16", "float16")
    assert {(r["check"], r["dtype"]) for r in checks["rows"]} >= {(k, d) for k in kernels for d in dtypes}
    assert any(r["check"] == "self_test" for r in checks["rows"])
    ops = report["sections"]["ops"]["results"]["ops-cpu-smoke.json"]
    assert {r["op"] for r in ops["rows"]} == {"local", "global", "correlation", "flow_warp"}
    assert {"bfloat16", "float32"} <= {r["dtype"] for r in ops["rows"]}
    assert all(r["method"].startswith("vidseg") for r in ops["rows"])  # --no-baselines
    timed = [r for r in ops["rows"] if r["method"].startswith("vidseg (") and "backward" not in r["method"]]
    assert timed and all(r["runs"] == 2 and r["floor_s"] > 0 for r in timed)
    assert any("forward+backward" in r["method"] for r in ops["rows"])
    sweep = report["sections"]["sweep"]["results"]["ops-cpu-smoke-sweep.json"]
    assert {r["op"] for r in sweep["rows"]} == {"sweep local_tc", "sweep global", "sweep correlation"}
    fps = report["sections"]["compile"]["results"]["feelvos-fps-compile.json"]["rows"]
    assert {r["precision"] for r in fps} == {"bf16-mixed"} and all(r["compile"] for r in fps)
    targets = {(t["section"], t["target"]): t["verdict"] for t in report["targets"]}
    assert targets[("tests", "no failed check")] == "smoke" and len(targets) >= 9
    # the table comes after every section's status line, and nothing is left for the lent machine to lose
    last_status = stdout.rindex("[gpu_check]")
    assert stdout.index("| section | status |") > last_status
    assert "| target | section | value | verdict |" in stdout[last_status:]
    assert "VPSNet fusetrack" in stdout[last_status:]
    assert {p.name for p in out.iterdir()} <= {"gpu_check.json", "gpu_check.md", "gpu_check.log",
                                                     "kernels-ptx.txt"}


# ---------------------------------------------------------------------------------------------------
# pieces of the script, in-process (seconds)


def test_the_sweep_records_settings_the_device_cannot_run_and_goes_on(tmp_path, fake_kernels, monkeypatch):
    """One setting refused by the estimate before launching, one refused by Triton at launch (the
    2026-12-04 crash): both recorded as skipped with what they needed; every later setting and kernel runs."""
    pytest.importorskip("triton")
    from bench import ops

    fake_kernels.limit = 30000  # tiny sizes (C=16): the defaults need 12-29 KB
    fake_kernels.fail = lambda name, meta: name == "local_tc" and meta["BX"] == 16
    monkeypatch.setattr(ops, "SWEEP", {
        "local_tc": [{}, {"BX": 16, "ROWS": 4, "RN": 64}, {"BX": 128, "ROWS": 4, "RN": 256}, {"ROWS": 1}],
        "global": [{}, {"RUNNING_MIN": False}],
        "correlation": [{}],
    })
    monkeypatch.setattr(ops, "_sizes", lambda args: {"match": (12, 20, 16, 3), "band": 12, "corr": (8, 20, 16, 2),
                                                     "sets": 2, "objects": (1, 3)})
    # --smoke takes the first two settings of each list: take them all here
    monkeypatch.setattr(ops, "sweep", _all_settings(ops.sweep))
    ops.main(["--smoke", "--only-sweep", "--impl", "triton", "--device", "cpu", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "ops-cpu-smoke-sweep.json").read_text())["rows"]
    local = [r for r in rows if r["op"] == "sweep local_tc" and r["dtype"] == "float32"]
    by_method = {r["method"]: r for r in local}
    launch = by_method['{"BX": 16, "ROWS": 4, "RN": 64}']
    assert launch["skipped"] and launch["note"] == "skipped: shared 300000 > 232448 B (reported by Triton at launch)"
    estimate = by_method['{"BX": 128, "ROWS": 4, "RN": 256}']
    assert estimate["skipped"] and estimate["note"] == "skipped: shared 49152 > 30000 B (estimated before launching)"
    assert all(r["time_s"] != r["time_s"] for r in (launch, estimate))  # NaN
    timed = [r for r in rows if not r["skipped"]]
    assert {r["op"] for r in timed} == {"sweep local_tc", "sweep global", "sweep correlation"}
    assert {r["dtype"] for r in timed if r["op"] == "sweep correlation"} == {"float32", "bfloat16"}
    assert by_method['{"ROWS": 1}']["time_s"] > 0  # the setting after the skipped ones ran
    assert any("single TF32" in r["method"] for r in timed)
    md = (tmp_path / "ops-cpu-smoke-sweep.md").read_text()
    assert "| skipped |" in md and "estimated before launching" in md


def _all_settings(sweep):
    def run(args, *rest):
        args.smoke = False  # the settings list in full; sizes stay tiny (patched)
        try:
            return sweep(args, *rest)
        finally:
            args.smoke = True

    return run


def test_fallback_to_the_direct_kernel_only_on_a_hard_failure(tmp_path):
    from bench import gpu_check

    for checks, fallback in (({"failures": ["local_matching_tc_argmin"], "inconclusive": []}, True),
                             ({"failures": [], "inconclusive": ["local_matching_tc_argmin"]}, False),
                             ({"failures": ["local_matching_tc_argmin", "local_matching_direct_argmin"]}, False),
                             ({}, False)):
        result, env = {"results": {"checks.json": checks}}, {}
        gpu_check._after_tests(result, tmp_path, env)
        assert (env.get("VIDSEG_TRITON_LOCAL") == "direct") == fallback, checks
        if checks.get("inconclusive"):
            assert "inconclusive" in result["fallback"]


def test_the_tables_and_targets_survive_skipped_and_missing_results():
    from bench import gpu_check

    nan = float("nan")
    sweep_rows = [
        {"op": "sweep local_tc", "dtype": "float32", "method": "defaults", "time_s": 1.0e-3, "floor_s": 1e-4},
        {"op": "sweep local_tc", "dtype": "float32", "method": '{"BX": 128}', "time_s": nan, "floor_s": 1e-4,
         "skipped": True, "note": "skipped: shared 327680 > 232448 B (reported by Triton at launch)"},
        {"op": "sweep global", "dtype": "float32", "method": "defaults", "time_s": nan, "floor_s": 0.0, "skipped": True,
         "note": "skipped: x"},
    ]
    checks = {"failures": [], "inconclusive": ["global_matching_argmin"], "rows": [
        {"check": "global", "case": "N=1", "dtype": "float32", "status": "inconclusive", "message": "too few",
         "coverage": 0.3, "pixels": 10, "clear_cut": 3},
        {"check": "local_tc", "case": "N=3", "dtype": "float32", "status": "ok", "coverage": 0.87,
         "excess_over_tol": 0.05, "max_excess_sq": 1e-5, "tolerance_sq": 2e-4, "agreement": 0.999}]}
    report = {"env": {"torch": "2.11", "triton": "3.6", "gpu": "NVIDIA H200"}, "total_s": 300.0, "budget_s": 340.0,
              "sections": {"env": {"status": "ok", "seconds": 1.0},
                           "tests": {"status": "failed (exit 1)", "seconds": 50.0, "results": {"checks.json": checks}},
                           "sweep": {"status": "ok", "seconds": 60.0,
                                     "results": {"ops-gpu-sweep.json": {"machine": {}, "rows": sweep_rows}}},
                           "ops": {"status": "timeout (40 s)", "seconds": 40.0,
                                   "results": {"ops-gpu.json": {"unreadable": "JSONDecodeError"}}}}}
    report["targets"] = gpu_check.targets(report, smoke=False)
    verdicts = {t["target"]: t["verdict"] for t in report["targets"]}
    assert verdicts["no failed check"] == "pass" and verdicts["no inconclusive check"] == "FAIL"
    assert verdicts["coverage of clear-cut minima >= 60% (every arg-min case)"] == "FAIL"
    assert verdicts["local tc raw search, N=3 <= 1.7 ms (fp32 and bf16)"] == "not measured"
    assert verdicts["finishes"] == "pass"
    text = gpu_check.summary_tables(report)
    assert "| local_tc | float32 | 1.000 | defaults | 1.000 | 10.0 | 1 |" in text
    assert "skipped local_tc float32 {\"BX\": 128}: skipped: shared 327680 > 232448 B" in text
    assert "| global | float32 | - | - | - |  | 1 |" in text
    assert "INCONCLUSIVE checks" in text and "could not be read" not in text

"""bench/jf_speed.py at a tiny size, without the vos-benchmark side (no venv, no network)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from bench.jf_speed import check_equal, main, make_case, report

from vidseg.data.davis_layout import list_sequences, sequence_paths
from vidseg.data.io import read_mask


def test_make_case_writes_a_davis_layout_with_perturbed_results(tmp_path):
    davis, results = make_case(tmp_path, sequences=2, frames=4, height=48, width=64, seed=1)
    names = list_sequences(davis)
    assert names == ["bench-00", "bench-01"]
    for name in names:
        frames, masks = sequence_paths(davis, name)
        assert len(frames) == len(masks) == 4
        gt = np.stack([read_mask(p) for p in masks])
        pred = np.stack([read_mask(results / name / p.name) for p in masks])
        assert gt.shape == (4, 48, 64)
        n = int(gt[0].max())
        assert 2 <= n <= 5 and all(set(range(1, n + 1)) <= set(np.unique(g)) for g in gt)  # all visible
        assert pred.max() <= n and (pred != gt).any() and (pred == gt).mean() > 0.5  # close, not equal


def test_bench_times_vidseg_and_writes_its_tables(tmp_path):
    out = tmp_path / "results"
    payload = main(["--out", str(out), "--sequences", "2", "--frames", "4", "--height", "48", "--width", "64",
                    "--no-baseline", "--work", str(tmp_path / "work")])
    [row] = payload["rows"]
    assert row["name"] == "vidseg" and row["seconds"] > 0 and row["cpu_seconds"] > 0 and 0 < row["J&F-Mean"] < 1
    saved = json.loads((out / "jf-speed-cpu.json").read_text())
    assert saved["rows"] == payload["rows"] and saved["speedup_vs_vos_benchmark"] is None
    assert saved["machine"]["usable_cores"] >= 1
    table = (out / "jf-speed-cpu.md").read_text()
    assert "| vidseg |" in table and "2 sequences x 4 frames at 64x48" in table


def test_report_prints_the_ratio_and_check_equal_fails_on_disagreement():
    nums = {"J&F-Mean": 0.8, "J-Mean": 0.7, "F-Mean": 0.9}
    rows = [{"name": "vidseg", "command": "a", "seconds": 0.5, "cpu_seconds": 0.8, **nums},
            {"name": "vos-benchmark", "command": "b", "seconds": 3.0, "cpu_seconds": 4.0, **nums}]
    info = {"cpu": "x", "usable_cores": 2, "python": "3", "numpy": "2", "load_average_start": (0.1, 0, 0),
            "date": "today"}
    table, payload = report(rows, {"sequences": 8, "frames": 40, "width": 854, "height": 480}, info)
    assert payload["speedup_vs_vos_benchmark"] == pytest.approx(6.0)
    assert payload["cpu_time_ratio"] == pytest.approx(5.0)
    assert "6.0x faster" in table and "5.0x less CPU time" in table
    check_equal(rows)
    rows[1] = {**rows[1], "F-Mean": 0.9 + 1e-5}
    with pytest.raises(SystemExit, match="disagree on F-Mean"):
        check_equal(rows)


def test_the_official_toolkit_row_is_compared_at_its_three_decimals(tmp_path):
    nums = {"J&F-Mean": 0.83249, "J-Mean": 0.80821, "F-Mean": 0.85678}
    official = {"name": "official toolkit", "command": "c", "seconds": 10.0, "cpu_seconds": 9.0,
                "J&F-Mean": 0.832, "J-Mean": 0.808, "F-Mean": 0.857}
    rows = [{"name": "vidseg", "command": "a", "seconds": 0.5, "cpu_seconds": 0.8, **nums}, official]
    check_equal(rows)  # the CSV's rounding is not a disagreement
    with pytest.raises(SystemExit, match="official toolkit disagree on J-Mean"):
        check_equal([rows[0], {**official, "J-Mean": 0.809}])
    info = {"cpu": "x", "usable_cores": 2, "python": "3", "numpy": "2", "load_average_start": (0.1, 0, 0),
            "date": "today"}
    table, payload = report(rows, {"sequences": 8, "frames": 40, "width": 854, "height": 480}, info)
    assert payload["speedup_vs_official_toolkit"] == pytest.approx(20.0) and "20.0x faster than the official" in table
    with pytest.raises(SystemExit, match="not a davis2017-evaluation checkout"):
        main(["--sequences", "1", "--frames", "3", "--height", "16", "--width", "16", "--work", str(tmp_path / "w"),
              "--vos-python", sys.executable, "--official", str(tmp_path)])


def test_run_official_times_the_toolkit_script_on_a_fresh_folder_and_reads_its_table(tmp_path):
    # a stand-in for davis2017-evaluation: it re-reads an existing table, as the real script does
    from bench.jf_speed import run_official

    toolkit = tmp_path / "toolkit"
    (toolkit / "davis2017").mkdir(parents=True)
    (toolkit / "evaluation_method.py").write_text(
        "import argparse, os, pathlib\n"
        "p = argparse.ArgumentParser(); p.add_argument('--results_path'); a, _ = p.parse_known_args()\n"
        "out = pathlib.Path(a.results_path) / 'global_results-val.csv'\n"
        "assert not out.exists(), 'stale table'\n"
        "assert sorted(os.listdir(a.results_path)) == ['s0', 's1']\n"
        "out.write_text('J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\\n0.832,0.808,0.9,0.0,0.857,0.9,0.0\\n')\n"
    )
    results = tmp_path / "results"
    for seq in ("s0", "s1"):
        (results / seq).mkdir(parents=True)
    for _ in range(2):  # a second run must not find the first run's table
        nums, wall, cpu = run_official(sys.executable, toolkit, tmp_path / "davis", results, tmp_path)
        assert nums == {"J&F-Mean": 0.832, "J-Mean": 0.808, "F-Mean": 0.857} and wall > 0

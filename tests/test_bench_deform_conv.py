"""bench/deform_conv.py times the deformable conv's two paths alone and inside a toy VPS training step."""

from __future__ import annotations

import json

from bench.deform_conv import main

from vidseg.data.toy_vps import generate_toy_vps


def test_quick_bench_times_both_paths_and_a_training_step(tmp_path):
    data = tmp_path / "toy"
    generate_toy_vps(data, format="cityscapes_vps", seed=0, videos=2, val_videos=1, height=128, width=256,
                     max_objects=3)
    main(["--quick", "--out", str(tmp_path / "out"), "--data", str(data)])
    result = json.loads((tmp_path / "out" / "deform-conv-cpu-quick.json").read_text())
    rows = result["rows"]
    op_rows = [r for r in rows if r["mode"] != "train step"]
    assert {(r["mode"], r["path"]) for r in op_rows} == {
        (mode, path) for mode in ("forward", "forward+backward") for path in ("cpu", "torchvision")}
    assert all(r["ms"] > 0 and r["diff"] < 1e-3 for r in op_rows)  # the same output to float rounding
    steps = [r for r in rows if r["mode"] == "train step"]
    assert [r["path"] for r in steps] == ["cpu", "torchvision"] and all(r["ms"] > 0 for r in steps)
    assert "train step" in (tmp_path / "out" / "deform-conv-cpu-quick.md").read_text()

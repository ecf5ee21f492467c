"""bench/vpsnet_fps.py runs the network of `vidseg.train task=vps` through a checkpoint and a VPSSession."""

from __future__ import annotations

import json

from bench.vpsnet_fps import main, paper_net_config


def test_paper_config_is_fusetrack_resnet50_raft_small():
    net = paper_net_config(quick=False, detections=20)
    assert net["variant"] == "fusetrack" and net["backbone"]["name"] == "resnet50"
    assert net["flow"]["name"] == "raft_small" and net["fpn_channels"] == 256


def test_quick_bench_writes_fps_breakdown_and_memory_over_the_clip(tmp_path):
    main(["--quick", "--frames", "2", "--out", str(tmp_path), "--device", "cpu"])
    result = json.loads((tmp_path / "vpsnet-fps-cpu-quick.json").read_text())
    row = result["sizes"][0]
    assert row["fps"] > 0 and set(row["breakdown_ms"]) == {
        "backbone+FPN", "flow", "fuse", "semantic head", "detector", "panoptic head", "post-processing + tracking"}
    # every module is timed where inference really calls it (the detector through .detect, not forward)
    assert all(ms > 0 for ms in row["breakdown_ms"].values()), row["breakdown_ms"]
    assert set(result["memory_over_clip"]["after"]) == {"10", "30"}
    # the flow module alone, torchvision's RAFT forward ("base") and vidseg's ("fast"), split by RAFT stage
    base, fast = result["flow_variants"]
    assert (base["variant"], fast["variant"]) == ("base", "fast") and fast["reuse_encoding"]
    assert base["ms_per_frame"] > 0 and fast["ms_per_frame"] > 0
    assert fast["max_abs_diff_vs_base"] < 1e-3  # the same flow, to float rounding
    assert fast["stages_ms"]["feature_encoder"] > 0 and fast["stages_ms"]["update_block"] > 0
    assert (tmp_path / "vpsnet-fps-cpu-quick.md").is_file()

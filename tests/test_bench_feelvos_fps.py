"""bench/feelvos_fps.py times exactly what `vidseg.evaluate task=vos ckpt=...` runs (issue 8, point 3)."""

from __future__ import annotations

import numpy as np
from bench.feelvos_fps import paper_net_config, save_random_checkpoint, time_video
from omegaconf import OmegaConf

from tests.helpers.configs import compose_config
from vidseg.inference.vos import VOSPredictor


def test_bench_uses_the_paper_config_through_a_checkpoint_at_the_inference_stride(tmp_path):
    net = paper_net_config("resnet18")
    cfg = compose_config("train", tmp_path / "run", ["task=vos", "backbone=resnet18"])
    assert net == OmegaConf.to_container(cfg.model.net, resolve=True)  # the network vidseg.train builds
    predictor = VOSPredictor.from_checkpoint(save_random_checkpoint(net, tmp_path / "random.ckpt"))
    assert predictor.model.output_stride == 8
    assert predictor.model.feature_extractor.decoder.atrous_rates == (12, 24, 36)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(3)]
    first = np.zeros((32, 48), np.uint8)
    first[8:20, 8:30] = 1
    assert time_video(predictor, frames, first, "cpu") > 0


def test_bench_fast_path_rows_and_sync_counts_run_on_cpu(tmp_path):
    """The fast path (pipelined: frame 1 is yielded after frame 2 is queued) is timed over frames 3..; host syncs
    are counted on CUDA only and reported as n/a on CPU."""
    from argparse import Namespace

    from bench.feelvos_fps import syncs_per_frame, write_results

    from tests.helpers.feelvos import TINY_NET
    from vidseg.models.feelvos import FEELVOS

    predictor = VOSPredictor(FEELVOS(**TINY_NET), fast=True, pipelined=True)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(4)]
    first = np.zeros((32, 48), np.uint8)
    first[8:20, 8:30] = 1
    assert time_video(predictor, frames, first, "cpu") > 0
    assert syncs_per_frame(predictor, frames, first, "cpu") is None
    row = {"backbone": "tiny", "size": "32x48", "precision": "32", "path": "fast", "compile": None,
           "output_stride": 16, "vidseg_s_per_frame": 0.5, "vidseg_fps": 2.0, "naive_s_per_frame": None,
           "speedup": None, "syncs_per_frame": None}
    args = Namespace(device="cpu", out=str(tmp_path), name="t", quick=True)
    table = write_results(args, [], [row], 32, 48)
    assert "| tiny | 32 | fast | no | 0.500 | 2.00 |  |  | n/a |" in table


def test_bench_main_runs_both_methods_and_paths_as_the_gpu_check_calls_it(tmp_path):
    """The naive ops are swapped into the model with the same keyword arguments as vidseg's (a new argument of
    the ops, such as validate=, must reach the baselines too); the smoke run's --frames 4 leaves frames to time
    on the pipelined fast path."""
    import json

    from bench.feelvos_fps import main

    main(["--device", "cpu", "--quick", "--frames", "4", "--backbones", "mobilenet_v3_large", "--precision", "32",
          "--paths", "base,fast", "--methods", "vidseg,naive", "--no-syncs", "--out", str(tmp_path),
          "--name", "fps"])
    rows = json.loads((tmp_path / "fps.json").read_text())["rows"]
    assert {r["path"] for r in rows} == {"base", "fast"}
    assert all(r["vidseg_fps"] > 0 for r in rows)
    assert any(r["naive_s_per_frame"] for r in rows if r["path"] == "base")

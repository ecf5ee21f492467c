"""bench/long_video.py: the streaming worker reports memory after frame 100 and at the end; the report's table."""

from __future__ import annotations

import json

from bench.long_video import EARLY, worker_api, write_report

from tests.helpers.configs import TINY_FEELVOS, compose_config


def test_worker_reports_early_and_late_memory(toy_davis_root, tmp_path):
    from vidseg.train import train

    train(compose_config("train", tmp_path / "run", [
        "task=vos", f"data.root={toy_davis_root}", *TINY_FEELVOS, "data.crop_size=[64,112]", "data.batch_size=2",
        "data.samples_per_epoch=2", "data.num_workers=0", "trainer.max_steps=1", "trainer.check_val_every_n_epoch=1000",
        "logger=none"]))
    marks = worker_api("vos", tmp_path / "run" / "checkpoints" / "last.ckpt", EARLY + 5)
    assert 0 < marks["early_rss"] <= marks["late_rss"] and marks["device"] in ("cpu", "cuda")


def test_report_table(tmp_path):
    rows = [{"name": "vos-api", "early_rss": 500.0, "late_rss": 502.4}]
    write_report(tmp_path, rows, 5000, "cpu")
    table = (tmp_path / "long-video-cpu.md").read_text()
    assert "| vos-api | 500 | 502 | +2 |" in table and "after 5000 frames" in table
    assert json.loads((tmp_path / "long-video-cpu.json").read_text())["rows"] == rows

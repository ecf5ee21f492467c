"""``python -m vidseg.train task=vps data=vipseg experiment=toy_vipseg`` on a tiny toy VIPSeg set, and the real
recipe's config."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers.configs import compose_config
from vidseg.data.vipseg import VIPSEG_CLASSES

TINY_VIPSEG = [
    "task=vps",
    "data=vipseg",
    "experiment=toy_vipseg",
    "data.crop_size=[64,128]",
    "data.batch_size=2",
    "data.repeat=1",
    "data.train_max_videos=1",
    "data.val_max_videos=1",
    "trainer.max_steps=2",
    "trainer.log_every_n_steps=1",
]


def test_toy_vipseg_trains_validates_with_the_vipseg_protocol_and_saves_its_classes(make_toy_vps, tmp_path: Path):
    from vidseg.train import train

    root = make_toy_vps("vipseg")
    result = train(compose_config("train", tmp_path / "run", [*TINY_VIPSEG, f"data.root={root}"]))
    metrics = result["metrics"]
    # VIPSeg's windows of 1, 2, 4, 6 and 8 frames (k = 0, 5, 15, 25, 35), not Cityscapes-VPS's.
    assert {f"val/VPQ_{k}" for k in (0, 5, 15, 25, 35)} <= set(metrics) and "val/VPQ_10" not in metrics
    # validation cannot apply VIPSeg's official STQ rule (it needs the GT JSON's segment order): named as corrected
    assert {"val/STQ_corrected", "val/AQ_corrected"} <= set(metrics) and "val/STQ" not in metrics
    assert all(torch.isfinite(torch.as_tensor(v)) for k, v in metrics.items() if k.startswith("train/"))
    ckpt = torch.load(result["last_checkpoint"], map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    assert (hp["net"]["num_stuff"], hp["net"]["num_things"]) == (66, 58)
    assert [c["name"] for c in hp["categories"]] == [c["name"] for c in VIPSEG_CLASSES]

    # predict's per-frame segments JSON carries VIPSeg's own category ids (vidseg numbers stuff first)
    from vidseg.data.io import read_image
    from vidseg.data.video import write_video
    from vidseg.data.vipseg_layout import vipseg_categories
    from vidseg.predict import predict

    frames = sorted(root.glob("VIPSeg_720P/images/*/*.jpg"))[:3]
    video = write_video(tmp_path / "clip.mp4", [read_image(p) for p in frames], fps=5)
    predict(compose_config("predict", tmp_path / "p", ["task=vps", f"ckpt={result['last_checkpoint']}",
                                                       f"input={video}", f"output={tmp_path / 'pred'}"]))
    vipseg_id = {c["name"]: c["id"] for c in vipseg_categories()}
    segments = [s for p in sorted((tmp_path / "pred" / "segments").glob("*.json"))
                for s in json.loads(p.read_text())["segments_info"]]
    assert segments and all(s["category_id"] == vipseg_id[s["category"]] for s in segments)
    assert any(s["category_id"] != VIPSEG_CLASSES[[c["name"] for c in VIPSEG_CLASSES].index(s["category"])]["id"]
               for s in segments)  # the renumbered id would differ


def test_the_720p_recipe_scales_vpsnet_to_720p(tmp_path: Path):
    cfg = compose_config("train", tmp_path, ["task=vps", "data=vipseg", "experiment=vipseg"])
    assert cfg.data._target_ == "vidseg.data.vipseg.VIPSegDataModule"
    assert list(cfg.model.net.detector.anchor_sizes) == [24, 48, 96, 192, 384]
    assert cfg.model.net.stuff_area_limit == 900 and cfg.model.net.num_stuff is None
    assert (cfg.trainer.max_epochs, cfg.trainer.max_steps) == (12, -1)

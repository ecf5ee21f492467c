"""The real configs composed and run end to end on the tiny toy set: train, resume, evaluate, predict."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.helpers.configs import TINY_FEELVOS, compose_config
from vidseg.data.davis import list_sequences, sequence_paths
from vidseg.data.io import read_image, read_mask, write_mask
from vidseg.evaluate import evaluate
from vidseg.predict import predict
from vidseg.train import train

TINY_MODEL = TINY_FEELVOS


@pytest.fixture(scope="module")
def trained(toy_davis_root, tmp_path_factory):
    """Two training steps with validation: the checkpoint other tests use."""
    out = tmp_path_factory.mktemp("train")
    cfg = compose_config("train", out, [
        "task=vos", f"data.root={toy_davis_root}", *TINY_MODEL,
        "data.crop_size=[64,112]", "data.batch_size=2", "data.samples_per_epoch=4", "data.num_workers=0",
        "data.val_max_frames=5", "trainer.max_steps=2", "trainer.log_every_n_steps=1",
    ])
    result = train(cfg)
    return out, result


def test_train_writes_checkpoints_logs_and_validation_jf(trained):
    out, result = trained
    assert 0.0 <= result["metrics"]["val/J&F"] <= 1.0
    last = out / "checkpoints" / "last.ckpt"
    assert last.is_file() and result["best_checkpoint"]
    assert (out / "csv" / "metrics.csv").is_file()
    checkpoint = torch.load(last, weights_only=True)  # plain containers only
    assert checkpoint["global_step"] == 2
    assert isinstance(checkpoint["hyper_parameters"]["net"], dict)


def test_resume_continues_from_the_checkpoint(trained, toy_davis_root, tmp_path):
    out, _ = trained
    cfg = compose_config("train", tmp_path, [
        "task=vos", f"data.root={toy_davis_root}", *TINY_MODEL,
        "data.crop_size=[64,112]", "data.batch_size=2", "data.samples_per_epoch=4", "data.num_workers=0",
        "data.val_max_frames=5", "trainer.max_steps=4", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
    ])
    train(cfg)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_missing_dataset_says_where_it_looked_and_how_to_fix(tmp_path):
    cfg = compose_config("train", tmp_path / "run", ["task=vos", f"data.root={tmp_path / 'nowhere'}", *TINY_MODEL])
    with pytest.raises(FileNotFoundError) as err:
        train(cfg)
    message = str(err.value)
    assert "nowhere" in message and "davischallenge" in message.lower() and "toy" in message


def test_evaluate_checkpoint_then_rerun_reuses_only_fresh_masks(trained, toy_davis_root, tmp_path, capsys):
    out, _ = trained
    ckpt = out / "checkpoints" / "last.ckpt"
    cfg = compose_config("evaluate", tmp_path, ["task=vos", f"ckpt={ckpt}", f"data.root={toy_davis_root}",
                                                "data.split=val"])
    results = evaluate(cfg)
    printed = capsys.readouterr().out
    assert "J&F-Mean" in printed
    assert (tmp_path / "global_results-val.csv").read_text().startswith("J&F-Mean,J-Mean,J-Recall")
    saved = json.loads((tmp_path / "results-val.json").read_text())["global"]
    assert saved["J&F-Mean"] == pytest.approx(results.global_metrics["J&F-Mean"])
    seqs = list_sequences(toy_davis_root, split="val")
    assert len(list((tmp_path / "masks" / seqs[0]).glob("*.png"))) == len(sequence_paths(toy_davis_root, seqs[0])[0])

    evaluate(cfg)  # same checkpoint: sequences are kept
    assert "already predicted" in capsys.readouterr().out
    copy = tmp_path / "other.ckpt"
    shutil.copy(ckpt, copy)  # another checkpoint file: stale masks must be recomputed
    cfg = compose_config("evaluate", tmp_path, ["task=vos", f"ckpt={copy}", f"data.root={toy_davis_root}"])
    evaluate(cfg)
    assert "already predicted" not in capsys.readouterr().out


def test_evaluate_results_folder_ground_truth_scores_one(toy_davis_root, tmp_path):
    """Scoring the ground truth itself must give perfect J and F."""
    results_dir = tmp_path / "gt_as_results"
    for seq in list_sequences(toy_davis_root, split="val"):
        for path in sequence_paths(toy_davis_root, seq)[1]:
            write_mask(results_dir / seq / path.name, read_mask(path))
    cfg = compose_config("evaluate", tmp_path / "eval", ["task=vos", f"data.root={toy_davis_root}",
                                                         f"predictions={results_dir}"])
    results = evaluate(cfg)
    assert results.global_metrics["J&F-Mean"] == 1.0
    assert (tmp_path / "eval" / "results-val-jf.png").is_file()
    quiet = compose_config("evaluate", tmp_path / "quiet", ["task=vos", f"data.root={toy_davis_root}",
                                                            f"predictions={results_dir}", "plots=false", "workers=1"])
    assert evaluate(quiet).global_metrics == results.global_metrics  # one process, same scores
    assert not (tmp_path / "quiet" / "results-val-jf.png").exists()
    # an RGB results mask is refused with the file named
    seq = list_sequences(toy_davis_root, split="val")[0]
    bad = results_dir / seq / "00001.png"
    from PIL import Image
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(bad)
    with pytest.raises(ValueError, match="00001.png"):
        evaluate(cfg)


def test_evaluate_command_line_single_run_multirun_and_user_error(toy_davis_root, tmp_path):
    """``python -m vidseg.evaluate`` itself: start-up shortcuts (one config composition, GC off while composing,
    exit without teardown) keep Hydra's run directory, multirun and the one-line user error."""
    import subprocess
    import sys

    results_dir = tmp_path / "gt_as_results"
    for seq in list_sequences(toy_davis_root, split="val"):
        for path in sequence_paths(toy_davis_root, seq)[1]:
            write_mask(results_dir / seq / path.name, read_mask(path))
    command = [sys.executable, "-m", "vidseg.evaluate"]
    base = [*command, "task=vos", f"data.root={toy_davis_root}", "plots=false"]

    run_dir = tmp_path / "run"
    single = subprocess.run([*base, f"predictions={results_dir}", f"hydra.run.dir={run_dir}"],
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    assert single.stdout.startswith("J&F-Mean: 1.000") and single.stdout.endswith(".json\n")  # all flushed
    assert json.loads((run_dir / "results-val.json").read_text())["global"]["J&F-Mean"] == 1.0
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "evaluate.log").is_file()

    sweep_dir = tmp_path / "sweep"
    multi = subprocess.run([*command, "-m", *base[len(command):], f"predictions={results_dir}", "workers=1,2",
                            f"hydra.sweep.dir={sweep_dir}"], capture_output=True, text=True)
    assert multi.returncode == 0, multi.stderr
    for job in ("0", "1"):
        assert json.loads((sweep_dir / job / "results-val.json").read_text())["global"]["J&F-Mean"] == 1.0
    assert multi.stdout.count("J&F-Mean: 1.000") == 2

    missing = subprocess.run([*base, f"predictions={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'bad'}"],
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.startswith("vidseg: error: predictions=")
    assert "nowhere: the folder does not exist" in missing.stderr


def test_predict_mp4_writes_masks_and_overlay(trained, toy_davis_root, toy_video_path, tmp_path):
    out, _ = trained
    seq = list_sequences(toy_davis_root, split="val")[0]
    frames, masks = sequence_paths(toy_davis_root, seq)
    cfg = compose_config("predict", tmp_path, [
        "task=vos", f"ckpt={out / 'checkpoints' / 'last.ckpt'}", f"input={toy_video_path}",
        f"mask={masks[0]}", f"output={tmp_path / 'pred'}",
    ])
    summary = predict(cfg)
    written = sorted((tmp_path / "pred" / "masks").glob("*.png"))
    assert summary["frames"] == len(written) == len(frames)
    assert np.array_equal(read_mask(written[0]), read_mask(masks[0]))
    assert (tmp_path / "pred" / "overlay.mp4").stat().st_size > 0


def test_predict_bad_inputs(trained, toy_davis_root, tmp_path):
    out, _ = trained
    ckpt = out / "checkpoints" / "last.ckpt"
    seq = list_sequences(toy_davis_root, split="val")[0]
    frames, masks = sequence_paths(toy_davis_root, seq)
    small = tmp_path / "small.png"
    write_mask(small, np.ones((8, 8), np.uint8))
    frame_dir = frames[0].parent
    cfg = compose_config("predict", tmp_path, ["task=vos", f"ckpt={ckpt}", f"input={frame_dir}", f"mask={small}"])
    with pytest.raises(ValueError, match="small.png"):
        predict(cfg)
    empty_mask = tmp_path / "empty.png"
    write_mask(empty_mask, np.zeros(read_mask(masks[0]).shape, np.uint8))
    cfg = compose_config("predict", tmp_path, ["task=vos", f"ckpt={ckpt}", f"input={frame_dir}", f"mask={empty_mask}"])
    with pytest.raises(ValueError, match="no object"):
        predict(cfg)
    empty_mp4 = tmp_path / "empty.mp4"
    empty_mp4.write_bytes(b"")
    cfg = compose_config("predict", tmp_path, ["task=vos", f"ckpt={ckpt}", f"input={empty_mp4}", f"mask={masks[0]}"])
    with pytest.raises(OSError, match="empty.mp4"):
        predict(cfg)


def test_ddp_on_two_cpu_processes(toy_davis_root, tmp_path):
    """Lightning DDP (spawned, gloo) with the real config: training, J&F gathered over ranks, checkpoint."""
    cfg = compose_config("train", tmp_path, [
        "task=vos", f"data.root={toy_davis_root}", *TINY_MODEL,
        "data.crop_size=[64,112]", "data.batch_size=2", "data.samples_per_epoch=8", "data.num_workers=0",
        "data.val_max_frames=5", "trainer.max_steps=2", "trainer.accelerator=cpu", "trainer.devices=2",
        "+trainer.strategy=ddp_spawn", "logger=none",
    ])
    result = train(cfg)
    assert 0.0 <= result["metrics"]["val/J&F"] <= 1.0
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_validation_evaluate_and_predict_run_at_the_inference_stride(trained, toy_davis_root, tmp_path,
                                                                     monkeypatch):
    """The paper config trains at output stride 16 and must infer at 8 everywhere (issue 8, point 3)."""
    from vidseg.inference import vos as vos_inference
    from vidseg.inference.checkpoint import read_checkpoint
    from vidseg.tasks.vos import VOSTask

    out, _ = trained
    ckpt = out / "checkpoints" / "last.ckpt"
    checkpoint = read_checkpoint(ckpt)
    net = checkpoint.hyper_parameters["net"]
    assert net["backbone"]["output_stride"] == 16 and net["inference_output_stride"] == 8
    # vidseg.train records what the model was trained on (the model card's "training data")
    assert checkpoint.provenance["data"] == {"dataset": "DavisDataModule", "folder": toy_davis_root.name,
                                             "train_split": "train", "val_split": "val", "toy": True}
    assert checkpoint.provenance["global_step"] == 2 and checkpoint.provenance["vidseg_version"]
    strides = []
    real_init = vos_inference.VOSSession.__init__

    def spy(self, model, *args, **kwargs):
        strides.append((model.output_stride, model.feature_extractor.decoder.atrous_rates))
        real_init(self, model, *args, **kwargs)

    monkeypatch.setattr(vos_inference.VOSSession, "__init__", spy)
    seq = list_sequences(toy_davis_root, split="val")[0]
    frames, masks = sequence_paths(toy_davis_root, seq)
    evaluate(compose_config("evaluate", tmp_path / "eval", ["task=vos", f"ckpt={ckpt}", f"data.root={toy_davis_root}"]))
    predict(compose_config("predict", tmp_path / "pred", ["task=vos", f"ckpt={ckpt}", f"input={frames[0].parent}",
                                                          f"mask={masks[0]}", "overlay=false"]))
    task = VOSTask(**{k: v for k, v in read_checkpoint(ckpt).hyper_parameters.items()})
    task.on_validation_epoch_start()  # validation's predictor
    task._val_predictor.start(read_image(frames[0]), read_mask(masks[0]))
    assert strides and set(strides) == {(8, (12, 24, 36))}
    assert task.model.output_stride == 16  # training keeps its stride


def test_train_with_a_timm_backbone_offline(toy_davis_root, tmp_path, monkeypatch):
    """`backbone=timm backbone.name=<timm model> experiment=toy_vos trainer.max_steps=2`, offline, on CPU."""
    pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_config("train", tmp_path, [
        "task=vos", "backbone=timm", "backbone.name=resnet10t", "experiment=toy_vos", f"data.root={toy_davis_root}",
        "model.net.decoder.decoder_channels=16", "model.net.decoder.aspp_channels=16", "model.net.embedding_dim=8",
        "model.net.head_channels=16", "model.net.head_kernel=3", "model.net.head_layers=1",
        "data.crop_size=[64,112]", "data.batch_size=2", "data.samples_per_epoch=4", "data.val_max_frames=4",
        "data.val_max_sequences=1", "trainer.max_steps=2", "trainer.check_val_every_n_epoch=1", "logger=none",
    ])
    assert cfg.model.net.backbone.library == "timm" and cfg.model.net.backbone.name == "resnet10t"
    result = train(cfg)
    assert 0.0 <= result["metrics"]["val/J&F"] <= 1.0
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert any(k.startswith("model.feature_extractor.backbone.body.") for k in checkpoint["state_dict"])


def test_paper_config_defaults_are_the_official_recipe_and_the_toy_keeps_its_own(tmp_path):
    paper = compose_config("train", tmp_path / "paper", ["task=vos"])
    net = paper.model.net
    assert (net.head_norm, net.frozen_bn, net.inference_output_stride) == ("none", True, 8)
    assert net.backbone.output_stride == 16
    assert paper.model.loss.reduction == "sum" and paper.model.weight_decay_on == "conv_weights"
    assert paper.model.grad_clip_per_tensor == 5.0 and paper.trainer.gradient_clip_val is None
    assert paper.model.damage_initial_previous_frame_mask is None
    assert paper.model.optimizer._target_ == "torch.optim.SGD" and paper.model.optimizer.weight_decay == 4e-5
    assert (paper.data.min_object_pixels, paper.data.min_object_stride) == (10, 4)
    toy = compose_config("train", tmp_path / "toy", ["experiment=toy_vos"])
    assert toy.model.net.frozen_bn is False and toy.model.net.inference_output_stride is None
    assert toy.model.net.head_norm == "none" and toy.model.damage_initial_previous_frame_mask.probability == 0.5

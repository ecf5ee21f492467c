"""The bad-input matrix: bad files and config values through the entry points, as a user (or an attacker) meets
them. One parametrised test per entry point (train, evaluate, predict), cases of both tasks; each checks

- exit status 2 and exactly one ``vidseg: error: ...`` line on stderr, no traceback;
- the line names the file or the config key at fault;
- no user file changed: the inputs the command was given (dataset, results, checkpoint, video, mask) and the
  output folder, which holds a file of an earlier run;
- nothing read or written outside the folders the command was given (``tests/helpers/file_access.py``:
  Python's audit hooks record every open, listing, rename and removal while the command runs).

Each case runs the real entry point function under :func:`vidseg.utils.cli.run_cli` (what ``python -m
vidseg.<entry>`` runs after Hydra composed the config); a few run as real subprocesses at the end. A case is
``build(ctx) -> (overrides, what the message must name)``; it damages copies, never the shared toy sets.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.bad_files import (
    make_symlink_loop,
    read_only_folder,
    write_code_running_pickle,
    write_decompression_bomb,
    write_png,
)
from tests.helpers.configs import TINY_FEELVOS, compose_config
from tests.helpers.file_access import outside_allowed, record_file_access
from tests.helpers.toy_vps import copy_toy_vps
from tests.helpers.training_runs import subprocess_env
from tests.helpers.vps_submission import layout_of, submission_from_ground_truth
from tests.helpers.vps_training import TINY_VPS, train_tiny_vps
from vidseg.utils.cli import run_cli
from vidseg.utils.config_check import user_paths

TINY_VOS_TRAIN = ["task=vos", *TINY_FEELVOS, "data.crop_size=[64,112]", "data.batch_size=2",
                  "data.samples_per_epoch=4", "data.num_workers=0", "data.val_max_frames=3", "trainer.max_steps=1"]
GT_JSON = "panoptic_gt_val_city_vps.json"


def _entry(name: str) -> Callable:
    if name == "train":
        from vidseg.train import train

        return train
    if name == "evaluate":
        from vidseg.evaluate import evaluate

        return evaluate
    from vidseg.predict import predict

    return predict


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ------------------------------------------------------------------------------------------- shared fixtures


@pytest.fixture(scope="module")
def vos_ckpt(toy_davis_root: Path, tmp_path_factory) -> Path:
    from vidseg.train import train

    out = tmp_path_factory.mktemp("vos_train")
    train(compose_config("train", out, [*TINY_VOS_TRAIN, f"data.root={toy_davis_root}"]))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def vps_ckpt(toy_cityscapes_vps_root: Path, tmp_path_factory) -> Path:
    return Path(train_tiny_vps(toy_cityscapes_vps_root, tmp_path_factory.mktemp("vps_train"))["last_checkpoint"])


@dataclass
class Ctx:
    """What a case builds its input from: the shared fixtures (fetched on first use) and its own folder."""

    request: pytest.FixtureRequest
    tmp: Path
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def fixture(self, name: str):
        return self.request.getfixturevalue(name)

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    @property
    def davis(self) -> Path:
        return self.fixture("toy_davis_root")

    @cached_property
    def davis_copy(self) -> Path:
        return Path(shutil.copytree(self.davis, self.tmp / "davis"))

    @property
    def city(self) -> Path:
        return self.fixture("toy_cityscapes_vps_root")

    @cached_property
    def city_copy(self) -> Path:
        return copy_toy_vps(self.city, self.tmp / "city")

    @property
    def vos_ckpt(self) -> Path:
        return self.fixture("vos_ckpt")

    @property
    def vps_ckpt(self) -> Path:
        return self.fixture("vps_ckpt")

    @property
    def video(self) -> Path:
        return self.fixture("toy_video_path")

    def first_seq(self, root: Path, split: str = "val") -> str:
        return (root / "ImageSets" / "2017" / f"{split}.txt").read_text().split()[0]

    def frame(self, root: Path, seq: str, kind: str = "JPEGImages", index: int = 1) -> Path:
        return sorted((root / kind / "480p" / seq).glob("*.jpg" if kind == "JPEGImages" else "*.png"))[index]

    @property
    def first_mask(self) -> Path:
        return self.frame(self.davis, self.first_seq(self.davis), "Annotations", 0)

    @cached_property
    def results(self) -> Path:
        """A complete VOS results folder: the ground truth of every val frame (a perfect method)."""
        for seq in (self.davis / "ImageSets" / "2017" / "val.txt").read_text().split():
            shutil.copytree(self.davis / "Annotations" / "480p" / seq, self.tmp / "results" / seq)
        return self.tmp / "results"

    @cached_property
    def submission(self) -> Path:
        """A perfect VPS submission of the toy Cityscapes-VPS val split."""
        return submission_from_ground_truth(self.city, layout_of("cityscapes_vps"), "val", self.tmp / "submission")

    def edit_json(self, path: Path, edit: Callable[[dict], None]) -> Path:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
        return path


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Ctx], tuple[list[str], str | Path]]


# --------------------------------------------------------------------------------------------------- train


def _vos_train(ctx: Ctx, *extra: str, root: Path | None = None) -> list[str]:
    return [*TINY_VOS_TRAIN, f"data.root={root or ctx.davis}", *extra]


def _vps_train(ctx: Ctx, *extra: str, root: Path | None = None) -> list[str]:
    return [*TINY_VPS, f"data.root={root or ctx.city}", *extra]


def _train_corrupt_frame(ctx):
    bad = ctx.frame(ctx.davis_copy, ctx.first_seq(ctx.davis_copy, "train"))
    bad.write_bytes(b"not a jpeg")
    return _vos_train(ctx, root=ctx.davis_copy), bad


def _train_rgb_annotation(ctx):
    bad = ctx.frame(ctx.davis_copy, ctx.first_seq(ctx.davis_copy, "train"), "Annotations", 0)
    Image.open(bad).convert("RGB").save(bad)
    return _vos_train(ctx, root=ctx.davis_copy), bad


def _train_annotation_of_another_size(ctx):
    bad = ctx.frame(ctx.davis_copy, ctx.first_seq(ctx.davis_copy, "train"), "Annotations", 2)
    image = Image.open(bad)
    image.resize((image.width // 2, image.height // 2), Image.NEAREST).save(bad)
    return _vos_train(ctx, root=ctx.davis_copy), bad


def _train_split_names_an_unknown_sequence(ctx):
    split = ctx.davis_copy / "ImageSets" / "2017" / "train.txt"
    split.write_text(split.read_text() + "no_such_sequence\n")
    return _vos_train(ctx, root=ctx.davis_copy), "no_such_sequence"


def _train_split_with_a_path_escape(ctx):
    # frames and masks exist at the escaped path, outside data.root
    seq = ctx.first_seq(ctx.davis_copy, "train")
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(ctx.davis_copy / kind / "480p" / seq, ctx.tmp / "escape", dirs_exist_ok=True)
    split = ctx.davis_copy / "ImageSets" / "2017" / "train.txt"
    split.write_text("../../../escape\n")
    return _vos_train(ctx, root=ctx.davis_copy), "../../../escape"


def _train_truncated_resume(ctx):
    bad = ctx.tmp / "cut.ckpt"
    bad.write_bytes(ctx.vos_ckpt.read_bytes()[:5000])
    return _vos_train(ctx, f"ckpt_path={bad}"), bad


def _train_resume_with_another_model_config(ctx):
    # the tiny FEELVOS checkpoint has embedding_dim 8: resuming with 16 cannot load its weights
    return _vos_train(ctx, f"ckpt_path={ctx.vos_ckpt}", "model.net.embedding_dim=16"), "model.net.embedding_dim"


def _train_bad_backbone_weights(kind: str):
    def build(ctx):
        path = ctx.tmp / f"{kind}.pth"
        if kind == "code":
            write_code_running_pickle(path, ctx.tmp / "pwned")
        elif kind == "truncated":
            import torch
            from torchvision.models import resnet18

            torch.save(resnet18().state_dict(), path)
            path.write_bytes(path.read_bytes()[:20000])
        elif kind == "plain-pickle":  # not a torch file at all
            path.write_bytes(pickle.dumps({"conv1.weight": [1, 2, 3]}))
        elif kind == "a-list":
            import torch

            torch.save([torch.zeros(3)], path)
        else:  # another network's state dict
            import torch

            torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
        return _vos_train(ctx, f"backbone.weights={path}"), path
    return build


def _vps_train_resume_with_another_variant(ctx):
    return _vps_train(ctx, f"ckpt_path={ctx.vps_ckpt}", "model.variant=image"), "model.variant"


def _vps_train_val_file_name_escape(ctx):
    # validation during training must refuse, as evaluate does, a val frame named outside the data root
    def edit(data):
        data["images"][0]["file_name"] = "../../../" + data["images"][0]["file_name"]
    path = ctx.edit_json(ctx.city_copy / "im_all_info_val_city_vps.json", edit)  # every val frame, in order
    return _vps_train(ctx, root=ctx.city_copy), path.name


def _vps_train_category_id_string(ctx):
    def edit(data):
        data["annotations"][0]["category_id"] = "car"
    path = ctx.edit_json(ctx.city_copy / "instances_train_city_vps_rle.json", edit)
    return _vps_train(ctx, root=ctx.city_copy), path.name


def _vps_train_missing_instances_json(ctx):
    path = ctx.city_copy / "instances_train_city_vps_rle.json"
    path.unlink()
    return _vps_train(ctx, root=ctx.city_copy), path.name


def _vps_train_corrupt_json(ctx):
    path = ctx.city_copy / "instances_train_city_vps_rle.json"
    path.write_text('{"images": [')
    return _vps_train(ctx, root=ctx.city_copy), path


def _gpu_overrides(prefix: str) -> list[str]:
    """A GPU this machine does not have: any at all, or one more than it has."""
    count = _cuda_count()
    if prefix == "trainer":
        return ["trainer=gpu"] if count == 0 else ["trainer=gpu", f"trainer.devices={count + 1}"]
    return [f"{prefix}=cuda" if count == 0 else f"{prefix}=cuda:{count}"]


TRAIN_CASES = [
    Case("vos-missing-dataset-root", lambda c: (_vos_train(c, root=c.tmp / "no_davis"), c.tmp / "no_davis")),
    Case("vos-dataset-root-is-a-file", lambda c: (
        _vos_train(c, root=c.first_mask), "data.root")),
    Case("vos-corrupt-frame", _train_corrupt_frame),
    Case("vos-rgb-annotation", _train_rgb_annotation),
    Case("vos-annotation-of-another-size", _train_annotation_of_another_size),
    Case("vos-split-names-an-unknown-sequence", _train_split_names_an_unknown_sequence),
    Case("vos-split-with-a-path-escape", _train_split_with_a_path_escape),
    Case("vos-resume-truncated-checkpoint", _train_truncated_resume),
    Case("vos-resume-checkpoint-of-the-other-task", lambda c: (_vos_train(c, f"ckpt_path={c.vps_ckpt}"), c.vps_ckpt)),
    Case("vos-resume-another-model-config", _train_resume_with_another_model_config),
    Case("vos-resume-from-a-folder", lambda c: (_vos_train(c, f"ckpt_path={c.vos_ckpt.parent}"), "ckpt_path")),
    Case("vos-resume-from-a-symlink-loop", lambda c: (
        _vos_train(c, f"ckpt_path={make_symlink_loop(c.tmp / 'loop.ckpt')}"), "loop.ckpt")),
    Case("vos-batch-size-0", lambda c: (_vos_train(c, "data.batch_size=0"), "data.batch_size")),
    Case("vos-num-workers-negative", lambda c: (_vos_train(c, "data.num_workers=-1"), "data.num_workers")),
    Case("vos-crop-size-one-number", lambda c: (_vos_train(c, "data.crop_size=[64]"), "data.crop_size")),
    Case("vos-crop-size-zero", lambda c: (_vos_train(c, "data.crop_size=[0,112]"), "data.crop_size")),
    Case("vos-scale-reversed", lambda c: (_vos_train(c, "data.scale=[1.3,1.0]"), "data.scale")),
    Case("vos-precision-fp8", lambda c: (_vos_train(c, "trainer.precision=fp8"), "trainer.precision")),
    Case("vos-gpu-not-there", lambda c: (_vos_train(c, *_gpu_overrides("trainer")), "trainer.")),
    Case("vos-max-steps-0", lambda c: (_vos_train(c, "trainer.max_steps=0"), "trainer.max_steps")),
    Case("vos-max-steps-not-a-number", lambda c: (_vos_train(c, "trainer.max_steps=abc"), "trainer.max_steps")),
    Case("vos-negative-learning-rate", lambda c: (_vos_train(c, "model.optimizer.lr=-0.1"), "model.optimizer.lr")),
    Case("vos-interpolation-to-nothing", lambda c: (_vos_train(c, "data.batch_size=${nowhere}"), "data.batch_size")),
    Case("vos-backbone-weights-running-code", _train_bad_backbone_weights("code")),
    Case("vos-backbone-weights-truncated", _train_bad_backbone_weights("truncated")),
    Case("vos-backbone-weights-plain-pickle", _train_bad_backbone_weights("plain-pickle")),
    Case("vos-backbone-weights-not-a-state-dict", _train_bad_backbone_weights("a-list")),
    Case("vos-backbone-weights-of-another-network", _train_bad_backbone_weights("other")),
    Case("vos-backbone-weights-a-folder", lambda c: (_vos_train(c, f"backbone.weights={c.tmp}"), "is a folder")),
    Case("vps-missing-instances-json", _vps_train_missing_instances_json),
    Case("vps-corrupt-json", _vps_train_corrupt_json),
    Case("vps-resume-fusetrack-with-variant-image", _vps_train_resume_with_another_variant),
    Case("vps-resume-checkpoint-of-the-other-task", lambda c: (_vps_train(c, f"ckpt_path={c.vos_ckpt}"), c.vos_ckpt)),
    Case("vps-batch-size-0", lambda c: (_vps_train(c, "data.batch_size=0"), "data.batch_size")),
    Case("vps-crop-size-negative", lambda c: (_vps_train(c, "data.crop_size=[64,-128]"), "data.crop_size")),
    Case("vps-val-file-name-escape", _vps_train_val_file_name_escape),
    Case("vps-unknown-variant", lambda c: (_vps_train(c, "model.variant=fusetrak"), "model.variant")),
    Case("vos-unknown-loss-reduction", lambda c: (_vos_train(c, "model.loss.reduction=median"), "reduction")),
    Case("vps-backbone-weights-running-code", lambda c: (
        _vps_train(c, f"backbone.weights={write_code_running_pickle(c.tmp / 'w.pth', c.tmp / 'pwned')}"), "w.pth")),
    Case("vps-category-id-a-string", _vps_train_category_id_string),
]


# ------------------------------------------------------------------------------------------------ evaluate


def _vos_eval(ctx: Ctx, *extra: str, root: Path | None = None) -> list[str]:
    return ["task=vos", f"data.root={root or ctx.davis}", "workers=1", *extra]


def _vps_eval(ctx: Ctx, *extra: str, root: Path | None = None, sub: Path | None = None) -> list[str]:
    return ["task=vps", f"data.root={root or ctx.city}", f"predictions={sub or ctx.submission}", "workers=1", *extra]


def _result_png(ctx: Ctx, index: int) -> Path:
    return sorted((ctx.results / ctx.first_seq(ctx.davis)).glob("*.png"))[index]


def _eval_results_missing_a_frame(ctx):
    missing = _result_png(ctx, 3)
    missing.unlink()
    return _vos_eval(ctx, f"predictions={ctx.results}"), missing.name


def _eval_results_rgb(ctx):
    bad = _result_png(ctx, 2)
    Image.open(bad).convert("RGB").save(bad)
    return _vos_eval(ctx, f"predictions={ctx.results}"), bad


def _eval_results_another_size(ctx):
    bad = _result_png(ctx, 1)
    Image.open(bad).resize((20, 10), Image.NEAREST).save(bad)
    return _vos_eval(ctx, f"predictions={ctx.results}"), bad.name


def _eval_results_16_bit(ctx):
    bad = _result_png(ctx, 1)
    write_png(bad, np.array(Image.open(bad)), bit_depth=16)
    return _vos_eval(ctx, f"predictions={ctx.results}"), bad.name


def _eval_results_bomb(ctx):
    bad = write_decompression_bomb(_result_png(ctx, 2))
    return _vos_eval(ctx, f"predictions={ctx.results}"), bad.name


def _eval_split_escape(ctx):
    seq = ctx.first_seq(ctx.davis_copy)
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(ctx.davis_copy / kind / "480p" / seq, ctx.davis_copy / "escape", dirs_exist_ok=True)
    split = ctx.davis_copy / "ImageSets" / "2017" / "val.txt"
    split.write_text("../../escape\n")
    return _vos_eval(ctx, f"ckpt={ctx.vos_ckpt}", root=ctx.davis_copy), "../../escape"


def _truncated(ctx: Ctx, source: Path) -> Path:
    bad = ctx.tmp / "cut.ckpt"
    data = source.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _ckpt_with_a_weight_removed(ctx: Ctx, source: Path) -> Path:
    import torch

    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    key = sorted(k for k in checkpoint["state_dict"] if k.startswith("model.") and k.endswith(".weight"))[-1]
    del checkpoint["state_dict"][key]
    path = ctx.tmp / "edited.ckpt"
    torch.save(checkpoint, path)
    return path


def _code_ckpt(ctx: Ctx) -> Path:
    return write_code_running_pickle(ctx.tmp / "evil.ckpt", ctx.tmp / "pwned")


def _gt(ctx: Ctx, edit: Callable[[dict], None]) -> Path:
    ctx.edit_json(ctx.city_copy / GT_JSON, edit)
    return ctx.city_copy


def _pred(ctx: Ctx, edit: Callable[[dict], None]) -> list[str]:
    ctx.edit_json(ctx.submission / "pred.json", edit)
    return _vps_eval(ctx)


def _first_segment(data: dict) -> dict:
    return next(s for a in data["annotations"] for s in a["segments_info"])


def _vps_gt_duplicate_id(ctx):
    def edit(data):
        data["images"][1]["id"] = data["images"][0]["id"]
        data["annotations"][1]["image_id"] = data["annotations"][0]["image_id"]
    return _vps_eval(ctx, root=_gt(ctx, edit)), GT_JSON


def _vps_gt_16_bit(ctx):
    root = ctx.city_copy
    png = sorted((root / "val" / "panoptic_video").glob("*.png"))[0]
    write_png(png, np.array(Image.open(png).convert("RGB")), bit_depth=16)
    return _vps_eval(ctx, root=root), png.name


def _vps_pred_16_bit(ctx):
    png = sorted((ctx.submission / "pan_pred").glob("*.png"))[0]
    write_png(png, np.array(Image.open(png).convert("RGB")), bit_depth=16)
    return _vps_eval(ctx), png.name


def _vps_pred_bomb(ctx):
    png = write_decompression_bomb(sorted((ctx.submission / "pan_pred").glob("*.png"))[0])
    return _vps_eval(ctx), png.name


def _vps_gt_empty(ctx):
    def edit(data):
        data["images"], data["annotations"] = [], []
    root = _gt(ctx, edit)

    def empty(data):
        data["annotations"] = []
    ctx.edit_json(ctx.submission / "pred.json", empty)
    return _vps_eval(ctx, root=root), GT_JSON


def _vps_gt_id_escape(ctx):
    def edit(data):
        data["images"][0]["id"] = "../" + str(data["images"][0]["id"])
        data["annotations"][0]["image_id"] = data["images"][0]["id"]
    # pred.json entries follow the GT's image order: the scorer would read pan_pred/../<id>.png
    return _vps_eval(ctx, root=_gt(ctx, edit)), "../"


def _vps_gt_file_name_escape(ctx):
    def edit(data):
        data["images"][0]["file_name"] = "../../" + data["images"][0]["file_name"]
    return _vps_eval(ctx, root=_gt(ctx, edit)), GT_JSON


def _vps_unknown_image_id(ctx):
    gt = json.loads((ctx.city / GT_JSON).read_text())

    def edit(data):  # every entry names its image, one an image the GT does not have
        for entry, image in zip(data["annotations"], gt["images"], strict=True):
            entry["image_id"] = str(image["id"])
        data["annotations"][0]["image_id"] = "9999_9999"
    return _pred(ctx, edit), "9999_9999"


def _set_first_segment(key: str, value) -> Callable[[Ctx], tuple[list[str], str]]:
    def build(ctx):
        def edit(data):
            _first_segment(data)[key] = value
        return _pred(ctx, edit), "pred.json"
    return build


def _set_gt_first_segment(key: str, value) -> Callable[[Ctx], tuple[list[str], str]]:
    def build(ctx):
        def edit(data):
            _first_segment(data)[key] = value
        return _vps_eval(ctx, root=_gt(ctx, edit)), GT_JSON
    return build


def _vps_pred_without_segments_info(ctx):
    # (pred.json's file_name is read by neither eval_vpq.py nor vidseg: entries are matched by order or image_id)
    def edit(data):
        del data["annotations"][0]["segments_info"]
    return _pred(ctx, edit), "pred.json"


def _vps_pred_segments_not_a_list(ctx):
    def edit(data):
        data["annotations"][0]["segments_info"] = {"id": 1}
    return _pred(ctx, edit), "pred.json"


def _vps_gt_height_a_string(ctx):
    def edit(data):
        data["images"][0]["height"] = "sixty-four"
    return _vps_eval(ctx, root=_gt(ctx, edit)), GT_JSON


def _vps_pred_not_json(ctx):
    (ctx.submission / "pred.json").write_text('{"annotations": [')
    return _vps_eval(ctx), "pred.json"


def _vps_without_pred_json(ctx):
    (ctx.submission / "pred.json").unlink()
    return _vps_eval(ctx), ctx.submission / "pred.json"


def _vps_missing_png(ctx):
    missing = sorted((ctx.submission / "pan_pred").glob("*.png"))[0]
    missing.unlink()
    return _vps_eval(ctx), missing.name


def _unwritable_output(key: str, base: Callable[[Ctx], list[str]]):
    def build(ctx):
        folder = ctx.stack.enter_context(read_only_folder(ctx.tmp / "locked"))
        return [*base(ctx), f"{key}={folder}"], folder
    return build


def _output_is_a_file(key: str, base: Callable[[Ctx], list[str]]):
    def build(ctx):
        path = ctx.tmp / "notes.txt"
        path.write_text("the user's notes\n")
        return [*base(ctx), f"{key}={path}"], path
    return build


EVALUATE_CASES = [
    Case("vos-results-missing-a-frame", _eval_results_missing_a_frame),
    Case("vos-results-rgb-mask", _eval_results_rgb),
    Case("vos-results-of-another-size", _eval_results_another_size),
    Case("vos-results-16-bit-png", _eval_results_16_bit),
    Case("vos-results-decompression-bomb", _eval_results_bomb),
    Case("vos-results-folder-missing", lambda c: (_vos_eval(c, f"predictions={c.tmp / 'nothing'}"), "predictions")),
    Case("vos-results-folder-is-a-file", lambda c: (_vos_eval(c, f"predictions={c.first_mask}"), "predictions")),
    Case("vos-truncated-checkpoint", lambda c: (
        _vos_eval(c, f"ckpt={_truncated(c, c.vos_ckpt)}"), c.tmp / "cut.ckpt")),
    Case("vos-checkpoint-running-code", lambda c: (_vos_eval(c, f"ckpt={_code_ckpt(c)}"), "evil.ckpt")),
    Case("vos-checkpoint-with-a-weight-removed", lambda c: (
        _vos_eval(c, f"ckpt={_ckpt_with_a_weight_removed(c, c.vos_ckpt)}"), "edited.ckpt")),
    Case("vos-vps-checkpoint", lambda c: (_vos_eval(c, f"ckpt={c.vps_ckpt}"), c.vps_ckpt)),
    Case("vos-checkpoint-is-a-folder", lambda c: (_vos_eval(c, f"ckpt={c.vos_ckpt.parent}"), "ckpt=")),
    Case("vos-checkpoint-symlink-loop", lambda c: (
        _vos_eval(c, f"ckpt={make_symlink_loop(c.tmp / 'loop.ckpt')}"), "loop.ckpt")),
    Case("vos-split-with-a-path-escape", _eval_split_escape),
    Case("vos-output-dir-is-a-file", _output_is_a_file("output_dir", lambda c: _vos_eval(
        c, f"predictions={c.results}"))),
    Case("vos-output-dir-unwritable", _unwritable_output("output_dir", lambda c: _vos_eval(
        c, f"predictions={c.results}"))),
    Case("vos-workers-0", lambda c: (_vos_eval(c, f"predictions={c.results}", "workers=0"), "workers")),
    Case("vos-gpu-not-there", lambda c: (_vos_eval(c, f"ckpt={c.vos_ckpt}", *_gpu_overrides("device")), "device")),
    Case("vos-precision-fp8", lambda c: (_vos_eval(c, f"ckpt={c.vos_ckpt}", "precision=fp8"), "precision")),
    Case("vos-plots-not-a-boolean", lambda c: (_vos_eval(c, f"predictions={c.results}", "plots=maybe"), "plots")),
    Case("vps-submission-without-pred-json", _vps_without_pred_json),
    Case("vps-submission-missing-a-png", _vps_missing_png),
    Case("vps-submission-unknown-image-id", _vps_unknown_image_id),
    Case("vps-pred-json-not-json", _vps_pred_not_json),
    Case("vps-pred-without-segments-info", _vps_pred_without_segments_info),
    Case("vps-pred-segments-info-not-a-list", _vps_pred_segments_not_a_list),
    Case("vps-pred-category-id-a-string", _set_first_segment("category_id", "car")),
    Case("vps-pred-area-nan", _set_first_segment("area", float("nan"))),
    Case("vps-pred-iscrowd-a-list", _set_first_segment("iscrowd", [0])),
    Case("vps-pred-16-bit-png", _vps_pred_16_bit),
    Case("vps-pred-decompression-bomb", _vps_pred_bomb),
    Case("vps-gt-duplicate-image-id", _vps_gt_duplicate_id),
    Case("vps-gt-16-bit-png", _vps_gt_16_bit),
    Case("vps-gt-empty", _vps_gt_empty),
    Case("vps-gt-image-id-escape", _vps_gt_id_escape),
    Case("vps-gt-file-name-escape", _vps_gt_file_name_escape),
    Case("vps-gt-area-a-string", _set_gt_first_segment("area", "big")),
    Case("vps-gt-height-a-string", _vps_gt_height_a_string),
    Case("vps-vos-checkpoint", lambda c: (
        ["task=vps", f"data.root={c.city}", f"ckpt={c.vos_ckpt}", "workers=1"], c.vos_ckpt)),
    Case("vps-checkpoint-running-code", lambda c: (
        ["task=vps", f"data.root={c.city}", f"ckpt={_code_ckpt(c)}", "workers=1"], "evil.ckpt")),
    Case("vps-output-dir-is-a-file", _output_is_a_file("output_dir", _vps_eval)),
    Case("vps-workers-negative", lambda c: (_vps_eval(c, "workers=-1"), "workers")),
]


# ------------------------------------------------------------------------------------------------- predict


def _vos_predict(ctx: Ctx, *extra: str, ckpt: Path | None = None, input_path: Path | None = None,
                 mask: Path | None = None) -> list[str]:
    return ["task=vos", f"ckpt={ckpt or ctx.vos_ckpt}", f"input={input_path or ctx.video}",
            f"mask={mask or ctx.first_mask}", f"output={ctx.out}", "overlay=false", *extra]


def _vps_predict(ctx: Ctx, *extra: str, ckpt: Path | None = None, input_path: Path | None = None) -> list[str]:
    return ["task=vps", f"ckpt={ckpt or ctx.vps_ckpt}", f"input={input_path or ctx.video}", f"output={ctx.out}",
            "overlay=false", *extra]


def _predict_unreadable_video(ctx):
    bad = ctx.tmp / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    return _vos_predict(ctx, input_path=bad), bad


def _predict_mask_of_another_size(ctx):
    mask = ctx.tmp / "mask.png"
    Image.fromarray(np.ones((10, 20), np.uint8), mode="L").convert("P").save(mask)
    return _vos_predict(ctx, mask=mask), mask


def _predict_rgb_mask(ctx):
    mask = ctx.tmp / "mask.png"
    Image.open(ctx.first_mask).convert("RGB").save(mask)
    return _vos_predict(ctx, mask=mask), mask


def _predict_16_bit_mask(ctx):
    mask = write_png(ctx.tmp / "mask.png", np.array(Image.open(ctx.first_mask)), bit_depth=16)
    return _vos_predict(ctx, mask=mask), mask


def _predict_bomb_mask(ctx):
    mask = write_decompression_bomb(ctx.tmp / "mask.png")
    return _vos_predict(ctx, mask=mask), mask


def _predict_empty_frame_folder(ctx):
    empty = ctx.tmp / "frames"
    empty.mkdir()
    return _vos_predict(ctx, input_path=empty), empty


def _vps_predict_corrupt_frame(ctx):
    frames = Path(shutil.copytree(ctx.davis / "JPEGImages" / "480p" / ctx.first_seq(ctx.davis), ctx.tmp / "frames"))
    bad = sorted(frames.glob("*.jpg"))[2]
    bad.write_bytes(b"garbage")
    return _vps_predict(ctx, input_path=frames), bad


def _unwritable_masks_folder(ctx):
    # the output folder passes the up-front check; what fails is replacing the locked masks/ at the end
    # (overwrite=true: the user allows replacing it, the file system does not)
    masks = ctx.stack.enter_context(read_only_folder(ctx.out / "masks"))
    return _vos_predict(ctx, "overwrite=true"), masks


def _predict_missing_mandatory(ctx):
    return ["task=vos", f"mask={ctx.first_mask}", f"output={ctx.out}"], "ckpt="


PREDICT_CASES = [
    Case("vos-missing-input", lambda c: (_vos_predict(c, input_path=c.tmp / "no_video.mp4"), c.tmp / "no_video.mp4")),
    Case("vos-input-symlink-loop", lambda c: (
        _vos_predict(c, input_path=make_symlink_loop(c.tmp / "loop.mp4")), "loop.mp4")),
    Case("vos-unreadable-video", _predict_unreadable_video),
    Case("vos-mask-of-another-size", _predict_mask_of_another_size),
    Case("vos-rgb-mask", _predict_rgb_mask),
    Case("vos-16-bit-mask", _predict_16_bit_mask),
    Case("vos-decompression-bomb-mask", _predict_bomb_mask),
    Case("vos-missing-mask-file", lambda c: (_vos_predict(c, mask=c.tmp / "no_mask.png"), c.tmp / "no_mask.png")),
    Case("vos-empty-frame-folder", _predict_empty_frame_folder),
    Case("vos-missing-ckpt-and-input", _predict_missing_mandatory),
    Case("vos-missing-checkpoint", lambda c: (_vos_predict(c, ckpt=c.tmp / "no.ckpt"), c.tmp / "no.ckpt")),
    Case("vos-checkpoint-is-a-folder", lambda c: (_vos_predict(c, ckpt=c.vos_ckpt.parent), "ckpt=")),
    Case("vos-checkpoint-running-code", lambda c: (_vos_predict(c, ckpt=_code_ckpt(c)), "evil.ckpt")),
    Case("vos-checkpoint-with-a-weight-removed", lambda c: (
        _vos_predict(c, ckpt=_ckpt_with_a_weight_removed(c, c.vos_ckpt)), "edited.ckpt")),
    Case("vos-fps-negative", lambda c: (_vos_predict(c, "fps=-5"), "fps")),
    Case("vos-fps-not-a-number", lambda c: (_vos_predict(c, "fps=fast"), "fps")),
    Case("vos-precision-fp8", lambda c: (_vos_predict(c, "precision=fp8"), "precision")),
    Case("vos-gpu-not-there", lambda c: (_vos_predict(c, *_gpu_overrides("device")), "device")),
    Case("vos-device-misspelt", lambda c: (_vos_predict(c, "device=gpu0"), "device")),
    Case("vos-overlay-not-a-boolean", lambda c: (_vos_predict(c, "overlay=maybe"), "overlay")),
    Case("vos-output-is-a-file", _output_is_a_file("output", _vos_predict)),
    Case("vos-output-unwritable", _unwritable_output("output", _vos_predict)),
    Case("vos-output-masks-folder-unwritable", _unwritable_masks_folder),
    Case("vps-vos-checkpoint", lambda c: (_vps_predict(c, ckpt=c.vos_ckpt), c.vos_ckpt)),
    Case("vps-truncated-checkpoint", lambda c: (_vps_predict(c, ckpt=_truncated(c, c.vps_ckpt)), "cut.ckpt")),
    Case("vps-corrupt-frame-in-a-folder", _vps_predict_corrupt_frame),
    Case("vps-missing-input", lambda c: (_vps_predict(c, input_path=c.tmp / "none.mp4"), "none.mp4")),
    Case("vps-fps-zero", lambda c: (_vps_predict(c, "fps=0"), "fps")),
    Case("vps-gpu-index-not-there", lambda c: (_vps_predict(c, f"device=cuda:{_cuda_count() + 4}"), "device")),
    Case("vps-output-is-a-file", _output_is_a_file("output", _vps_predict)),
]


# ---------------------------------------------------------------------------------------------- the check


def _signature(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root`` (or ``root`` itself) with size, mtime and inode: any change shows."""
    if root.is_symlink() and not root.exists():
        return {"": ("link", os.readlink(root))}
    if not root.exists():
        return {}
    paths = [root] if root.is_file() else [root, *sorted(root.rglob("*"))]
    signature = {}
    for path in paths:
        stat = path.lstat()
        signature[str(path.relative_to(root))] = (stat.st_mode, stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return signature


def expect_user_error(capsys, request, tmp_path: Path, entry: str, case: Case) -> str:
    """Run ``case`` through ``entry``; check the contract of the module docstring. Returns the error line."""
    ctx = Ctx(request, tmp_path)
    with ctx.stack:
        overrides, names = case.build(ctx)
        out = ctx.out
        out.mkdir(parents=True, exist_ok=True)
        earlier = out / "earlier-result.txt"
        earlier.write_text("written by an earlier run\n")
        cfg = compose_config(entry, out, overrides)
        given = [Path(p) for p in user_paths(cfg)]
        inputs = [p for p in given if os.path.abspath(p) != os.path.abspath(out)]
        before = {str(p): _signature(p) for p in inputs}
        capsys.readouterr()
        with record_file_access() as accesses, pytest.raises(SystemExit) as exit_info:
            run_cli(lambda: _entry(entry)(cfg), user_paths=lambda: user_paths(cfg))
        stderr = capsys.readouterr().err
        lines = [ln for ln in stderr.splitlines() if ln.startswith("vidseg: error: ")]
        assert exit_info.value.code == 2, stderr
        assert len(lines) == 1 and "Traceback" not in stderr, stderr
        assert str(names) in lines[0], f"{names} not named in: {lines[0]}"
        assert earlier.read_text() == "written by an earlier run\n", "an earlier output was changed or removed"
        changed = [p for p in before if _signature(Path(p)) != before[p]]
        assert not changed, f"user files changed: {changed}"
        assert not (tmp_path / "pwned").exists(), "a pickled payload ran"
        # Reads: the paths given on the command line; writes: the output folder(s) only.
        outputs = [out, *[p for p in given if str(p) in (str(cfg.get("output")), str(cfg.get("output_dir")))]]
        outside = outside_allowed(accesses, read_roots=given, write_roots=outputs)
        assert not outside, f"read or written outside the given folders: {outside[:5]}"
    return lines[0]


def _ids(cases: list[Case]) -> list[str]:
    return [c.name for c in cases]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=_ids(TRAIN_CASES))
def test_train_refuses_bad_input_in_one_line(capsys, request, tmp_path, case):
    expect_user_error(capsys, request, tmp_path, "train", case)


@pytest.mark.parametrize("case", EVALUATE_CASES, ids=_ids(EVALUATE_CASES))
def test_evaluate_refuses_bad_input_in_one_line(capsys, request, tmp_path, case):
    expect_user_error(capsys, request, tmp_path, "evaluate", case)


@pytest.mark.parametrize("case", PREDICT_CASES, ids=_ids(PREDICT_CASES))
def test_predict_refuses_bad_input_in_one_line(capsys, request, tmp_path, case):
    expect_user_error(capsys, request, tmp_path, "predict", case)


def test_resume_with_another_variant_names_both_values(capsys, request, tmp_path):
    line = expect_user_error(capsys, request, tmp_path, "train", next(
        c for c in TRAIN_CASES if c.name == "vps-resume-fusetrack-with-variant-image"))
    assert "'fusetrack'" in line and "'image'" in line and "state_dict" not in line


# ------------------------------------------------------------------------------------- the real command line


@pytest.mark.parametrize("entry, args, names", [
    ("evaluate", ["task=vos", "data.root={missing}", "predictions={missing}"], "{missing}"),
    ("predict", ["task=vos", "ckpt={missing}", "input={missing}", "mask={missing}"], "{missing}"),
    ("predict", ["task=vps"], "ckpt="),  # Hydra's MissingMandatoryValue, as one line
    ("evaluate", ["task=vps", "predictions={missing}", "workers=0"], "workers"),
])
def test_command_line_prints_one_line_and_exits_2(tmp_path, entry, args, names):
    missing = tmp_path / "missing_thing"
    argv = [sys.executable, "-m", f"vidseg.{entry}", *[a.format(missing=missing) for a in args],
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("vidseg: error: ") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert names.format(missing=missing) in proc.stderr


def test_the_file_access_check_sees_reads_and_writes_outside(tmp_path):
    # the matrix's last assertion is only as good as this recorder: it must see a plain read, a listing and a write
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    with record_file_access() as accesses:
        secret.read_text()
        os.listdir(tmp_path)
        (tmp_path / "made").mkdir()
    problems = outside_allowed(accesses, read_roots=[tmp_path / "data"], write_roots=[tmp_path / "out"])
    assert any(p.startswith("open ") and p.endswith("secret.txt") for p in problems), problems
    assert any(p.startswith("os.listdir ") for p in problems) and any("(write)" in p for p in problems), problems
    assert not outside_allowed(accesses, read_roots=[tmp_path], write_roots=[tmp_path])

"""LightningModule for video panoptic segmentation with VPSNet: losses, optimisation, validation VPQ / STQ.

Validation streams every clip frame by frame through :class:`vidseg.inference.vps.VPSSession` (the session
behind evaluate, predict and the Python API) and scores each finished clip with the torchmetrics wrappers
of :mod:`vidseg.metrics.vps_metrics` (one update = one whole video). Under DDP a clip is never split
across processes: the datamodule's :class:`~vidseg.data.vps_common.VideoShardSampler` hands whole clips to
ranks and the metric states are summed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import get_class

from vidseg.constants import IGNORE_LABEL, PANOPTIC_LABEL_DIVISOR, PANOPTIC_VOID_ID
from vidseg.inference.checkpoint import PROVENANCE_KEY, TASK_KEY
from vidseg.inference.vps import VPSSession
from vidseg.metrics.vps_metrics import SegmentationTrackingQuality, VideoPanopticQuality
from vidseg.models.vpsnet import VARIANTS, build_vpsnet
from vidseg.pretrained import PretrainedTaskMixin
from vidseg.utils.device import autocast_dtype

SCHEDULE_POLICIES = ("step", "poly", "constant")
DEFAULT_SCHEDULER: dict[str, Any] = {
    "warmup_iters": 500, "warmup_ratio": 1.0 / 3, "policy": "step", "milestones": [8 / 12, 11 / 12], "gamma": 0.1,
    "power": 0.9,
}


def lr_factor(step: int, total: int, *, warmup_iters: int = 500, warmup_ratio: float = 1.0 / 3,
              policy: str = "step", milestones: Sequence[float] = (8 / 12, 11 / 12), gamma: float = 0.1,
              power: float = 0.9) -> float:
    """Learning-rate multiplier at optimizer step ``step`` of ``total`` (mmdetection's schedule, as VPSNet).

    Linear warm-up from ``warmup_ratio`` to 1 over the first ``warmup_iters`` steps, times the policy:
    "step" multiplies by ``gamma`` at each milestone (a fraction of ``total`` if < 1, else a step number;
    official: epochs 8 and 11 of 12), "poly" is ``(1 - step / total) ** power``, "constant" is 1.
    """
    if policy not in SCHEDULE_POLICIES:
        raise ValueError(f"scheduler.policy must be one of {SCHEDULE_POLICIES}, got {policy!r}")
    total = max(1, int(total))
    if policy == "step":
        bounds = [m * total if m < 1 else m for m in milestones]
        factor = gamma ** sum(step >= b for b in bounds)
    elif policy == "poly":
        factor = max(0.0, 1.0 - step / total) ** power
    else:
        factor = 1.0
    if warmup_iters > 0 and step < warmup_iters:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * step / warmup_iters
    return factor


# ----------------------------------------------------------------------------------------------------------
# Ground truth of the evaluation datasets -> metric inputs
# ----------------------------------------------------------------------------------------------------------


def ground_truth_segments(panoptic: np.ndarray | torch.Tensor, thing_ids: Sequence[int]
                          ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A VPS evaluation item's ``panoptic`` ((H, W) int64: stuff class, thing class * 1000 + instance,
    bare thing class = crowd, 255 void; :mod:`vidseg.data.vps_common`) -> COCO-panoptic ids with the same
    numbering as predictions (void 0, class c -> c + 1, instance i of class c -> (i + 1) * 1000 + c) and its
    segments_info ({"id", "category_id", "iscrowd", "area"})."""
    values = panoptic.cpu().numpy() if isinstance(panoptic, torch.Tensor) else np.asarray(panoptic)
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ids = np.zeros(len(uniq), dtype=np.int64)
    segments = []
    things = set(int(t) for t in thing_ids)
    for k, (value, area) in enumerate(zip(uniq.tolist(), counts.tolist(), strict=True)):
        if value == IGNORE_LABEL:
            ids[k] = PANOPTIC_VOID_ID
            continue
        if value >= PANOPTIC_LABEL_DIVISOR:
            cls, inst = divmod(value, PANOPTIC_LABEL_DIVISOR)
            ids[k] = (inst + 1) * PANOPTIC_LABEL_DIVISOR + cls
            crowd = 0
        else:
            cls = value
            ids[k] = cls + 1
            crowd = int(cls in things)
        segments.append({"id": int(ids[k]), "category_id": int(cls), "iscrowd": crowd, "area": int(area)})
    return ids[inverse].reshape(values.shape), segments


# ----------------------------------------------------------------------------------------------------------
# Whole clips per rank
# ----------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------------------


class VPSTask(PretrainedTaskMixin, pl.LightningModule):
    """VPSNet training and streaming validation (VPQ and STQ).

    All arguments are plain containers (saved as hyper-parameters, so checkpoints load with
    ``weights_only=True`` and :class:`vidseg.inference.vps.VPSPredictor` rebuilds the network from them).

    Args:
        net: keyword arguments of :func:`vidseg.models.vpsnet.build_vpsnet`. ``num_stuff`` / ``num_things``
            None = taken from the datamodule's classes in :meth:`setup` (given values are checked there).
        variant: "image" | "fuse" | "track" | "fusetrack"; overrides ``net.variant`` (``model.variant=...``).
        optimizer: {"_target_": "torch.optim.SGD", "lr": 0.005, "momentum": 0.9, "weight_decay": 1e-4}; every
            trainable parameter decays (mmdetection's default, as VPSNet).
        scheduler: see :func:`lr_factor` ({"warmup_iters", "warmup_ratio", "policy", "milestones", "gamma",
            "power"}); None = constant lr without warm-up. Stepped per optimizer step.
        grad_clip_norm: clip the global L2 norm of the gradients to this (VPSNet: 35); None: no clipping here.
            Lightning's ``trainer.gradient_clip_val`` is the alternative (use one or the other).
        lr_reference_batch: the batch size ``optimizer.lr`` is given for (VPSNet: 0.005 for 8 images); the lr
            is scaled linearly to the effective batch (batch_size x devices x nodes x accumulation). None:
            use ``optimizer.lr`` as it is.
        categories: [{"id", "name", "isthing", "color"}] of the classes; None = the datamodule's (saved in
            the checkpoint for predict's JSON and overlay).
        val_precision: precision of the validation session ("32" or "bf16-mixed").
    """

    task_name = "vps"  # PretrainedTaskMixin: the task a pretrained folder must hold

    def __init__(self, net: dict, optimizer: dict, scheduler: dict | None = None, variant: str | None = None,
                 grad_clip_norm: float | None = 35.0, lr_reference_batch: int | None = 8,
                 categories: list | None = None, val_precision: str = "32"):
        super().__init__()
        self.provenance: dict = {}  # set by vidseg.train (vidseg.pretrained.training_provenance)
        net = dict(net)
        if variant is not None:
            net["variant"] = variant
        if net.get("variant", "fusetrack") not in VARIANTS:
            raise ValueError(f"model.variant must be one of {'|'.join(VARIANTS)}, got {net.get('variant')!r}")
        self.save_hyperparameters()
        self.hparams.net = net
        self.model = None
        if net.get("num_stuff") is not None and net.get("num_things") is not None:
            self.model = build_vpsnet(**net)
        scheduler_spec = {**DEFAULT_SCHEDULER, **(scheduler or {})}
        if scheduler_spec["policy"] not in SCHEDULE_POLICIES:
            raise ValueError(f"scheduler.policy must be one of {SCHEDULE_POLICIES}, got {scheduler_spec['policy']!r}")
        self._val_session: VPSSession | None = None
        self._val_video: str | None = None
        self._val_frames: list[tuple[np.ndarray, list, np.ndarray, list]] = []
        self._val_next_frame = 0
        self.val_vpq: VideoPanopticQuality | None = None
        self.val_stq: SegmentationTrackingQuality | None = None
        self._stq_name = "STQ"  # "STQ_corrected" where validation cannot apply the benchmark's own STQ rule

    # ---- classes from the data --------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        info = getattr(datamodule, "info", None)
        net = dict(self.hparams.net)
        if info is not None:
            categories = [dict(c) for c in info.categories]
            num_stuff = sum(1 for c in categories if not c["isthing"])
            num_things = len(categories) - num_stuff
            for key, found in (("num_stuff", num_stuff), ("num_things", num_things)):
                given = net.get(key)
                if given is not None and int(given) != found:
                    raise ValueError(
                        f"model.net.{key}={given} but the data ({info.layout.name}) has {found} "
                        f"{key.removeprefix('num_')} classes; set model.net.{key}={found} or null (from the data)")
                net[key] = found
            if self.hparams.categories is None:
                self.hparams.categories = categories
            self.hparams.net = net
        if self.model is None:
            if net.get("num_stuff") is None or net.get("num_things") is None:
                raise ValueError("model.net.num_stuff / num_things are null and the datamodule has no VPS classes "
                                 "(info.categories); give them explicitly")
            self.model = build_vpsnet(**net)
        if self.val_vpq is None:
            categories = self.hparams.categories or [
                {"id": c, "isthing": int(c >= net["num_stuff"])} for c in range(net["num_stuff"] + net["num_things"])]
            protocol = info.layout.name if info is not None else "cityscapes_vps"
            self.val_vpq = VideoPanopticQuality(categories, protocol)
            self.val_stq = SegmentationTrackingQuality(categories)
            if protocol == "vipseg":
                # VIPSeg's official STQ takes each video's first GT segment of its JSON as crowd when it is a thing
                # (vidseg.metrics.stq); validation reads masks, not that JSON, so it scores the corrected STQ and
                # says so in the names. `vidseg.evaluate` gives the official one.
                self._stq_name = "STQ_corrected"

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[TASK_KEY] = "vps"  # lets evaluate/predict refuse a checkpoint of the other task
        if self.provenance:  # set by vidseg.train: what the model is trained on, for the model card
            checkpoint[PROVENANCE_KEY] = {**self.provenance, "global_step": int(self.global_step)}

    # ---- training -----------------------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.model.forward_train(batch)
        total = sum(losses.values())
        batch_size = int(batch["images"].shape[0])
        self.log_dict({f"train/{name}": value.detach() for name, value in losses.items()}, batch_size=batch_size)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=batch_size)
        return total

    def on_fit_start(self) -> None:
        if self.hparams.grad_clip_norm is not None and self.trainer.gradient_clip_val:
            raise ValueError(
                f"both model.grad_clip_norm={self.hparams.grad_clip_norm} and trainer.gradient_clip_val="
                f"{self.trainer.gradient_clip_val} are set: keep one, e.g. model.grad_clip_norm=null")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if self.hparams.grad_clip_norm is not None:
            gradient_clip_val, gradient_clip_algorithm = float(self.hparams.grad_clip_norm), "norm"
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                            gradient_clip_algorithm=gradient_clip_algorithm)

    def effective_batch_size(self) -> int:
        trainer = self.trainer
        datamodule = getattr(trainer, "datamodule", None)
        per_device = int(getattr(datamodule, "batch_size", 1) or 1)
        return per_device * max(1, int(trainer.world_size)) * max(1, int(trainer.accumulate_grad_batches))

    def configure_optimizers(self):
        spec = dict(self.hparams.optimizer)
        optimizer_class = get_class(spec.pop("_target_"))
        if self.hparams.lr_reference_batch:
            spec["lr"] = float(spec["lr"]) * self.effective_batch_size() / float(self.hparams.lr_reference_batch)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = optimizer_class(params, **spec)
        if self.hparams.scheduler is None:
            return optimizer
        schedule = {**DEFAULT_SCHEDULER, **dict(self.hparams.scheduler)}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, **{k: schedule[k] for k in DEFAULT_SCHEDULER}))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- validation: one streaming session per clip -------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_session, self._val_video, self._val_frames, self._val_next_frame = None, None, [], 0

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """``batch`` is one raw frame of a VPS evaluation dataset (clips in order; see vps_common)."""
        video, index = str(batch["video"]), int(batch["frame_index"])
        if batch["is_first"]:
            self._finish_video()
            self._val_session = VPSSession(self.model, autocast_dtype=autocast_dtype(self.hparams.val_precision))
            self._val_video, self._val_next_frame = video, 0
        if self._val_session is None or video != self._val_video or index != self._val_next_frame:
            raise RuntimeError(
                f"validation frames arrive out of order (clip {video}, frame {index}; expected clip "
                f"{self._val_video} frame {self._val_next_frame}): VPS validation streams whole clips, so the "
                "loader must keep them in order and must not split them across processes (VideoShardSampler)")
        result = self._val_session.step(batch["images"][0])
        self._val_next_frame += 1
        if batch["annotated"]:
            thing_ids = [c for c in range(self.model.num_stuff, self.model.num_stuff + self.model.num_things)]
            gt_ids, gt_segments = ground_truth_segments(batch["panoptic"], thing_ids)
            segments = [{"id": s["id"], "category_id": s["category_id"], "iscrowd": 0, "area": s["area"]}
                        for s in result.segments]
            self._val_frames.append((gt_ids, gt_segments, result.panoptic, segments))

    def _finish_video(self) -> None:
        if self._val_frames:
            gt_ids, gt_segments, pred_ids, pred_segments = (list(x) for x in zip(*self._val_frames, strict=True))
            self.val_vpq.update(gt_ids, gt_segments, pred_ids, pred_segments)
            self.val_stq.update(gt_ids, gt_segments, pred_ids, pred_segments)
        self._val_session, self._val_video, self._val_frames = None, None, []

    def on_validation_epoch_end(self) -> None:
        self._finish_video()
        vpq, stq = self.val_vpq.compute(), self.val_stq.compute()  # both gather every rank's counts
        suffix = self._stq_name.removeprefix("STQ")  # "" or "_corrected"
        metrics = {"val/VPQ": vpq["vpq"], "val/VPQ_thing": vpq["vpq_thing"], "val/VPQ_stuff": vpq["vpq_stuff"],
                   f"val/STQ{suffix}": stq["stq"], f"val/AQ{suffix}": stq["aq"], f"val/SQ{suffix}": stq["sq"]}
        metrics.update({f"val/VPQ_{key.removeprefix('vpq_')}": value for key, value in vpq.items()
                        if key.count("_") == 1 and key.removeprefix("vpq_").isdigit()})
        shown = ("val/VPQ", f"val/{self._stq_name}")
        self.log_dict({k: v for k, v in metrics.items() if k in shown}, prog_bar=True, sync_dist=False)
        self.log_dict({k: v for k, v in metrics.items() if k not in shown}, sync_dist=False)
        self.val_vpq.reset()
        self.val_stq.reset()


__all__ = ["DEFAULT_SCHEDULER", "VPSTask", "ground_truth_segments", "lr_factor"]

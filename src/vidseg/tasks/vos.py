"""LightningModule for semi-supervised VOS with FEELVOS: loss, optimisation, validation J&F."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from vidseg.constants import IGNORE_LABEL
from vidseg.inference.checkpoint import TASK_KEY
from vidseg.inference.vos import VOSPredictor
from vidseg.metrics import JAndF
from vidseg.models.feelvos import FEELVOS


def bootstrapped_cross_entropy(logits: torch.Tensor, target: torch.Tensor, top_fraction: float) -> torch.Tensor:
    """Softmax cross-entropy averaged over the hardest ``top_fraction`` of valid pixels of each sample.

    Args:
        logits: (B, N, H, W) float.
        target: (B, H, W) int64 in [0, N) or 255 (ignored).
        top_fraction: in (0, 1]; 1 is plain cross-entropy over the valid pixels.
    """
    pixel_loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_LABEL, reduction="none").flatten(1)
    valid = (target != IGNORE_LABEL).flatten(1)
    losses = []
    for sample_loss, sample_valid in zip(pixel_loss, valid, strict=True):
        values = sample_loss[sample_valid]
        if values.numel() == 0:
            continue
        k = max(1, math.ceil(top_fraction * values.numel()))
        losses.append(values.topk(k, sorted=False).values.mean() if k < values.numel() else values.mean())
    if not losses:  # every pixel ignored: a zero that still depends on the graph
        return logits.sum() * 0.0
    return torch.stack(losses).mean()


def damage_labels(labels: torch.Tensor, *, probability: float, max_shift: int, max_morph: int) -> torch.Tensor:
    """Randomly corrupt label maps the way a model's own previous prediction is wrong.

    With ``probability`` per sample: shift the whole map by up to ``max_shift`` pixels, then dilate or
    erode each object by up to ``max_morph`` pixels. Ignored pixels (255) stay ignored.

    Args:
        labels: (B, H, W) int64 in [0, N) or 255.
    Returns:
        (B, H, W) int64, a new tensor.
    """
    out = labels.clone()
    height, width = labels.shape[-2:]
    for b in range(labels.shape[0]):
        if torch.rand(()) >= probability:
            continue
        dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,)))
        shifted = torch.zeros_like(labels[b])
        ys, yd = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
        xs, xd = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
        shifted[yd, xd] = labels[b, ys, xs]
        for obj in [int(o) for o in torch.unique(shifted) if 0 < int(o) != IGNORE_LABEL]:
            radius = int(torch.randint(0, max_morph + 1, ()))
            if radius == 0:
                continue
            member = (shifted == obj).float()[None, None]
            size = 2 * radius + 1
            if torch.rand(()) < 0.5:  # dilate over background only
                grown = F.max_pool2d(member, size, stride=1, padding=radius)[0, 0] > 0
                shifted[grown & (shifted == 0)] = obj
            else:  # erode
                kept = -F.max_pool2d(-member, size, stride=1, padding=radius)[0, 0] > 0
                shifted[(shifted == obj) & ~kept] = 0
        out[b] = shifted
    return out


class VOSTask(pl.LightningModule):
    """FEELVOS training and validation.

    All arguments are plain dicts (saved as hyper-parameters, so checkpoints load with weights_only=True
    and rebuild the network with no config files):

    Args:
        net: keyword arguments of :class:`vidseg.models.feelvos.FEELVOS`.
        optimizer: a Hydra-instantiable partial spec, e.g. {"_target_": "torch.optim.SGD", "lr": 7e-4, ...}.
        scheduler: {"power": 0.9} for the poly schedule over all training steps, or None for constant lr.
        loss: {"bootstrap_final": 0.15, "bootstrap_anneal": 0.5}: the hardest-pixel fraction is annealed
            linearly from 1 to ``bootstrap_final`` over the first ``bootstrap_anneal`` of training.
        prev_mask_damage: {"probability": p, "max_shift": px, "max_morph": px}: corrupt the previous
            frame's ground truth (the local-matching labels and probability input) in training, see
            :func:`damage_labels`; None (the paper) feeds it unchanged.
        val_precision: precision of the validation predictor ("32" or "bf16-mixed").
    """

    def __init__(self, net: dict, optimizer: dict, scheduler: dict | None = None, loss: dict | None = None,
                 prev_mask_damage: dict | None = None, val_precision: str = "32"):
        super().__init__()
        self.save_hyperparameters()
        self.model = FEELVOS(**net)
        self.loss_config = {"bootstrap_final": 0.15, "bootstrap_anneal": 0.5, **(loss or {})}
        self.prev_mask_damage = prev_mask_damage
        self.val_jf = JAndF()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[TASK_KEY] = "vos"  # lets evaluate/predict refuse a checkpoint of the other task

    def bootstrap_fraction(self) -> float:
        total = max(1, self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        progress = min(1.0, self.global_step / max(1.0, self.loss_config["bootstrap_anneal"] * total))
        return 1.0 - progress * (1.0 - self.loss_config["bootstrap_final"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        masks = batch["masks"]
        if self.prev_mask_damage and self.prev_mask_damage.get("probability", 0) > 0:
            masks = torch.stack([masks[:, 0], damage_labels(masks[:, 1], **self.prev_mask_damage), masks[:, 2]], 1)
        logits = self.model.forward_train(batch["images"], masks, batch["num_objects"])
        fraction = self.bootstrap_fraction()
        loss = bootstrapped_cross_entropy(logits, batch["masks"][:, 2], fraction)
        batch_size = batch["images"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/bootstrap_fraction", fraction, batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """``batch`` is one full sequence: images (T, 3, H, W) uint8, masks (T, H, W) int64, name."""
        predictor = VOSPredictor(self.model, precision=self.hparams.val_precision)
        pred = predictor.predict_sequence(batch["images"], batch["masks"][0])
        self.val_jf.update(pred, batch["masks"].cpu(), sequence=batch["name"])

    def on_validation_epoch_end(self) -> None:
        scores = self.val_jf.compute()
        self.log_dict(
            {"val/J&F": scores["J&F-Mean"], "val/J": scores["J-Mean"], "val/F": scores["F-Mean"]},
            prog_bar=True, sync_dist=False,  # JAndF already gathers every rank's objects
        )
        self.val_jf.reset()

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer, params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.PolynomialLR(
            optimizer, total_iters=total, power=float(self.hparams.scheduler.get("power", 0.9))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

"""LightningModule for semi-supervised VOS with FEELVOS: loss, optimisation, validation J&F."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import get_class
from torch import nn

from vidseg.constants import IGNORE_LABEL
from vidseg.inference.checkpoint import PROVENANCE_KEY, TASK_KEY
from vidseg.inference.vos import VOSPredictor
from vidseg.metrics import JAndF
from vidseg.models.feelvos import FEELVOS
from vidseg.pretrained import PretrainedTaskMixin

SAMPLE_REDUCTIONS = ("sum", "mean")
WEIGHT_DECAY_MODES = ("conv_weights", "all")


def bootstrapped_cross_entropy(logits: torch.Tensor, target: torch.Tensor, top_fraction: float,
                               *, reduction: str = "sum") -> torch.Tensor:
    """Softmax cross-entropy over the hardest ``top_fraction`` of valid pixels of each sample, reduced over samples.

    Each sample's loss is the mean over its kept pixels; ``reduction`` "sum" adds the samples (official
    FEELVOS: the loss of a clone is the sum over its samples), "mean" averages them.

    Args:
        logits: (B, N, H, W) float.
        target: (B, H, W) int64 in [0, N) or 255 (ignored).
        top_fraction: in (0, 1]; 1 is plain cross-entropy over the valid pixels.

    A sample with no valid pixel is left out (0 with ``reduction="sum"``, not counted by "mean"); with none
    at all the loss is a zero that still depends on the graph. Computed on the device with no host read:
    sample b keeps its ``ceil(top_fraction * valid_b)`` hardest pixels out of one top-k over the batch.
    """
    if reduction not in SAMPLE_REDUCTIONS:
        raise ValueError(f"loss reduction must be one of {SAMPLE_REDUCTIONS}, got {reduction!r}")
    # Ignored pixels get loss 0 here; they are kept out of the top-k below by -inf.
    pixel_loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_LABEL, reduction="none").flatten(1)
    valid = (target != IGNORE_LABEL).flatten(1)
    count = valid.sum(1)  # (B,) int64: valid pixels per sample
    if top_fraction >= 1:
        kept, kept_sum = count, pixel_loss.sum(1)
    else:
        # k_b = ceil(f * n_b) in float64, as math.ceil would compute it on the host; k_b <= n_b, so only valid
        # pixels are kept, and k_b <= the top-k size (the same ceil of the largest possible n_b).
        kept = torch.ceil(count.double() * top_fraction).long()
        size = min(pixel_loss.shape[1], max(1, math.ceil(top_fraction * pixel_loss.shape[1])))
        hardest = pixel_loss.masked_fill(~valid, float("-inf")).topk(size, dim=1).values  # (B, size), descending
        rank = torch.arange(size, device=pixel_loss.device)
        kept_sum = torch.where(rank[None, :] < kept[:, None], hardest, 0.0).sum(1)
    has_pixels = count > 0
    per_sample = torch.where(has_pixels, kept_sum / kept.clamp(min=1), 0.0)
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / has_pixels.sum().clamp(min=1)


def damage_labels(labels: torch.Tensor, *, probability: float, max_shift: int, max_morph: int) -> torch.Tensor:
    """Randomly corrupt label maps the way a model's own previous prediction is wrong.

    vidseg's counterpart of the official ``damage_initial_previous_frame_mask`` (FEELVOS utils/mask_damaging.py,
    which shifts, scales, rotates and dilates each object). Here, with ``probability`` per sample: shift the
    objects of the whole map by up to ``max_shift`` pixels (the exposed edge becomes background), then dilate
    or erode each object by up to ``max_morph`` pixels. Void pixels (255) stay void exactly where they were,
    and no other pixel becomes void.

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
        void = labels[b] == IGNORE_LABEL
        source = labels[b].masked_fill(void, 0)  # void is not content: it must not move with the objects
        dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,)))
        shifted = torch.zeros_like(source)
        ys, yd = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
        xs, xd = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
        shifted[yd, xd] = source[ys, xs]
        # The objects still present: the one host read (a sync on CUDA) per damaged sample; the random draws
        # that follow depend on it. The writes below are torch.where, not boolean-mask indexing (a sync each).
        for obj in [o for o in torch.unique(shifted).tolist() if o > 0]:
            radius = int(torch.randint(0, max_morph + 1, ()))
            if radius == 0:
                continue
            member = (shifted == obj).float()[None, None]
            size = 2 * radius + 1
            if torch.rand(()) < 0.5:  # dilate over background only
                grown = F.max_pool2d(member, size, stride=1, padding=radius)[0, 0] > 0
                shifted = torch.where(grown & (shifted == 0), obj, shifted)
            else:  # erode
                kept = -F.max_pool2d(-member, size, stride=1, padding=radius)[0, 0] > 0
                shifted = shifted.masked_fill((shifted == obj) & ~kept, 0)
        out[b] = shifted.masked_fill(void, IGNORE_LABEL)
    return out


def parameter_groups(model: nn.Module, weight_decay: float, mode: str = "conv_weights") -> list[dict]:
    """Optimizer parameter groups; only parameters that train (``requires_grad``) are included.

    ``mode="conv_weights"`` (official: slim's l2 regularizer sits on conv weights only): ``weight_decay`` on
    the weights of convolutions and linear layers, except depthwise kernels; none on biases, norms or
    anything else. ``mode="all"``: every parameter decays (torch's default).
    """
    if mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"weight_decay_on must be one of {WEIGHT_DECAY_MODES}, got {mode!r}")
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            conv_weight = isinstance(module, (nn.Conv2d, nn.Linear)) and name == "weight" and not depthwise
            (decay if mode == "all" or conv_weight else no_decay).append(param)
    return [group for group in ({"params": decay, "weight_decay": weight_decay},
                                {"params": no_decay, "weight_decay": 0.0}) if group["params"]]


def clip_gradient_norms_per_tensor(parameters, max_norm: float) -> None:
    """Scale each gradient tensor whose L2 norm exceeds ``max_norm`` down to that norm, independently of the
    others (slim's clip_gradient_norms, used by FEELVOS; not a global norm over all tensors)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    scales = [(max_norm / (norm + 1e-6)).clamp(max=1.0) for norm in norms]
    torch._foreach_mul_(grads, scales)


class VOSTask(PretrainedTaskMixin, pl.LightningModule):
    """FEELVOS training and validation.

    All arguments are plain dicts (saved as hyper-parameters, so checkpoints load with weights_only=True
    and rebuild the network with no config files). Defaults are the official FEELVOS training:

    Args:
        net: keyword arguments of :class:`vidseg.models.feelvos.FEELVOS`.
        optimizer: {"_target_": "torch.optim.SGD", "lr": 7e-4, "momentum": 0.9, "weight_decay": 4e-5, ...};
            ``weight_decay`` is applied per :func:`parameter_groups`.
        scheduler: {"power": 0.9} for the poly schedule over all training steps, or None for constant lr.
        loss: {"bootstrap_final": 0.15, "bootstrap_anneal": 0.5, "reduction": "sum"}: the hardest-pixel
            fraction is annealed linearly from 1 to ``bootstrap_final`` over the first ``bootstrap_anneal`` of
            training; per-sample losses are summed ("sum", official) or averaged ("mean") over the batch.
        weight_decay_on: "conv_weights" (official) or "all", see :func:`parameter_groups`.
        grad_clip_per_tensor: clip each gradient tensor to this L2 norm (official: 5); None: no per-tensor
            clipping. Lightning's global-norm clipping is ``trainer.gradient_clip_val`` (use one or the other).
        damage_initial_previous_frame_mask: {"probability": p, "max_shift": px, "max_morph": px} to corrupt the
            previous frame's ground truth (local-matching labels and one-hot feedback) in training, see
            :func:`damage_labels`; None (the official default) feeds it unchanged.
        prev_mask_damage: the former name of ``damage_initial_previous_frame_mask`` (older checkpoints).
        val_precision: precision of the validation predictor ("32" or "bf16-mixed").
    """

    task_name = "vos"  # PretrainedTaskMixin: the task a pretrained folder must hold

    def __init__(self, net: dict, optimizer: dict, scheduler: dict | None = None, loss: dict | None = None,
                 weight_decay_on: str = "conv_weights", grad_clip_per_tensor: float | None = 5.0,
                 damage_initial_previous_frame_mask: dict | None = None, prev_mask_damage: dict | None = None,
                 val_precision: str = "32"):
        super().__init__()
        self.provenance: dict = {}  # set by vidseg.train (vidseg.pretrained.training_provenance)
        self.save_hyperparameters()
        self.model = FEELVOS(**net)
        self.loss_config = {"bootstrap_final": 0.15, "bootstrap_anneal": 0.5, "reduction": "sum", **(loss or {})}
        if self.loss_config["reduction"] not in SAMPLE_REDUCTIONS:
            raise ValueError(f"loss.reduction must be one of {SAMPLE_REDUCTIONS}, "
                             f"got {self.loss_config['reduction']!r}")
        if weight_decay_on not in WEIGHT_DECAY_MODES:
            raise ValueError(f"weight_decay_on must be one of {WEIGHT_DECAY_MODES}, got {weight_decay_on!r}")
        if damage_initial_previous_frame_mask is not None and prev_mask_damage is not None:
            raise ValueError("give damage_initial_previous_frame_mask only (prev_mask_damage is its former name)")
        self.prev_mask_damage = damage_initial_previous_frame_mask or prev_mask_damage
        self.val_jf = JAndF()
        self._val_predictor: VOSPredictor | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[TASK_KEY] = "vos"  # lets evaluate/predict refuse a checkpoint of the other task
        if self.provenance:  # set by vidseg.train: what the model is trained on, for the model card
            checkpoint[PROVENANCE_KEY] = {**self.provenance, "global_step": int(self.global_step)}

    def on_fit_start(self) -> None:
        if self.hparams.grad_clip_per_tensor is not None and self.trainer.gradient_clip_val:
            raise ValueError(
                f"both model.grad_clip_per_tensor={self.hparams.grad_clip_per_tensor} (official per-tensor clipping) "
                f"and trainer.gradient_clip_val={self.trainer.gradient_clip_val} (Lightning's global norm) are set: "
                "keep one, e.g. model.grad_clip_per_tensor=null for the global norm"
            )

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
        loss = bootstrapped_cross_entropy(logits, batch["masks"][:, 2], fraction,
                                          reduction=self.loss_config["reduction"])
        batch_size = batch["images"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        # A CPU tensor: self.log would copy a Python number to the device, a pageable upload that syncs on CUDA.
        self.log("train/bootstrap_fraction", torch.tensor(fraction), batch_size=batch_size)
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if self.hparams.grad_clip_per_tensor is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            clip_gradient_norms_per_tensor(params, float(self.hparams.grad_clip_per_tensor))
        if self._trainer is not None:  # Lightning's own clipping (trainer.gradient_clip_val); no-op when unset
            self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                                gradient_clip_algorithm=gradient_clip_algorithm)

    def on_validation_epoch_start(self) -> None:
        # One predictor per validation: it re-dilates the network to the inference stride (sharing weights).
        self._val_predictor = VOSPredictor(self.model, precision=self.hparams.val_precision)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """``batch`` is one full sequence: images (T, 3, H, W) uint8, masks (T, H, W) int64, name; with objects
        that appear later (YouTube-VOS) also ``given`` (frame index -> mask of the objects first given there)
        and ``first_frames`` (object id -> frame index)."""
        if self._val_predictor is None:
            self.on_validation_epoch_start()
        if "given" not in batch:
            pred = self._val_predictor.predict_sequence(batch["images"], batch["masks"][0])
            self.val_jf.update(pred, batch["masks"].cpu(), sequence=batch["name"])
            return
        from vidseg.data.youtube_vos_layout import scored_objects

        pred = self._val_predictor.predict_sequence(batch["images"], masks=batch["given"])
        gt = batch["masks"].cpu()
        # Each object from its own first frame on (that frame and the last one are not scored), as evaluate.
        for obj, first in scored_objects(batch["first_frames"], gt.shape[0]).items():
            self.val_jf.update((pred[first:] == obj).long(), (gt[first:] == obj).long(),
                               sequence=f"{batch['name']}_{obj}", num_objects=1)

    def on_validation_epoch_end(self) -> None:
        scores = self.val_jf.compute()
        self.log_dict(
            {"val/J&F": scores["J&F-Mean"], "val/J": scores["J-Mean"], "val/F": scores["F-Mean"]},
            prog_bar=True, sync_dist=False,  # JAndF already gathers every rank's objects
        )
        self.val_jf.reset()
        self._val_predictor = None

    def configure_optimizers(self):
        spec = dict(self.hparams.optimizer)
        optimizer_class = get_class(spec.pop("_target_"))
        weight_decay = float(spec.pop("weight_decay", 0.0))
        groups = parameter_groups(self.model, weight_decay, self.hparams.weight_decay_on)
        optimizer = optimizer_class(groups, **spec)
        if not self.hparams.scheduler:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.PolynomialLR(
            optimizer, total_iters=total, power=float(self.hparams.scheduler.get("power", 0.9))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

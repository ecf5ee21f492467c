"""FEELVOS: embedding, global/local matching and the dynamic segmentation head.

Voigtlaender et al., "FEELVOS: Fast End-to-End Embedding Learning for Video Object Segmentation", CVPR 2019.
One backbone pass per frame gives stride-4 decoder features and a pixel embedding. For every object
(background included) the head sees [features, global matching to the reference frame, the previous frame's
one-hot label, local matching to the previous frame] and outputs one logit; logits are soft-maxed across
objects. The model works on feature-resolution tensors; frames and files are the data/inference layers' job.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.segmentation.deeplabv3 import ASPPPooling
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.misc import Conv2dNormActivation

from vidseg.backbones import build_deeplabv3plus
from vidseg.constants import IGNORE_LABEL, IMAGENET_MEAN, IMAGENET_STD
from vidseg.ops import global_matching, local_matching
from vidseg.utils.padding import pad_to_multiple  # noqa: F401  (re-exported)

# Logit given to object slots a sample does not have (variable object counts in one batch). Finite, so
# bf16/fp16 softmax and cross-entropy stay NaN-free.
ABSENT_LOGIT = -1e4


HEAD_NORMS = ("none", "batch")


class SeparableConv(nn.Sequential):
    """Depthwise k x k conv + ReLU, then pointwise 1x1 conv + ReLU: (M, Cin, h, w) -> (M, Cout, h, w).

    ``norm="none"`` (official FEELVOS): both convs carry a bias and nothing is normalised.
    ``norm="batch"``: each conv is followed by a BatchNorm (a common PyTorch-port choice; biases dropped).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str = "none"):
        if norm not in HEAD_NORMS:
            raise ValueError(f"head_norm must be one of {HEAD_NORMS}, got {norm!r}")
        batch = norm == "batch"
        depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels,
                              bias=not batch)
        pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=not batch)
        if batch:
            layers = [depthwise, nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                      pointwise, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        else:
            layers = [depthwise, nn.ReLU(inplace=True), pointwise, nn.ReLU(inplace=True)]
        super().__init__(*layers)


class EmbeddingHead(nn.Module):
    """Decoder features (B, Cin, h, w) -> pixel embedding (B, dim, h, w) float, every value >= 0.

    As the official head (slim split_separable_conv2d in FEELVOS's embedding_utils): depthwise 3x3 + bias +
    ReLU, then pointwise 1x1 to ``dim`` + bias + ReLU, no normalisation.
    """

    def __init__(self, in_channels: int, dim: int = 100):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=True)
        self.pointwise = nn.Conv2d(in_channels, dim, 1, bias=True)
        # Near-identity depthwise init (the official "identity-like initializer"): the embedding starts as a
        # projection of the features and spatial mixing is learned on top.
        with torch.no_grad():
            self.depthwise.weight.normal_(0.0, 0.01)
            self.depthwise.weight[:, :, 1, 1] += 1.0
            self.depthwise.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pointwise(F.relu(self.depthwise(features))))


class DynamicSegmentationHead(nn.Module):
    """Shared per-object head: (M, in_channels, h, w) -> one logit map (M, 1, h, w); M = objects of a batch.

    ``num_layers`` depthwise-separable ``kernel_size`` convs of ``channels`` channels, then a 1x1 conv.
    ``norm``: "none" (official) or "batch" (see :class:`SeparableConv`). FEELVOS only ever feeds it the
    object slots that exist, so with BatchNorm padded slots never enter its statistics.
    """

    def __init__(self, in_channels: int, channels: int = 256, kernel_size: int = 7, num_layers: int = 4,
                 norm: str = "none"):
        super().__init__()
        layers = [SeparableConv(in_channels if i == 0 else channels, channels, kernel_size, norm)
                  for i in range(num_layers)]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(x))


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of label maps (B, H, W) int64 -> (B, h, w) int64 (labels are not averaged)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def one_hot_probabilities(labels: torch.Tensor, num_objects: int | torch.SymInt) -> torch.Tensor:
    """Label map (B, h, w) in [0, N) or 255 -> probabilities (B, N, h, w) float; ignored pixels (255) get all
    zeros. A comparison with the slot indices rather than F.one_hot: N may be symbolic (ONNX export)."""
    slots = torch.arange(num_objects, device=labels.device)
    return (labels[:, None] == slots[None, :, None, None]).float()


def sample_reference_pixels(
    embedding: torch.Tensor,
    labels: torch.Tensor,
    num_objects: int,
    max_per_object: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep at most ``max_per_object`` random reference pixels per object (FEELVOS training uses 1024).

    Args:
        embedding: (B, C, h, w) reference-frame embedding.
        labels: (B, h, w) int64 reference labels, 255 = ignored.
    Returns:
        embedding (B, C, 1, K) of the kept pixels and labels (B, 1, K), padded with label 255 where a batch
        element keeps fewer than K pixels. Global matching takes these as a 1-pixel-high reference.
    """
    batch, channels = embedding.shape[:2]
    flat_emb = embedding.flatten(2)
    flat_lab = labels.flatten(1)
    keep: list[torch.Tensor] = []
    for b in range(batch):
        chosen = []
        for obj in range(num_objects):
            idx = (flat_lab[b] == obj).nonzero().squeeze(1)
            if idx.numel() > max_per_object:
                perm = torch.randperm(idx.numel(), generator=generator, device="cpu").to(idx.device)
                idx = idx[perm[:max_per_object]]
            chosen.append(idx)
        keep.append(torch.cat(chosen))
    size = max(1, max(k.numel() for k in keep))
    out_emb = embedding.new_zeros(batch, channels, 1, size)
    out_lab = labels.new_full((batch, 1, size), IGNORE_LABEL)
    for b, idx in enumerate(keep):
        out_emb[b, :, 0, : idx.numel()] = flat_emb[b][:, idx]
        out_lab[b, 0, : idx.numel()] = flat_lab[b][idx]
    return out_emb, out_lab


class FEELVOS(nn.Module):
    """FEELVOS network.

    Args:
        backbone: the encoder, a dict for :func:`vidseg.backbones.get_backbone` (``name``, ``output_stride``,
            ``weights``, ``frozen_bn``; ``library: timm`` for a timm encoder).
        decoder: the DeepLabv3+ decoder's keywords for :func:`vidseg.backbones.build_deeplabv3plus`
            (``decoder_channels``, ``aspp_channels``, ``atrous_rates``, ``low_proj_channels``).
            Kept apart from ``backbone`` so an encoder config never carries decoder keys.
        embedding_dim: pixel embedding size (paper: 100).
        head_channels / head_kernel / head_layers: dynamic segmentation head (paper: 256 / 7 / 4).
        head_norm: "none" (official: separable convs with bias + ReLU) or "batch" (BatchNorm after each conv).
        local_max_distance: local matching window radius k at stride 4 (paper: 15).
        local_dilation: dilation of the local window.
        max_reference_per_object: reference pixels kept per object in training (paper: 1024); inference
            uses all reference pixels.
        matching_impl: ``impl`` passed to :mod:`vidseg.ops` ("auto" picks the fastest exact path).
        frozen_bn: freeze every BatchNorm of the DeepLab feature extractor (backbone and decoder), as the
            official training (fine_tune_batch_norm=False): eval-mode statistics and no gradient on the affine
            parameters, even in train mode. The state dict is the same as with trainable BN.
        inference_output_stride: output stride at inference (paper: 8, ASPP rates 12/24/36, while training at
            16); None = the training stride. Applied by :meth:`for_inference`, which the one inference path
            (:class:`vidseg.inference.vos.VOSPredictor`) calls for validation, evaluate, predict and the API.

    Training contract: :meth:`forward_train` on [reference, previous, current] triplets returns the
    current frame's logits. Inference contract: :meth:`embed` each frame once, then :meth:`segment`.
    """

    def __init__(
        self,
        backbone: dict,
        decoder: dict | None = None,
        *,
        embedding_dim: int = 100,
        head_channels: int = 256,
        head_kernel: int = 7,
        head_layers: int = 4,
        head_norm: str = "none",
        local_max_distance: int = 15,
        local_dilation: int = 1,
        max_reference_per_object: int = 1024,
        matching_impl: str = "auto",
        frozen_bn: bool = False,
        inference_output_stride: int | None = None,
    ):
        super().__init__()
        # Kept to rebuild this network at another output stride (for_inference).
        self.config = {
            "backbone": dict(backbone), "decoder": dict(decoder or {}), "embedding_dim": embedding_dim,
            "head_channels": head_channels, "head_kernel": head_kernel, "head_layers": head_layers,
            "head_norm": head_norm, "local_max_distance": local_max_distance, "local_dilation": local_dilation,
            "max_reference_per_object": max_reference_per_object, "matching_impl": matching_impl,
            "frozen_bn": frozen_bn, "inference_output_stride": inference_output_stride,
        }
        backbone = dict(backbone)
        name = backbone.pop("name")
        self.feature_extractor = build_deeplabv3plus(name, **backbone, **(decoder or {}))
        decoder_channels = self.feature_extractor.out_channels
        self.embedding_head = EmbeddingHead(decoder_channels, embedding_dim)
        self.head = DynamicSegmentationHead(decoder_channels + 3, head_channels, head_kernel, head_layers, head_norm)
        self.local_max_distance = local_max_distance
        self.local_dilation = local_dilation
        self.max_reference_per_object = max_reference_per_object
        self.matching_impl = matching_impl
        self.frozen_bn = bool(frozen_bn)
        self.output_stride = self.feature_extractor.backbone.output_stride
        self.inference_output_stride = inference_output_stride or self.output_stride
        # Inputs are padded to a multiple of the deepest feature stride so every level aligns exactly.
        self.size_divisor = self.output_stride
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)
        if self.frozen_bn:
            for module in self._feature_batch_norms():
                module.requires_grad_(False)

    def _feature_batch_norms(self) -> list[nn.Module]:
        # isinstance on _BatchNorm also finds SyncBatchNorm (DDP's sync_batchnorm converts after __init__).
        return [m for m in self.feature_extractor.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> FEELVOS:
        super().train(mode)
        if self.frozen_bn:  # frozen BN keeps its running statistics in train mode too
            for module in self._feature_batch_norms():
                module.eval()
        return self

    def for_inference(self) -> FEELVOS:
        """This network at ``inference_output_stride``: ``self`` if it is the training stride, otherwise a
        re-dilated copy (ASPP rates scaled with it) that shares every parameter and buffer with ``self``.

        Dilation and atrous rates change no weight shape, so the trained weights serve both strides and
        later updates of ``self`` (training) are seen by the copy. The copy is in eval mode.
        """
        if self.inference_output_stride == self.output_stride:
            return self
        config = {**self.config, "backbone": dict(self.config["backbone"]), "decoder": dict(self.config["decoder"])}
        config["backbone"]["output_stride"] = self.inference_output_stride
        config["backbone"]["weights"] = None  # weights come from self, never from a file or a download
        rates = config["decoder"].get("atrous_rates")
        if rates is not None:  # explicit rates keep their field of view in input pixels
            config["decoder"]["atrous_rates"] = [
                int(r) * self.output_stride // self.inference_output_stride for r in rates
            ]
        copy = FEELVOS(**config)
        mine = dict(self.named_parameters(remove_duplicate=False))
        mine.update(self.named_buffers(remove_duplicate=False))
        theirs = {**dict(copy.named_parameters(remove_duplicate=False)),
                  **dict(copy.named_buffers(remove_duplicate=False))}
        if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
            raise RuntimeError(f"{self.config['backbone'].get('name')}: the network at output stride "
                               f"{self.inference_output_stride} does not have the same tensors as at "
                               f"{self.output_stride}")
        for name, tensor in mine.items():
            path, _, attr = name.rpartition(".")
            owner = copy.get_submodule(path)
            if isinstance(tensor, nn.Parameter):
                owner._parameters[attr] = tensor  # the same Parameter object: shared, never copied
            else:
                owner._buffers[attr] = tensor
        return copy.eval()

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB frames (B, 3, H, W) uint8 or float in [0, 255] -> features (B, Cd, h, w), embedding (B, E, h, w).

        (h, w) = (ceil(H / 4), ceil(W / 4)). Normalisation is in fp32; the result is cast to the network's
        weight dtype (fp32 unless its weights were cast once, :func:`inference_copy`). The input's memory
        format (e.g. channels_last) is kept.
        """
        x = (images.float() - self.pixel_mean.float()) / self.pixel_std.float()
        features = self.feature_extractor(x.to(self.embedding_head.pointwise.weight.dtype))
        return features, self.embedding_head(features)

    def segment(
        self,
        features: torch.Tensor,
        embedding: torch.Tensor,
        ref_embedding: torch.Tensor,
        ref_labels: torch.Tensor,
        prev_embedding: torch.Tensor,
        prev_labels: torch.Tensor,
        num_objects: torch.Tensor | int,
        *,
        validate: bool = True,
        matching: Callable | None = None,
    ) -> torch.Tensor:
        """Per-object logits of the current frame at feature resolution.

        The previous-frame input of the head is the one-hot of ``prev_labels``, the labels local matching
        uses (official get_logits_with_matching), in training (ground truth) and inference (predictions).

        Args:
            features: (B, Cd, h, w) decoder features of the current frame.
            embedding: (B, E, h, w) embedding of the current frame.
            ref_embedding: (B, E, Hr, Wr) reference embedding (a full frame, or (B, E, 1, K) sampled pixels).
            ref_labels: (B, Hr, Wr) int64 reference labels in [0, N) or 255.
            prev_embedding: (B, E, h, w) previous-frame embedding.
            prev_labels: (B, h, w) int64 previous-frame labels in [0, N) or 255 (255: no object, all-zero one-hot).
            num_objects: (B,) int64 foreground objects per sample; N = max(num_objects) + 1. A Python int
                means every sample has that many (inference): no device read of the count, no masking.
            validate: check the label values in the matching ops (a device-to-host read each); inference
                checks a session's labels once (its first frame), then passes False.
            matching: None (the :mod:`vidseg.ops` custom ops, ``matching_impl``) or a function
                ``(embedding, ref_embedding, ref_labels, prev_embedding, prev_labels, N) -> (global, local)``
                distances (B, N, h, w), e.g. the traceable path of an ONNX export (:mod:`vidseg.onnx.feelvos`).
        Returns:
            logits (B, N, h, w) float; slots beyond a sample's object count hold ABSENT_LOGIT.
        """
        batch, _, h, w = features.shape
        every_slot = isinstance(num_objects, (int, torch.SymInt))  # a symbolic count in an ONNX export
        n = (num_objects if every_slot else int(num_objects.max())) + 1
        if matching is not None:
            global_dist, local_dist = matching(embedding, ref_embedding, ref_labels, prev_embedding, prev_labels, n)
        else:
            global_dist = global_matching(embedding, ref_embedding, ref_labels, n, impl=self.matching_impl,
                                          validate=validate)
            local_dist = local_matching(
                embedding, prev_embedding, prev_labels, n, self.local_max_distance, self.local_dilation,
                impl=self.matching_impl, validate=validate,
            )
        feedback = one_hot_probabilities(prev_labels, n)
        per_object = torch.cat(
            [
                features[:, None].expand(batch, n, *features.shape[1:]),
                global_dist[:, :, None].to(features.dtype),
                feedback[:, :, None].to(features.dtype),
                local_dist[:, :, None].to(features.dtype),
            ],
            dim=2,
        )  # (B, N, Cd + 3, h, w)
        if every_slot or batch == 1:
            # Every slot is present: no boolean-mask indexing (data-dependent shapes, a host sync on CUDA and
            # a graph break under torch.compile).
            return self.head(per_object.flatten(0, 1))[:, 0].float().unflatten(0, (batch, n))
        # Only the slots a sample has go through the shared head (one batch of M = sum(num_objects + 1)
        # objects): padded slots never cost compute nor enter a BatchNorm head's statistics.
        present = torch.arange(n, device=features.device)[None, :] <= num_objects.to(features.device)[:, None]
        present_logits = self.head(per_object[present])[:, 0].float()  # (M, h, w)
        logits = present_logits.new_full((batch, n, h, w), ABSENT_LOGIT)
        logits[present] = present_logits
        return logits

    def forward_train(self, images: torch.Tensor, masks: torch.Tensor, num_objects: torch.Tensor) -> torch.Tensor:
        """Training forward on FEELVOS triplets.

        Args:
            images: (B, 3, 3, H, W) uint8 frames [reference, previous (q), current (q+1)].
            masks: (B, 3, H, W) int64 labels of those frames (ids absent from the reference already 0).
            num_objects: (B,) int64 foreground objects per sample.
        Returns:
            logits (B, N, H, W) of the current frame at input resolution, N = max(num_objects) + 1.
        """
        batch, _, _, height, width = images.shape
        n = int(num_objects.max()) + 1
        features, embedding = self.embed(images.flatten(0, 1))  # one backbone pass for all three frames
        size = tuple(features.shape[-2:])
        features = features.unflatten(0, (batch, 3))
        embedding = embedding.unflatten(0, (batch, 3))
        labels = downsample_labels(masks.flatten(0, 1), size).unflatten(0, (batch, 3))
        ref_emb, ref_lab = sample_reference_pixels(
            embedding[:, 0], labels[:, 0], n, self.max_reference_per_object
        )
        logits = self.segment(
            features[:, 2], embedding[:, 2], ref_emb, ref_lab, embedding[:, 1], labels[:, 1], num_objects,
        )
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)


def track_step(
    model: FEELVOS,
    images: torch.Tensor,
    size: tuple[int, int],
    ref_embedding: torch.Tensor,
    ref_labels: torch.Tensor,
    prev_embedding: torch.Tensor,
    prev_labels: torch.Tensor,
    num_objects: int,
    *,
    validate: bool = False,
    matching_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One inference frame of ``model`` (embed, match, head, upsample, arg-max), all on the frame's device.

    With ``validate=False`` it reads nothing back to the host and has no data-dependent shape, so
    ``torch.compile(fullgraph=True)`` captures it whole (the matching ops are opaque custom ops) and
    CUDA graphs can replay it. :class:`vidseg.inference.vos.TorchFrameStep` calls it once per frame. It uses
    only the inference contract (``embed``, ``segment``, ``size_divisor``), so stand-in models work too.

    Args:
        images: (B, 3, Hp, Wp) uint8 frames already padded to a multiple of ``model.size_divisor`` (any memory
            format: a channels_last input keeps a channels_last network in that layout).
        size: (H, W) of the frames before padding.
        ref_embedding, ref_labels, prev_embedding, prev_labels: as :meth:`FEELVOS.segment`.
        num_objects: foreground objects (a Python int: N = num_objects + 1 slots, all present).
        validate: check label values in the matching ops (a host read; the session's first frame only).
        matching_dtype: dtype the embedding is cast to before matching (and returned in); None keeps the
            network's (bf16 for bf16 weights or under bf16 autocast: the ops rank bf16 values exactly and
            evaluate the arg-min pair's distance in fp32).
    Returns:
        labels (B, H, W) int64 internal labels (arg-max over the N slots of the upsampled logits);
        embedding (B, E, h, w) of this frame; feature_labels (B, h, w) int64: ``labels`` padded with 255
        and nearest-downsampled to (h, w), the next frame's ``prev_labels``.
    """
    features, embedding = model.embed(images)
    if matching_dtype is not None:
        embedding = embedding.to(matching_dtype)
    logits = model.segment(features, embedding, ref_embedding, ref_labels, prev_embedding, prev_labels,
                           num_objects, validate=validate).float()
    full = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
    labels = full[..., : size[0], : size[1]].argmax(1)
    padded = pad_to_multiple(labels, model.size_divisor, value=IGNORE_LABEL)
    return labels, embedding, downsample_labels(padded, tuple(embedding.shape[-2:]))


# ---------------------------------------------------------------------------------------------------------------
# Inference-only transforms (see VOSPredictor's ``fast`` option)


def _is_foldable_norm(module: nn.Module) -> bool:
    # Exact types only: subclasses such as timm's BatchNormAct2d add an activation that folding would drop.
    if type(module) is FrozenBatchNorm2d:
        return True
    return type(module) is nn.BatchNorm2d and not module.training and module.running_mean is not None


def _folded_conv(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """A new Conv2d computing norm(conv(x)) for an eval-mode/frozen BatchNorm (the inputs are left untouched)."""
    weight = norm.weight if norm.weight is not None else torch.ones_like(norm.running_mean)
    bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
    scale = weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    conv_bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype),
                                requires_grad=False)
    fused.bias = nn.Parameter(((conv_bias - norm.running_mean.double()) * scale + bias.double())
                              .to(conv.weight.dtype), requires_grad=False)
    return fused


# Modules whose forward applies conv{i} then bn{i} directly (torchvision's ResNet blocks and vidseg's stem).
_NAMED_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _named_pair_module(module: nn.Module) -> bool:
    from vidseg.backbones.resnet import ResNetBackbone

    return isinstance(module, (BasicBlock, Bottleneck, ResNetBackbone))


def _sequential_in_order(module: nn.Module) -> bool:
    # A Sequential whose forward runs its children one after another (ASPPPooling resizes after the chain).
    return isinstance(module, nn.Sequential) and (type(module).forward is nn.Sequential.forward
                                                  or isinstance(module, (ASPPPooling, Conv2dNormActivation)))


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every eval-mode or frozen BatchNorm that directly follows a Conv2d into that conv, in place.

    Pairs are found where the order is known: consecutive children of a Sequential (torchvision's
    Conv2dNormActivation, ASPP, MobileNetV3 blocks, the head's SeparableConv) and conv{i}/bn{i} of ResNet
    blocks and stems. Each folded conv is a new module with new parameters (W * s, (b - mean) * s + beta,
    s = gamma / sqrt(var + eps), computed in fp64), and the BatchNorm becomes an Identity, so the result
    equals the original up to float rounding. Other norms stay as they are. Call it on a copy in eval mode
    (:func:`inference_copy`): the caller's modules are replaced, never their tensors. Returns the count folded.
    """
    folded = 0
    for parent in list(module.modules()):
        if _sequential_in_order(parent):
            names = list(parent._modules)
            for first, second in zip(names, names[1:], strict=False):
                conv, norm = parent._modules[first], parent._modules[second]
                if (type(conv) is nn.Conv2d and _is_foldable_norm(norm)
                        and conv.out_channels == norm.running_mean.numel()):
                    parent._modules[first] = _folded_conv(conv, norm)
                    parent._modules[second] = nn.Identity()
                    folded += 1
        elif _named_pair_module(parent):
            for conv_name, norm_name in _NAMED_PAIRS:
                conv, norm = getattr(parent, conv_name, None), getattr(parent, norm_name, None)
                if type(conv) is nn.Conv2d and norm is not None and _is_foldable_norm(norm):
                    setattr(parent, conv_name, _folded_conv(conv, norm))
                    setattr(parent, norm_name, nn.Identity())
                    folded += 1
    return folded


def inference_copy(model: FEELVOS, *, fold_bn: bool = True, channels_last: bool = False,
                   dtype: torch.dtype | None = None) -> FEELVOS:
    """An eval-mode copy of ``model`` prepared for inference; ``model`` and its tensors are left unchanged
    (validation runs a predictor on the network being trained, which shares its parameters).

    Args:
        fold_bn: fold eval/frozen BatchNorms into the preceding convs (:func:`fold_batch_norms`; equal up to
            float rounding).
        channels_last: parameters in channels_last memory format (feed channels_last frames too).
        dtype: cast the weights once (e.g. torch.bfloat16) instead of autocasting every frame. The pixel
            normalisation stays fp32 (:meth:`FEELVOS.embed` casts its result to the weight dtype) and
            :meth:`FEELVOS.segment` returns fp32 logits.
    """
    out = copy.deepcopy(model).eval().requires_grad_(False)
    if fold_bn:
        fold_batch_norms(out)
    if dtype is not None:
        mean, std = out.pixel_mean, out.pixel_std
        out = out.to(dtype)
        out.pixel_mean, out.pixel_std = mean, std  # normalisation constants keep fp32
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    return out

"""The Mask R-CNN half of VPSNet's panoptic network, from torchvision parts.

FPN levels P2..P6 (256 channels) feed an RPN (one anchor size per level, 32..512 px = anchor scale 8 at
strides 4..64, ratios 0.5 / 1 / 2); RoIs are pooled from P2..P5 (7x7 for boxes, 14x14 for masks, sampling
ratio 2, torchvision's level mapper = mmdetection's finest_scale 56); box head 2 x FC-1024; mask head 4 convs
-> deconv -> 28x28. Detector classes are the thing classes plus background (index 0).

Parameter names follow torchvision's ``maskrcnn_resnet50_fpn`` below ``rpn.`` and ``roi_heads.``, so a COCO
checkpoint maps onto :class:`MaskRCNNDetector` by a prefix change (:func:`vidseg.models.vpsnet.load_coco_maskrcnn`).

Box conventions: ``(x1, y1, x2, y2)`` float in input pixels of the padded frame, torchvision style.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

RPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")
ROI_LEVELS = ("p2", "p3", "p4", "p5")


class MaxIoUMatcher(Matcher):
    """mmdetection's MaxIoUAssigner as a torchvision :class:`Matcher` (the official RPN assigner).

    (M gt, N anchors) IoU -> (N,) int64: gt index, BELOW_LOW_THRESHOLD (-1, negative) or BETWEEN_THRESHOLDS
    (-2, ignored). Anchors with IoU >= ``high_threshold`` take their best gt; below ``low_threshold``
    are negative; then every gt whose best IoU is >= ``min_pos_iou`` takes all its best anchors (ties
    included, later gts win), even from another gt. torchvision's low-quality rule differs: it keeps those
    anchors at any IoU (even 0) and gives each its own best gt.
    """

    def __init__(self, high_threshold: float, low_threshold: float, min_pos_iou: float) -> None:
        super().__init__(high_threshold, low_threshold, allow_low_quality_matches=False)
        self.min_pos_iou = min_pos_iou

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        matches = super().__call__(match_quality_matrix)
        best_per_gt = match_quality_matrix.max(dim=1, keepdim=True).values  # (M, 1)
        is_best = (match_quality_matrix == best_per_gt) & (best_per_gt >= self.min_pos_iou)  # (M, N)
        # The last gt (highest index) that claims an anchor wins, as in mmdetection's loop; no host sync.
        gt_number = torch.arange(1, len(is_best) + 1, device=is_best.device)[:, None]  # 1..M
        claimed = (is_best * gt_number).max(dim=0).values  # (N,) 0 = no claim
        return torch.where(claimed > 0, claimed - 1, matches)


def fast_rcnn_loss(class_logits: Tensor, box_regression: Tensor, labels: list[Tensor],
                   regression_targets: list[Tensor], *, beta: float = 1.0) -> tuple[Tensor, Tensor]:
    """torchvision's ``fastrcnn_loss`` with the smooth-L1 ``beta`` as a parameter (torchvision fixes 1/9; the
    official box head uses 1.0). Both are normalised by all sampled RoIs.

    class_logits (R, K) float; box_regression (R, 4K) float; labels B x (R_i,) int64; regression_targets
    B x (R_i, 4) float. Returns (classification loss, box loss).
    """
    labels_all = torch.cat(labels)
    targets = torch.cat(regression_targets)
    classification = F.cross_entropy(class_logits, labels_all)
    positive = torch.where(labels_all > 0)[0]
    per_class = box_regression.reshape(len(class_logits), -1, 4)
    box_loss = F.smooth_l1_loss(per_class[positive, labels_all[positive]], targets[positive], beta=beta,
                                reduction="sum") / labels_all.numel()
    return classification, box_loss


class PanopticRoIHeads(RoIHeads):
    """torchvision's RoIHeads with the two passes VPSNet needs.

    - :meth:`forward_train` returns the usual losses plus, per image, the sampled RoIs' pooled features and
      their matched ground-truth index (the track head classifies the positive ones). The box loss is
      smooth L1 with ``box_loss_beta`` (official 1.0; torchvision's 1/9 is an option).
    - :meth:`detect` selects detections as the official panoptic path does (UPSNet's MaskROI with
      ``class_agnostic=True``): every (box, class) pair whose softmax score exceeds ``score_thresh`` (0.6),
      one class-agnostic NMS (``nms_thresh`` 0.5), at most ``detections_per_img`` (100); plus each
      detection's mask logits for its own class and its 7x7 RoI features.
    """

    box_loss_beta: float = 1.0

    def mask_logits(self, features: Mapping[str, Tensor], boxes: list[Tensor],
                    image_shapes: list[tuple[int, int]]) -> Tensor:
        """Mask logits of every class for ``boxes``: (sum N_i, num_classes, 28, 28) float."""
        pooled = self.mask_roi_pool(features, boxes, image_shapes)
        return self.mask_predictor(self.mask_head(pooled))

    def forward_train(
        self,
        features: Mapping[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
    ) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        """Box and mask losses on sampled proposals (ground-truth boxes added, 512 per image, 25 % positive).

        Args:
            features: {"p2".."p6"}: (B, C, h, w) float. proposals: B x (P_i, 4) float.
            targets: B dicts {"boxes" (N_i, 4) float, "labels" (N_i,) int64 in 1..num_things,
                "masks" (N_i, H, W) uint8}.
        Returns:
            losses {"loss_classifier", "loss_box_reg", "loss_mask"} and per image {"roi_features"
            (R_i, C, 7, 7) float, "labels" (R_i,) int64 (0 = background), "matched_idxs" (R_i,) int64}.
        """
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        roi_features = self.box_roi_pool(features, proposals, image_shapes)
        class_logits, box_regression = self.box_predictor(self.box_head(roi_features))
        loss_classifier, loss_box_reg = fast_rcnn_loss(class_logits, box_regression, labels, regression_targets,
                                                       beta=self.box_loss_beta)
        positive = [torch.where(lab > 0)[0] for lab in labels]
        mask_boxes = [p[i] for p, i in zip(proposals, positive, strict=True)]
        mask_matched = [m[i] for m, i in zip(matched_idxs, positive, strict=True)]
        mask_logits = self.mask_logits(features, mask_boxes, image_shapes)
        loss_mask = maskrcnn_loss(mask_logits, mask_boxes, [t["masks"] for t in targets],
                                  [t["labels"] for t in targets], mask_matched)
        counts = [len(p) for p in proposals]
        samples = [
            {"roi_features": f, "labels": lab, "matched_idxs": m}
            for f, lab, m in zip(roi_features.split(counts), labels, matched_idxs, strict=True)
        ]
        losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}
        return losses, samples

    def box_predictions(self, features: Mapping[str, Tensor], proposals: list[Tensor],
                        image_shapes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        """The box head on ``proposals`` (B x (P_i, 4) float): (class logits (sum P_i, K) float, box regression
        (sum P_i, 4K) float). The network half of :meth:`detect`."""
        roi_features = self.box_roi_pool(features, proposals, image_shapes)
        return self.box_predictor(self.box_head(roi_features))

    def select_detections(self, class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor],
                          image_shapes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """The selection half of :meth:`detect` (no parameters): decode, clip, score threshold, class-agnostic NMS.
        Returns per image {"boxes" (N, 4) float, "scores" (N,) float, "labels" (N,) int64 in 1..num_things},
        sorted by decreasing score."""
        pred_boxes = self.box_coder.decode(box_regression, proposals)  # (R, K, 4)
        pred_scores = F.softmax(class_logits, -1)
        counts = [len(p) for p in proposals]
        results = []
        for boxes, scores, shape in zip(pred_boxes.split(counts), pred_scores.split(counts), image_shapes,
                                        strict=True):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)[:, 1:].reshape(-1, 4)
            num_fg = scores.shape[1] - 1
            labels = torch.arange(1, num_fg + 1, device=scores.device).repeat(scores.shape[0])
            scores = scores[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.nms(boxes, scores, self.nms_thresh)[: self.detections_per_img]  # class-agnostic
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results

    def instance_outputs(self, features: Mapping[str, Tensor], boxes: list[Tensor], labels: list[Tensor],
                         image_shapes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        """Per detection (B x (N_i, 4) boxes, B x (N_i,) labels in 1..num_things): (mask logits of its own class
        (sum N_i, 28, 28) float, 7x7 RoI features (sum N_i, C, 7, 7) float)."""
        mask_logits = self.mask_logits(features, boxes, image_shapes)
        own = torch.cat(labels)
        mask_logits = mask_logits[torch.arange(len(own), device=own.device), own]
        return mask_logits, self.box_roi_pool(features, boxes, image_shapes)

    def detect(
        self, features: Mapping[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Detections per image: {"boxes" (N, 4) float, "scores" (N,) float, "labels" (N,) int64 in
        1..num_things, "mask_logits" (N, 28, 28) float (the detection's class channel), "roi_features"
        (N, C, 7, 7) float}, sorted by decreasing score: :meth:`box_predictions`, :meth:`select_detections`,
        :meth:`instance_outputs` (the ONNX backend runs the first and last as graphs, the middle as here)."""
        class_logits, box_regression = self.box_predictions(features, proposals, image_shapes)
        results = self.select_detections(class_logits, box_regression, proposals, image_shapes)
        mask_logits, det_features = self.instance_outputs(features, [r["boxes"] for r in results],
                                                          [r["labels"] for r in results], image_shapes)
        counts = [len(r["boxes"]) for r in results]
        for r, m, f in zip(results, mask_logits.split(counts), det_features.split(counts), strict=True):
            r["mask_logits"], r["roi_features"] = m, f
        return results


class MaskRCNNDetector(nn.Module):
    """RPN + RoI heads over FPN features.

    forward_train(features, images, image_sizes, targets) -> (losses, samples): losses
    {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}; samples as
    :meth:`PanopticRoIHeads.forward_train`.
    detect(features, images, image_sizes) -> list of detection dicts (:meth:`PanopticRoIHeads.detect`).

    ``images`` (B, 3, Hp, Wp) is the padded batch the features come from (only its size is used, for the
    anchors); ``image_sizes`` the unpadded (H, W) of each image (boxes are clipped to it).
    """

    def __init__(self, *, rpn: RegionProposalNetwork, roi_heads: PanopticRoIHeads) -> None:
        super().__init__()
        self.rpn = rpn
        self.roi_heads = roi_heads

    def forward_train(
        self,
        features: Mapping[str, Tensor],
        images: Tensor,
        image_sizes: Sequence[tuple[int, int]],
        targets: list[dict[str, Tensor]],
    ) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        image_list = ImageList(images, [tuple(s) for s in image_sizes])
        rpn_features = {name: features[name] for name in RPN_LEVELS}
        proposals, losses = self.rpn(image_list, rpn_features, targets)
        roi_losses, samples = self.roi_heads.forward_train(features, proposals, image_list.image_sizes, targets)
        return {**losses, **roi_losses}, samples

    def detect(self, features: Mapping[str, Tensor], images: Tensor,
               image_sizes: Sequence[tuple[int, int]]) -> list[dict[str, Tensor]]:
        objectness, box_deltas = self.rpn.head([features[name] for name in RPN_LEVELS])
        proposals = self.proposals(objectness, box_deltas, images, image_sizes)
        return self.roi_heads.detect(features, proposals, [tuple(s) for s in image_sizes])

    def proposals(self, objectness: Sequence[Tensor], box_deltas: Sequence[Tensor], images: Tensor,
                  image_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """Inference proposals from the RPN head's outputs, as torchvision's ``RegionProposalNetwork.forward``
        (anchors, decode, per-level top-k, clip, NMS), with no parameters: the ONNX backend runs the head as a
        graph and this on its outputs.

        Args:
            objectness: per RPN level (B, A, h, w) float. box_deltas: per level (B, 4A, h, w) float.
            images: (B, 3, Hp, Wp) the padded batch (only its size is read). image_sizes: unpadded (H, W).
        Returns:
            B x (P_i, 4) float xyxy proposals.
        """
        image_list = ImageList(images, [tuple(s) for s in image_sizes])
        objectness, box_deltas = list(objectness), list(box_deltas)
        # the anchor generator reads only the maps' sizes, dtype and device: the head's outputs have the levels'
        anchors = self.rpn.anchor_generator(image_list, objectness)
        num_anchors_per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        objectness, box_deltas = concat_box_prediction_layers(objectness, box_deltas)
        proposals = self.rpn.box_coder.decode(box_deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = self.rpn.filter_proposals(proposals, objectness, image_list.image_sizes, num_anchors_per_level)
        return boxes


def build_detector(
    *,
    num_things: int,
    in_channels: int = 256,
    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    rpn_pre_nms_top_n: Mapping[str, int] | None = None,
    rpn_post_nms_top_n: Mapping[str, int] | None = None,
    rpn_nms_thresh: float = 0.7,
    rpn_batch_size_per_image: int = 256,
    rpn_min_pos_iou: float | None = 0.3,
    box_fc_channels: int = 1024,
    box_batch_size_per_image: int = 512,
    box_positive_fraction: float = 0.25,
    mask_channels: int = 256,
    score_thresh: float = 0.6,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    box_loss_beta: float = 1.0,
) -> MaskRCNNDetector:
    """Mask R-CNN heads for ``num_things`` thing classes (+ background) over ``in_channels``-channel P2..P6.

    Defaults are the official Cityscapes config: RPN 2000/2000 proposals per level before/after NMS in
    training, 1000/1000 at test, NMS 0.7, 256 anchors per image (50 % positive, IoU 0.7 / 0.3); 512 RoIs per
    image (25 % positive, IoU 0.5); detections: score > 0.6, class-agnostic NMS 0.5, at most 100.
    ``box_fc_channels`` / ``mask_channels`` may be lowered for CPU tests (the paper uses 1024 / 256).

    Official losses and assignment: ``rpn_min_pos_iou`` 0.3 (mmdetection's MaxIoUAssigner: a gt's best anchors
    are positive if their IoU is >= 0.3, see :class:`MaxIoUMatcher`; None = torchvision's low-quality matches at
    any IoU); ``box_loss_beta`` 1.0 for the box head's smooth L1 (1/9 = torchvision's). The RPN's box loss
    keeps torchvision's beta 1/9, which is also the official RPN's.
    """
    pre = {"training": 2000, "testing": 1000, **(rpn_pre_nms_top_n or {})}
    post = {"training": 2000, "testing": 1000, **(rpn_post_nms_top_n or {})}
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), (tuple(aspect_ratios),) * len(anchor_sizes))
    rpn = RegionProposalNetwork(
        anchors,
        RPNHead(in_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=rpn_batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_top_n=pre,
        post_nms_top_n=post,
        nms_thresh=rpn_nms_thresh,
    )
    if rpn_min_pos_iou is not None:
        rpn.proposal_matcher = MaxIoUMatcher(0.7, 0.3, rpn_min_pos_iou)
    num_classes = num_things + 1
    roi_heads = PanopticRoIHeads(
        box_roi_pool=MultiScaleRoIAlign(list(ROI_LEVELS), output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(in_channels * 7 * 7, box_fc_channels),
        box_predictor=FastRCNNPredictor(box_fc_channels, num_classes),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=box_batch_size_per_image,
        positive_fraction=box_positive_fraction,
        bbox_reg_weights=None,  # (10, 10, 5, 5): the official target_stds 0.1, 0.1, 0.2, 0.2
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        mask_roi_pool=MultiScaleRoIAlign(list(ROI_LEVELS), output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(in_channels, [mask_channels] * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes),
    )
    roi_heads.box_loss_beta = box_loss_beta
    return MaskRCNNDetector(rpn=rpn, roi_heads=roi_heads)

"""Constants shared by every task: the only definitions in the package.

- ``IGNORE_LABEL``: label-map value that losses and metrics ignore (void, padding, unknown): 255 in DAVIS
  masks, Cityscapes trainId maps and every vidseg label tensor.
- ``PANOPTIC_VOID_ID``: the COCO-panoptic segment id of void pixels (RGB 0, 0, 0) in panoptic PNGs.
- ``PANOPTIC_LABEL_DIVISOR``: Cityscapes-VPS ``panoptic_inst`` PNGs store things as class * 1000 + instance.
- ``IMAGENET_MEAN`` / ``IMAGENET_STD``: normalisation of RGB images in [0, 1] for ImageNet-trained backbones;
  ``IMAGENET_MEAN_UINT8`` is the fill value for padded image pixels (they normalise to ~0).
"""

from __future__ import annotations

IGNORE_LABEL = 255
PANOPTIC_VOID_ID = 0
PANOPTIC_LABEL_DIVISOR = 1000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_MEAN_UINT8 = (124, 116, 104)

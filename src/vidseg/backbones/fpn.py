"""Feature pyramid on backbone features: torchvision's FeaturePyramidNetwork + LastLevelMaxPool."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


class FPN(nn.Module):
    """Maps backbone features {"cK": (B, in_channels["cK"], H/2^K, W/2^K)} to pyramid levels
    {"pK": (B, out_channels, H/2^K, W/2^K)} plus one extra level p(last+1) at half the last resolution
    (stride-2 subsampling, as in Mask R-CNN's P6). With the usual {"c2".."c5"}: {"p2".."p6"}.

    The level names assume each level halves the previous one (a backbone at output stride 32). With a
    dilated backbone the maps still fuse (top-down upsampling goes to each lateral's size), but pK is then
    not at stride 2^K. Sizes round up like the backbone's.
    """

    def __init__(self, in_channels: Mapping[str, int], out_channels: int = 256) -> None:
        super().__init__()
        if not in_channels or not all(re.fullmatch(r"c\d+", name) for name in in_channels):
            raise ValueError(f"in_channels keys must be named c<level>, got {list(in_channels)}")
        levels = sorted(int(name[1:]) for name in in_channels)
        self.in_names = [f"c{level}" for level in levels]
        self.out_names = [f"p{level}" for level in levels] + [f"p{levels[-1] + 1}"]
        self.out_channels = out_channels
        self.fpn = FeaturePyramidNetwork(
            [in_channels[name] for name in self.in_names], out_channels, extra_blocks=LastLevelMaxPool()
        )

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        pyramid = self.fpn(OrderedDict((name, features[name]) for name in self.in_names))
        # torchvision returns the input names plus "pool", in order: rename to p-levels.
        return dict(zip(self.out_names, pyramid.values(), strict=True))

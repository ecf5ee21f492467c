"""A FEELVOS small enough to build and run in a fraction of a second on CPU (tests only)."""

from __future__ import annotations

TINY_FEELVOS = dict(
    backbone=dict(name="resnet18", output_stride=16), decoder=dict(decoder_channels=8, aspp_channels=8),
    embedding_dim=4, head_channels=8, head_kernel=3, head_layers=1, local_max_distance=2,
    max_reference_per_object=20,
)

# A little wider (16 decoder channels, 8-dim embeddings): the FEELVOS model and predictor tests.
TINY_NET = dict(
    backbone=dict(name="resnet18", output_stride=16), decoder=dict(decoder_channels=16, aspp_channels=16),
    embedding_dim=8, head_channels=16, head_kernel=3, head_layers=1, local_max_distance=2,
    max_reference_per_object=20,
)

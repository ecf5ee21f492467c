"""Collate functions shared by the datamodules."""

from __future__ import annotations

from typing import Any


def collate_single(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluation batches hold one item (a whole sequence, or one frame of a clip): return it unbatched."""
    if len(batch) != 1:
        raise ValueError(f"evaluation loaders use batch_size=1, got a batch of {len(batch)}")
    return batch[0]

"""The per-frame segments record of a predicted video (``<output>/segments/<frame>.json``), in one place for
``vidseg.predict task=vps`` and the web app."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def category_table(categories: Sequence[Mapping[str, Any]]) -> dict[int, tuple[int, str | None]]:
    """Model class id -> (the dataset's own category id, name).

    A VIPSeg model numbers VIPSeg's classes stuff first (VPSNet's order) and keeps each one's VIPSeg id as
    ``vipseg_id`` (:data:`vidseg.data.vipseg.VIPSEG_CLASSES`); the other datasets' class ids are their category ids.
    """
    return {int(c["id"]): (int(c.get("vipseg_id", c["id"])), c.get("name")) for c in categories}


def frame_segments_record(index: int, name: str, segments: Sequence[Mapping[str, Any]],
                          categories: Mapping[int, tuple[int, str | None]]) -> dict[str, Any]:
    """``{"frame", "name", "segments_info": [{id, category_id, category, isthing, track_id, score, area}]}`` for
    one frame's segments (:class:`vidseg.inference.vps.VPSFrameResult`); ``categories``: :func:`category_table`,
    so ``category_id`` is the dataset's id (VIPSeg's own for a VIPSeg model) and ``category`` its name."""
    return {"frame": int(index), "name": name, "segments_info": [
        {"id": s["id"], "category_id": categories[s["category_id"]][0], "category": categories[s["category_id"]][1],
         "isthing": bool(s["isthing"]), "track_id": s["track_id"], "score": s["score"], "area": s["area"]}
        for s in segments]}

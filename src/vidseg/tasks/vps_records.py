"""The per-frame segments record of a predicted video (``<output>/segments/<frame>.json``), in one place for
``vidseg.predict task=vps`` and the web app."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def frame_segments_record(index: int, name: str, segments: Sequence[Mapping[str, Any]],
                          category_names: Mapping[int, str | None]) -> dict[str, Any]:
    """``{"frame", "name", "segments_info": [{id, category_id, category, isthing, track_id, score, area}]}`` for
    one frame's segments (:class:`vidseg.inference.vps.VPSFrameResult`), ``category_names``: class id -> name."""
    return {"frame": int(index), "name": name, "segments_info": [
        {"id": s["id"], "category_id": s["category_id"], "category": category_names.get(s["category_id"]),
         "isthing": bool(s["isthing"]), "track_id": s["track_id"], "score": s["score"], "area": s["area"]}
        for s in segments]}

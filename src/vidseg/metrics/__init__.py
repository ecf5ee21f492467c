"""Evaluation metrics, equal to the official evaluators on the same inputs.

- VOS: J&F (``j_and_f``, numpy; ``davis_eval`` scores a results folder, ``jf_plots`` draws its figure;
  ``vos_metrics`` holds the torchmetrics wrapper) = the DAVIS toolkit.
- VPS: VPQ (``vpq``) = the official eval_vpq.py / VIPER rules, STQ (``stq``) = deeplab2's numpy STQuality,
  ``vps_eval`` scores a submission folder; ``vps_metrics`` holds their torchmetrics wrappers.

Names are imported lazily, so scoring a submission or a results folder never imports torch or torchmetrics
unless it needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DavisResults": "davis_eval",
    "evaluate_folder": "davis_eval",
    "format_table": "davis_eval",
    "write_results": "davis_eval",
    "plot_results": "jf_plots",
    "GLOBAL_NAMES": "j_and_f",
    "STAT_NAMES": "j_and_f",
    "JAndF": "vos_metrics",
    "boundary_f": "j_and_f",
    "boundary_keys": "j_and_f",
    "boundary_radius": "j_and_f",
    "db_statistics": "j_and_f",
    "evaluate_frames": "j_and_f",
    "evaluate_sequence": "j_and_f",
    "jaccard": "j_and_f",
    "seg2bmap": "j_and_f",
    "summarize": "j_and_f",
    "CITYSCAPES_VPS_PROTOCOL": "vpq",
    "PROTOCOLS": "vpq",
    "VIPER_PROTOCOL": "vpq",
    "VIPSEG_PROTOCOL": "vpq",
    "STQ_CROWD_RULES": "stq",
    "with_stq_mode": "vps_eval",
    "PQCounts": "vpq",
    "VPSProtocol": "vpq",
    "pair_table": "vpq",
    "summarize_vpq": "vpq",
    "video_pq_counts": "vpq",
    "STQCounts": "stq",
    "summarize_stq": "stq",
    "video_stq": "stq",
    "video_stq_counts": "stq",
    "SegmentationTrackingQuality": "vps_metrics",
    "VideoPanopticQuality": "vps_metrics",
    "VPSGroundTruth": "vps_eval",
    "VPSResults": "vps_eval",
    "evaluate_submission": "vps_eval",
    "format_vps_table": "vps_eval",
    "load_ground_truth": "vps_eval",
    "write_vps_results": "vps_eval",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

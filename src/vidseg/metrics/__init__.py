"""Evaluation metrics. DAVIS J&F (``j_and_f``, ``davis_eval``) equals the official toolkit's numbers."""

from vidseg.metrics.davis_eval import DavisResults, evaluate_folder, format_table, write_results
from vidseg.metrics.j_and_f import (
    GLOBAL_NAMES,
    STAT_NAMES,
    JAndF,
    boundary_f,
    boundary_radius,
    db_statistics,
    evaluate_frames,
    evaluate_sequence,
    jaccard,
    seg2bmap,
    summarize,
)

__all__ = [
    "GLOBAL_NAMES",
    "STAT_NAMES",
    "DavisResults",
    "JAndF",
    "boundary_f",
    "boundary_radius",
    "db_statistics",
    "evaluate_folder",
    "evaluate_frames",
    "evaluate_sequence",
    "format_table",
    "jaccard",
    "seg2bmap",
    "summarize",
    "write_results",
]

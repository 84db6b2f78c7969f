"""Results in one home: computing the metric tables (``tables``), reading what an audit stored
(``stored``; ``store.AuditStore`` for the app's views), and saying it (``words``: one formatter for
a number with its interval, the verdict words).

The reviewer's side of the stored pairs (gallery rows, decisions) is ``side_engine.review``.
"""

from .stored import (
    EXPOSURE_COLUMNS,
    HIST_BINS,
    arm_data,
    audit_info,
    best_histogram,
    best_scores,
    chosen_by_run,
    exposure,
    extraction,
    extraction_counts,
    extraction_n,
    metrics_json,
    stored_bands,
)
from .tables import (
    ALPHA,
    COMPARED,
    CONDITIONAL_ON,
    HOLM_FAMILY,
    arm,
    band_masks,
    calibration,
    compare,
    compute_and_store,
    compute_tables,
    live_metrics,
    unseen_estimates,
)
from .words import MISSING, ON_TARGET, on_target_meaning, verdict, with_interval

__all__ = [
    "ALPHA", "COMPARED", "CONDITIONAL_ON", "EXPOSURE_COLUMNS", "HIST_BINS", "HOLM_FAMILY", "MISSING", "ON_TARGET",
    "arm", "arm_data", "audit_info", "band_masks", "best_histogram", "best_scores", "calibration", "chosen_by_run",
    "compare", "compute_and_store", "compute_tables", "exposure", "extraction", "extraction_counts", "extraction_n",
    "live_metrics", "metrics_json", "on_target_meaning", "stored_bands", "unseen_estimates", "verdict",
    "with_interval",
]

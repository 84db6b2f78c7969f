"""Recompute a finished audit's stored metric tables with this checkout's statistics.

The samples, matches and classifiers stay as they are; only what the metrics stage derives
from them (tables, comparison with Random, unseen-image estimates) is written again — how the
demo and the studies' kept workspaces are re-read when a method of inference changes.

    python bench/recompute_metrics.py WORKSPACE [WORKSPACE ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import results, storage  # noqa: E402
from side_engine.config import AuditConfig  # noqa: E402


def recompute(ws: Path) -> None:
    db = storage.connect(ws / "audit.db")
    try:
        info = results.audit_info(db)
        cfg = AuditConfig.from_stored(info["config"])
        bands, higher = results.stored_bands(db)
        results.compute_and_store(db, cfg, higher, bands, info["scorer"])
    finally:
        db.close()


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        recompute(Path(arg))
        print(f"recomputed {arg}")

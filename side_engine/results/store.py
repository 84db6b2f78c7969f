"""One workspace's stored results as the app's views (and any other reader) ask for them: a
connection per thread, opened on demand; every call reads what is stored now. Qt-free: the app
holds one, so could a notebook or a script."""

from __future__ import annotations

from pathlib import Path

from .. import config, review, storage
from ..scorers import Band
from ..workspace import Workspace
from . import stored as results

GALLERY_LIMIT = 5000  # pairs the gallery holds at once, closest first (the paper's scale has ~10^5)


class AuditStore:
    """What the views show of one workspace; every call reads what is stored now."""

    def __init__(self, workspace: str | Path) -> None:
        self.ws = Workspace(workspace)
        self._db = None

    @property
    def db(self):
        if self._db is None:
            self._db = storage.connect(self.ws.db_path)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def started(self) -> bool:
        return self.ws.db_path.exists()

    def config(self) -> config.AuditConfig | None:
        try:
            return self.ws.load_config()
        except Exception:
            return None

    def status(self) -> str:
        if not self.ws.exists():
            return "missing"
        if not self.started():
            return "not started"
        rows = storage.stage_rows(self.db)
        if rows and all(r["status"] == "done" for r in rows) and any(r["name"] == "metrics" for r in rows):
            return "complete"
        if any(r["status"] == "failed" for r in rows):
            return "failed"
        if any(r["status"] in ("running", "stopped") for r in rows):
            return "stopped"
        return "in progress"

    def complete(self) -> bool:
        return self.status() == "complete"

    def stages(self) -> list[dict]:
        return storage.stage_rows(self.db) if self.started() else []

    def metrics(self) -> dict:
        if not self.started() or not list(self.db["audits"].rows):
            return {"audit": {}, "rows": [], "topk": [], "summary": [], "classifiers": [], "exposure": []}
        # the tables the metrics stage stored: never the intervals recomputed here (the window's thread); an
        # unfinished audit's live tables come from ``workers.LiveMetricsWorker``
        return results.metrics_json(self.db)

    def estimate(self) -> tuple[dict | None, str]:
        """The duration estimate the last run logged at its start, and its device."""
        if not self.started():
            return None, ""
        return storage.get_kv(self.db, "estimate"), storage.get_kv(self.db, "estimate_device", "")

    def train_image_path(self, rel: str) -> Path:
        info = results.audit_info(self.db)
        return Path(info.get("train_path", "")) / rel

    # -- what the views read and the reviewer writes, through this store alone ----------------
    def audit_row(self) -> dict:
        """The stored audit record (model, device, scorer, settings), or {} before a run."""
        return results.audit_info(self.db) if self.started() else {}

    def stored(self, key: str, default=None):
        """A value the run stored (``model``, ``k``, …)."""
        return storage.get_kv(self.db, key, default) if self.started() else default

    def chosen_by_run(self, cfg: config.AuditConfig) -> dict[str, int | str]:
        """What the run chose for the automatic settings it used (results.chosen_by_run)."""
        return results.chosen_by_run(self.ws, self.db, cfg) if self.started() else {}

    def bands(self) -> tuple[list[Band], bool]:
        return results.stored_bands(self.db)

    def best_histogram(self) -> dict:
        return results.best_histogram(self.db) if self.started() else {"counts": [], "edges": []}

    def exposure(self) -> list[dict]:
        return results.exposure(self.db)

    def gallery_rows(self, band: str | None = None, method: str | None = None, lam: float | None = None,
                     train_idx: int | None = None) -> list[dict]:
        return review.gallery_rows(self.db, band, method, lam, train_idx, limit=GALLERY_LIMIT)

    def gallery_count(self, band: str | None = None, method: str | None = None, lam: float | None = None,
                      train_idx: int | None = None) -> int:
        return review.gallery_count(self.db, band, method, lam, train_idx)

    def sample_matches(self, sample_id: int) -> list[dict]:
        return review.sample_matches(self.db, sample_id)

    def set_decision(self, sample_ids: list[int], decision: str | None) -> None:
        review.set_decision(self.db, sample_ids, decision)

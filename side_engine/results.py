"""Metrics from what is stored: per (method, λ) tables, top-k, exposure, and the JSON export."""

from __future__ import annotations

import json
import math

import numpy as np
import sqlite_utils

from . import metrics
from .config import AuditConfig
from .scorers import Band, bands_for


def _pairs(db: sqlite_utils.Database, method: str, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = list(db.execute(
        "select m.sample_id, m.train_idx, m.score from matches m join samples s on s.id = m.sample_id "
        "where s.method = ? and s.lam = ?", [method, lam]).fetchall())
    if not rows:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    a = np.array(rows, dtype=np.float64)
    return a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2]


def _samples(db: sqlite_utils.Database, method: str, lam: float) -> dict[str, np.ndarray]:
    rows = db.execute("select best, nearest, gu_ratio, steered from samples where method = ? and lam = ?",
                      [method, lam]).fetchall()
    a = np.array(rows, dtype=np.float64) if rows else np.zeros((0, 4))
    return {"best": a[:, 0], "nearest": a[:, 1].astype(int), "gu": a[:, 2], "steered": a[:, 3]}


def compute_and_store(db: sqlite_utils.Database, cfg: AuditConfig, higher_is_closer: bool,
                      bands: list[Band], scorer: str) -> None:
    metric_rows, topk_rows, summary_rows = [], [], []
    for method, lam in cfg.grid():
        s = _samples(db, method, lam)
        _, pair_train, pair_scores = _pairs(db, method, lam)
        n = len(s["best"])
        for row in metrics.band_table(s["best"], s["nearest"], pair_train, pair_scores, bands,
                                      higher_is_closer, nearest_only=cfg.ums == "nearest-only"):
            metric_rows.append({"method": method, "lam": lam, "n_generated": n, "scorer": scorer, **row})
        for frac, mean in metrics.topk_mean(s["best"], higher_is_closer).items():
            topk_rows.append({"method": method, "lam": lam, "fraction": frac, "mean_best": _nan(mean)})
        steered = s["steered"][np.isfinite(s["steered"])]
        summary_rows.append({
            "method": method, "lam": lam, "n_generated": n,
            "p95_best": _nan(metrics.p95_closeness(s["best"], higher_is_closer)),
            "gu_fraction": _nan(metrics.gu_fraction(s["gu"])),
            "mean_best": _nan(float(s["best"].mean()) if n else math.nan),
            "target_accuracy": _nan(float(steered.mean()) if len(steered) and method != "random" else math.nan),
        })
    with db.atomic():
        for table in ("metrics", "topk", "summary"):
            db[table].delete_where()
        db["metrics"].insert_all(metric_rows)
        db["topk"].insert_all(topk_rows)
        db["summary"].insert_all(summary_rows)


def _nan(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def audit_info(db: sqlite_utils.Database) -> dict:
    rows = list(db["audits"].rows) if "audits" in db.table_names() else []
    if not rows:
        return {}
    a = dict(rows[0])
    a["config"] = json.loads(a["config"])
    a["versions"] = json.loads(a["versions"])
    return a


def stored_bands(db: sqlite_utils.Database) -> tuple[list[Band], bool]:
    info = audit_info(db)
    cfg = info["config"]
    sscd = info.get("scorer") == "sscd"
    return bands_for(None, cfg["bands_sscd"] if sscd else cfg["bands_pixel"]), sscd


def exposure(db: sqlite_utils.Database, method: str | None = None, limit: int | None = None) -> list[dict]:
    """Training images ranked by in-band matches (closest band first), with their best pair."""
    bands, higher = stored_bands(db)
    where, args = ("where s.method = ?", [method]) if method else ("", [])
    rows = db.execute(f"select m.sample_id, m.train_idx, m.score from matches m join samples s "
                      f"on s.id = m.sample_id {where}", args).fetchall()
    if not rows:
        return []
    a = np.array(rows, dtype=np.float64)
    out = metrics.exposure(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2], bands, higher)
    paths = {r["idx"]: r["path"] for r in db.query("select idx, path from train_images")}
    for r in out:
        r["path"] = paths.get(r["train_idx"])
    return out[:limit] if limit else out


def metrics_json(db: sqlite_utils.Database) -> dict:
    info = audit_info(db)
    audit = {k: info.get(k) for k in ("created", "checkpoint_path", "checkpoint_sha256", "train_path",
                                      "train_fingerprint", "n_train", "device", "scorer", "scorer_source",
                                      "scorer_sha256")}
    audit["config"] = info.get("config")
    audit["versions"] = info.get("versions")
    rows = [dict(r) for r in db.query("select * from metrics order by method != 'random', method, lam, "
                                      "case band when 'low' then 0 when 'mid' then 1 else 2 end")]
    for r in rows:
        r["lambda"] = r.pop("lam")
    topk = [dict(r, **{"lambda": r.pop("lam")}) for r in db.query("select * from topk order by method, lam, fraction")]
    summary = [dict(r, **{"lambda": r.pop("lam")}) for r in db.query("select * from summary order by method, lam")]
    classifiers = [dict(r, details=json.loads(r["details"])) for r in db.query("select * from classifiers")]
    return {"audit": audit, "rows": rows, "topk": topk, "summary": summary, "classifiers": classifiers,
            "exposure": exposure(db, limit=100)}

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
    metric_rows, topk_rows, summary_rows = compute_tables(db, cfg, higher_is_closer, bands, scorer)
    with db.atomic():
        for table in ("metrics", "topk", "summary"):
            db[table].delete_where()
        db["metrics"].insert_all(metric_rows)
        db["topk"].insert_all(topk_rows)
        db["summary"].insert_all(summary_rows)


def compute_tables(db: sqlite_utils.Database, cfg: AuditConfig, higher_is_closer: bool,
                   bands: list[Band], scorer: str) -> tuple[list[dict], list[dict], list[dict]]:
    """The metric tables from the samples stored so far (also mid-run, read-only)."""
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
    return metric_rows, topk_rows, summary_rows


def live_metrics(db: sqlite_utils.Database) -> dict:
    """metrics_json, with the tables computed from what is stored now (the run may be going on)."""
    info = audit_info(db)
    if not info:
        return {"audit": {}, "rows": [], "topk": [], "summary": [], "classifiers": [], "exposure": []}
    cfg = AuditConfig(**info["config"])
    bands, higher = stored_bands(db)
    m, t, s = compute_tables(db, cfg, higher, bands, info.get("scorer") or "pixel")
    out = metrics_json(db)
    started = {(r["method"], r["lam"]) for r in s if r["n_generated"]}  # (method, λ) with samples so far
    out["rows"] = [dict(r, **{"lambda": r["lam"]}) for r in m if (r["method"], r["lam"]) in started]
    out["summary"] = [dict(r, **{"lambda": r["lam"]}) for r in s if (r["method"], r["lam"]) in started]
    out["topk"] = [dict(r, **{"lambda": r["lam"]}) for r in t if (r["method"], r["lam"]) in started]
    return out


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
    return bands_for(cfg["bands_sscd"] if sscd else cfg["bands_pixel"]), sscd


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


# -- review: gallery rows and decisions ---------------------------------------------------

DECISIONS = ("memorised", "not a copy", "unsure")


def gallery_rows(db: sqlite_utils.Database, band: str | None = None, method: str | None = None,
                 lam: float | None = None, train_idx: int | None = None) -> list[dict]:
    """(generated, nearest training) pairs with a stored PNG, closest first."""
    bands, higher = stored_bands(db)
    where, args = ["s.png is not null"], []
    if method:
        where.append("s.method = ?")
        args.append(method)
    if lam is not None:
        where.append("s.lam = ?")
        args.append(lam)
    if train_idx is not None:
        where.append("s.id in (select sample_id from matches where train_idx = ?)")
        args.append(train_idx)
    order = "desc" if higher else "asc"
    rows = list(db.query(
        f"select s.id, s.method, s.lam, s.sample_index, s.seed, s.cls, s.best, s.nearest, s.png, "
        f"t.path as train_path, d.decision from samples s join train_images t on t.idx = s.nearest "
        f"left join decisions d on d.sample_id = s.id where {' and '.join(where)} order by s.best {order}, s.id",
        args))
    for r in rows:
        r["band"] = band_of(r["best"], bands, higher)
    if band:
        rows = [r for r in rows if r["band"] == band]
    return rows


def band_of(score: float, bands: list[Band], higher: bool) -> str | None:
    for b in reversed(bands):  # closest first
        if metrics.in_band(np.array([score]), b, bands, higher)[0]:
            return b.name
    return None


def sample_matches(db: sqlite_utils.Database, sample_id: int) -> list[dict]:
    """Every in-band training image of one generated image, closest first."""
    _, higher = stored_bands(db)
    order = "desc" if higher else "asc"
    return list(db.query(f"select m.train_idx, m.score, t.path from matches m join train_images t "
                         f"on t.idx = m.train_idx where m.sample_id = ? order by m.score {order}", [sample_id]))


def set_decision(db: sqlite_utils.Database, sample_ids: list[int], decision: str | None, note: str = "") -> None:
    """Store (or, with ``None``, clear) the reviewer's decision for each pair."""
    from .storage import now

    if decision is not None and decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}")
    with db.atomic():
        for sid in sample_ids:
            if decision is None:
                db.execute("delete from decisions where sample_id = ?", [sid])
                continue
            nearest = db.execute("select nearest from samples where id = ?", [sid]).fetchone()
            db["decisions"].upsert({"sample_id": sid, "train_idx": nearest[0] if nearest else None,
                                    "decision": decision, "note": note, "decided_at": now()}, pk="sample_id")


def best_scores(db: sqlite_utils.Database, method: str | None = None) -> np.ndarray:
    q, args = "select best from samples", []
    if method:
        q += " where method = ?"
        args.append(method)
    return np.array([r[0] for r in db.execute(q, args).fetchall()], dtype=np.float64)

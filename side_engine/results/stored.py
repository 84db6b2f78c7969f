"""What an audit stored, read: one (method, λ)'s samples, the audit's record and bands, exposure per
training image, and the JSON export (``metrics --json``). Nothing here computes a new interval."""

from __future__ import annotations

import json

import numpy as np
import sqlite_utils

from .. import measures, statistics
from ..config import AuditConfig
from ..scorers import Band, bands_for, bands_setting

EXPOSURE_COLUMNS = ("train_idx", "high", "mid", "low", "total", "best_score", "best_sample")


HIST_BINS = 40


def arm_data(db: sqlite_utils.Database, method: str, lam: float) -> dict[str, np.ndarray]:
    """The stored samples of one (method, λ), ordered by sample index, and their in-band pairs
    (as sample indices)."""
    rows = db.execute("select sample_index, best, nearest, gu_ratio, steered, guidance_ratio, cluster from samples "
                      "where method = ? and lam = ? order by sample_index", [method, lam]).fetchall()
    a = np.array(rows, dtype=np.float64) if rows else np.zeros((0, 7))
    pairs = db.execute(
        "select s.sample_index, m.train_idx, m.score from matches m join samples s on s.id = m.sample_id "
        "where s.method = ? and s.lam = ?", [method, lam]).fetchall()
    p = np.array(pairs, dtype=np.float64) if pairs else np.zeros((0, 3))
    return {"index": a[:, 0].astype(int), "best": a[:, 1], "nearest": a[:, 2].astype(int), "gu": a[:, 3],
            "steered": a[:, 4], "guidance_ratio": a[:, 5], "cluster": a[:, 6], "pair_index": p[:, 0].astype(int),
            "pair_train": p[:, 1].astype(int), "pair_score": p[:, 2]}


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
    scorer = info.get("scorer") or "pixel"
    return bands_for(cfg[bands_setting(scorer)]), scorer == "sscd"


def _classes(db: sqlite_utils.Database) -> tuple[np.ndarray | None, int] | None:
    """The surrogate class of every training image and K; None before labels. Under
    synthetic-clusters no training image has a class: (None, K), and a sample is on target when it
    falls in its target's cluster (stored per sample; an audit sampled before clusters were
    stored has none, and no on-target rate)."""
    from ..storage import get_kv

    k = get_kv(db, "k")
    sur = np.array([r[0] if r[0] is not None else -1 for r in
                    db.execute("select surrogate from train_images order by idx").fetchall()], dtype=np.int64)
    if not k or not len(sur):
        return None
    if (sur < 0).all():
        return None, int(k)
    return sur, int(k)


def _strategies(db: sqlite_utils.Database, methods: list[str], lams: np.ndarray) -> np.ndarray:
    """Each pair's strategy: "random", or a guided method within the declared λ range ("" outside)."""
    info = audit_info(db)
    declared = set(AuditConfig.from_stored(info["config"]).table_grid()) if info else set()
    return np.array([m if m == "random" or lam in declared else "" for m, lam in zip(methods, lams)])


def extraction_counts(pair_train: np.ndarray, pair_score: np.ndarray, strategy: np.ndarray,
                      bands: list[Band], higher: bool) -> dict[str, np.ndarray]:
    """Per training image (indexed by its idx): how many generated images of each strategy
    matched it at least as close as each band — the numerator of its per-sample extraction
    probability. Keys ``"{strategy}_{band}"``."""
    size = int(pair_train.max()) + 1 if len(pair_train) else 0
    out = {}
    for name in sorted(set(strategy.tolist()) - {""}):
        mine = strategy == name
        for b in bands:
            hit = mine & measures.at_least(pair_score, b, higher)
            out[f"{name}_{b.name}"] = np.bincount(pair_train[hit], minlength=size)
    return out


def _exposure_rows(db: sqlite_utils.Database, method: str | None = None) -> list[dict]:
    """``measures.exposure`` of every stored in-band pair (of one method), each training image
    with its per-strategy detections (``extraction_counts``)."""
    bands, higher = stored_bands(db)
    where, args = ("where s.method = ?", [method]) if method else ("", [])
    rows = db.execute(f"select m.sample_id, m.train_idx, m.score, s.method, s.lam from matches m join samples s "
                      f"on s.id = m.sample_id {where}", args).fetchall()
    if not rows:
        return []
    a = np.array([r[:3] for r in rows], dtype=np.float64)
    out = measures.exposure(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2], bands, higher)
    strategy = _strategies(db, [r[3] for r in rows], np.array([r[4] for r in rows], dtype=np.float64))
    counts = extraction_counts(a[:, 1].astype(int), a[:, 2], strategy, bands, higher)
    for r in out:
        r.update({k: int(c[r["train_idx"]]) for k, c in counts.items()})
    return out


def exposure(db: sqlite_utils.Database, method: str | None = None, limit: int | None = None) -> list[dict]:
    """Training images ranked by in-band matches (closest band first), with their best pair
    (``best_sample`` and its stored image ``best_png``, workspace-relative). Once the metrics
    stage has run, its stored ranking (all methods); before, or per method, from the pairs."""
    from ..storage import get_kv, stage_rows

    done = any(r["name"] == "metrics" and r["status"] == "done" for r in stage_rows(db))
    if method is None and done and get_kv(db, "exposure_stored"):
        # one query: the ranking with each image's path and its closest copy's stored PNG
        names = [*EXPOSURE_COLUMNS, *(c for c in db["exposure"].columns_dict
                                     if c not in EXPOSURE_COLUMNS and c != "rank")]  # + per-strategy counts
        cols = ", ".join(f"e.{c}" for c in names)
        rows = db.execute(f"select {cols}, t.path, s.png from exposure e left join train_images t on t.idx = "
                          f"e.train_idx left join samples s on s.id = e.best_sample order by e.rank"
                          + (f" limit {int(limit)}" if limit else "")).fetchall()
        return [{**dict(zip(names, r[:-2])), "path": r[-2], "best_png": r[-1]} for r in rows]
    out = _exposure_rows(db, method)[:limit] if limit else _exposure_rows(db, method)
    if not out:
        return []
    train = ",".join(str(int(r["train_idx"])) for r in out)
    samples = ",".join(str(int(r["best_sample"])) for r in out)
    paths = {r[0]: r[1] for r in db.execute(f"select idx, path from train_images where idx in ({train})")}
    pngs = {r[0]: r[1] for r in db.execute(f"select id, png from samples where id in ({samples})")}
    for r in out:
        r["path"] = paths.get(r["train_idx"])
        r["best_png"] = pngs.get(int(r["best_sample"]))
    return out


def extraction_n(db: sqlite_utils.Database) -> dict[str, int]:
    """The generated images behind each strategy's counts (Random; guided: the declared range)."""
    info = audit_info(db)
    if not info:
        return {}
    declared = AuditConfig.from_stored(info["config"]).table_grid()
    out = {}
    for method, lam, n in db.execute("select method, lam, count(*) from samples group by method, lam"):
        if method == "random" or lam in declared:
            out[method] = out.get(method, 0) + n
    return out


def extraction(row: dict, n: dict[str, int]) -> list[dict]:
    """A training image's per-sample extraction probability per strategy and band (at least as
    close), each with its exact 95 % interval: hits / generated images."""
    out = []
    for key, hits in row.items():
        strategy, _, band = key.rpartition("_")
        if strategy in n and band in ("high", "mid", "low") and isinstance(hits, int):
            lo, hi = statistics.clopper_pearson(hits, n[strategy])
            out.append({"strategy": strategy, "band": band, "hits": hits, "n": n[strategy],
                        "p": hits / n[strategy] if n[strategy] else None, "lo": lo, "hi": hi})
    return out


def best_scores(db: sqlite_utils.Database, method: str | None = None) -> np.ndarray:
    q, args = "select best from samples", []
    if method:
        q += " where method = ?"
        args.append(method)
    return np.array([r[0] for r in db.execute(q, args).fetchall()], dtype=np.float64)


def best_histogram(db: sqlite_utils.Database, bins: int = HIST_BINS) -> dict:
    """Counts of every generated image's best-match score in ``bins`` equal bins (with edges)."""
    best = best_scores(db)
    best = best[np.isfinite(best)]
    if not len(best):
        return {"counts": [], "edges": []}
    counts, edges = np.histogram(best, bins=bins)
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def chosen_by_run(ws, db: sqlite_utils.Database, cfg: AuditConfig) -> dict[str, int | str]:
    """What the run chose for the automatic settings left at 0 and used (K, n_syn, the classifier
    width; what ``guide_precision`` auto or same resolved to), from what it stored: the width is
    the stored classifier's own, which today's rule no longer gives once an automatic default
    changes; before any classifier is stored, the rule.
    The report and the app both show this, so "classifier_width = 0" never stands alone."""
    from ..storage import get_kv

    out: dict[str, int | str] = {}
    idle = cfg.unused_settings()
    used = get_kv(db, "guide_precision")
    if used and cfg.guide_precision in ("auto", "same") and "guide_precision" not in idle:
        out["guide_precision"] = used
    k = get_kv(db, "k")
    if k and not cfg.k:
        out["k"] = int(k)
    if k and not cfg.n_syn and "n_syn" not in idle:
        out["n_syn"] = cfg.resolved_n_syn(int(k))
    if not cfg.classifier_width and "classifier_width" not in idle:
        trained = ws.classifier_hparams("td") or ws.classifier_hparams("ti")
        model = get_kv(db, "model") or {}
        if trained:
            out["classifier_width"] = int(trained["width"])
        elif model.get("resolution"):  # the classifier sees what the UNet models
            size = model["latent_shape"][1] if model.get("space") == "latent" else model["resolution"]
            out["classifier_width"] = cfg.resolved_width(int(size))
    return out


def _heldout_summary(record: dict | None) -> dict | None:
    """The held-out record without its per-image list (in the CSV export)."""
    return None if not record else {k: v for k, v in record.items() if k != "images"}


def _on_target_by(config: dict, k: int | None) -> str | None:
    """What "on target" means in this audit: the nearest training image carries the target class
    ("training image"), or, under synthetic-clusters, the image falls in the target's cluster
    ("cluster"); None before labels."""
    if not k:
        return None
    from ..label_sources import POLICIES

    policy = POLICIES.get(config.get("label_source", ""))
    return policy.on_target_by if policy is not None else "training image"


def metrics_json(db: sqlite_utils.Database, ranked: list[dict] | None = None) -> dict:
    """Everything an audit stored, as JSON; ``ranked``: ``exposure(db)`` if already read (its
    first 100 rows are the JSON's)."""
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
    from ..scorers import MEASURES
    from ..storage import get_kv

    audit["measure"] = MEASURES.get(audit.get("scorer") or "", "")
    from ..checkpoint import model_line

    audit["model"] = model_line(get_kv(db, "model", {}))
    top = ranked[:100] if ranked is not None else exposure(db, limit=100)
    n = get_kv(db, "extraction_n") or extraction_n(db)
    top = [dict(r, extraction=extraction(r, n)) for r in top]
    return {"audit": audit, "rows": rows, "topk": topk, "summary": summary, "classifiers": classifiers,
            "exposure": top, "extraction_n": n,
            "comparison": get_kv(db, "comparison", {}),
            "warnings": get_kv(db, "warnings", []), "guide_check": get_kv(db, "guide_check"),
            "best_histogram": get_kv(db, "best_histogram"),
            "unseen": get_kv(db, "unseen"),
            "calibration": get_kv(db, "calibration") or {"calibrated": False},
            "heldout": _heldout_summary(get_kv(db, "heldout")),
            "on_target_chance": (1 / get_kv(db, "k")) if get_kv(db, "k") else None,
            "on_target_by": _on_target_by(info.get("config") or {}, get_kv(db, "k"))}

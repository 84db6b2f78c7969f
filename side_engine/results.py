"""Metrics from what is stored: per (method, λ) tables, top-k, exposure, and the JSON export.

The reviewer's side of the stored pairs (gallery rows, decisions) is ``side_engine.review``."""

from __future__ import annotations

import json
import math

import numpy as np
import sqlite_utils

from . import measures, statistics, unseen
from .config import AuditConfig
from .scorers import Band, bands_for, bands_setting


def _load(db: sqlite_utils.Database, method: str, lam: float) -> dict[str, np.ndarray]:
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


def band_masks(bands: list[Band], higher: bool) -> list[tuple[str, bool, object]]:
    """(band, cumulative, mask function) for every band, exact and "at least"."""
    out = []
    for band in bands:
        out.append((band.name, False, lambda s, b=band: measures.in_band(s, b, bands, higher)))
        out.append((band.name, True, lambda s, b=band: measures.at_least(s, b, higher)))
    return out


def arm(data: dict, mask, keep: np.ndarray | None, nearest_only: bool) -> statistics.Arm:
    """The (method, λ) restricted to sample indices ``keep`` (all when None), on positions 0..n-1."""
    index = data["index"] if keep is None else keep  # sorted: stored order, or np.intersect1d's
    sel = np.isin(data["index"], index)
    hit = mask(data["best"][sel])
    if nearest_only:
        pair_index, pair_train = data["index"][sel][hit], data["nearest"][sel][hit]
    else:
        ok = mask(data["pair_score"]) & np.isin(data["pair_index"], index)
        pair_index, pair_train = data["pair_index"][ok], data["pair_train"][ok]
    pos = np.searchsorted(index, pair_index).astype(np.int64)
    return statistics.Arm(np.asarray(hit, bool), pos, np.asarray(pair_train, np.int64))


def compute_and_store(db: sqlite_utils.Database, cfg: AuditConfig, higher_is_closer: bool,
                      bands: list[Band], scorer: str) -> None:
    metric_rows, topk_rows, summary_rows = compute_tables(db, cfg, higher_is_closer, bands, scorer)
    verdict = compare(db, cfg, higher_is_closer, bands)
    from .estimate import per_sample_seconds

    estimates = unseen_estimates(db, cfg, higher_is_closer, bands, per_sample_seconds(db, cfg))
    ranked = _exposure_rows(db)
    with db.atomic():
        for table in ("metrics", "topk", "summary", "exposure"):
            db[table].delete_where()
        # the per-strategy counts are columns of their own (alter): which exist depends on the methods
        db["exposure"].insert_all(({"rank": i, **r} for i, r in enumerate(ranked)), alter=True)
        db["metrics"].insert_all(metric_rows)
        # alter: workspaces made before the intervals gain their columns
        db["topk"].insert_all(topk_rows, alter=True)
        db["summary"].insert_all(summary_rows, alter=True)
        from .storage import set_kv

        set_kv(db, "comparison", verdict)
        set_kv(db, "best_histogram", best_histogram(db))  # the app reads 40 counts, not 2.5 M scores
        set_kv(db, "unseen", estimates)
        set_kv(db, "extraction_n", extraction_n(db))
        set_kv(db, "calibration", calibration(db, metric_rows, verdict))
        set_kv(db, "exposure_stored", True)  # audits from before m005 have an empty table, not a ranking


def compute_tables(db: sqlite_utils.Database, cfg: AuditConfig, higher_is_closer: bool,
                   bands: list[Band], scorer: str) -> tuple[list[dict], list[dict], list[dict]]:
    """The metric tables from the samples stored so far (also mid-run, read-only): every rate
    with its 95 % interval (AMS exact binomial, UMS the jackknife over generated images:
    ``statistics``)."""
    metric_rows, topk_rows, summary_rows = [], [], []
    nearest_only = cfg.ums == "nearest-only"
    classes = _classes(db)
    mid = next((b for b in bands if b.name == "mid"), None)
    for method, lam in cfg.grid():
        d = _load(db, method, lam)
        n = len(d["best"])
        by_band: dict[str, dict] = {}
        masks = band_masks(bands, higher_is_closer)
        rates = statistics.rate_intervals_many([arm(d, mask, None, nearest_only) for _, _, mask in masks])
        for (name, cumulative, _), r in zip(masks, rates):
            suffix = "_cumulative" if cumulative else ""
            row = by_band.setdefault(name, {"method": method, "lam": lam, "n_generated": n, "scorer": scorer,
                                            "band": name})
            for key, v in r.items():
                if key == "ums_method":  # how the interval was made: said in the method text
                    continue
                base, _, end = key.partition("_")
                row[f"{base}{suffix}" + (f"_{end}" if end else "")] = _nan(v) if n else (0.0 if not end else None)
        metric_rows += by_band.values()
        intervals = statistics.topk_mean_intervals(d["best"], higher_is_closer)
        for frac, mean in measures.topk_mean(d["best"], higher_is_closer).items():
            lo, hi = intervals[frac]
            topk_rows.append({"method": method, "lam": lam, "fraction": frac, "mean_best": _nan(mean),
                              "mean_best_lo": _nan(lo), "mean_best_hi": _nan(hi)})
        steered = d["steered"][np.isfinite(d["steered"])]
        ratio = d["guidance_ratio"][np.isfinite(d["guidance_ratio"])]
        k_steer = int(steered.sum())
        s_lo, s_hi = statistics.clopper_pearson(k_steer, len(steered))
        gu = d["gu"][np.isfinite(d["gu"])]
        g_lo, g_hi = statistics.clopper_pearson(int((gu < measures.GU_THRESHOLD).sum()), len(gu))
        guided = len(steered) and method != "random"
        # the guidance ratio's mean over generated images, with a normal interval (n in the hundreds)
        half = 1.96 * ratio.std(ddof=1) / math.sqrt(len(ratio)) if len(ratio) > 1 else None
        summary_rows.append({
            "method": method, "lam": lam, "n_generated": n,
            "p95_best": _nan(measures.p95_closeness(d["best"], higher_is_closer)),
            "gu_fraction": _nan(measures.gu_fraction(d["gu"])), "gu_fraction_lo": _nan(g_lo),
            "gu_fraction_hi": _nan(g_hi),
            "mean_best": _nan(float(d["best"].mean()) if n else math.nan),
            "target_accuracy": _nan(float(steered.mean()) if guided else math.nan),
            "target_accuracy_lo": _nan(s_lo) if guided else None,
            "target_accuracy_hi": _nan(s_hi) if guided else None,
            **_on_target(d, cfg, classes, mid, higher_is_closer),
            "guidance_ratio": _nan(float(ratio.mean())) if len(ratio) else None,
            "guidance_ratio_lo": _nan(float(ratio.mean() - half)) if half is not None else None,
            "guidance_ratio_hi": _nan(float(ratio.mean() + half)) if half is not None else None,
        })
    return metric_rows, topk_rows, summary_rows


def _classes(db: sqlite_utils.Database) -> tuple[np.ndarray | None, int] | None:
    """The surrogate class of every training image and K; None before labels. Under
    synthetic-clusters no training image has a class: (None, K), and a sample is on target when it
    falls in its target's cluster (stored per sample; an audit sampled before clusters were
    stored has none, and no on-target rate)."""
    from .storage import get_kv

    k = get_kv(db, "k")
    sur = np.array([r[0] if r[0] is not None else -1 for r in
                    db.execute("select surrogate from train_images order by idx").fetchall()], dtype=np.int64)
    if not k or not len(sur):
        return None
    if (sur < 0).all():
        return None, int(k)
    return sur, int(k)


def _on_target(d: dict, cfg: AuditConfig, classes, mid: Band | None, higher_is_closer: bool) -> dict:
    """The independent measure of steering: the scorer's nearest training image carries the
    sample's target class (any distance, and at ≥mid), exact binomial intervals. Random is scored
    against the same targets (its samples are paired with the guided ones): its rate is chance."""
    from .guide_check import on_target
    from .sampler import target_classes

    keys = ("on_target", "on_target_mid")
    # synthetic-clusters (no class on any training image): the stored cluster decides, and an
    # audit sampled before clusters were stored has no rate
    if classes is None or not len(d["index"]) or (classes[0] is None and not np.isfinite(d["cluster"]).all()):
        return {f"{k}{e}": None for k in keys for e in ("", "_lo", "_hi")}
    sur, k = classes
    cls = target_classes(cfg.seed, cfg.n_per_lambda, k)[d["index"]]
    hit = on_target(d["nearest"], sur, cls, d["cluster"] if sur is None else None)
    close = measures.at_least(d["best"], mid, higher_is_closer) if mid is not None else np.zeros(len(hit), bool)
    out = {}
    for key, h in zip(keys, (hit, hit & close)):
        lo, hi = statistics.clopper_pearson(int(h.sum()), len(h))
        out.update({key: float(h.mean()), f"{key}_lo": _nan(lo), f"{key}_hi": _nan(hi)})
    return out


COMPARED = ("side", "ti")
ALPHA = statistics.ALPHA
HOLM_FAMILY = "the λ grid of one endpoint (AMS or UMS) in one band"
CONDITIONAL_ON = ("this audit's classifiers: the intervals cover what more samples from the same guided sampler "
                  "would give, not what another training of its classifier would")


def compare(db: sqlite_utils.Database, cfg: AuditConfig, higher_is_closer: bool, bands: list[Band],
            coverage: bool = True) -> dict:
    """Each guided method against Random, paired on shared sample indices: per λ (AMS McNemar
    exact, UMS the paired jackknife of the log ratio; Holm over the λ grid of one endpoint and
    band), over the declared λ range (one pre-declared test: the Table-1 row), and the coverage
    of training images at equal budget. Each verdict is its own interval's: "more" exactly when
    the ratio's interval lies above 1 (per λ: and Holm's adjusted p below alpha)."""
    out: dict = {"alpha": ALPHA, "table_lambdas": cfg.table_grid(), "declared": bool(cfg.table_lambdas),
                 "holm_family": HOLM_FAMILY, "conditional_on": CONDITIONAL_ON,
                 "per_lambda": [], "range": [], "coverage": []}
    if "random" not in cfg.methods:
        return out
    nearest_only = cfg.ums == "nearest-only"
    rnd = _load(db, "random", 0.0)
    masks = band_masks(bands, higher_is_closer)
    for method in COMPARED:
        if method not in cfg.methods:
            continue
        lams = [lam for m, lam in cfg.grid() if m == method]
        data = {lam: _load(db, method, lam) for lam in lams}
        per_lam: dict[float, list[dict]] = {}
        for lam in lams:
            keep = np.intersect1d(rnd["index"], data[lam]["index"])
            if len(keep):
                per_lam[lam] = statistics.paired_comparisons(
                    [([arm(data[lam], mask, keep, nearest_only)], arm(rnd, mask, keep, nearest_only))
                     for _, _, mask in masks])
        in_range = [lam for lam in lams if lam in cfg.table_grid()]
        keep = rnd["index"]
        for lam in in_range:
            keep = np.intersect1d(keep, data[lam]["index"])
        ranged = statistics.paired_comparisons(
            [([arm(data[lam], mask, keep, nearest_only) for lam in in_range], arm(rnd, mask, keep, nearest_only))
             for _, _, mask in masks]) if in_range and len(keep) else []
        for i, (name, cumulative, mask) in enumerate(masks):
            rows = [{"method": method, "lambda": lam, "band": name, "cumulative": cumulative, **c[i]}
                    for lam, c in per_lam.items()]
            for key in ("ams", "ums"):
                adj = statistics.holm([r[f"{key}_p"] for r in rows])
                for r, p in zip(rows, adj):
                    r[f"{key}_p_holm"] = p
                    r[f"{key}_verdict"] = _verdict(r[f"{key}_diff"], p)
            out["per_lambda"] += rows
            if ranged:
                c = ranged[i]
                for key in ("ams", "ums"):
                    c[f"{key}_verdict"] = _verdict(c[f"{key}_diff"], c[f"{key}_p"])
                out["range"].append({"method": method, "lambdas": in_range, "band": name,
                                     "cumulative": cumulative, **c})
            if coverage and cumulative and in_range and len(keep):
                out["coverage"].append({"method": method, "band": name, "lambdas": in_range,
                                        "points": _coverage(rnd, [data[lam] for lam in in_range], mask, keep,
                                                            nearest_only)})
    return out


def _coverage(rnd: dict, pooled: list[dict], mask, keep: np.ndarray, nearest_only: bool) -> list[dict]:
    """Distinct training images reached at equal budgets; the method's pool holds its samples at
    every λ of the range (positions offset per λ)."""
    r = arm(rnd, mask, keep, nearest_only)
    m = unseen.pooled([arm(d, mask, keep, nearest_only) for d in pooled])
    return statistics.coverage_curve(r, m, statistics.budgets_for(r.n))


def unseen_estimates(db: sqlite_utils.Database, cfg: AuditConfig, higher_is_closer: bool,
                     bands: list[Band], per_sample: dict | None = None) -> dict:
    """Per strategy (Random; each guided method over the declared λ range; half Random and half
    the method) and band (exact and at least): what was found, what an unlimited budget would
    find and the expected count as the budget grows (``side_engine.unseen``); and the budget
    each strategy needs for 90 % of the images the whole audit's samples say are extractable.
    ``per_sample``: seconds per generated image by method, for the planner's hours."""
    nearest_only = cfg.ums == "nearest-only"
    out: dict = {"estimator": unseen.DEFAULT, "cap": unseen.EXTRAPOLATION_CAP, "share": unseen.PLAN_SHARE,
                 "lambdas": cfg.table_grid(), "strategies": [], "planner": []}
    n_train = db["train_images"].count
    loaded = {(m, lam): _load(db, m, lam) for m, lam in cfg.grid()
              if m == "random" or lam in cfg.table_grid()}
    for name, cumulative, mask in band_masks(bands, higher_is_closer):
        arms = {key: arm(d, mask, None, nearest_only) for key, d in loaded.items() if len(d["index"])}
        strategies: dict[str, statistics.Arm] = {}
        rnd = arms.get(("random", 0.0))
        if rnd is not None:
            strategies["random"] = rnd
        for method in COMPARED:
            guided = [a for (m, _), a in sorted(arms.items()) if m == method]
            if not guided:
                continue
            strategies[method] = unseen.pooled(guided)
            if rnd is not None:  # equal halves: Random's first h, the method's first h over its λ
                h = min(rnd.n, strategies[method].n)
                per = max(1, h // len(guided))
                strategies[f"{method}+random"] = unseen.pooled([unseen.head(rnd, h)]
                                                               + [unseen.head(a, per) for a in guided])
        if not strategies:
            continue
        rows = {}
        for key, a in strategies.items():
            est = unseen.estimate(unseen.incidence(a), ceiling=n_train)
            rows[key] = est
            out["strategies"].append({"strategy": key, "band": name, "cumulative": cumulative, **est})
        if cumulative and name == "mid":
            everything = unseen.incidence(unseen.pooled(list(arms.values())))
            target = min(unseen.estimate_of(everything), float(n_train))
            for key, a in strategies.items() if target > 0 else ():  # nothing found by anyone: no plan
                inc = unseen.incidence(a)
                need = unseen.budget_for(inc, unseen.PLAN_SHARE, target)
                seconds = _plan_seconds(key, need, per_sample)
                out["planner"].append({"strategy": key, "band": name, "cumulative": True, "target": target,
                                       "own_estimate": rows[key][unseen.DEFAULT], **need, "seconds": seconds})
    return out


def calibration(db: sqlite_utils.Database, metric_rows: list[dict], comparison: dict) -> dict:
    """Each band's audit rates beside its false-alarm rate (the share of held-out non-members
    that land in it, ``stages.heldout``): per band, exact and at least as close, Random's AMS
    and each guided method's over the declared range, their difference from the false-alarm
    rate with Newcombe's 95 % interval, and whether the band's rate is above it. Without
    held-out images: ``{"calibrated": False}`` — the bands are uncalibrated."""
    from .storage import get_kv

    held = get_kv(db, "heldout")
    if not held:
        return {"calibrated": False}
    out = {"calibrated": True, "n": held["n"], "folder": held.get("folder"), "bands": []}
    n_by = {(r["method"], r["lam"]): r["n_generated"] for r in metric_rows}
    for fa in held["bands"]:
        row = {**fa, "false_alarm": fa["rate"], "false_alarm_lo": fa["lo"], "false_alarm_hi": fa["hi"], "against": []}
        for key in ("rate", "lo", "hi", "count"):
            row.pop(key)
        suffix = "_cumulative" if fa["cumulative"] else ""
        rnd = next((r for r in metric_rows if r["method"] == "random" and r["band"] == fa["band"]), None)
        rates = []
        if rnd is not None and rnd.get(f"ams{suffix}") is not None:
            rates.append(("random", [0.0], rnd[f"ams{suffix}"], n_by[("random", 0.0)]))
        for c in comparison.get("range", []):
            if c["band"] == fa["band"] and c["cumulative"] == fa["cumulative"] and c.get("ams_method") is not None:
                rates.append((c["method"], c["lambdas"], c["ams_method"], c["n"] * len(c["lambdas"])))
        for method, lambdas, rate, n in rates:
            k = round(rate * n)
            d, lo, hi = statistics.newcombe_difference(k, n, fa["count"], held["n"])
            row["against"].append({"method": method, "lambdas": lambdas, "ams": rate, "n": n, "difference": d,
                                   "difference_lo": lo, "difference_hi": hi, "above": bool(lo > 0)})
        out["bands"].append(row)
    return out


def _plan_seconds(strategy: str, need: dict, per_sample: dict | None) -> float | None:
    if not per_sample or need.get("budget") is None:
        return None
    if strategy == "random":
        return need["budget"] * per_sample.get("random", 0.0)
    method = strategy.split("+")[0]
    if strategy.endswith("+random"):
        return need["budget"] / 2 * (per_sample.get("random", 0.0) + per_sample.get(method, 0.0))
    return need["budget"] * per_sample.get(method, 0.0)


def _verdict(diff: float, p_adjusted: float) -> str:
    if p_adjusted is None or math.isnan(p_adjusted) or p_adjusted >= ALPHA:
        return "no difference shown"
    return "more than Random" if diff > 0 else "fewer than Random"


def live_metrics(db: sqlite_utils.Database, ranked: list[dict] | None = None) -> dict:
    """metrics_json, with the tables computed from what is stored now (the run may be going on);
    ``ranked``: the training images at risk, if the caller has grouped them already."""
    info = audit_info(db)
    if not info:
        return {"audit": {}, "rows": [], "topk": [], "summary": [], "classifiers": [], "exposure": []}
    cfg = AuditConfig.from_stored(info["config"])
    bands, higher = stored_bands(db)
    m, t, s = compute_tables(db, cfg, higher, bands, info.get("scorer") or "pixel")
    out = metrics_json(db, ranked)
    out["comparison"] = compare(db, cfg, higher, bands, coverage=False)  # coverage: at the end of the run
    out["best_histogram"] = best_histogram(db)
    started = {(r["method"], r["lam"]) for r in s if r["n_generated"]}  # (method, λ) with samples so far
    out["rows"] = [dict(r, **{"lambda": r["lam"]}) for r in m if (r["method"], r["lam"]) in started]
    out["summary"] = [dict(r, **{"lambda": r["lam"]}) for r in s if (r["method"], r["lam"]) in started]
    out["topk"] = [dict(r, **{"lambda": r["lam"]}) for r in t if (r["method"], r["lam"]) in started]
    return out


def _nan(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def chosen_by_run(ws, db: sqlite_utils.Database, cfg: AuditConfig) -> dict[str, int | str]:
    """What the run chose for the automatic settings left at 0 and used (K, n_syn, the classifier
    width; what ``guide_precision`` auto or same resolved to), from what it stored: the width is
    the stored classifier's own, which today's rule no longer gives once an automatic default
    changes; before any classifier is stored, the rule.
    The report and the app both show this, so "classifier_width = 0" never stands alone."""
    from .storage import get_kv

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


EXPOSURE_COLUMNS = ("train_idx", "high", "mid", "low", "total", "best_score", "best_sample")


def exposure(db: sqlite_utils.Database, method: str | None = None, limit: int | None = None) -> list[dict]:
    """Training images ranked by in-band matches (closest band first), with their best pair
    (``best_sample`` and its stored image ``best_png``, workspace-relative). Once the metrics
    stage has run, its stored ranking (all methods); before, or per method, from the pairs."""
    from .storage import get_kv, stage_rows

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
    from .scorers import MEASURES
    from .storage import get_kv

    audit["measure"] = MEASURES.get(audit.get("scorer") or "", "")
    from .checkpoint import model_line

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


# what "on target" means, by ``on_target_by``: one wording for the app, the report and the CLI
ON_TARGET = {
    "training image": "On target: the scorer's nearest training image carries the sample's target class.",
    "cluster": "On target: the scorer puts the image in its target's cluster (labels from clusters of the "
               "model's own samples: no training image carries a class).",
    None: "On target: the scorer's verdict on whether the image reached its target class.",
}


def on_target_meaning(by: str | None) -> str:
    return ON_TARGET.get(by, ON_TARGET[None])


def _on_target_by(config: dict, k: int | None) -> str | None:
    """What "on target" means in this audit: the nearest training image carries the target class
    ("training image"), or, under synthetic-clusters, the image falls in the target's cluster
    ("cluster"); None before labels."""
    if not k:
        return None
    from .label_sources import POLICIES

    policy = POLICIES.get(config.get("label_source", ""))
    return policy.on_target_by if policy is not None else "training image"


def _heldout_summary(record: dict | None) -> dict | None:
    """The held-out record without its per-image list (in the CSV export)."""
    return None if not record else {k: v for k, v in record.items() if k != "images"}


def best_scores(db: sqlite_utils.Database, method: str | None = None) -> np.ndarray:
    q, args = "select best from samples", []
    if method:
        q += " where method = ?"
        args.append(method)
    return np.array([r[0] for r in db.execute(q, args).fetchall()], dtype=np.float64)


HIST_BINS = 40


def best_histogram(db: sqlite_utils.Database, bins: int = HIST_BINS) -> dict:
    """Counts of every generated image's best-match score in ``bins`` equal bins (with edges)."""
    best = best_scores(db)
    best = best[np.isfinite(best)]
    if not len(best):
        return {"counts": [], "edges": []}
    counts, edges = np.histogram(best, bins=bins)
    return {"counts": counts.tolist(), "edges": edges.tolist()}

"""The metric tables computed from what is stored: per (method, λ) rates with their intervals, top-k,
the paired comparison with Random, the unlimited-budget estimates and the held-out calibration;
stored by the metrics stage (``compute_and_store``) and recomputed live while a run is going."""

from __future__ import annotations

import math

import numpy as np
import sqlite_utils

from .. import measures, statistics, unseen
from ..config import AuditConfig
from ..scorers import Band
from .stored import (
    _classes,
    _exposure_rows,
    arm_data,
    audit_info,
    best_histogram,
    extraction_n,
    metrics_json,
    stored_bands,
)
from .words import verdict


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
    from ..estimate import per_sample_seconds

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
        from ..storage import set_kv

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
        d = arm_data(db, method, lam)
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


def _on_target(d: dict, cfg: AuditConfig, classes, mid: Band | None, higher_is_closer: bool) -> dict:
    """The independent measure of steering: the scorer's nearest training image carries the
    sample's target class (any distance, and at ≥mid), exact binomial intervals. Random is scored
    against the same targets (its samples are paired with the guided ones): its rate is chance."""
    from ..guide_check import on_target
    from ..sampler import target_classes

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
    rnd = arm_data(db, "random", 0.0)
    masks = band_masks(bands, higher_is_closer)
    for method in COMPARED:
        if method not in cfg.methods:
            continue
        lams = [lam for m, lam in cfg.grid() if m == method]
        data = {lam: arm_data(db, method, lam) for lam in lams}
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
                    r[f"{key}_verdict"] = verdict(r[f"{key}_diff"], p)
            out["per_lambda"] += rows
            if ranged:
                c = ranged[i]
                for key in ("ams", "ums"):
                    c[f"{key}_verdict"] = verdict(c[f"{key}_diff"], c[f"{key}_p"])
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
    loaded = {(m, lam): arm_data(db, m, lam) for m, lam in cfg.grid()
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
    from ..storage import get_kv

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

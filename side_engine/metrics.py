"""AMS, UMS and the paper's other memorisation metrics as functions of arrays.

Scores are in the scorer's native units: for ``higher_is_closer`` scorers
(SSCD cosine) band ``[lo, hi)`` holds ``lo <= s < hi``; for distance-like
scorers (pixel ratio) the same. The band nearest to "identical" is open
towards it (cosine 1.0000001 is still "high"; ratio 0 is "high").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .scorers import Band

TOPK_FRACTIONS = (0.001, 0.005, 0.01, 0.05, 0.10)
GU_THRESHOLD = 1 / 3


def in_band(scores: np.ndarray, band: Band, bands: Sequence[Band], higher_is_closer: bool) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    closest = max(bands, key=lambda b: b.hi) if higher_is_closer else min(bands, key=lambda b: b.lo)
    if band == closest:
        return s >= band.lo if higher_is_closer else s < band.hi
    return (s >= band.lo) & (s < band.hi)


def at_least(scores: np.ndarray, band: Band, higher_is_closer: bool) -> np.ndarray:
    """Cumulative band: as close as ``band`` or closer."""
    s = np.asarray(scores, dtype=np.float64)
    return s >= band.lo if higher_is_closer else s < band.hi


def ams(best: np.ndarray, mask_fn) -> float:
    """Average memorisation score: fraction of generated images whose best match is in the band."""
    best = np.asarray(best)
    return float(mask_fn(best).mean()) if len(best) else 0.0


def ums(pair_train: np.ndarray, pair_scores: np.ndarray, mask_fn, n_generated: int) -> float:
    """Unique memorisation score: distinct training images with any in-band pair, over N_G."""
    if n_generated == 0:
        return 0.0
    pair_train = np.asarray(pair_train)
    hit = mask_fn(np.asarray(pair_scores)) if len(pair_train) else np.zeros(0, bool)
    return len(np.unique(pair_train[hit])) / n_generated


def ums_nearest_only(best: np.ndarray, nearest: np.ndarray, mask_fn, n_generated: int) -> float:
    """The paper's first reading: only each generated image's nearest training image counts."""
    if n_generated == 0:
        return 0.0
    hit = mask_fn(np.asarray(best))
    return len(np.unique(np.asarray(nearest)[hit])) / n_generated


def topk_mean(best: np.ndarray, higher_is_closer: bool, fractions: Sequence[float] = TOPK_FRACTIONS) -> dict:
    """Mean best score of the closest ``f`` of generated images (at least one image)."""
    best = np.asarray(best, dtype=np.float64)
    if not len(best):
        return {f: math.nan for f in fractions}
    order = np.sort(best)[::-1] if higher_is_closer else np.sort(best)
    return {f: float(order[: max(1, math.ceil(f * len(best)))].mean()) for f in fractions}


def topk_mean_intervals(best: np.ndarray, higher_is_closer: bool, fractions: Sequence[float] = TOPK_FRACTIONS,
                        resamples: int = 1000, seed: int = 0) -> dict:
    """95 % percentile-bootstrap intervals of ``topk_mean``: the generated images are resampled
    with replacement (fixed seed, so a report is reproducible) and the top-k mean recomputed."""
    best = np.asarray(best, dtype=np.float64)
    n = len(best)
    if n == 0:
        return {f: (math.nan, math.nan) for f in fractions}
    rng = np.random.default_rng(seed)
    out: dict = {}
    chunk = max(1, min(resamples, 2_000_000 // n))  # bounded memory for large N_G
    means = {f: [] for f in fractions}
    for start in range(0, resamples, chunk):
        draws = np.sort(best[rng.integers(0, n, size=(min(chunk, resamples - start), n))], axis=1)
        if higher_is_closer:
            draws = draws[:, ::-1]
        for f in fractions:
            k = max(1, math.ceil(f * n))
            means[f].append(draws[:, :k].mean(axis=1))
    for f in fractions:
        m = np.concatenate(means[f])
        out[f] = (float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5)))
    return out


def p95_closeness(best: np.ndarray, higher_is_closer: bool) -> float:
    """95th percentile towards "closer": the 95th of cosines, the 5th of distance ratios."""
    best = np.asarray(best, dtype=np.float64)
    if not len(best):
        return math.nan
    return float(np.percentile(best, 95 if higher_is_closer else 5))


def gu_fraction(gu_ratio: np.ndarray, threshold: float = GU_THRESHOLD) -> float:
    """Gu et al.: fraction with nearest / second-nearest l2 < 1/3."""
    r = np.asarray(gu_ratio, dtype=np.float64)
    r = r[np.isfinite(r)]
    return float((r < threshold).mean()) if len(r) else math.nan


def band_table(
    best: np.ndarray,
    nearest: np.ndarray,
    pair_train: np.ndarray,
    pair_scores: np.ndarray,
    bands: Sequence[Band],
    higher_is_closer: bool,
    nearest_only: bool = False,
) -> list[dict]:
    """AMS/UMS per band, exact and cumulative, for one (method, λ)."""
    n = len(best)
    rows = []
    for band in bands:
        exact = lambda s, b=band: in_band(s, b, bands, higher_is_closer)  # noqa: E731
        cum = lambda s, b=band: at_least(s, b, higher_is_closer)  # noqa: E731
        if nearest_only:
            u, uc = ums_nearest_only(best, nearest, exact, n), ums_nearest_only(best, nearest, cum, n)
        else:
            u, uc = ums(pair_train, pair_scores, exact, n), ums(pair_train, pair_scores, cum, n)
        rows.append({"band": band.name, "ams": ams(best, exact), "ums": u,
                     "ams_cumulative": ams(best, cum), "ums_cumulative": uc})
    return rows


def exposure(
    pair_sample: np.ndarray,
    pair_train: np.ndarray,
    pair_scores: np.ndarray,
    bands: Sequence[Band],
    higher_is_closer: bool,
) -> list[dict]:
    """Per training image: matches per band and its best match — the reviewer's first list."""
    pair_sample, pair_train = np.asarray(pair_sample), np.asarray(pair_train)
    pair_scores = np.asarray(pair_scores, dtype=np.float64)
    out = []
    for j in np.unique(pair_train):
        sel = pair_train == j
        s = pair_scores[sel]
        counts = {b.name: int(in_band(s, b, bands, higher_is_closer).sum()) for b in bands}
        k = int(np.argmax(s) if higher_is_closer else np.argmin(s))
        out.append({"train_idx": int(j), **counts, "total": int(sel.sum()),
                    "best_score": float(s[k]), "best_sample": int(pair_sample[sel][k])})
    names = [b.name for b in bands][::-1]  # closest band first
    out.sort(key=lambda r: tuple(-r[n] for n in names) + (-r["best_score"] if higher_is_closer
                                                          else r["best_score"],))
    return out

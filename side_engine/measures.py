"""Memorisation measures as functions of arrays: band membership, top-k means, the 95th
percentile, Gu's fraction and each training image's exposure. AMS and UMS with their
intervals are ``statistics.Arm`` (they are computed once, from the band masks here).

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


def band_bounds(band: Band, bands: Sequence[Band], higher_is_closer: bool) -> tuple[float | None, float | None]:
    """[lo, hi) of a band's scores; the closest band is open on its closer side (None)."""
    closest = max(bands, key=lambda b: b.hi) if higher_is_closer else min(bands, key=lambda b: b.lo)
    if band == closest:
        return (band.lo, None) if higher_is_closer else (None, band.hi)
    return band.lo, band.hi


def in_band(scores: np.ndarray, band: Band, bands: Sequence[Band], higher_is_closer: bool) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    lo, hi = band_bounds(band, bands, higher_is_closer)
    inside = np.ones(s.shape, bool)
    if lo is not None:
        inside &= s >= lo
    if hi is not None:
        inside &= s < hi
    return inside


def at_least(scores: np.ndarray, band: Band, higher_is_closer: bool) -> np.ndarray:
    """Cumulative band: as close as ``band`` or closer."""
    s = np.asarray(scores, dtype=np.float64)
    return s >= band.lo if higher_is_closer else s < band.hi


def topk_mean(best: np.ndarray, higher_is_closer: bool, fractions: Sequence[float] = TOPK_FRACTIONS) -> dict:
    """Mean best score of the closest ``f`` of generated images (at least one image)."""
    best = np.asarray(best, dtype=np.float64)
    if not len(best):
        return {f: math.nan for f in fractions}
    order = np.sort(best)[::-1] if higher_is_closer else np.sort(best)
    return {f: float(order[: max(1, math.ceil(f * len(best)))].mean()) for f in fractions}


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


def exposure(
    pair_sample: np.ndarray,
    pair_train: np.ndarray,
    pair_scores: np.ndarray,
    bands: Sequence[Band],
    higher_is_closer: bool,
) -> list[dict]:
    """Per training image: matches per band and its best match — the reviewer's first list.
    Grouped by one sort (O(P log P) in the pairs): at the paper's scale there are tens of
    thousands of training images with matches and millions of pairs."""
    pair_sample, pair_train = np.asarray(pair_sample), np.asarray(pair_train, dtype=np.int64)
    pair_scores = np.asarray(pair_scores, dtype=np.float64)
    if not len(pair_train):
        return []
    key = -pair_scores if higher_is_closer else pair_scores
    order = np.lexsort((key, pair_train))  # by training image, closest pair first (stable: first stored)
    train_sorted = pair_train[order]
    starts = np.flatnonzero(np.r_[True, train_sorted[1:] != train_sorted[:-1]])
    firsts = order[starts]  # each training image's closest pair
    ids = train_sorted[starts]
    group = np.repeat(np.arange(len(ids)), np.diff(np.r_[starts, len(order)]))
    counts = {b.name: np.bincount(group, weights=in_band(pair_scores[order], b, bands, higher_is_closer),
                                  minlength=len(ids)).astype(int) for b in bands}
    totals = np.diff(np.r_[starts, len(order)])
    out = [{"train_idx": int(j), **{name: int(c[g]) for name, c in counts.items()}, "total": int(totals[g]),
            "best_score": float(pair_scores[firsts[g]]), "best_sample": int(pair_sample[firsts[g]])}
           for g, j in enumerate(ids)]
    names = [b.name for b in bands][::-1]  # closest band first
    out.sort(key=lambda r: tuple(-r[n] for n in names) + (-r["best_score"] if higher_is_closer
                                                          else r["best_score"],))
    return out

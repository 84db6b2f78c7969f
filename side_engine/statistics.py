"""Uncertainty of the audit's rates, and paired comparisons of a method with Random.

Pure functions of arrays. Generated images are the sampling unit: AMS is a
binomial proportion (Wilson interval); UMS counts distinct training images
over N_G, which no closed form covers, so it is bootstrapped over generated
images (percentile interval shifted onto the estimate, see ``centred``). Methods share
per-sample seeds (sample ``i`` starts from the same
noise for every method and λ), so a method and Random are compared *paired*
on the sample indices both hold: McNemar's exact test for AMS, a paired
bootstrap for UMS and for every ratio, Holm-corrected over the λ grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .measures import TOPK_FRACTIONS

Z95 = 1.959963984540054
BOOTSTRAP = 1000  # resamples (docs/method.md: at least 1 000)
SEED = 20240607  # fixed: an audit's intervals are reproducible


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (NaN, NaN for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """p1 − p2 of two independent proportions with Newcombe's hybrid score 95 % interval (his
    method 10: from each proportion's Wilson interval), which keeps its coverage at counts of 0."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan, math.nan
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a binomial proportion k/n: the p at which k or more
    (k or fewer) successes have probability alpha/2, found by bisection on the binomial tail.
    k = 0 gives [0, 1 − (alpha/2)^(1/n)] — "at most a few percent", never a certain zero."""
    if n <= 0:
        return math.nan, math.nan
    log_comb = _log_comb(n, n)

    def cdf(x: int, p: float) -> float:
        if p <= 0:
            return 1.0
        if p >= 1:
            return 1.0 if x >= n else 0.0
        return _binom_cdf(log_comb, x, n, p)

    def solve(f, target: float) -> float:  # f decreasing in p on [0, 1]
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > target else (lo, mid)
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(lambda p: cdf(k - 1, p), 1 - alpha / 2)  # P(X >= k) = alpha/2
    upper = 1.0 if k >= n else solve(lambda p: cdf(k, p), alpha / 2)  # P(X <= k) = alpha/2
    return lower, upper


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: of the b + c discordant pairs, is a split as
    uneven as (b, c) likely under Binomial(b + c, 1/2)?"""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    if n <= 1000:  # exact in integers
        return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    # thousands of discordant pairs (the paper's 50 000 samples a λ): 2**n overflows a float
    return min(1.0, 2 * _binom_cdf(_log_comb(n, k), k, n, 0.5))


def _log_comb(n: int, k: int) -> np.ndarray:
    """log C(n, i) for i = 0..k, accumulated term by term (no factorial overflows)."""
    i = np.arange(1, k + 1)
    return np.concatenate([[0.0], np.cumsum(np.log(n - i + 1) - np.log(i))])


def _binom_cdf(log_comb: np.ndarray, x: int, n: int, p: float) -> float:
    """P(X <= x) under Binomial(n, p), 0 < p < 1, summed in logs; ``log_comb`` covers 0..x."""
    i = np.arange(x + 1)
    terms = log_comb[:x + 1] + i * math.log(p) + (n - i) * math.log1p(-p)
    top = float(terms.max())
    return float(min(1.0, math.exp(top) * np.exp(terms - top).sum()))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def bootstrap_counts(n: int, resamples: int = BOOTSTRAP, seed: int = SEED, chunk: int = 250) -> Iterator[np.ndarray]:
    """(b, n) multiplicities of each generated image in ``resamples`` bootstrap draws, in chunks
    so memory stays bounded for large N_G. The same seed gives the same draws, which is what
    pairs two methods: both see the same resampled indices."""
    rng = np.random.default_rng(seed)
    left = resamples
    while left > 0:
        b = min(chunk, left)
        draws = rng.integers(0, n, size=(b, n))
        draws += (np.arange(b, dtype=draws.dtype) * n)[:, None]  # row r's draws counted in bins r*n..
        yield np.bincount(draws.ravel(), minlength=b * n).astype(np.int32).reshape(b, n)
        left -= b


@dataclass
class Arm:
    """One (method, λ) on aligned sample positions 0..n-1: which generated images hit the band
    (AMS) and which (position, training image) pairs lie in it (UMS)."""

    hit: np.ndarray  # (n,) bool
    pair_pos: np.ndarray  # (P,) int: position of the generated image of each in-band pair
    pair_train: np.ndarray  # (P,) int: its training image

    @property
    def n(self) -> int:
        return len(self.hit)

    def ams(self) -> float:
        return float(self.hit.mean()) if self.n else math.nan

    def ums(self) -> float:
        return len(np.unique(self.pair_train)) / self.n if self.n else math.nan

    def ums_resampled(self, counts: np.ndarray) -> np.ndarray:
        """(b,) UMS of each bootstrap draw: training images with an in-band pair whose generated
        image was drawn at least once, over n."""
        if not len(self.pair_train):
            return np.zeros(len(counts))
        order = np.argsort(self.pair_train, kind="stable")
        train_sorted = self.pair_train[order]
        starts = np.flatnonzero(np.r_[True, train_sorted[1:] != train_sorted[:-1]])
        drawn = (counts[:, self.pair_pos[order]] > 0).astype(np.uint8)
        reached = np.maximum.reduceat(drawn, starts, axis=1)
        return reached.sum(axis=1) / self.n

    def ams_resampled(self, counts: np.ndarray) -> np.ndarray:
        # the hit columns only (a few % of n): a product with the whole (b, n) matrix converted
        # it to float64 first, 100 MB a call at n = 50 000; the integer sums are exact either way
        return counts[:, np.flatnonzero(self.hit)].sum(axis=1, dtype=np.float64) / self.n


def centred(resampled: np.ndarray, observed: float) -> np.ndarray:
    """Bootstrap UMS draws shifted so that they centre on the observed UMS. Resampling with
    replacement repeats some generated images and drops others, so a draw reaches fewer distinct
    training images than the audit did (about 63 % of them when each was hit once): the raw
    percentile interval would sit below the estimate, often with the estimate as its upper end.
    The shift removes that bias and keeps the bootstrap's spread (bias-corrected percentile)."""
    r = np.asarray(resampled, dtype=np.float64)
    return np.clip(r - r.mean() + observed, 0.0, None) if len(r) else r


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return math.nan, math.nan
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(lo), float(hi)


def rate_intervals(arm: Arm, resamples: int = BOOTSTRAP, seed: int = SEED) -> dict:
    """AMS with its Wilson interval, UMS with its bootstrap interval (95 %)."""
    return rate_intervals_many([arm], resamples, seed)[0]


def rate_intervals_many(arms: Sequence[Arm], resamples: int = BOOTSTRAP, seed: int = SEED) -> list[dict]:
    """``rate_intervals`` of several arms on the same n generated images (the bands of one
    (method, λ)): one pass of bootstrap draws serves them all, each arm's numbers those it
    would get alone (the same seed draws the same resamples)."""
    if len({a.n for a in arms}) > 1:
        raise ValueError("arms of one bootstrap pass need the same number of generated images")
    n = arms[0].n if arms else 0
    ums_b: list[list[np.ndarray]] = [[] for _ in arms]
    if n:
        for counts in bootstrap_counts(n, resamples, seed):
            for out, a in zip(ums_b, arms):
                out.append(a.ums_resampled(counts))
    rows = []
    for a, draws in zip(arms, ums_b):
        lo, hi = wilson(int(a.hit.sum()), a.n)
        ulo, uhi = ums_interval(a, np.concatenate(draws) if draws else np.zeros(0))
        rows.append({"ams": a.ams(), "ams_lo": lo, "ams_hi": hi, "ums": a.ums(), "ums_lo": ulo, "ums_hi": uhi})
    return rows


def ums_interval(arm: Arm, draws: np.ndarray) -> tuple[float, float]:
    """UMS's 95 % interval from its bootstrap draws — or, where they cannot spread (no in-band
    pair at all, or every draw reaching the same images), the exact interval of its count of
    distinct training images out of n: a bootstrap of a sample with no hit is all zeros, and
    [0, 0] would claim a certain none where n samples can only say "at most a few percent"."""
    if not arm.n:
        return math.nan, math.nan
    if not len(draws) or float(np.ptp(draws)) == 0.0:
        return clopper_pearson(len(np.unique(arm.pair_train)), arm.n)
    return percentile_interval(centred(draws, arm.ums()))


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.where(a > 0, np.inf, np.nan))


def _two_sided_p(diffs: np.ndarray) -> float:
    """Percentile-bootstrap p-value of "no difference" (add-one, so never exactly 0)."""
    d = np.asarray(diffs)
    below, above = int((d <= 0).sum()), int((d >= 0).sum())
    return min(1.0, 2 * (min(below, above) + 1) / (len(d) + 1))


def paired_comparison(method: Sequence[Arm], random: Arm, resamples: int = BOOTSTRAP, seed: int = SEED) -> dict:
    """A method against Random on the same sample positions. ``method`` holds one arm per λ;
    with several, the method's rate is their mean (a declared λ range, never a maximum).

    AMS: McNemar's exact test on the discordant generated images (one λ only; for a range the
    paired bootstrap is used); UMS and both ratios: paired bootstrap (the same resampled
    indices for the method and Random)."""
    return paired_comparisons([(method, random)], resamples, seed)[0]


def paired_comparisons(pairs: Sequence[tuple[Sequence[Arm], Arm]], resamples: int = BOOTSTRAP,
                       seed: int = SEED) -> list[dict]:
    """``paired_comparison`` of several (method arms, Random arm) on the same n positions (the
    bands of one λ): one pass of bootstrap draws serves them all, with the numbers each gets alone."""
    if not pairs:
        return []
    n = pairs[0][1].n
    for method, random in pairs:
        if not method or random.n != n or any(a.n != n for a in method):
            raise ValueError("paired comparison needs arms on the same sample positions")
    draws: list[tuple[list, list, list, list]] = [([], [], [], []) for _ in pairs]
    for counts in bootstrap_counts(n, resamples, seed):
        for (a_m, a_r, u_m, u_r), (method, random) in zip(draws, pairs):
            a_m.append(np.mean([a.ams_resampled(counts) for a in method], axis=0))
            u_m.append(np.mean([a.ums_resampled(counts) for a in method], axis=0))
            a_r.append(random.ams_resampled(counts))
            u_r.append(random.ums_resampled(counts))
    return [_paired(method, random, *map(np.concatenate, d)) for (method, random), d in zip(pairs, draws)]


def _paired(method: Sequence[Arm], random: Arm, a_m: np.ndarray, a_r: np.ndarray, u_m: np.ndarray,
            u_r: np.ndarray) -> dict:
    n = random.n
    ams_m = float(np.mean([a.ams() for a in method]))
    ums_m = float(np.mean([a.ums() for a in method]))
    ams_r, ums_r = random.ams(), random.ums()
    u_m, u_r = centred(u_m, ums_m), centred(u_r, ums_r)
    out = {"n": n, "ams_method": ams_m, "ams_random": ams_r, "ums_method": ums_m, "ums_random": ums_r}
    if len(method) == 1:
        b = int((method[0].hit & ~random.hit).sum())
        c = int((random.hit & ~method[0].hit).sum())
        out.update(ams_discordant=[b, c], ams_p=mcnemar_exact(b, c), ams_test="McNemar exact")
    else:
        out.update(ams_p=_two_sided_p(a_m - a_r), ams_test="paired bootstrap")
    for key, m, r, mb, rb in (("ams", ams_m, ams_r, a_m, a_r), ("ums", ums_m, ums_r, u_m, u_r)):
        out[f"{key}_method_lo"], out[f"{key}_method_hi"] = percentile_interval(mb)
        out[f"{key}_random_lo"], out[f"{key}_random_hi"] = percentile_interval(rb)
        if key == "ums":  # a count that cannot spread: its exact interval (``ums_interval``)
            if len(method) == 1 and float(np.ptp(mb)) == 0.0:
                out["ums_method_lo"], out["ums_method_hi"] = ums_interval(method[0], mb)
            if float(np.ptp(rb)) == 0.0:
                out["ums_random_lo"], out["ums_random_hi"] = ums_interval(random, rb)
        out[f"{key}_diff"] = m - r
        out[f"{key}_diff_lo"], out[f"{key}_diff_hi"] = percentile_interval(mb - rb)
        out[f"{key}_ratio"] = float(_ratio(np.array([m]), np.array([r]))[0])
        out[f"{key}_ratio_lo"], out[f"{key}_ratio_hi"] = _ratio_interval(_ratio(mb, rb))
    out["ums_p"] = _two_sided_p(u_m - u_r)
    out["ums_test"] = "paired bootstrap"
    return out


def _ratio_interval(ratios: np.ndarray) -> tuple[float, float]:
    """Percentile interval of a ratio whose resamples may be infinite (Random found nothing)."""
    r = ratios[~np.isnan(ratios)]
    if not len(r):
        return math.nan, math.nan
    lo, hi = np.percentile(np.where(np.isinf(r), np.finfo(float).max, r), [2.5, 97.5])
    big = np.finfo(float).max / 2
    return (math.inf if lo > big else float(lo)), (math.inf if hi > big else float(hi))


def coverage_curve(random: Arm, method: Arm, budgets: Sequence[int], resamples: int = 200,
                   seed: int = SEED) -> list[dict]:
    """Distinct training images reached at an equal sampling budget B: B Random samples, B
    method samples, and B/2 + B/2 of both. Each point is the mean over ``resamples`` draws of
    B generated images (with replacement) from the stored ones, with its 2.5-97.5 % range:
    what an audit of that budget would reach, and how much it varies."""
    rng = np.random.default_rng(seed)
    out = []

    def reached(arm: Arm, picks: np.ndarray) -> int:
        drawn = np.zeros(arm.n, bool)
        drawn[picks] = True
        return len(np.unique(arm.pair_train[drawn[arm.pair_pos]]))

    def reached_mixed(picks_r: np.ndarray, picks_m: np.ndarray) -> int:
        dr, dm = np.zeros(random.n, bool), np.zeros(method.n, bool)
        dr[picks_r], dm[picks_m] = True, True
        return len(np.union1d(random.pair_train[dr[random.pair_pos]], method.pair_train[dm[method.pair_pos]]))

    for budget in budgets:
        half = budget // 2
        rows = {"random": [], "method": [], "mixed": []}
        for _ in range(resamples):
            rows["random"].append(reached(random, rng.integers(0, random.n, budget)))
            rows["method"].append(reached(method, rng.integers(0, method.n, budget)))
            rows["mixed"].append(reached_mixed(rng.integers(0, random.n, budget - half),
                                               rng.integers(0, method.n, half)))
        point = {"budget": int(budget)}
        for key, vals in rows.items():
            v = np.asarray(vals, dtype=np.float64)
            point[key] = float(v.mean())
            point[f"{key}_lo"], point[f"{key}_hi"] = (float(x) for x in np.percentile(v, [2.5, 97.5]))
        out.append(point)
    return out


def budgets_for(n: int) -> list[int]:
    """Budgets from 8 up to N_G, doubling, always ending at N_G."""
    out, b = [], 8
    while b < n:
        out.append(b)
        b *= 2
    return out + [n] if n >= 2 else out


def topk_mean_intervals(best: np.ndarray, higher_is_closer: bool, fractions: Sequence[float] = TOPK_FRACTIONS,
                        resamples: int = BOOTSTRAP, seed: int = SEED) -> dict:
    """95 % percentile-bootstrap intervals of ``measures.topk_mean``: the generated images are
    resampled with replacement and the top-k mean recomputed."""
    best = np.asarray(best, dtype=np.float64)
    n = len(best)
    if n == 0:
        return {f: (math.nan, math.nan) for f in fractions}
    rng = np.random.default_rng(seed)
    out: dict = {}
    chunk = max(1, min(resamples, 2_000_000 // n))  # bounded memory for large N_G
    means = {f: [] for f in fractions}
    kmax = max(max(1, math.ceil(f * n)) for f in fractions)
    for start in range(0, resamples, chunk):
        draws = best[rng.integers(0, n, size=(min(chunk, resamples - start), n))]
        if higher_is_closer:
            draws = -draws
        if kmax < n:  # only the closest kmax of each draw need sorting: O(n) to find them
            draws = np.partition(draws, kmax - 1, axis=1)[:, :kmax]
        draws = np.sort(draws, axis=1)
        if higher_is_closer:
            draws = -draws
        for f in fractions:
            k = max(1, math.ceil(f * n))
            means[f].append(draws[:, :k].mean(axis=1))
    for f in fractions:
        m = np.concatenate(means[f])
        out[f] = (float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5)))
    return out

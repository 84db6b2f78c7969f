"""Uncertainty of the audit's rates, and paired comparisons of a method with Random.

Pure functions of arrays; every interval here is checked against a known truth by
``bench/calibration.py`` (coverage and false-verdict rates, ``bench/RESULTS.md``). Generated
images are the sampling unit, and every interval is *conditional on this audit's classifiers*:
it covers the rate that more samples from the same guided sampler would give, not what another
training of its classifier would.

- AMS is a binomial proportion: exact (Clopper–Pearson) interval, which never under-covers at
  the rates near 0 an audit's high band has.
- UMS counts distinct training images. Its variance is at most the expected number of images
  found exactly once (an image's indicator has variance (1−p)^n(1−(1−p)^n) ≤ n p (1−p)^(n−1)),
  which the delete-one jackknife over generated images estimates: Σ s_i², s_i the images only
  generated image i reached. The count of such finds is raised to its one-sided Poisson upper
  bound, so that a handful — or none — never reads as certain. A resampling bootstrap sees only
  the images found and misses the variance of those not yet found (it covered 72 % of the truth
  at N_G 512).
- A method against Random, paired on sample positions (shared noise): AMS at one λ McNemar's
  exact test with the ratio interval of the same discordant images; otherwise the log ratio's
  delete-one jackknife over positions, so pairing enters through each position's two terms.
  Either way the verdict is that same interval's: "more" exactly when the ratio's interval lies
  above 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import special, stats

from .arms import SEED, Arm, budgets_for
from .measures import TOPK_FRACTIONS
from .unseen import UPPER  # one standard error above: a count of sole finds at its Poisson upper bound

__all__ = ["Arm", "SEED", "budgets_for"]  # their home is ``arms``; imported from here before

Z95 = 1.959963984540054
ALPHA = 0.05
BOOTSTRAP = 1000  # resamples of the top-k intervals
TOPK_MIN = 100  # top-k means of fewer images get no interval (the bootstrap under-covers there)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (NaN, NaN for n = 0). Newcombe's
    difference is built from it; a rate the product prints uses ``clopper_pearson``."""
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


def clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a binomial proportion k/n: at least its nominal
    coverage at every p. k = 0 gives [0, 1 − (alpha/2)^(1/n)] — "at most a few percent", never a
    certain zero."""
    if n <= 0:
        return math.nan, math.nan
    # the beta quantiles scipy.stats.binomtest(k, n).proportion_ci(method="exact") solves for
    lo = 0.0 if k <= 0 else float(special.betaincinv(k, n - k + 1, alpha / 2))
    hi = 1.0 if k >= n else float(special.betaincinv(k + 1, n - k, 1 - alpha / 2))
    return lo, hi


proportion_interval = clopper_pearson  # the interval of every rate of generated images shown


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: of the b + c discordant pairs, is a split as uneven as
    (b, c) likely under Binomial(b + c, 1/2)?"""
    if b + c == 0:
        return 1.0
    return float(min(1.0, stats.binomtest(min(b, c), b + c, 0.5).pvalue))


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


def _z(alpha: float) -> float:
    return Z95 if alpha == ALPHA else float(special.ndtri(1 - alpha / 2))


def poisson_interval(x: float, alpha: float = ALPHA) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson mean from a count x (real x: chi-square quantiles)."""
    lo = 0.0 if x <= 0 else float(special.gammaincinv(x, alpha / 2))
    return lo, float(special.gammaincinv(x + 1, 1 - alpha / 2))


def count_interval(total: float, terms: np.ndarray, centred: bool = False,
                   alpha: float = ALPHA) -> tuple[float, float, str]:
    """Interval of the expected value of a count made of per-position ``terms`` (what each
    generated image adds to it): normal, with the jackknife variance (terms centred for a sum of
    hits, uncentred for a distinct count) and the count of contributing positions raised to its
    Poisson upper bound (``_sole_variance``)."""
    terms = np.asarray(terms, dtype=np.float64)
    spread = terms - terms.mean() if centred and len(terms) else terms
    var = float((spread ** 2).sum()) + _sole_variance(terms, _unit(np.abs(terms))) - float((terms ** 2).sum())
    half = _z(alpha) * math.sqrt(var)
    return max(0.0, total - half), total + half, "jackknife"


def _unit(terms: np.ndarray) -> float:
    """The size of one find in a count's terms: Σ t² / Σ t (1 when each position adds at most 1)."""
    s = float(terms.sum())
    return max(1.0, float((terms ** 2).sum()) / s) if s > 0 else 1.0


def distinct_interval(arm: Arm, alpha: float = ALPHA) -> tuple[float, float, str]:
    """UMS's interval on the count scale: the expected number of distinct training images an
    audit of this N_G reaches with this sampler. The variance is the jackknife's Σ s_i² (s_i the
    images only generated image i reached), with the number of such finds raised to its one-sided
    84 % Poisson upper bound (``_sole_variance``), so that a handful of them — or none — never
    reads as a count known to the image."""
    d, sole = arm.distinct(), arm.sole_finds().astype(np.float64)
    half = _z(alpha) * math.sqrt(_sole_variance(sole, _unit(sole if sole.any() else _pairs_per_hit(arm))))
    return max(0.0, d - half), d + half, "jackknife"


def _sole_variance(terms: np.ndarray, unit: float = 1.0) -> float:
    """Σ terms² with the count of positions adding to it raised to its one-sided Poisson upper
    bound at ``UPPER`` (in units of one find): the expected sole finds bound the variance, and a
    count of 0, 1 or 2 of them says little about their expectation."""
    k = int(np.count_nonzero(terms))
    extra = float(special.gammaincinv(k + 1, UPPER)) - k
    return float((terms ** 2).sum()) + extra * unit * unit


def _pairs_per_hit(arm: Arm) -> np.ndarray:
    """Distinct training images each generated image reached (1 for one pair a sample)."""
    if not len(arm.pair_pos):
        return np.zeros(0)
    pairs = np.unique(np.stack([arm.pair_train, arm.pair_pos]), axis=1)
    return np.bincount(pairs[1], minlength=arm.n).astype(np.float64)


def rate_intervals(arm: Arm, alpha: float = ALPHA) -> dict:
    """AMS with its exact interval, UMS with its interval (``distinct_interval``), 95 %."""
    lo, hi = clopper_pearson(int(arm.hit.sum()), arm.n, alpha)
    if not arm.n:
        return {"ams": math.nan, "ams_lo": lo, "ams_hi": hi, "ums": math.nan, "ums_lo": math.nan,
                "ums_hi": math.nan, "ums_method": None}
    ulo, uhi, how = distinct_interval(arm, alpha)
    return {"ams": arm.ams(), "ams_lo": lo, "ams_hi": hi, "ums": arm.ums(), "ums_lo": ulo / arm.n,
            "ums_hi": uhi / arm.n, "ums_method": how}


def rate_intervals_many(arms: Sequence[Arm], alpha: float = ALPHA) -> list[dict]:
    """``rate_intervals`` of several arms (the bands of one (method, λ))."""
    return [rate_intervals(a, alpha) for a in arms]


def ums_interval(arm: Arm, alpha: float = ALPHA) -> tuple[float, float]:
    """UMS's 95 % interval (rate scale)."""
    r = rate_intervals(arm, alpha)
    return r["ums_lo"], r["ums_hi"]


def paired_comparison(method: Sequence[Arm], random: Arm, alpha: float = ALPHA) -> dict:
    """A method against Random on the same sample positions. ``method`` holds one arm per λ;
    with several, the method's rate is their mean (a declared λ range, never a maximum).

    For AMS and UMS: each arm's rate and interval, the difference and the ratio with their
    intervals, and the two-sided p-value of the same computation (the ratio's interval excludes
    1 exactly when p < alpha): ``compare_counts``."""
    return paired_comparisons([(method, random)], alpha)[0]


def paired_comparisons(pairs: Sequence[tuple[Sequence[Arm], Arm]], alpha: float = ALPHA) -> list[dict]:
    """``paired_comparison`` of several (method arms, Random arm) on the same n positions."""
    for method, random in pairs:
        if not method or any(a.n != random.n for a in method):
            raise ValueError("paired comparison needs arms on the same sample positions")
    return [_paired(method, random, alpha) for method, random in pairs]


def _paired(method: Sequence[Arm], random: Arm, alpha: float) -> dict:
    n, lams = random.n, len(method)
    out: dict = {"n": n}
    # AMS: the per-position terms are hits (the method's averaged over its λ); UMS: sole finds
    hits_m = np.mean([a.hit for a in method], axis=0).astype(np.float64)
    hits_r = random.hit.astype(np.float64)
    sole_m = np.mean([a.sole_finds() for a in method], axis=0).astype(np.float64)
    sole_r = random.sole_finds().astype(np.float64)
    d_m = float(np.mean([a.distinct() for a in method]))
    d_r = float(random.distinct())
    for key, (tm, tr), (cm, cr), centred in (
            ("ams", (hits_m.sum(), hits_r.sum()), (hits_m, hits_r), True),
            ("ums", (d_m, d_r), (sole_m, sole_r), False)):
        out[f"{key}_method"], out[f"{key}_random"] = (tm / n, tr / n) if n else (math.nan, math.nan)
        if key == "ams" and lams == 1:
            c = mcnemar_ratio(method[0].hit, random.hit, alpha)
        else:
            c = compare_counts(tm, cm, tr, cr, centred, alpha)
        for name in ("diff", "diff_lo", "diff_hi"):
            out[f"{key}_{name}"] = c[name] / n if n else math.nan
        for name in ("ratio", "ratio_lo", "ratio_hi", "p", "test"):
            out[f"{key}_{name}"] = c[name]
    # each arm's own interval, on the scale of the rate compared
    if lams == 1:
        out["ams_method_lo"], out["ams_method_hi"] = clopper_pearson(int(method[0].hit.sum()), n, alpha)
        lo, hi, _ = distinct_interval(method[0], alpha)
    else:
        lo, hi, _ = count_interval(hits_m.sum(), hits_m, True, alpha)
        out["ams_method_lo"], out["ams_method_hi"] = lo / n, min(hi / n, 1.0)
        lo, hi, _ = count_interval(d_m, sole_m, False, alpha)
    out["ums_method_lo"], out["ums_method_hi"] = lo / n, hi / n
    out["ams_random_lo"], out["ams_random_hi"] = clopper_pearson(int(random.hit.sum()), n, alpha)
    lo, hi, _ = distinct_interval(random, alpha)
    out["ums_random_lo"], out["ums_random_hi"] = lo / n, hi / n
    if lams == 1:  # McNemar's discordant images, for the reader (the verdict is the ratio's)
        b = int((method[0].hit & ~random.hit).sum())
        c = int((random.hit & ~method[0].hit).sum())
        out["ams_discordant"] = [b, c]
        out["ams_mcnemar_p"] = mcnemar_exact(b, c)
    return out


def compare_counts(total_m: float, terms_m: np.ndarray, total_r: float, terms_r: np.ndarray,
                   centred: bool, alpha: float = ALPHA) -> dict:
    """Two counts on the same positions (the method's averaged over its λ): difference and
    ratio with 95 % intervals and one two-sided p-value, from one computation.

    The delete-one jackknife over positions of the log ratio: leaving position i out of both
    arms moves it by about t_i(method)/total_m − t_i(Random)/total_r, so pairing enters through
    each position's two terms (centred for a mean of hits, uncentred for a distinct count,
    whose variance the sole finds bound). The number of positions that tell the arms apart is
    raised to its one-sided Poisson upper bound (``_paired_variance``), so that a handful of
    them never reads as certain. The interval is normal
    on the log scale (it always holds its own estimate) and p is that z's. Where one count is 0
    no log ratio exists: the exact conditional test of two Poisson counts and its interval."""
    terms_m, terms_r = np.asarray(terms_m, np.float64), np.asarray(terms_r, np.float64)
    z = _z(alpha)
    diff = total_m - total_r
    dm = terms_m - terms_m.mean() if centred and len(terms_m) else terms_m
    dr = terms_r - terms_r.mean() if centred and len(terms_r) else terms_r
    unit_m, unit_r = _unit(np.abs(terms_m)), _unit(np.abs(terms_r))
    # the positions that tell the arms apart, their number raised to its Poisson upper bound
    apart = (terms_m != terms_r) if len(terms_m) else np.zeros(0, bool)
    se_diff = math.sqrt(_paired_variance(dm - dr, apart, 0.5 * (unit_m ** 2 + unit_r ** 2)))
    out = {"diff": diff, "diff_lo": diff - z * se_diff, "diff_hi": diff + z * se_diff}
    if total_m <= 0 and total_r <= 0:
        return {**out, "ratio": math.nan, "ratio_lo": math.nan, "ratio_hi": math.nan, "p": 1.0,
                "test": "nothing found by either"}
    if total_m > 0 and total_r > 0:
        log_r = math.log(total_m / total_r)
        se = math.sqrt(_paired_variance(dm / total_m - dr / total_r, apart,
                                        0.5 * ((unit_m / total_m) ** 2 + (unit_r / total_r) ** 2)))
        p = float(2 * special.ndtr(-abs(log_r) / se))
        return {**out, "ratio": math.exp(log_r), "ratio_lo": math.exp(log_r - z * se),
                "ratio_hi": math.exp(log_r + z * se), "p": min(1.0, p), "test": "paired jackknife (log ratio)"}
    # one count is 0: the exact conditional test of two Poisson counts, in units of one find
    return {**out, **poisson_ratio(total_m, total_r, max(unit_m, unit_r), alpha)}


def poisson_ratio(x: float, y: float, unit: float = 1.0, alpha: float = ALPHA) -> dict:
    """Two counts read as Poisson counts (in units of ``unit``), compared by the exact conditional
    test of the first's share of the two, with its exact (Clopper–Pearson) interval turned into a
    ratio: valid for counts less spread than Poisson's and positively paired, whatever their
    size, and conservative — it cannot use the pairing."""
    a, b = x / unit, y / unit
    lo_share = 0.0 if a <= 0 else float(special.betaincinv(a, b + 1, alpha / 2))
    hi_share = 1.0 if b <= 0 else float(special.betaincinv(a + 1, b, 1 - alpha / 2))
    # two-sided p of the share a / (a + b) under 1/2: twice the smaller exact tail
    upper = 1.0 if a <= 0 else float(special.betainc(a, b + 1, 0.5))  # P(X ≥ a)
    lower = 1.0 if b <= 0 else float(special.betainc(b, a + 1, 0.5))  # P(X ≤ a)
    return {"ratio": x / y if y > 0 else (math.inf if x > 0 else math.nan), "ratio_lo": lo_share / (1 - lo_share),
            "ratio_hi": math.inf if hi_share >= 1 else hi_share / (1 - hi_share),
            "p": min(1.0, 2 * min(upper, lower)), "test": "exact conditional (Poisson counts)"}


def _paired_variance(delta: np.ndarray, apart: np.ndarray, one: float) -> float:
    """The paired jackknife's Σ delta_i², scaled by the number of positions that tell the two arms
    apart raised to its one-sided Poisson upper bound over that number (with none, the bound's
    1.84 positions of size ``one``): few differing positions never read as certainty, and the
    positions both arms share keep their credit for the pairing."""
    k = int(np.count_nonzero(apart))
    scaled = float((delta ** 2).sum()) * float(special.gammaincinv(k + 1, UPPER)) / k if k else 0.0
    return max(scaled, float(special.gammaincinv(1, UPPER)) * one)


def mcnemar_ratio(hit_m: np.ndarray, hit_r: np.ndarray, alpha: float = ALPHA) -> dict:
    """AMS of one λ against Random on the same positions: McNemar's exact test and the ratio's
    interval from the same computation. Given a images both hit and N = b + c discordant ones,
    the method's share π of the discordant has an exact (Clopper–Pearson) interval, and the
    ratio of the two rates is (a + πN) / (a + (1 − π)N), increasing in π and 1 at π = 1/2: the
    interval excludes 1 exactly when McNemar's p < alpha. With no discordant image the
    interval is that of N's Poisson upper bound, never a certain 1. The difference's interval is
    the paired jackknife's (normal), printed as a description only."""
    n = len(hit_m)
    a = int((hit_m & hit_r).sum())
    b, c = int((hit_m & ~hit_r).sum()), int((hit_r & ~hit_m).sum())
    big_n = b + c
    z = _z(alpha)
    x, y = hit_m.astype(np.float64), hit_r.astype(np.float64)
    diff = float(x.sum() - y.sum())
    se = math.sqrt(float((((x - x.mean()) - (y - y.mean())) ** 2).sum())) if n else 0.0
    out = {"diff": diff, "diff_lo": diff - z * se if se > 0 else math.nan,
           "diff_hi": diff + z * se if se > 0 else math.nan, "test": "McNemar exact"}
    if a + b + c == 0:  # neither arm hit the band: no ratio exists, and McNemar has nothing to split
        return {**out, "ratio": math.nan, "ratio_lo": math.nan, "ratio_hi": math.nan, "p": 1.0}
    lo_pi, hi_pi = clopper_pearson(b, big_n, alpha) if big_n else (0.0, 1.0)
    span = big_n if big_n else poisson_interval(0, alpha)[1]

    def ratio(pi: float) -> float:
        den = a + (1 - pi) * span
        return (a + pi * span) / den if den > 0 else math.inf

    return {**out, "ratio": (a + b) / (a + c) if a + c else math.inf, "ratio_lo": ratio(lo_pi),
            "ratio_hi": ratio(hi_pi), "p": mcnemar_exact(b, c)}


def bootstrap_counts(n: int, resamples: int = BOOTSTRAP, seed: int = SEED, chunk: int = 250) -> Iterator[np.ndarray]:
    """(b, n) multiplicities of each generated image in ``resamples`` bootstrap draws, in chunks
    so memory stays bounded for large N_G. The same seed gives the same draws."""
    rng = np.random.default_rng(seed)
    left = resamples
    while left > 0:
        b = min(chunk, left)
        draws = rng.integers(0, n, size=(b, n))
        draws += (np.arange(b, dtype=draws.dtype) * n)[:, None]  # row r's draws counted in bins r*n..
        yield np.bincount(draws.ravel(), minlength=b * n).astype(np.int32).reshape(b, n)
        left -= b


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return math.nan, math.nan
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(lo), float(hi)


def coverage_curve(random: Arm, method: Arm, budgets: Sequence[int], alpha: float = ALPHA) -> list[dict]:
    """Distinct training images reached at an equal sampling budget B: B Random samples, B
    method samples, and B/2 + B/2 of both. Each point is the exact interpolation of the expected
    count from the stored images (drawn without replacement), and its range is what a *new*
    audit of that budget would reach (``unseen.curve_ranges``; the mix: its two halves' spreads
    added, the images both would find counted once)."""
    from . import unseen

    inc_r, inc_m = unseen.incidence(random), unseen.incidence(method)
    out = []
    for budget in budgets:
        b = int(budget)
        point = {"budget": b}
        for key, inc in (("random", inc_r), ("method", inc_m)):
            c = unseen.curve_ranges(inc, [b], alpha)[0]
            point[key], point[f"{key}_lo"], point[f"{key}_hi"] = c["expected"], c["lo"], c["hi"]
        half = b // 2
        halves = [(inc_r, random, b - half), (inc_m, method, half)]
        point["mixed"] = _mixed_expected(halves)
        parts = [unseen.curve_ranges(inc, [h], alpha)[0] for inc, _, h in halves if h > 0]
        var = sum(((c["hi"] - c["lo"]) / (2 * _z(alpha))) ** 2 for c in parts)
        spread = _z(alpha) * math.sqrt(var)
        point["mixed_lo"], point["mixed_hi"] = max(0.0, point["mixed"] - spread), point["mixed"] + spread
        out.append(point)
    return out


def _mixed_expected(halves: Sequence[tuple]) -> float:
    """Expected distinct training images when h of each arm's stored images are drawn without
    replacement: an image is missed only when every part misses it."""
    from .unseen import _reached

    miss: dict[int, float] = {}
    for _, arm, h in halves:
        if not len(arm.pair_train) or h <= 0:
            continue
        pairs = np.unique(np.stack([arm.pair_train, arm.pair_pos]), axis=1)
        train, freq = np.unique(pairs[0], return_counts=True)
        reached = _reached(freq.astype(np.float64), arm.n, min(h, arm.n))
        for j, r in zip(train.tolist(), reached.tolist()):
            miss[j] = miss.get(j, 1.0) * (1 - r)
    return float(sum(1 - m for m in miss.values()))


def topk_mean_intervals(best: np.ndarray, higher_is_closer: bool, fractions: Sequence[float] = TOPK_FRACTIONS,
                        resamples: int = BOOTSTRAP, seed: int = SEED) -> dict:
    """95 % percentile-bootstrap intervals of ``measures.topk_mean`` where the top k hold at least
    ``TOPK_MIN`` images; smaller tails get none (NaN). A resample can only lose a tail's closest
    images, never gain closer ones: checked against the expected top-k mean of a known score
    distribution, the interval covered 45 % at k = 1, 80–89 % at k = 3–52 and 96–97 % from
    k = 100 (``bench/calibration.py --topk``)."""
    best = np.asarray(best, dtype=np.float64)
    n = len(best)
    if n == 0:
        return {f: (math.nan, math.nan) for f in fractions}
    shown = [f for f in fractions if max(1, math.ceil(f * n)) >= TOPK_MIN]
    if len(shown) < len(fractions):
        out = {f: (math.nan, math.nan) for f in fractions if f not in shown}
        return {**out, **(topk_mean_intervals(best, higher_is_closer, shown, resamples, seed) if shown else {})}
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
